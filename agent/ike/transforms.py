"""The agent's algorithm registry: transforms keyed by their IANA IDs (RFC 7296
section 3.3.2, RFC 8247).

Each algorithm is a small frozen object: ``prf_for(PrfId.HMAC_SHA2_256)``,
``integ_for(IntegId.HMAC_SHA2_256_128)``, ``encr_for(EncrId.AES_GCM_16, 256)``,
``KeyExchange(DhGroup.CURVE25519)``. Unknown IDs raise UnsupportedTransform. What
proposals may hold (NEGOTIABLE) and the strongSwan keywords that name it
(PROPOSAL_TOKENS) are derived from these tables; the plan's validation, proposal
parsing and proposal building all read them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.utils import CryptographyDeprecationWarning

try:
    with warnings.catch_warnings():
        # cryptography deprecates finite-field DH and warns on each use of its names;
        # they are bound once here. See MODP_2048_PARAMETERS.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        from cryptography.hazmat.primitives.asymmetric.dh import (
            DHParameterNumbers,
            DHParameters,
            DHPrivateKey,
            DHPrivateNumbers,
            DHPublicNumbers,
        )
    _HAVE_FFDH = True
except ImportError:
    _HAVE_FFDH = False
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .constants import DhGroup, EncrId, EsnId, IntegId, PrfId, ProtocolId, TransformType
from .errors import CryptoError, LocalError, UnsupportedTransform

# -- names ---------------------------------------------------------------------------

# strongSwan's keywords (swanctl.conf ``proposals``) for every transform we can name, also
# those this core does not implement, so that what a peer offers is shown in the words
# its operator wrote. ``{bits}`` is the Key Length attribute (RFC 7296 section 3.3.5).
_ENCR_KEYWORDS: dict[int, str] = {
    EncrId.DES3: "3des",
    EncrId.NULL: "null",
    EncrId.AES_CBC: "aes{bits}",
    EncrId.AES_CTR: "aes{bits}ctr",
    EncrId.AES_CCM_8: "aes{bits}ccm8",
    EncrId.AES_CCM_12: "aes{bits}ccm12",
    EncrId.AES_CCM_16: "aes{bits}ccm16",
    EncrId.AES_GCM_8: "aes{bits}gcm8",
    EncrId.AES_GCM_12: "aes{bits}gcm12",
    EncrId.AES_GCM_16: "aes{bits}gcm16",
    EncrId.CHACHA20_POLY1305: "chacha20poly1305",
}
_KEYWORDS: dict[TransformType, dict[int, str]] = {
    TransformType.PRF: {
        PrfId.HMAC_MD5: "prfmd5",
        PrfId.HMAC_SHA1: "prfsha1",
        PrfId.AES128_XCBC: "prfaesxcbc",
        PrfId.HMAC_SHA2_256: "prfsha256",
        PrfId.HMAC_SHA2_384: "prfsha384",
        PrfId.HMAC_SHA2_512: "prfsha512",
        PrfId.AES128_CMAC: "prfaescmac",
    },
    TransformType.INTEG: {
        IntegId.HMAC_MD5_96: "md5",
        IntegId.HMAC_SHA1_96: "sha1",
        IntegId.AES_XCBC_96: "aesxcbc",
        IntegId.HMAC_SHA2_256_128: "sha256",
        IntegId.HMAC_SHA2_384_192: "sha384",
        IntegId.HMAC_SHA2_512_256: "sha512",
        IntegId.AES_128_GMAC: "aes128gmac",
        IntegId.AES_192_GMAC: "aes192gmac",
        IntegId.AES_256_GMAC: "aes256gmac",
    },
    TransformType.DH: {
        DhGroup.MODP_1024: "modp1024",
        DhGroup.MODP_1536: "modp1536",
        DhGroup.MODP_2048: "modp2048",
        DhGroup.MODP_3072: "modp3072",
        DhGroup.MODP_4096: "modp4096",
        DhGroup.ECP_256: "ecp256",
        DhGroup.ECP_384: "ecp384",
        DhGroup.ECP_521: "ecp521",
        DhGroup.CURVE25519: "x25519",
        DhGroup.CURVE448: "x448",
    },
    TransformType.ESN: {EsnId.NO_ESN: "noesn", EsnId.ESN: "esn"},
}
KEYWORD_ALIASES: dict[str, str] = {"curve25519": "x25519"}
"""Further names strongSwan accepts for a transform, and the keyword they stand for."""


def transform_keyword(kind: int, id: int, key_bits: int | None = None) -> str | None:
    """strongSwan's keyword for one transform (``aes256``, ``sha256``, ``x25519``), None
    when it has none (an unknown ID, or a cipher that needs a key length and has none)."""
    if kind == TransformType.ENCR:
        template = _ENCR_KEYWORDS.get(id)
        if template is None or ("{bits}" in template and not key_bits):
            return None
        return template.format(bits=key_bits)
    try:
        return _KEYWORDS[TransformType(kind)].get(id)
    except ValueError:
        return None


def _keyword(kind: TransformType, id: int, key_bits: int | None = None) -> str:
    keyword = transform_keyword(kind, id, key_bits)
    assert keyword is not None, (kind, id, key_bits)
    return keyword


# -- PRF and integrity ---------------------------------------------------------


@dataclass(frozen=True)
class Prf:
    """An HMAC PRF (RFC 4868 for the SHA-2 ones). Key and output length = digest size."""

    id: PrfId
    hash_name: str
    output_length: int
    negotiable: bool = True
    """Offered and accepted in proposals; False for what only test vectors use."""

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.hash_name)

    @property
    def name(self) -> str:
        return _keyword(TransformType.PRF, self.id)

    @property
    def key_length(self) -> int:
        """Preferred key length: SK_d, SK_pi and SK_pr have this size (section 2.14)."""
        return self.output_length


PRFS: dict[int, Prf] = {
    p.id: p
    for p in (
        # SHA-1 is kept for the published IKEv2 KDF vectors and legacy peers only.
        Prf(PrfId.HMAC_SHA1, "sha1", 20, negotiable=False),
        Prf(PrfId.HMAC_SHA2_256, "sha256", 32),
        Prf(PrfId.HMAC_SHA2_384, "sha384", 48),
        Prf(PrfId.HMAC_SHA2_512, "sha512", 64),
    )
}


_IKE_ESP_AH = frozenset({ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH})
_AH = frozenset({ProtocolId.AH})


@dataclass(frozen=True)
class Integ:
    """An integrity transform: truncated HMAC (RFC 4868 section 2.3, RFC 2404), or
    AES-GMAC (RFC 4543), which only AH uses and this core never computes."""

    id: IntegId
    hash_name: str | None
    """The HMAC's hash; None for AES-GMAC."""
    key_length: int
    """Octets of keying material (section 2.17): the HMAC key, or the AES-GMAC key with
    its 4-octet salt (RFC 4543 section 7)."""
    icv_length: int
    implied_prf: PrfId | None
    """The PRF of the same hash: an IKE proposal that names none uses it (strongSwan)."""
    protocols: frozenset[ProtocolId] = _IKE_ESP_AH
    """The SAs whose proposals offer and accept it (RFC 7296 section 3.3.1 protocol
    IDs); empty for what only test vectors use."""

    @property
    def name(self) -> str:
        return _keyword(TransformType.INTEG, self.id)

    def sign(self, key: bytes, data: bytes) -> bytes:
        if self.hash_name is None:  # only IKE SAs sign here, and none negotiates GMAC
            raise LocalError(f"{self.name} is an AH integrity algorithm, not an IKE one")
        return hmac.digest(key, data, self.hash_name)[: self.icv_length]

    def verify(self, key: bytes, data: bytes, icv: bytes) -> bool:
        return hmac.compare_digest(self.sign(key, data), icv)


