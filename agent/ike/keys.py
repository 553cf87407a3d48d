"""Key derivation and AUTH octets (RFC 7296 sections 2.13 to 2.18 and 2.15).

All functions are pure: a Prf plus byte strings in, byte strings out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LocalError
from .transforms import Encr, Integ, Prf

KEY_PAD = b"Key Pad for IKEv2"  # RFC 7296 section 2.15


def prf_plus(prf: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """RFC 7296 section 2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    if length > 255 * prf.output_length:
        raise LocalError(f"prf+ cannot produce {length} bytes with {prf.name}")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = prf(key, block + seed + bytes([counter]))
        out += block
        counter += 1
    return bytes(out[:length])


def skeyseed(prf: Prf, ni: bytes, nr: bytes, g_ir: bytes) -> bytes:
    """RFC 7296 section 2.14: SKEYSEED = prf(Ni | Nr, g^ir)."""
    return prf(ni + nr, g_ir)


def rekey_skeyseed(prf: Prf, sk_d_old: bytes, g_ir_new: bytes, ni: bytes, nr: bytes) -> bytes:
    """RFC 7296 section 2.18: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)."""
    return prf(sk_d_old, g_ir_new + ni + nr)


@dataclass(frozen=True)
class IkeSaKeys:
    """The seven IKE SA keys, in prf+ order (section 2.14)."""

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:  # keys never reach logs
        return "IkeSaKeys(<redacted>)"


def derive_ike_sa_keys(
    prf: Prf,
    encr: Encr,
    integ: Integ | None,
    seed_key: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeSaKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni|Nr|SPIi|SPIr).

    AEAD transforms take no SK_a and their SK_e includes the 4-byte salt.
    """
    if encr.is_aead and integ is not None:
        raise LocalError(f"{encr.name} is combined-mode: no integrity transform")
    if not encr.is_aead and integ is None:
        raise LocalError(f"{encr.name} needs an integrity transform")
    a = integ.key_length if integ else 0
    e = encr.key_length
    p = prf.key_length
    sizes = [p, a, a, e, e, p, p]
    material = prf_plus(prf, seed_key, ni + nr + spi_i + spi_r, sum(sizes))
    parts = []
    pos = 0
    for size in sizes:
        parts.append(material[pos : pos + size])
        pos += size
    return IkeSaKeys(*parts)


@dataclass(frozen=True)
class ChildSaKeys:
    """RFC 7296 section 2.17: initiator-to-responder keys first, then the reverse."""

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes

    def __repr__(self) -> str:
        return "ChildSaKeys(<redacted>)"


def derive_child_sa_keys(
    prf: Prf,
    sk_d: bytes,
    ni: bytes,
    nr: bytes,
    encr_key_length: int,
    integ_key_length: int,
    g_ir_new: bytes | None = None,
) -> ChildSaKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), split encr_i, integ_i, encr_r, integ_r."""
    seed = (g_ir_new or b"") + ni + nr
    e, a = encr_key_length, integ_key_length
    keymat = prf_plus(prf, sk_d, seed, 2 * (e + a))
    return ChildSaKeys(
        keymat[:e], keymat[e : e + a], keymat[e + a : 2 * e + a], keymat[2 * e + a :]
    )


def auth_octets(message: bytes, peer_nonce: bytes, prf: Prf, sk_p: bytes, id_body: bytes) -> bytes:
    """RFC 7296 section 2.15: signed octets = message | peer nonce | prf(SK_px, IDx').

    ``message`` is the sender's own IKE_SA_INIT message, ``id_body`` the sender's
    ID payload body (without the generic header).
    """
    return message + peer_nonce + prf(sk_p, id_body)


def psk_auth(prf: Prf, secret: bytes, octets: bytes) -> bytes:
    """RFC 7296 section 2.15: AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), octets)."""
    return prf(prf(secret, KEY_PAD), octets)
