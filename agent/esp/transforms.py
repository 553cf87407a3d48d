"""ESP encryption and integrity transforms (and AH's integrity): key checks, sealing,
opening and authenticators.

Each suite is built once per SA from the negotiated keys, creating its cryptography
objects (AESGCM, ChaCha20Poly1305, AES) once so the per-packet path allocates as little
as the library lets it. A suite seals ``(iv, header, plaintext, esn_high)`` into
``ciphertext || ICV`` and opens it back, returning None when the ICV does not verify;
``header`` is the ESP header as sent (SPI || low sequence half) and ``esn_high`` the high
half with ESN, which each transform authenticates in its own place.

- AES-GCM-16 (RFC 4106): key || 4-byte salt; nonce = salt || 8-byte explicit IV.
- ChaCha20-Poly1305 (RFC 7634 section 2): 32-byte key || 4-byte salt; same nonce form.
- AES-CBC (RFC 3602) with HMAC-SHA2-256-128 / 384-192 / 512-256 (RFC 4868): random
  16-byte IV; the ICV is the truncated HMAC over SPI || seq || IV || ciphertext (and the
  high sequence half with ESN, RFC 4303 section 2.2.1), checked before decrypting.

The integrity transforms are one table for both protocols. ESP's AES-CBC takes the
HMAC ones; AH (``ah.py``) takes any, through an ``Authenticator``:

- HMAC-SHA1-96 (RFC 2404) for old peers and HMAC-SHA2 (RFC 4868): truncated HMAC.
- AES-GMAC (RFC 4543, AUTH_AES_GMAC): AES-GCM with an empty plaintext; key || 4-byte
  salt, nonce = salt || 8-byte IV carried before the 16-byte tag.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305


class Encryption(StrEnum):
    """ESP encryption transforms, named as in strongSwan proposals."""

    AES128GCM16 = "aes128gcm16"
    AES256GCM16 = "aes256gcm16"
    CHACHA20POLY1305 = "chacha20poly1305"
    AES128 = "aes128"
    AES256 = "aes256"

    @property
    def is_aead(self) -> bool:
        return self not in (Encryption.AES128, Encryption.AES256)

    @property
    def transform_id(self) -> int:
        """The IANA "Transform Type 1" number (RFC 7296 section 3.3.2)."""
        return _ENCRYPTION[self][0]

    @property
    def key_bits(self) -> int:
        return _ENCRYPTION[self][1]

    @property
    def key_length(self) -> int:
        """Octets of keying material, salt included (RFC 4106 section 8.1, RFC 7634 2)."""
        return _ENCRYPTION[self][2]

    @classmethod
    def for_transform(cls, transform_id: int, key_bits: int) -> Encryption:
        """The transform negotiated as ``transform_id`` with ``key_bits``-bit keys;
        ValueError when this data plane does not implement it."""
        for encryption, (number, bits, _) in _ENCRYPTION.items():
            if (number, bits) == (transform_id, key_bits):
                return encryption
        raise ValueError(f"ESP encryption {transform_id} with {key_bits}-bit keys unsupported")


class Integrity(StrEnum):
    """Integrity transforms: ESP's for the non-AEAD ciphers (HMAC only) and AH's (all),
    named as in strongSwan proposals."""

    HMAC_SHA2_256_128 = "sha256"
    HMAC_SHA2_384_192 = "sha384"
    HMAC_SHA2_512_256 = "sha512"
    HMAC_SHA1_96 = "sha1"
    AES128GMAC = "aes128gmac"
    AES192GMAC = "aes192gmac"
    AES256GMAC = "aes256gmac"

    @property
    def transform_id(self) -> int:
        """The IANA "Transform Type 3" number (RFC 7296 section 3.3.2)."""
        return _INTEG[self].transform_id

    @property
    def key_length(self) -> int:
        """Octets of keying material: as long as the hash output for HMAC (RFC 2404
        section 3, RFC 4868 section 2.1.1), the AES key || 4-byte salt for GMAC
        (RFC 4543 section 7)."""
        return _INTEG[self].key_length

    @property
    def icv_length(self) -> int:
        """Octets of the (truncated) MAC; for GMAC the tag, without the IV before it."""
        return _INTEG[self].icv_length

    @property
    def iv_length(self) -> int:
        """Octets of IV carried before the ICV: 8 for GMAC (RFC 4543 section 4), else 0."""
        return _INTEG[self].iv_length

    @property
    def is_hmac(self) -> bool:
        """An HMAC transform (the only kind ESP's AES-CBC takes here)."""
        return _INTEG[self].hash_name is not None

    @classmethod
    def for_transform(cls, transform_id: int) -> Integrity:
        """The transform negotiated as ``transform_id``; ValueError when this data plane
        does not implement it."""
        for integrity, entry in _INTEG.items():
            if entry.transform_id == transform_id:
                return integrity
        raise ValueError(f"integrity transform {transform_id} unsupported")


class _IntegSpec(NamedTuple):
    hash_name: str | None
    """For hashlib; None for AES-GMAC."""
    key_length: int
    icv_length: int
    transform_id: int
    iv_length: int


# IANA transform ID (RFC 4106, RFC 7634, RFC 3602), key bits, octets of keying material
_ENCRYPTION = {
    Encryption.AES128GCM16: (20, 128, 16 + 4),
    Encryption.AES256GCM16: (20, 256, 32 + 4),
    Encryption.CHACHA20POLY1305: (28, 256, 32 + 4),
    Encryption.AES128: (12, 128, 16),
    Encryption.AES256: (12, 256, 32),
}

# IANA transform IDs: RFC 4868 (12-14), RFC 2404 (2), RFC 4543 (9-11).
_INTEG = {
    Integrity.HMAC_SHA2_256_128: _IntegSpec("sha256", 32, 16, 12, 0),
    Integrity.HMAC_SHA2_384_192: _IntegSpec("sha384", 48, 24, 13, 0),
    Integrity.HMAC_SHA2_512_256: _IntegSpec("sha512", 64, 32, 14, 0),
    Integrity.HMAC_SHA1_96: _IntegSpec("sha1", 20, 12, 2, 0),
    Integrity.AES128GMAC: _IntegSpec(None, 16 + 4, 16, 9, 8),
    Integrity.AES192GMAC: _IntegSpec(None, 24 + 4, 16, 10, 8),
    Integrity.AES256GMAC: _IntegSpec(None, 32 + 4, 16, 11, 8),
}

_SALT_LENGTH = 4
_AEAD_IV_LENGTH = 8
_AEAD_ICV_LENGTH = 16
_AES_BLOCK = 16


class CipherSuite(Protocol):
    """What an ESP SA needs from its transforms."""

    iv_length: int
    icv_length: int
    align: int
    """Payload || padding || 2 trailer octets is padded to a multiple of this."""

    def seal(self, iv: bytes, header: bytes, plaintext: bytes, esn_high: bytes) -> bytes:
        """``ciphertext || ICV``. ``header`` is SPI || low sequence half as sent;
        ``esn_high`` the high half with ESN (authenticated, not sent), else empty."""
        ...

    def open(self, iv: bytes, header: bytes, body: bytes, esn_high: bytes) -> bytes | None:
        """The plaintext, or None if the ICV does not verify or the body is malformed."""
        ...


class AeadSuite:
    """AES-GCM-16 (RFC 4106) or ChaCha20-Poly1305 (RFC 7634) with a salted nonce."""

    iv_length = _AEAD_IV_LENGTH
    icv_length = _AEAD_ICV_LENGTH
    align = 4

    __slots__ = ("_decrypt", "_encrypt", "aead", "salt")

    def __init__(self, encryption: Encryption, key_material: bytes) -> None:
        if not encryption.is_aead:
            raise ValueError(f"{encryption} is not an AEAD transform")
        _check_key(f"{encryption} key||salt", key_material, encryption.key_length)
        key, self.salt = key_material[:-_SALT_LENGTH], key_material[-_SALT_LENGTH:]
        """The implicit nonce part; the SA's hot path reads it and ``aead`` directly."""
        if encryption is Encryption.CHACHA20POLY1305:
            self.aead: AESGCM | ChaCha20Poly1305 = ChaCha20Poly1305(key)
        else:
            self.aead = AESGCM(key)
        self._encrypt = self.aead.encrypt
        self._decrypt = self.aead.decrypt

    def seal(self, iv: bytes, header: bytes, plaintext: bytes, esn_high: bytes = b"") -> bytes:
        return self._encrypt(self.salt + iv, plaintext, _aad(header, esn_high))

    def open(self, iv: bytes, header: bytes, body: bytes, esn_high: bytes = b"") -> bytes | None:
        try:
            return self._decrypt(self.salt + iv, body, _aad(header, esn_high))
        except InvalidTag:
            return None


def _aad(header: bytes, esn_high: bytes) -> bytes:
    # RFC 4106 section 5 / RFC 7634 section 4: with ESN the AAD is SPI || Seq high ||
    # Seq low; otherwise SPI || Seq (any other AAD, as in the GCM spec's tests, as is).
    return header[:4] + esn_high + header[4:] if esn_high else header


class CbcHmacSuite:
    """AES-CBC (RFC 3602) with a truncated HMAC-SHA2 ICV (RFC 4868)."""

    iv_length = _AES_BLOCK
    align = _AES_BLOCK

    __slots__ = ("_aes", "_mac", "icv_length")

    def __init__(
        self,
        encryption: Encryption,
        key: bytes,
        integrity: Integrity | None,
        integ_key: bytes,
    ) -> None:
        if encryption.is_aead:
            raise ValueError(f"{encryption} is an AEAD transform; it takes no integrity")
        if integrity is None:
            # RFC 8221 section 5: ESP encryption without integrity is not allowed.
            raise ValueError(f"{encryption} needs an integrity transform")
        if not integrity.is_hmac:
            raise ValueError(f"{encryption} takes an HMAC integrity transform, not {integrity}")
        _check_key(f"{encryption} key", key, encryption.key_length)
        self._mac = HmacAuthenticator(integrity, integ_key)
        # The AES key schedule object is reused; CBC binds the IV, so the Cipher
        # context is per packet (the library offers no IV reset).
        self._aes = algorithms.AES(key)
        self.icv_length = integrity.icv_length

    def _icv(self, header: bytes, iv: bytes, ciphertext: bytes, esn_high: bytes) -> bytes:
        # RFC 4303 section 2.2.1 / 3.3.2.2: the high half goes after the payload.
        return self._mac.icv(header + iv + ciphertext + esn_high)

    def seal(self, iv: bytes, header: bytes, plaintext: bytes, esn_high: bytes = b"") -> bytes:
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        return ciphertext + self._icv(header, iv, ciphertext, esn_high)

    def open(self, iv: bytes, header: bytes, body: bytes, esn_high: bytes = b"") -> bytes | None:
        split = len(body) - self.icv_length
        if split <= 0 or split % _AES_BLOCK:
            return None
        ciphertext = body[:split]
        if not hmac.compare_digest(self._icv(header, iv, ciphertext, esn_high), body[split:]):
            return None
        decryptor = Cipher(self._aes, modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


def integrity_icv(integrity: Integrity, key: bytes, data: bytes) -> bytes:
    """The truncated HMAC of ``data`` (RFC 4868 section 2.7.2's authenticator)."""
    return HmacAuthenticator(integrity, key).icv(data)


Octets = bytes | bytearray | memoryview
"""What an authenticator reads: any contiguous run of octets, so callers can hand over
slices of a packet without copying them."""


class Authenticator(Protocol):
    """An integrity transform keyed for one SA (what AH computes its ICV with)."""

    iv_length: int
    """Octets of IV the transform carries before its ICV (0: none)."""
    icv_length: int

    def sign(self, iv: bytes, data: Octets) -> bytes:
        """The ICV of ``data`` under ``iv`` (empty when ``iv_length`` is 0)."""
        ...

    def verify(self, iv: bytes, data: Octets, icv: bytes) -> bool:
        """Whether ``icv`` is the ICV of ``data`` under ``iv``, in constant time."""
        ...

    def sign_parts(self, iv: bytes, parts: Sequence[Octets]) -> bytes:
        """``sign`` of the concatenation of ``parts``, without making it."""
        ...

    def verify_parts(self, iv: bytes, parts: Sequence[Octets], icv: Octets) -> bool:
        """``verify`` of the concatenation of ``parts``, without making it."""
        ...


_IPAD = bytes(octet ^ 0x36 for octet in range(256))
_OPAD = bytes(octet ^ 0x5C for octet in range(256))


class HmacAuthenticator:
    """HMAC truncated to the transform's ICV length (RFC 2104; RFC 2404, RFC 4868).

    The two keyed hash states of RFC 2104 section 2 (the key padded to the hash's block
    and XORed with ipad, and with opad) are hashed once per SA; each ICV continues
    copies of them. A one-shot ``hmac.digest`` pads and hashes the key again on every
    call (and OpenSSL 3 looks the digest up again), which costs more than hashing a
    full-sized packet.
    """

    iv_length = 0

    __slots__ = ("_inner", "_outer", "icv_length")

    def __init__(self, integrity: Integrity, key: bytes) -> None:
        spec = _INTEG[integrity]
        if spec.hash_name is None:
            raise ValueError(f"{integrity} is not an HMAC transform")
        _check_key(f"{integrity} integrity key", key, spec.key_length)
        # The key is as long as the hash output (checked above), so shorter than its
        # block: RFC 2104 section 2 pads it with zeros.
        padded = key.ljust(hashlib.new(spec.hash_name).block_size, b"\x00")
        self._inner = hashlib.new(spec.hash_name, padded.translate(_IPAD))
        self._outer = hashlib.new(spec.hash_name, padded.translate(_OPAD))
        self.icv_length = spec.icv_length

    def icv(self, data: Octets) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: self.icv_length]

    def icv_parts(self, parts: Sequence[Octets]) -> bytes:
        """The ICV of the concatenation of ``parts``."""
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[: self.icv_length]

    def sign(self, iv: bytes, data: Octets) -> bytes:
        return self.icv(data)

    def verify(self, iv: bytes, data: Octets, icv: bytes) -> bool:
        return hmac.compare_digest(self.icv(data), icv)

    def sign_parts(self, iv: bytes, parts: Sequence[Octets]) -> bytes:
        return self.icv_parts(parts)

    def verify_parts(self, iv: bytes, parts: Sequence[Octets], icv: Octets) -> bool:
        return hmac.compare_digest(self.icv_parts(parts), icv)


class GmacAuthenticator:
    """AES-GMAC (RFC 4543): GCM over an empty plaintext with ``data`` as the AAD; the
    nonce is the 4-byte salt from the end of the keying material || the 8-byte IV. The
    AESGCM object (its key schedule) is made once per SA."""

    iv_length = _AEAD_IV_LENGTH
    icv_length = _AEAD_ICV_LENGTH

    __slots__ = ("_decrypt", "_encrypt", "_salt")

    def __init__(self, integrity: Integrity, key_material: bytes) -> None:
        if _INTEG[integrity].hash_name is not None:
            raise ValueError(f"{integrity} is not an AES-GMAC transform")
        _check_key(f"{integrity} key||salt", key_material, integrity.key_length)
        aead = AESGCM(key_material[:-_SALT_LENGTH])
        self._salt = key_material[-_SALT_LENGTH:]
        self._encrypt = aead.encrypt
        self._decrypt = aead.decrypt

    def sign(self, iv: bytes, data: Octets) -> bytes:
        return self._encrypt(self._salt + iv, b"", data)

    def verify(self, iv: bytes, data: Octets, icv: Octets) -> bool:
        if len(iv) != _AEAD_IV_LENGTH or len(icv) != _AEAD_ICV_LENGTH:
            return False
        try:
            self._decrypt(self._salt + iv, icv, data)
        except InvalidTag:
            return False
        return True

    def sign_parts(self, iv: bytes, parts: Sequence[Octets]) -> bytes:
        # GCM takes its AAD in one piece through this API (a streaming Cipher context
        # would cost a key schedule per packet), so the parts are joined once.
        return self._encrypt(self._salt + iv, b"", b"".join(parts))

    def verify_parts(self, iv: bytes, parts: Sequence[Octets], icv: Octets) -> bool:
        return self.verify(iv, b"".join(parts), icv)


def build_authenticator(integrity: Integrity, key: bytes) -> HmacAuthenticator | GmacAuthenticator:
    """The authenticator for one SA; raises ValueError naming the transform or key."""
    if integrity.is_hmac:
        return HmacAuthenticator(integrity, key)
    return GmacAuthenticator(integrity, key)


def build_suite(
    encryption: Encryption,
    enc_key: bytes,
    integrity: Integrity | None = None,
    integ_key: bytes = b"",
) -> AeadSuite | CbcHmacSuite:
    """The suite for one SA; raises ValueError naming the transform or key at fault."""
    if encryption.is_aead:
        if integrity is not None or integ_key:
            raise ValueError(f"{encryption} is an AEAD transform; it takes no integrity")
        return AeadSuite(encryption, enc_key)
    return CbcHmacSuite(encryption, enc_key, integrity, integ_key)


def _check_key(what: str, key: bytes, length: int) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"{what} must be bytes, got {type(key).__name__}")
    if len(key) != length:
        raise ValueError(f"{what} must be {length} octets, got {len(key)}")
