"""A key log for debugging: every SA's keys, appended in Wireshark's UAT formats.

Like SSLKEYLOGFILE for TLS: off unless asked for (``--keylog FILE``), and when on, every
IKE SA and child SA the engine installs or rekeys gets its keys appended to FILE, so a
capture of the agent's traffic can be decrypted and its ICVs checked by tshark or
Wireshark. Each record line is a UAT table name, a colon and one record of that table:

    esp_sa:"IPv4","SRC","DST","0xSPI","ENCRYPTION","0xKEY","AUTHENTICATION","0xAUTHKEY"
    ikev2_decryption_table:SPIi,SPIr,SK_ei,SK_er,"ENCRYPTION",SK_ai,SK_ar,"INTEGRITY"
    ikev1_decryption_table:ICOOKIE,ENCRYPTION_KEY

so ``-o uat:LINE`` hands it to tshark as is; the part after the colon is also what a
Wireshark profile's ``esp_sa`` / ``ikev2_decryption_table`` / ``ikev1_decryption_table``
file holds. A child SA gets two ``esp_sa`` lines (inbound and outbound), an IKEv2 SA one
``ikev2_decryption_table`` line, an IKEv1 ISAKMP SA one ``ikev1_decryption_table`` line
(Wireshark derives the IVs of RFC 2409 Appendix B itself, from Main mode message 1 on);
comment lines (``#``) say which peer and SA the records below them belong to.

AH child SAs (RFC 4302) have no Wireshark table: Wireshark's AH dissector shows the
header, SPI and sequence number but checks no ICV (it has no ``ah.*`` preference and the
``esp_sa`` table is for ESP only). Their keys are written all the same, for other tools
(scapy's ``SecurityAssociation(AH, ...)`` checks HMAC ones), as comment lines that tshark
skips, in the ``esp_sa`` column order without the encryption columns:

    #ah_sa:"IPv4","SRC","DST","0xSPI","INTEGRITY","0xKEY"

with the integrity named in strongSwan's notation (``sha256``, ``aes128gmac``; a GMAC
key ends with its 4-byte salt).

The file holds secrets: it is created with mode 0600, refused if it is a symlink, not a
regular file, or readable by anyone but its owner, and written with O_APPEND so one
record never interleaves with another writer's.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from ..esp.ah import AhParams
from ..esp.keys import esp_sa_record
from ..ike.errors import LocalError
from ..ike.export import ike_sa_decryption_record
from ..ike.ike_sa import IkeSa
from ..ike.v1.export import ikev1_decryption_record
from ..ike.v1.sa import IkeV1Sa
from ..io.dataplane_model import ChildSaParams
from .core import IkeCore

log = logging.getLogger(__name__)

ESP_TABLE = "esp_sa"
AH_RECORD = "#ah_sa"
IKE_TABLE = "ikev2_decryption_table"
IKEV1_TABLE = "ikev1_decryption_table"
FILE_MODE = 0o600

HEADER = """\
# vpnfleet key log: Wireshark UAT records, one per line, as TABLE:RECORD
#   esp_sa:"IPv4","SRC","DST","0xSPI","ENCRYPTION","0xKEY","AUTHENTICATION","0xAUTHKEY"
#   ikev2_decryption_table:SPIi,SPIr,SK_ei,SK_er,"ENCRYPTION",SK_ai,SK_ar,"INTEGRITY"
#   ikev1_decryption_table:ICOOKIE,ENCRYPTION_KEY
# AH SAs, which Wireshark cannot check, as comments for other tools:
#   #ah_sa:"IPv4","SRC","DST","0xSPI","INTEGRITY","0xKEY"
# tshark: -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE
#         and -o 'uat:LINE' for every line that is not a comment.
# GCM keys end with their 4-byte salt.
#
# WARNING: THIS FILE HOLDS SECRET KEYS. Anyone who can read it can decrypt every
# tunnel logged here (and forge traffic while the SAs live). Keep it on this host,
# keep it mode 0600, delete it when the debugging is done, and never leave the key
# log switched on in production.
"""


class KeyLogError(Exception):
    """The key log file cannot be used; the message names the file and why."""


class KeyLog:
    """An open key log. :meth:`open` checks and creates the file; the ``*_sa`` methods
    append records and never raise (a debugging aid must not break the tunnels)."""

    def __init__(self, fd: int, path: Path, wall_clock: Callable[[], float] = time.time) -> None:
        self._fd: int | None = fd
        self.path = path
        self._wall = wall_clock
        self.records = 0
        """Records written since opening."""

    @classmethod
    def open(cls, path: Path, wall_clock: Callable[[], float] = time.time) -> KeyLog:
        """Open ``path`` for appending (created 0600 with a header when new) and warn
        once, in the log, that keys are being written there."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, FILE_MODE)
        except OSError as exc:
            if os.path.islink(path):
                raise KeyLogError(f"key log {path} is a symlink: give the file itself") from None
            raise KeyLogError(f"cannot open key log {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise KeyLogError(f"key log {path} is not a regular file")
            if info.st_uid != os.geteuid():
                # Made by someone else (in a shared directory, before we came): they
                # could read every key appended to it.
                raise KeyLogError(
                    f"key log {path} belongs to user id {info.st_uid}, not to this user "
                    f"({os.geteuid()}): give a new file"
                )
            if info.st_mode & 0o077:
                raise KeyLogError(
                    f"key log {path} has mode {stat.S_IMODE(info.st_mode):04o}: others could "
                    "read the keys; chmod 600 it or give a new file"
                )
            if info.st_size == 0:
                os.write(fd, HEADER.encode())
        except OSError as exc:
            os.close(fd)
            raise KeyLogError(f"cannot write key log {path}: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        log.warning(
            "key log %s is on: the keys of every SA are written there; anyone who can read "
            "it can decrypt the tunnels",
            path,
        )
        return cls(fd, path, wall_clock)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def child_sa(
        self, peer: str, what: str, inbound: ChildSaParams, outbound: ChildSaParams
    ) -> None:
        """The two ``esp_sa`` records of a child SA just installed (``what``: installed,
        rekeyed), or the two ``#ah_sa`` comment records of an AH child."""
        title = f"{peer}: child SA {what}, in {inbound.spi:08x} out {outbound.spi:08x}"
        if isinstance(inbound, AhParams) and isinstance(outbound, AhParams):
            title = f"{peer}: AH child SA {what}, in {inbound.spi:08x} out {outbound.spi:08x}"
            self._append(title, [ah_sa_record(inbound), ah_sa_record(outbound)])
            return
        assert not isinstance(inbound, AhParams) and not isinstance(outbound, AhParams)
        self._append(
            title,
            [f"{ESP_TABLE}:{esp_sa_record(inbound)}", f"{ESP_TABLE}:{esp_sa_record(outbound)}"],
        )

    def ike_sa(self, peer: str, what: str, sa: IkeCore) -> None:
        """The ``ikev2_decryption_table`` record of an IKEv2 SA, or the
        ``ikev1_decryption_table`` record of an ISAKMP SA (``what``: established,
        rekeyed)."""
        title = f"{peer}: IKE SA {what}, {sa.spi_i.hex()}_i {sa.spi_r.hex()}_r"
        try:
            if isinstance(sa, IkeV1Sa):
                if sa.keys is None:
                    raise LocalError("no keys yet")
                records = [f"{IKEV1_TABLE}:{ikev1_decryption_record(sa.icookie, sa.keys)}"]
            else:
                assert isinstance(sa, IkeSa)
                records = [f"{IKE_TABLE}:{ike_sa_decryption_record(sa)}"]
        except LocalError as exc:  # no Wireshark name for its transforms (ChaCha20)
            title += f" (not recorded: {exc})"
            records = []
        self._append(title, records)

    def _append(self, title: str, records: list[str]) -> None:
        if self._fd is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._wall()))
        text = "".join(f"{line}\n" for line in [f"# {stamp} {title}", *records])
        try:
            # One write with O_APPEND: a reader never sees half a group.
            os.write(self._fd, text.encode())
        except OSError as exc:
            log.error("key log %s: cannot write (%s); key logging stops", self.path, exc)
            self.close()
            return
        self.records += len(records)


def ah_sa_record(params: AhParams) -> str:
    """One AH SA's keys as a comment line of the key log (see the module's doc)."""
    family = "IPv4"
    for address in (params.src, params.dst):
        if ":" in address:
            family = "IPv6"
    fields = [
        family,
        params.src,
        params.dst,
        f"0x{params.spi:08x}",
        params.integrity.value,
        f"0x{params.integ_key.hex()}",
    ]
    return f"{AH_RECORD}:" + ",".join(f'"{field}"' for field in fields)


def tshark_options(text: str) -> list[str]:
    """tshark arguments decrypting and checking everything a key log's text records."""
    options = [
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            options += ["-o", f"uat:{line}"]
    return options
