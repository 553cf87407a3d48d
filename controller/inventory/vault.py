"""Encrypted inventory values (``!vault``), sealed with PyNaCl's SecretBox.

A vault text is base64 of ``MAGIC | salt (16) | nonce (24) | SecretBox ciphertext``.
With a password, the box key is Argon2id(password, salt); with a key file, the file's
32 raw bytes are the key and the salt is carried but unused, so either kind of text has
one format. Argon2id runs with the INTERACTIVE limits: the password guards text kept in
git, and the cost must stay small enough to open a whole inventory quickly.
"""

from __future__ import annotations

import base64
import binascii
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from vpnfleet.protos.files import write_atomically

from .errors import InventoryError, Mark
from .source import VaultText, load_yaml_file, mark_of

MAGIC = b"VPNFLEET-VAULT1"
SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES  # 16
NONCE_SIZE = nacl.secret.SecretBox.NONCE_SIZE  # 24
KEY_SIZE = nacl.secret.SecretBox.KEY_SIZE  # 32
_HEADER = len(MAGIC) + SALT_SIZE + NONCE_SIZE


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

    def __repr__(self) -> str:
        return "<secret>"


def _where(mark: Mark | None) -> str:
    return f" at {mark.path}:{mark.line}" if mark else ""


class Vault:
    """Opens and seals vault texts with a password or a raw key."""

    def __init__(self, password: bytes) -> None:
        if not password:
            raise VaultError("vault password is empty")
        self._password = password
        self._raw_key: bytes | None = None
        self._keys: dict[bytes, bytes] = {}
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
        vault._keys = {}
        vault._seal_salt = bytes(SALT_SIZE)
        return vault

    @classmethod
    def from_password_file(cls, path: Path | str) -> Vault:
        """A vault keyed by the password in a file (surrounding whitespace ignored)."""
        path = Path(path)
        try:
            password = path.read_bytes().strip()
        except OSError as exc:
            raise VaultError(f"cannot read vault password file {path}: {exc.strerror}") from None
        if not password:
            raise VaultError(f"vault password file {path} is empty")
        return cls(password)

    @classmethod
    def from_key_file(cls, path: Path | str) -> Vault:
        """A vault keyed by a file of exactly 32 raw bytes, readable by its owner only."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
            key = path.read_bytes()
        except OSError as exc:
            raise VaultError(f"cannot read vault key file {path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise VaultError(
                f"vault key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
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

    def _key(self, salt: bytes) -> bytes:
        if self._raw_key is not None:
            return self._raw_key
        key = self._keys.get(salt)
        if key is None:
            key = nacl.pwhash.argon2id.kdf(
                KEY_SIZE,
                self._password,
                salt,
                opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
                memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
            )
            self._keys[salt] = key
        return key

    def encrypt_string(self, text: str) -> str:
        """The vault text (base64, one line) sealing ``text``."""
        salt = self._seal_salt
        nonce = nacl.utils.random(NONCE_SIZE)
        box = nacl.secret.SecretBox(self._key(salt))
        sealed = box.encrypt(text.encode("utf-8"), nonce).ciphertext
        return base64.b64encode(MAGIC + salt + nonce + sealed).decode("ascii")

    def encrypt_yaml(self, name: str, text: str) -> str:
        """A ready-to-paste YAML entry ``name: !vault |`` with the text wrapped at 76."""
        lines = textwrap.wrap(self.encrypt_string(text), 76)
        return "\n".join([f"{name}: !vault |", *(f"  {line}" for line in lines)]) + "\n"

    def decrypt(self, vault_text: str) -> Secret:
        """Open a vault text; failures raise :class:`VaultError` naming the value's position."""
        mark = mark_of(vault_text)
        try:
            blob = base64.b64decode("".join(vault_text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise VaultError(f"vault value{_where(mark)} is not valid base64", mark) from None
        if not blob.startswith(MAGIC) or len(blob) < _HEADER + nacl.secret.SecretBox.MACBYTES:
            raise VaultError(
                f"vault value{_where(mark)} is not a vpnfleet vault text "
                f"(expected it to start with {MAGIC.decode()})",
                mark,
            )
        salt = blob[len(MAGIC) : len(MAGIC) + SALT_SIZE]
        nonce = blob[len(MAGIC) + SALT_SIZE : _HEADER]
        try:
            plain = nacl.secret.SecretBox(self._key(salt)).decrypt(blob[_HEADER:], nonce)
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
    source = Path(source)
    if source.is_dir():
        files = sorted(
            p
            for p in source.rglob("*")
            if p.suffix in (".yaml", ".yml")
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(source).parts)
        )
    else:
        files = [source]
    found: list[tuple[str, Secret]] = []
    for file in files:
        for key, text in _sealed(load_yaml_file(file), ""):
            found.append((f"{text.mark} {key}", vault.decrypt(text)))
    return found
