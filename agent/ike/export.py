"""Render an IKE SA's keys as a Wireshark ``ikev2_decryption_table`` UAT record.

One record per IKE SA, the same text in an ``ikev2_decryption_table`` file under a
Wireshark profile or after ``-o uat:ikev2_decryption_table:`` on tshark's command line:

    SPIi,SPIr,SK_ei,SK_er,"ENCRYPTION",SK_ai,SK_ar,"INTEGRITY"

SPIs and keys are bare hex, an empty key is ``""``; algorithm names are spelled as
Wireshark's ISAKMP dissector lists them. AES-GCM keys carry their 4-byte salt at the end
(RFC 5282 section 7.1), as prf+ produced them, and AEAD SAs have integrity "NONE" with
empty SK_a keys. Wireshark 4.0 has no ChaCha20-Poly1305 entry in this table, so such an
SA cannot be rendered. Strings only: writing them anywhere is the caller's choice, and
they are secrets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .constants import EncrId, IntegId
from .errors import LocalError
from .keys import IkeSaKeys
from .proposals import IkeProposal

if TYPE_CHECKING:
    from .ike_sa import IkeSa

WIRESHARK_IKE_ENCRYPTION: dict[tuple[int, int], str] = {
    (EncrId.AES_CBC, 128): "AES-CBC-128 [RFC3602]",
    (EncrId.AES_CBC, 256): "AES-CBC-256 [RFC3602]",
    (EncrId.AES_GCM_16, 128): "AES-GCM-128 with 16 octet ICV [RFC5282]",
    (EncrId.AES_GCM_16, 256): "AES-GCM-256 with 16 octet ICV [RFC5282]",
}
"""Keyed by (transform ID, key bits)."""

WIRESHARK_IKE_INTEGRITY: dict[int, str] = {
    IntegId.HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
    IntegId.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
}

WIRESHARK_NO_INTEGRITY = "NONE [RFC4306]"

_SPI_LENGTH = 8


def ikev2_decryption_record(
    spi_i: bytes, spi_r: bytes, proposal: IkeProposal, keys: IkeSaKeys
) -> str:
    """One ``ikev2_decryption_table`` record for an IKE SA's SPIs, proposal and keys.

    Raises LocalError when an SPI is not 8 bytes (RFC 7296 section 3.1) or Wireshark
    has no name for the proposal's encryption or integrity transform.
    """
    for name, spi in (("initiator", spi_i), ("responder", spi_r)):
        if not isinstance(spi, bytes) or len(spi) != _SPI_LENGTH:
            raise LocalError(f"{name} IKE SPI must be {_SPI_LENGTH} bytes, got {spi!r}")
    encr = proposal.encr
    encryption = WIRESHARK_IKE_ENCRYPTION.get((encr.id, encr.key_bits))
    if encryption is None:
        raise LocalError(f"Wireshark's IKEv2 decryption table has no entry for {encr.name}")
    if proposal.integ is None:
        integrity = WIRESHARK_NO_INTEGRITY
    else:
        named = WIRESHARK_IKE_INTEGRITY.get(proposal.integ.id)
        if named is None:
            raise LocalError(
                f"Wireshark's IKEv2 decryption table has no entry for {proposal.integ.name}"
            )
        integrity = named
    fields = [
        spi_i.hex(),
        spi_r.hex(),
        _key(keys.sk_ei),
        _key(keys.sk_er),
        f'"{encryption}"',
        _key(keys.sk_ai),
        _key(keys.sk_ar),
        f'"{integrity}"',
    ]
    return ",".join(fields)


def _key(key: bytes) -> str:
    return key.hex() if key else '""'


def ike_sa_decryption_record(sa: IkeSa) -> str:
    """The record for an IKE SA whose keys exist (from IKE_SA_INIT on)."""
    if sa.keys is None or sa.proposal is None:
        raise LocalError(f"{sa!r} has no keys yet: IKE_SA_INIT has not completed")
    return ikev2_decryption_record(sa.spi_i, sa.spi_r, sa.proposal, sa.keys)


def tshark_ike_options(sas: Iterable[IkeSa]) -> list[str]:
    """tshark arguments that decrypt these IKE SAs' messages (one ``-o`` per SA)."""
    options: list[str] = []
    for sa in sas:
        options += ["-o", f"uat:ikev2_decryption_table:{ike_sa_decryption_record(sa)}"]
    return options
