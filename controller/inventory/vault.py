"""Encrypted inventory values (``!vault``): vpnfleet's own format, and ansible-vault's.

vpnfleet's format seals with PyNaCl's SecretBox.

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

ansible-vault's format (what ``ansible-vault encrypt_string`` and ``ansible-vault
encrypt`` write) is opened with the same password, beside vpnfleet's own; see
:class:`AnsibleSealed`. A key file cannot open it: ansible-vault knows only passwords.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import struct
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from vpnfleet.protos.files import PrivateFileError, mode_of, read_private, write_atomically

from .errors import InventoryError, Mark
from .source import (
    ANSIBLE_VAULT_PREFIX,
    VaultSpan,
    VaultText,
    is_ansible_vault,
    load_yaml_file,
    load_yaml_text,
    mark_of,
    vault_spans,
)

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


ANSIBLE_MAGIC = ANSIBLE_VAULT_PREFIX.rstrip(";")
"""The first field of an ansible-vault header: ``$ANSIBLE_VAULT;1.1;AES256`` or
``$ANSIBLE_VAULT;1.2;AES256;LABEL``."""
ANSIBLE_CIPHER = "AES256"
ANSIBLE_ITERATIONS = 10_000  # PBKDF2-HMAC-SHA256
ANSIBLE_SALT_SIZE = 32
ANSIBLE_KEY_SIZE = 32  # AES-256 key, then HMAC-SHA256 key, then a 16-byte counter block
ANSIBLE_LINE = 80  # hex characters per line of an ansible-vault body


class VaultFormat(enum.Enum):
    """What a vault text was sealed in."""

    VPNFLEET_1 = "vpnfleet format 1"
    VPNFLEET_2 = "vpnfleet format 2"
    ANSIBLE_1_1 = "ansible-vault 1.1"
    ANSIBLE_1_2 = "ansible-vault 1.2"


_ANSIBLE_VERSIONS = {"1.1": VaultFormat.ANSIBLE_1_1, "1.2": VaultFormat.ANSIBLE_1_2}


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
    sealed_in: VaultFormat = VaultFormat.VPNFLEET_2
    vault_id: str | None = None
    """The vault id label of an ansible-vault 1.2 text."""

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


@dataclass(frozen=True, slots=True)
class AnsibleSealed:
    """An ansible-vault text taken apart.

    The envelope: a header line ``$ANSIBLE_VAULT;1.1;AES256`` (1.2 adds ``;LABEL``, the
    vault id), then lines of hex. The hex decodes to three lines of hex: the salt (32
    random bytes), the HMAC-SHA256 of the ciphertext, the ciphertext. PBKDF2-HMAC-SHA256
    (10000 iterations) of the password and the salt gives 80 bytes: the AES-256 key, the
    HMAC key and the initial counter block of AES-256-CTR, which encrypts the plaintext
    padded as PKCS#7 (16-byte blocks).
    """

    format: VaultFormat
    vault_id: str | None
    salt: bytes
    mac: bytes
    ciphertext: bytes

    @classmethod
    def parse(cls, text: str, mark: Mark | None, what: str = "value") -> AnsibleSealed:
        """Split an ansible-vault text (``what``: a value or a file); a malformed or
        truncated one raises VaultError."""
        where = _where(mark)
        header, _, body = text.strip().partition("\n")
        fields = [f.strip() for f in header.strip().split(";")]
        if len(fields) < 3 or fields[0] != ANSIBLE_MAGIC:
            raise VaultError(f"ansible-vault {what}{where} has no valid header line", mark)
        version, cipher = fields[1], fields[2]
        if version not in _ANSIBLE_VERSIONS:
            raise VaultError(
                f"ansible-vault {what}{where} is in format {version!r}; known: 1.1, 1.2 "
                "(re-encrypt it with `ansible-vault rekey` or `ansible-vault encrypt_string`)",
                mark,
            )
        if cipher != ANSIBLE_CIPHER:
            raise VaultError(
                f"ansible-vault {what}{where} uses cipher {cipher!r}; only {ANSIBLE_CIPHER} "
                "is known",
                mark,
            )
        vault_id = fields[3] if len(fields) > 3 and fields[3] else None
        truncated = VaultError(
            f"ansible-vault {what}{where} is truncated or damaged (expected hex lines "
            "holding a salt, an HMAC and a ciphertext)",
            mark,
        )
        try:
            inner = binascii.unhexlify("".join(body.split()))
            salt_hex, mac_hex, ciphertext_hex = inner.split(b"\n", 2)
            salt = binascii.unhexlify(salt_hex)
            mac = binascii.unhexlify(mac_hex)
            ciphertext = binascii.unhexlify(ciphertext_hex)
        except (binascii.Error, ValueError):
            raise truncated from None
        block = algorithms.AES.block_size // 8
        if not salt or len(mac) != 32 or not ciphertext or len(ciphertext) % block:
            raise truncated
        return cls(_ANSIBLE_VERSIONS[version], vault_id, salt, mac, ciphertext)

    def envelope(self) -> str:
        """The text ansible-vault writes: the header, then hex in lines of 80."""
        version = next(v for v, f in _ANSIBLE_VERSIONS.items() if f is self.format)
        header = [ANSIBLE_MAGIC, version, ANSIBLE_CIPHER]
        if self.vault_id is not None:
            header.append(self.vault_id)
        inner = b"\n".join(
            binascii.hexlify(part) for part in (self.salt, self.mac, self.ciphertext)
        )
        body = binascii.hexlify(inner).decode("ascii")
        lines = [body[i : i + ANSIBLE_LINE] for i in range(0, len(body), ANSIBLE_LINE)]
        return "\n".join([";".join(header), *lines])


def _password_from_script(path: Path) -> bytes:
    """What an executable vault password file prints (its standard error and input are
    the operator's, so that it may ask for something)."""
    try:
        done = subprocess.run([str(path)], stdout=subprocess.PIPE, check=False)
    except OSError as exc:
        raise VaultError(f"cannot run vault password script {path}: {exc.strerror}") from None
    if done.returncode != 0:
        raise VaultError(
            f"vault password script {path} exited with status {done.returncode}; no "
            "password read (the file is executable, so it is run as a script, as in Ansible)"
        )
    return done.stdout.strip(b"\r\n")


def _ansible_keys(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    """The AES key, the HMAC key and the initial counter block for one salt."""
    block = algorithms.AES.block_size // 8
    derived = PBKDF2HMAC(
        algorithm=hashes.SHA256(),
        length=2 * ANSIBLE_KEY_SIZE + block,
        salt=salt,
        iterations=ANSIBLE_ITERATIONS,
    ).derive(password)
    return (
        derived[:ANSIBLE_KEY_SIZE],
        derived[ANSIBLE_KEY_SIZE : 2 * ANSIBLE_KEY_SIZE],
        derived[2 * ANSIBLE_KEY_SIZE :],
    )


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
        self._ansible_keys: dict[bytes, tuple[bytes, bytes, bytes]] = {}

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
        vault._ansible_keys = {}
        return vault

    @classmethod
    def from_password_file(
        cls,
        path: Path | str,
        params: KdfParams = MODERATE,
        *,
        max_derivations: int = MAX_DERIVATIONS,
    ) -> Vault:
        """A vault keyed by the password in a file (surrounding whitespace ignored) or,
        as with Ansible's ``--vault-password-file``, printed by the file when it is an
        executable script (run without arguments; the line breaks around its output
        ignored)."""
        path = Path(path)
        if path.is_file() and os.access(path, os.X_OK):
            password = _password_from_script(path)
        else:
            try:
                password = path.read_bytes().strip()
            except OSError as exc:
                raise VaultError(
                    f"cannot read vault password file {path}: {exc.strerror}"
                ) from None
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

    def _ansible_key(
        self, salt: bytes, mark: Mark | None, what: str = "value"
    ) -> tuple[bytes, bytes, bytes]:
        if self._raw_key is not None:
            raise VaultError(
                f"ansible-vault {what}{_where(mark)} needs the vault password: a key file "
                "cannot open it (give --vault-password-file)",
                mark,
            )
        keys = self._ansible_keys.get(salt)
        if keys is None:
            keys = self._ansible_keys[salt] = _ansible_keys(self._password, salt)
        return keys

    def _open_ansible(self, text: str, mark: Mark | None, what: str = "value") -> Secret:
        sealed = AnsibleSealed.parse(text, mark, what)
        aes_key, mac_key, counter = self._ansible_key(sealed.salt, mark, what)
        check = hmac.HMAC(mac_key, hashes.SHA256())
        check.update(sealed.ciphertext)
        unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
        try:
            check.verify(sealed.mac)  # before anything is decrypted
            decryptor = Cipher(algorithms.AES(aes_key), modes.CTR(counter)).decryptor()
            padded = decryptor.update(sealed.ciphertext) + decryptor.finalize()
            plain = unpadder.update(padded) + unpadder.finalize()
        except (InvalidSignature, ValueError):
            raise VaultError(
                f"cannot decrypt ansible-vault {what}{_where(mark)}: wrong password, "
                "or the text was altered",
                mark,
            ) from None
        return _secret(plain, mark, sealed.format, sealed.vault_id)

    def encrypt_ansible(self, text: str, vault_id: str | None = None) -> str:
        """``text`` sealed as ``ansible-vault`` seals it (format 1.2 with a vault id,
        else 1.1): the envelope, header line and hex lines."""
        salt = nacl.utils.random(ANSIBLE_SALT_SIZE)
        aes_key, mac_key, counter = self._ansible_key(salt, None)
        padder = padding.PKCS7(algorithms.AES.block_size).padder()
        padded = padder.update(text.encode("utf-8")) + padder.finalize()
        encryptor = Cipher(algorithms.AES(aes_key), modes.CTR(counter)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        mac = hmac.HMAC(mac_key, hashes.SHA256())
        mac.update(ciphertext)
        fmt = VaultFormat.ANSIBLE_1_1 if vault_id is None else VaultFormat.ANSIBLE_1_2
        return AnsibleSealed(fmt, vault_id, salt, mac.finalize(), ciphertext).envelope()

    def open_file(self, text: str, path: Path | str) -> Any:
        """A whole file encrypted with ``ansible-vault encrypt``, opened and parsed as
        YAML. Its string values come back as :class:`Secret` (shown as ``<secret>``, as
        ``!vault`` values are): what was worth encrypting stays out of listings."""
        plain = self.decrypt_file(text, path)
        return _secret_strings(load_yaml_text(plain, str(path)), plain.sealed_in)

    def decrypt_file(self, text: str, path: Path | str) -> Secret:
        """The plaintext of a whole file encrypted with ``ansible-vault encrypt``."""
        return self._open_ansible(text, Mark(str(path), 1, 1), "file")

    def decrypt(self, vault_text: str) -> Secret:
        """Open a vault text; failures raise :class:`VaultError` naming the value's position."""
        mark = mark_of(vault_text)
        if is_ansible_vault(vault_text):
            return self._open_ansible(vault_text, mark)
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
        fmt = VaultFormat.VPNFLEET_1 if sealed.version == 1 else VaultFormat.VPNFLEET_2
        return _secret(plain, mark, fmt)


def _secret_strings(value: Any, sealed_in: VaultFormat) -> Any:
    """``value`` with every string inside (not keys, not ``!vault`` texts, which are
    opened later) turned into a :class:`Secret` keeping its mark; containers change in
    place, so values shared through YAML aliases stay shared."""
    seen: set[int] = set()

    def secret(item: Any) -> Any:
        if isinstance(item, str) and not isinstance(item, VaultText | Secret):
            out = Secret(item)
            out.mark = mark_of(item)
            out.sealed_in = sealed_in
            return out
        if isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            keys = list(item) if isinstance(item, dict) else range(len(item))
            for key in keys:
                item[key] = secret(item[key])
        return item

    return secret(value)


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
    directory, opened: ``("file:line:column key.path", plaintext)`` in file order; a
    file encrypted whole by ansible-vault gives ``("file:1:1 (file)", its plaintext)``.

    For ``vpnfleet vault view``; a value that cannot be opened raises :class:`VaultError`,
    a file that is not valid YAML raises :class:`InventoryError`.
    """
    found: list[tuple[str, Secret]] = []
    for file in yaml_files(source):
        text = _read(file)
        if is_ansible_vault(text):  # encrypted whole: the file's plaintext
            found.append((f"{file}:1:1 (file)", vault.decrypt_file(text, file)))
        for key, sealed in _sealed(load_yaml_file(file, vault=vault), ""):
            found.append((f"{sealed.mark} {key}", vault.decrypt(sealed)))
    return found


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VaultError(f"cannot read {file}: {exc}") from None


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
        chunks = sealed.split("\n") if is_ansible_vault(sealed) else textwrap.wrap(sealed, 76)
        wrapped = "".join(f"{indent}{chunk}\n" for chunk in chunks)
        return f"{header}\n{wrapped}{trailing}"
    if is_ansible_vault(sealed):
        raise VaultError(
            f"ansible-vault value at {span.text.mark} is not a block scalar; write it as "
            "`!vault |` with the header on its own line, then run rekey again",
            span.text.mark,
        )
    quote = span.style or ""
    return f"{quote}{sealed}{quote}"


def _reseal(old: Vault, new: Vault, text: str, mark: Mark | None) -> str:
    """One vault text opened with ``old`` and sealed with ``new``: an ansible-vault text
    stays one (with its vault id), so ansible-core still reads it."""
    secret = old.decrypt(text)
    if not is_ansible_vault(text):
        return new.encrypt_string(secret)
    if new.kdf is Kdf.RAW_KEY:
        raise VaultError(
            f"ansible-vault value{_where(mark)} can only be sealed with a password "
            "(ansible-vault has no key files): give --new-vault-password-file",
            mark,
        )
    return new.encrypt_ansible(secret, secret.vault_id)


def rekey(source: Path | str, old: Vault, new: Vault) -> list[tuple[Path, int]]:
    """Re-seal every ``!vault`` value of a YAML file, or of every YAML file under an
    inventory directory, in place: opened with ``old``, sealed with ``new`` (the current
    format, its limits and one salt). ansible-vault values and files encrypted whole
    with ansible-vault are sealed again by ansible-vault's rules (a fresh salt each, the
    vault id kept), so ansible-core still reads them. Files are checked whole before any
    is written; returns (file, values re-sealed) for each file that held any.
    """
    rewritten: list[tuple[Path, str, int]] = []
    for file in yaml_files(source):
        text = _read(file)
        if is_ansible_vault(text):  # a whole file encrypted with ansible-vault encrypt
            whole = VaultText(text)
            whole.mark = Mark(str(file), 1, 1)
            rewritten.append((file, _reseal(old, new, whole, whole.mark) + "\n", 1))
            continue
        spans = vault_spans(text, str(file))
        if not spans:
            continue
        for span in reversed(spans):  # from the end, so earlier offsets stay valid
            sealed = _reseal(old, new, span.text, span.text.mark)
            text = text[: span.start] + _resealed(text, span, sealed) + text[span.end :]
        rewritten.append((file, text, len(spans)))
    for file, text, _count in rewritten:
        write_atomically(file, text.encode("utf-8"), mode_of(file))
    return [(file, count) for file, _text, count in rewritten]


def _secret(
    plain: bytes, mark: Mark | None, sealed_in: VaultFormat, vault_id: str | None = None
) -> Secret:
    """An opened value: its text, where it was written and how it was sealed."""
    try:
        out = Secret(plain.decode("utf-8"))
    except UnicodeDecodeError:
        raise VaultError(f"vault value{_where(mark)} is not UTF-8 text", mark) from None
    out.mark = mark
    out.sealed_in = sealed_in
    out.vault_id = vault_id
    return out