INTEGS: dict[int, Integ] = {
    i.id: i
    for i in (
        # SHA-1 protects no IKEv2 SA or ESP here (the published IKEv2 KDF vectors use it);
        # AH offers it to old peers where the inventory asks (RFC 2404).
        Integ(IntegId.HMAC_SHA1_96, "sha1", 20, 12, PrfId.HMAC_SHA1, _AH),
        Integ(IntegId.HMAC_SHA2_256_128, "sha256", 32, 16, PrfId.HMAC_SHA2_256),
        Integ(IntegId.HMAC_SHA2_384_192, "sha384", 48, 24, PrfId.HMAC_SHA2_384),
        Integ(IntegId.HMAC_SHA2_512_256, "sha512", 64, 32, PrfId.HMAC_SHA2_512),
        # RFC 4543: a 16-octet ICV; the key and a 4-octet salt come from KEYMAT.
        Integ(IntegId.AES_128_GMAC, None, 16 + 4, 16, None, _AH),
        Integ(IntegId.AES_192_GMAC, None, 24 + 4, 16, None, _AH),
        Integ(IntegId.AES_256_GMAC, None, 32 + 4, 16, None, _AH),
    )
}


def prf_for(prf_id: int) -> Prf:
    try:
        return PRFS[prf_id]
    except KeyError:
        raise UnsupportedTransform(f"PRF transform {prf_id} is not supported") from None


