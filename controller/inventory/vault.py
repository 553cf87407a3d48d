"""Encrypted inventory values (``!vault``), sealed with PyNaCl's SecretBox.

A vault text is base64 of a header, a 24-byte nonce and the SecretBox ciphertext. The
header of the current format (version 2) says how the box key was made, so that the
cost can be raised without losing old values:

    VPNFLEET-VAULT2 | kdf (1) | opslimit (4, big-endian) | memlimit (8, bytes) | salt (16)

``kdf`` is 1 for Argon2id (libsodium's ``crypto_pwhash`` ARGON2ID13) from a password,
0 for a raw 32-byte key from a key file (then the limits and the salt are zero). New
values are sealed with Argon2id's MODERATE limits (3 passes, 256 MiB). A header's
limits are checked before anything is derived: outside
[:data:`MIN_OPSLIMIT`, :data:`MAX_OPSLIMIT`] and [:data:`MIN_MEMLIMIT`,
:data:`MAX_MEMLIMIT`] the value is refused, so a text cannot make the controller spend
64 GiB or an hour.

Version 1 texts (``VPNFLEET-VAULT1 | salt (16) | nonce | ciphertext``, Argon2id with
the INTERACTIVE limits, or the raw key) are still opened; ``vpnfleet vault rekey``
re-seals them in the current format.

Every distinct (salt, limits) costs one Argon2id derivation; derived keys are kept per
(salt, limits), and one run (an inventory load: see :meth:`Vault.new_run`) refuses to
derive more than :data:`MAX_DERIVATIONS` keys, so an inventory of many values sealed
under different salts cannot stall it for minutes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from vpnfleet.protos.files import PrivateFileError, mode_of, read_private, write_atomically

from .errors import InventoryError, Mark
from .source import VaultSpan, VaultText, load_yaml_file, mark_of, vault_spans

MAGIC = b"VPNFLEET-VAULT2"
MAGIC_V1 = b"VPNFLEET-VAULT1"
SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES  # 16
NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24
KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
_PARAMS = struct.Struct(">BIQ")  # kdf, opslimit, memlimit
_HEADER = len(MAGIC) + _PARAMS.size + SALT_SIZE
_HEADER_V1 = len(MAGIC_V1) + SALT_SIZE

MIN_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MIN  # 1
MAX_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE  # 4
MIN_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MIN  # 8 KiB
MAX_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE  # 1 GiB

MAX_DERIVATIONS = 16
"""Distinct Argon2id derivations (salts) one run may pay for: about 8 s at MODERATE."""


class Kdf(enum.IntEnum):
    """How a box key is made (the header's ``kdf`` byte)."""

    RAW_KEY = 0
    ARGON2ID = 1


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id's cost: passes and memory in bytes (libsodium's opslimit, memlimit)."""

    opslimit: int
    memlimit: int

    def __str__(self) -> str:
        return f"opslimit {self.opslimit}, memlimit {self.memlimit // 1024} KiB"


INTERACTIVE = KdfParams(
    nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
)
"""What version 1 texts were sealed with (2 passes, 64 MiB)."""

MODERATE = KdfParams(nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE)
"""What new texts are sealed with (3 passes, 256 MiB)."""

_NO_PARAMS = KdfParams(0, 0)


class VaultError(InventoryError):
    """A vault value that cannot be opened, or a vault that cannot be set up.

    The message already says where (``at file:line``), so it is shown alone.
    """

    def __str__(self) -> str:
        return self.message


class Secret(str):
    """A decrypted value: an ordinary string whose repr never shows it.

    ``str(secret)`` and formatting still give the plaintext (it has to reach the planner);
    ``repr`` — what logs, tracebacks and debuggers print — gives ``<secret>``.
    """

    mark: Mark | None = None
    format_version: int = 2
    """The vault format it was sealed in (1: no KDF limits in its header)."""

    def __repr__(self) -> str:
        return "<secret>"


def _where(mark: Mark | None) -> str:
    return f" at {mark.path}:{mark.line}" if mark else ""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A vault text taken apart: its format version, how its key is made, and the box."""

    version: int
    kdf: Kdf | None  # None: a version 1 text, whose key is the opening vault's kind
    params: KdfParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes

    @classmethod
    def parse(cls, vault_text: str) -> Sealed:
        """Split a vault text; a malformed one or limits out of bounds raise VaultError."""
        mark = mark_of(vault_text)
        try:
            blob = base64.b64decode("".join(vault_text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise VaultError(f"vault value{_where(mark)} is not valid base64", mark) from None
        minimum = NONCE_SIZE + nacl.secret.SecretBox.MACBYTES
        if blob.startswith(MAGIC_V1) and len(blob) >= _HEADER_V1 + minimum:
            salt = blob[len(MAGIC_V1) : _HEADER_V1]
            nonce, ciphertext = (
                blob[_HEADER_V1 : _HEADER_V1 + NONCE_SIZE],
                blob[_HEADER_V1 + NONCE_SIZE :],
            )
            return cls(1, None, INTERACTIVE, salt, nonce, ciphertext)
        if not blob.startswith(MAGIC) or len(blob) < _HEADER + minimum:
            raise VaultError(
                f"vault value{_where(mark)} is not a vpnfleet vault text "
                f"(expected it to start with {MAGIC.decode()} or {MAGIC_V1.decode()})",
                mark,
            )
        kdf_byte, opslimit, memlimit = _PARAMS.unpack_from(blob, len(MAGIC))
        salt = blob[len(MAGIC) + _PARAMS.size : _HEADER]
        nonce, ciphertext = blob[_HEADER : _HEADER + NONCE_SIZE], blob[_HEADER + NONCE_SIZE :]
        try:
            kdf = Kdf(kdf_byte)
        except ValueError:
            raise VaultError(
                f"vault value{_where(mark)} names key derivation {kdf_byte}, which this "
                f"version does not know (known: {', '.join(f'{k.value} {k.name}' for k in Kdf)})",
                mark,
            ) from None
        params = KdfParams(opslimit, memlimit)
        if kdf is Kdf.ARGON2ID:
            check_params(params, mark)
        elif params != _NO_PARAMS or any(salt):
            raise VaultError(
                f"vault value{_where(mark)} is sealed with a raw key but carries Argon2id "
                "limits or a salt; the text was altered",
                mark,
            )
        return cls(2, kdf, params, salt, nonce, ciphertext)


def check_params(params: KdfParams, mark: Mark | None = None) -> None:
    """Refuse Argon2id limits outside the bounds (a header asking for 64 GiB, say)."""
    if not MIN_OPSLIMIT <= params.opslimit <= MAX_OPSLIMIT:
        raise VaultError(
            f"vault value{_where(mark)} asks for Argon2id opslimit {params.opslimit}, outside "
            f"{MIN_OPSLIMIT}..{MAX_OPSLIMIT}; refused (re-encrypt it with "
            "`vpnfleet vault encrypt-string`)",
            mark,
        )
    if not MIN_MEMLIMIT <= params.memlimit <= MAX_MEMLIMIT:
        raise VaultError(
            f"vault value{_where(mark)} asks for Argon2id memlimit {params.memlimit} bytes "
            f"({params.memlimit / 2**20:.0f} MiB), outside {MIN_MEMLIMIT}..{MAX_MEMLIMIT} "
            "bytes (1 GiB); refused (re-encrypt it with `vpnfleet vault encrypt-string`)",
            mark,
        )


class Vault:
    """Opens and seals vault texts with a password or a raw key.

    ``params`` are the Argon2id limits new texts are sealed with (MODERATE by default);
    opening follows each text's own header. It keeps the keys it derived, and refuses
    to derive more than ``max_derivations`` new ones in one run (:meth:`new_run`).
    """

    def __init__(
        self,
        password: bytes,
        params: KdfParams = MODERATE,
        *,
        max_derivations: int = MAX_DERIVATIONS,
    ) -> None:
        if not password:
            raise VaultError("vault password is empty")
        check_params(params)
        self._password = password
        self._raw_key: bytes | None = None
        self._params = params
        self._keys: dict[tuple[bytes, KdfParams], bytes] = {}
        self._max_derivations = max_derivations
        self._derived = 0  # in this run
        # One salt per Vault for sealing: every value still gets a fresh random nonce,
        # and the Argon2id cost is paid once per run rather than once per value.
        self._seal_salt = nacl.utils.random(SALT_SIZE)

    @classmethod
    def from_key(cls, key: bytes) -> Vault:
        if len(key) != KEY_SIZE:
            raise VaultError(f"vault key must be {KEY_SIZE} bytes, got {len(key)}")
        vault = cls.__new__(cls)
        vault._password = b""
        vault._raw_key = bytes(key)
        vault._params = _NO_PARAMS
        vault._keys = {}
        vault._max_derivations = 0
        vault._derived = 0
        vault._seal_salt = bytes(SALT_SIZE)
        return vault

    @classmethod
    def from_password_file(
        cls,
        path: Path | str,
        params: KdfParams = MODERATE,
        *,
        max_derivations: int = MAX_DERIVATIONS,
    ) -> Vault:
        """A vault keyed by the password in a file (surrounding whitespace ignored)."""
        path = Path(path)
        try:
            password = path.read_bytes().strip()
        except OSError as exc:
            raise VaultError(f"cannot read vault password file {path}: {exc.strerror}") from None
        if not password:
            raise VaultError(f"vault password file {path} is empty")
        return cls(password, params, max_derivations=max_derivations)

    @classmethod
    def from_key_file(cls, path: Path | str) -> Vault:
        """A vault keyed by a file of exactly 32 raw bytes, readable by its owner only."""
        path = Path(path)
        try:
            key = read_private(path, "vault key file")
        except PrivateFileError as exc:
            raise VaultError(str(exc)) from None
        if len(key) != KEY_SIZE:
            raise VaultError(
                f"vault key file {path} must hold exactly {KEY_SIZE} raw bytes, it holds {len(key)}"
            )
        return cls.from_key(key)

    @staticmethod
    def generate_key_file(path: Path | str) -> Path:
        """Write a fresh random key file with mode 0600; refuses to overwrite."""
        path = Path(path)
        try:
            write_atomically(path, nacl.utils.random(KEY_SIZE), overwrite=False)
        except FileExistsError:
            raise VaultError(f"vault key file {path} already exists") from None
        except OSError as exc:
            raise VaultError(f"cannot write vault key file {path}: {exc.strerror}") from None
        return path

    @property
    def kdf(self) -> Kdf:
        return Kdf.RAW_KEY if self._raw_key is not None else Kdf.ARGON2ID

    @property
    def derivations(self) -> int:
        """Argon2id derivations paid for in this run."""
        return self._derived

    def new_run(self) -> None:
        """Count derivations afresh, keeping the keys derived so far: each inventory
        load is a run (``vpnfleet serve`` loads one per revision with one vault)."""
        self._derived = 0

    def _key(self, sealed: Sealed, mark: Mark | None) -> bytes:
        kdf = self.kdf if sealed.kdf is None else sealed.kdf
        if kdf is not self.kdf:
            given = "a key file" if self._raw_key is not None else "a password"
            needed = "--vault-key-file" if kdf is Kdf.RAW_KEY else "--vault-password-file"
            raise VaultError(
                f"vault value{_where(mark)} was sealed with "
                f"{'a key file' if kdf is Kdf.RAW_KEY else 'a password'}, but {given} was "
                f"given: open it with {needed}",
                mark,
            )
        if self._raw_key is not None:
            return self._raw_key
        cache = (sealed.salt, sealed.params)
        key = self._keys.get(cache)
        if key is None:
            if self._derived >= self._max_derivations:
                raise VaultError(
                    f"vault value{_where(mark)} needs one more Argon2id derivation: the "
                    f"values opened so far are sealed under {self._derived} different "
                    "salts, each costing a derivation (about 0.5 s and 256 MiB at the "
                    "MODERATE limits), and one run pays for no more; re-seal them under "
                    "one salt with `vpnfleet vault rekey`",
                    mark,
                )
            key = nacl.pwhash.argon2id.kdf(
                KEY_SIZE,
                self._password,
                sealed.salt,
                opslimit=sealed.params.opslimit,
                memlimit=sealed.params.memlimit,
            )
            self._keys[cache] = key
            self._derived += 1
        return key

    def encrypt_string(self, text: str) -> str:
        """The vault text (base64, one line) sealing ``text``."""
        sealed = Sealed(
            2, self.kdf, self._params, self._seal_salt, nacl.utils.random(NONCE_SIZE), b""
        )
        box = nacl.secret.SecretBox(self._key(sealed, None))
        ciphertext = box.encrypt(text.encode("utf-8"), sealed.nonce).ciphertext
        params = _PARAMS.pack(self.kdf, self._params.opslimit, self._params.memlimit)
        header = MAGIC + params + sealed.salt
        return base64.b64encode(header + sealed.nonce + ciphertext).decode("ascii")

    def encrypt_yaml(self, name: str, text: str) -> str:
        """A ready-to-paste YAML entry ``name: !vault |`` with the text wrapped at 76."""
        lines = textwrap.wrap(self.encrypt_string(text), 76)
        return "\n".join([f"{name}: !vault |", *(f"  {line}" for line in lines)]) + "\n"

    def decrypt(self, vault_text: str) -> Secret:
        """Open a vault text; failures raise :class:`VaultError` naming the value's position."""
        mark = mark_of(vault_text)
        sealed = Sealed.parse(vault_text)
        try:
            box = nacl.secret.SecretBox(self._key(sealed, mark))
            plain = box.decrypt(sealed.ciphertext, sealed.nonce)
        except nacl.exceptions.CryptoError:
            raise VaultError(
                f"cannot decrypt vault value{_where(mark)}: wrong password or key, "
                "or the text was altered",
                mark,
            ) from None
        try:
            out = Secret(plain.decode("utf-8"))
        except UnicodeDecodeError:
            raise VaultError(f"vault value{_where(mark)} is not UTF-8 text", mark) from None
        out.mark = mark
        out.format_version = sealed.version
        return out


def _sealed(value: Any, where: str) -> Iterator[tuple[str, VaultText]]:
    if isinstance(value, VaultText):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _sealed(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _sealed(item, f"{where}[{index}]")


def view(source: Path | str, vault: Vault) -> list[tuple[str, Secret]]:
    """Every ``!vault`` value of a YAML file, or of every YAML file under an inventory
    directory, opened: ``("file:line:column key.path", plaintext)`` in file order.

    For ``vpnfleet vault view``; a value that cannot be opened raises :class:`VaultError`,
    a file that is not valid YAML raises :class:`InventoryError`.
    """
    found: list[tuple[str, Secret]] = []
    for file in yaml_files(source):
        for key, text in _sealed(load_yaml_file(file), ""):
            found.append((f"{text.mark} {key}", vault.decrypt(text)))
    return found


def yaml_files(source: Path | str) -> list[Path]:
    """``source`` itself, or every YAML file under it (hidden ones left out), sorted."""
    source = Path(source)
    if not source.is_dir():
        return [source]
    return sorted(
        p
        for p in source.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )


def _resealed(text: str, span: VaultSpan, sealed: str) -> str:
    """The scalar at ``span`` rewritten to hold ``sealed``, in the style it had."""
    old = text[span.start : span.end]
    if span.style in ("|", ">"):
        header, _, body = old.partition("\n")
        lines = body.split("\n")
        content = [n for n, line in enumerate(lines) if line.strip()]
        if not content:
            return old
        first = lines[content[0]]
        indent = first[: len(first) - len(first.lstrip(" "))]
        trailing = "\n".join(lines[content[-1] + 1 :])
        wrapped = "".join(f"{indent}{chunk}\n" for chunk in textwrap.wrap(sealed, 76))
        return f"{header}\n{wrapped}{trailing}"
    quote = span.style or ""
    return f"{quote}{sealed}{quote}"


def rekey(source: Path | str, old: Vault, new: Vault) -> list[tuple[Path, int]]:
    """Re-seal every ``!vault`` value of a YAML file, or of every YAML file under an
    inventory directory, in place: opened with ``old``, sealed with ``new`` (the current
    format, its limits and one salt). Files are checked whole before any is written;
    returns (file, values re-sealed) for each file that held any.
    """
    rewritten: list[tuple[Path, str, int]] = []
    for file in yaml_files(source):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VaultError(f"cannot read {file}: {exc}") from None
        spans = vault_spans(text, str(file))
        if not spans:
            continue
        for span in reversed(spans):  # from the end, so earlier offsets stay valid
            sealed = new.encrypt_string(old.decrypt(span.text))
            text = text[: span.start] + _resealed(text, span, sealed) + text[span.end :]
        rewritten.append((file, text, len(spans)))
    for file, text, _count in rewritten:
        write_atomically(file, text.encode("utf-8"), mode_of(file))
    return [(file, count) for file, _text, count in rewritten]