def integ_for(integ_id: int) -> Integ:
    try:
        return INTEGS[integ_id]
    except KeyError:
        raise UnsupportedTransform(f"integrity transform {integ_id} is not supported") from None


# -- encryption ------------------------------------------------------------------


class EncrMode(Enum):
    """How an encryption transform protects data."""

    CBC = "cbc"
    """AES-CBC (RFC 3602), with a separate integrity transform."""
    GCM = "gcm"
    """AES-GCM with a 16-octet ICV (RFC 5282 for IKE, RFC 4106 for ESP)."""
    CHACHA20_POLY1305 = "chacha20-poly1305"
    """ChaCha20-Poly1305 (RFC 7634)."""


@dataclass(frozen=True)
class Encr:
    """An encryption transform with a fixed key size.

    ``key_length`` is the keying material taken from prf+ for SK_e / ESP keys: for
    AEAD it includes the 4-byte salt (RFC 5282 section 7.1, RFC 7634 section 2).
    """

    id: EncrId
    key_bits: int
    mode: EncrMode

    @property
    def name(self) -> str:
        return _keyword(TransformType.ENCR, self.id, self.key_bits)

    @property
    def key_attribute(self) -> int | None:
        """The Key Length attribute it is offered with; ChaCha20-Poly1305 has none
        (RFC 7634 section 2), AES always has one (RFC 7296 section 3.3.5)."""
        return None if self.mode is EncrMode.CHACHA20_POLY1305 else self.key_bits

    @property
    def is_aead(self) -> bool:
        return self.mode is not EncrMode.CBC

    @property
    def salt_length(self) -> int:
        return 0 if self.mode is EncrMode.CBC else 4

    @property
    def key_length(self) -> int:
        return self.key_bits // 8 + self.salt_length

    @property
    def iv_length(self) -> int:
        return 16 if self.mode is EncrMode.CBC else 8

    @property
    def block_size(self) -> int:
        """Plaintext alignment: AES-CBC needs 16; GCM and ChaCha20 need none."""
        return 16 if self.mode is EncrMode.CBC else 1

    @property
    def icv_length(self) -> int:
        return 16 if self.is_aead else 0

    def _split(self, key: bytes) -> tuple[bytes, bytes]:
        if len(key) != self.key_length:  # our keys, derived for this transform
            raise LocalError(f"{self.name} needs {self.key_length} key bytes, got {len(key)}")
        cut = self.key_bits // 8
        return key[:cut], key[cut:]

    def _aead(self, cipher_key: bytes) -> AESGCM | ChaCha20Poly1305:
        if self.mode is EncrMode.GCM:
            return AESGCM(cipher_key)
        return ChaCha20Poly1305(cipher_key)

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """CBC: ciphertext. AEAD: ciphertext || 16-byte tag; nonce = salt || iv."""
        if len(iv) != self.iv_length:  # what we encrypt is ours: a wrong size is our bug
            raise LocalError(f"{self.name} needs a {self.iv_length}-byte IV, got {len(iv)}")
        cipher_key, salt = self._split(key)
        if self.mode is EncrMode.CBC:
            if len(plaintext) % 16:
                raise LocalError("AES-CBC plaintext is not block aligned")
            enc = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
            return enc.update(plaintext) + enc.finalize()
        return self._aead(cipher_key).encrypt(salt + iv, plaintext, aad)

    def decrypt(self, key: bytes, iv: bytes, ciphertext: bytes, aad: bytes = b"") -> bytes:
        if len(iv) != self.iv_length:
            raise CryptoError(f"{self.name} needs a {self.iv_length}-byte IV, got {len(iv)}")
        cipher_key, salt = self._split(key)
        if self.mode is EncrMode.CBC:
            if not ciphertext or len(ciphertext) % 16:
                raise CryptoError(
                    f"AES-CBC ciphertext of {len(ciphertext)} bytes is not block aligned"
                )
            dec = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
            return dec.update(ciphertext) + dec.finalize()
        if len(ciphertext) < 16:
            raise CryptoError(
                f"{self.name} ciphertext of {len(ciphertext)} bytes is shorter than its tag"
            )
        try:
            return self._aead(cipher_key).decrypt(salt + iv, ciphertext, aad)
        except InvalidTag:
            raise CryptoError(f"{self.name} integrity check failed") from None


ENCRS: dict[tuple[int, int], Encr] = {
    (e.id, e.key_bits): e
    for e in (
        Encr(EncrId.AES_CBC, 128, EncrMode.CBC),
        Encr(EncrId.AES_CBC, 256, EncrMode.CBC),
        Encr(EncrId.AES_GCM_16, 128, EncrMode.GCM),
        Encr(EncrId.AES_GCM_16, 256, EncrMode.GCM),
        Encr(EncrId.CHACHA20_POLY1305, 256, EncrMode.CHACHA20_POLY1305),
    )
}
"""Every encryption transform this core implements, by (ID, key bits)."""


def encr_for(encr_id: int, key_bits: int | None) -> Encr:
    """Look up an encryption transform; ChaCha20-Poly1305 carries no Key Length (RFC 7634)."""
    if encr_id == EncrId.CHACHA20_POLY1305:
        if key_bits not in (None, 256):
            raise UnsupportedTransform("ChaCha20-Poly1305 takes no Key Length attribute")
        key_bits = 256
    if key_bits is None:
        raise UnsupportedTransform(f"encryption transform {encr_id} needs a Key Length attribute")
    try:
        return ENCRS[(encr_id, key_bits)]
    except KeyError:
        raise UnsupportedTransform(
            f"encryption transform {encr_id} with {key_bits}-bit keys is not supported"
        ) from None


# -- Diffie-Hellman groups ----------------------------------------------------------

# RFC 3526 section 3, the 2048-bit MODP group; generator 2.
MODP_2048_PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D"
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)

# Private exponent size for the plain-arithmetic fallback: RFC 3526 section 8 asks for
# at least twice the group's strength (~110 bits for 2048); 512 bits leaves ample margin.
MODP_EXPONENT_BYTES = 64


def _modp_2048_parameters() -> DHParameters | None:
    """Group 14 in OpenSSL, whose exponentiation is constant time (Python's pow() is
    not). cryptography marks finite-field DH deprecated; group 14 stays a MUST (RFC
    8247 section 2.4), so without it the plain arithmetic below takes over."""
    if not _HAVE_FFDH:
        return None
    try:
        return DHParameterNumbers(MODP_2048_PRIME, 2).parameters()
    except UnsupportedAlgorithm:
        return None


MODP_2048_PARAMETERS = _modp_2048_parameters()
"""None when the installed cryptography no longer offers finite-field DH."""
_CURVES: dict[int, tuple[ec.EllipticCurve, int]] = {
    DhGroup.ECP_256: (ec.SECP256R1(), 32),
    DhGroup.ECP_384: (ec.SECP384R1(), 48),
}


DH_GROUPS: frozenset[DhGroup] = frozenset(
    {DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.CURVE25519}
)
"""The key exchange groups KeyExchange implements (RFC 8247 section 2.4's musts)."""


class KeyExchange:
    """One side of a DH exchange. ``public_key`` is the KE payload data.

    Encodings: MODP is the big-endian value padded to the prime size (RFC 7296
    section 3.4); ECP is x || y without a point-format octet (RFC 5903 section 7);
    Curve25519 is the 32-byte u-coordinate (RFC 8031 section 2).
    """

    def __init__(self, group: int, private_value: bytes | None = None) -> None:
        self.group = group
        if group == DhGroup.MODP_2048:
            self._init_modp(private_value)
        elif group in _CURVES:
            curve, size = _CURVES[group]
            if private_value is None:
                self._ec = ec.generate_private_key(curve)
            else:
                self._ec = ec.derive_private_key(int.from_bytes(private_value, "big"), curve)
            nums = self._ec.public_key().public_numbers()
            self.public_key = nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")
        elif group == DhGroup.CURVE25519:
            if private_value is None:
                self._x25519 = x25519.X25519PrivateKey.generate()
            else:
                self._x25519 = x25519.X25519PrivateKey.from_private_bytes(private_value)
            self.public_key = self._x25519.public_key().public_bytes_raw()
        else:
            raise UnsupportedTransform(f"Diffie-Hellman group {group} is not supported")

    def _init_modp(self, private_value: bytes | None) -> None:
        params = MODP_2048_PARAMETERS
        self._modp_key: DHPrivateKey | None = None
        if params is not None and private_value is None:
            # OpenSSL picks the exponent (2x the group's strength, SP 800-56A 5.6.1.1.1).
            self._modp_key = params.generate_private_key()
            y = self._modp_key.public_key().public_numbers().y
            self.public_key = y.to_bytes(256, "big")
            return
        raw = private_value if private_value is not None else os.urandom(MODP_EXPONENT_BYTES)
        self._modp_x = int.from_bytes(raw, "big")
        if not 1 < self._modp_x < MODP_2048_PRIME - 1:
            raise LocalError("MODP private exponent out of range")
        # A given exponent (test vectors) or no OpenSSL group: plain arithmetic.
        y = pow(2, self._modp_x, MODP_2048_PRIME)
        self.public_key = y.to_bytes(256, "big")
        if params is not None:
            numbers = DHPublicNumbers(y, params.parameter_numbers())
            self._modp_key = DHPrivateNumbers(self._modp_x, numbers).private_key()

    @staticmethod
    def public_key_length(group: int) -> int:
        if group == DhGroup.MODP_2048:
            return 256
        if group in _CURVES:
            return 2 * _CURVES[group][1]
        if group == DhGroup.CURVE25519:
            return 32
        raise UnsupportedTransform(f"Diffie-Hellman group {group} is not supported")

    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^ir for the peer's KE data; invalid peer values raise CryptoError."""
        expected = self.public_key_length(self.group)
        if len(peer_public) != expected:
            raise CryptoError(
                f"KE data for group {self.group} must be {expected} bytes, got {len(peer_public)}"
            )
        if self.group == DhGroup.MODP_2048:
            y = int.from_bytes(peer_public, "big")
            # RFC 7296 section 5 / RFC 6989: refuse 0, 1, p-1 and values >= p.
            if not 1 < y < MODP_2048_PRIME - 1:
                raise CryptoError("MODP public value out of range")
            if self._modp_key is None:
                return pow(y, self._modp_x, MODP_2048_PRIME).to_bytes(256, "big")
            params = self._modp_key.parameters().parameter_numbers()
            peer_dh = DHPublicNumbers(y, params).public_key()
            # cryptography pads g^ir to the prime's length, as section 3.4 wants.
            return self._modp_key.exchange(peer_dh)
        if self.group in _CURVES:
            curve, _ = _CURVES[self.group]
            try:
                peer_ec = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + peer_public)
            except ValueError:
                raise CryptoError("ECP public value is not a point on the curve") from None
            # RFC 5903 section 7 (as corrected by errata 9): g^ir is the x-coordinate only.
            return self._ec.exchange(ec.ECDH(), peer_ec)
        try:
            peer_x = x25519.X25519PublicKey.from_public_bytes(peer_public)
            return self._x25519.exchange(peer_x)
        except ValueError:
            # RFC 8031 section 2: an all-zero result must be refused.
            raise CryptoError("Curve25519 exchange produced the all-zero value") from None


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def sha1(data: bytes) -> bytes:
    """SHA-1, used for NAT detection hashes (RFC 7296 section 2.23) and CERTREQ."""
    return hashlib.sha1(data).digest()


# -- what proposals may hold -----------------------------------------------------------


def _negotiable() -> dict[tuple[TransformType, int], frozenset[int | None]]:
    table: dict[tuple[TransformType, int], set[int | None]] = {}
    for encr in ENCRS.values():
        table.setdefault((TransformType.ENCR, encr.id), set()).add(encr.key_attribute)
    for prf in PRFS.values():
        if prf.negotiable:
            table[(TransformType.PRF, prf.id)] = {None}
    for integ in INTEGS.values():
        if integ.protocols:
            table[(TransformType.INTEG, integ.id)] = {None}
    for group in sorted(DH_GROUPS):
        table[(TransformType.DH, group)] = {None}
    for esn in EsnId:
        table[(TransformType.ESN, esn)] = {None}
    return {key: frozenset(bits) for key, bits in table.items()}


NEGOTIABLE: dict[tuple[TransformType, int], frozenset[int | None]] = _negotiable()
"""Every transform (RFC 7296 section 3.3.2) this core offers and accepts in IKE, ESP or
AH proposals, by (type, ID), with the Key Length attributes it may carry (None: none);
``negotiable`` says which protocol's proposals may hold an integrity algorithm."""


def _proposal_tokens() -> dict[str, tuple[TransformType, int, int | None]]:
    tokens = {
        _keyword(kind, id, bits): (kind, id, bits)
        for (kind, id), lengths in NEGOTIABLE.items()
        for bits in lengths
    }
    for alias, keyword in KEYWORD_ALIASES.items():
        tokens[alias] = tokens[keyword]
    return tokens


PROPOSAL_TOKENS: dict[str, tuple[TransformType, int, int | None]] = _proposal_tokens()
"""strongSwan keyword -> (type, ID, Key Length) for everything in NEGOTIABLE."""


def negotiable(
    kind: int, id: int, key_bits: int | None, protocol: ProtocolId | None = None
) -> bool:
    """Whether this core offers and accepts the transform (a key length of None: no
    Key Length attribute), in a proposal of ``protocol`` when one is given (integrity
    algorithms differ by protocol: AES-GMAC and HMAC-SHA1-96 are AH's only)."""
    try:
        ok = key_bits in NEGOTIABLE.get((TransformType(kind), id), frozenset())
    except ValueError:
        return False
    if ok and protocol is not None and kind == TransformType.INTEG:
        return protocol in INTEGS[id].protocols
    return ok
