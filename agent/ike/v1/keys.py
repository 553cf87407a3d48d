"""IKEv1 keying: SKEYID and its three children, the encryption key, the HASH payloads
and Quick Mode KEYMAT (RFC 2409 section 5 and Appendix B).

All functions are pure: a Prf plus byte strings in, byte strings out. The negotiated
phase 1 hash (RFC 2409 Appendix A, Hash Algorithm) names two things: the prf, which
is its HMAC when no PRF is negotiated (RFC 2409 section 4; nobody negotiates one), and
the bare hash used for the CBC IVs (Appendix B).
``prf_for_hash`` maps one to the other through the IKEv2 registry in transforms.py, so
the IKEv1 core has no second PRF table.

Message IDs enter every phase 2 hash as 4 bytes in network order, as they are on the
wire (RFC 2408 section 3.1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..constants import PrfId
from ..errors import LocalError
from ..transforms import Encr, Prf, UnsupportedTransform, prf_for
from .constants import AuthMethod, P1Hash

_COOKIE_LENGTH = 8  # RFC 2408 section 3.1

# RFC 2409 Appendix A Hash Algorithm (SHA-2 from RFC 4868 section 2.4) -> the HMAC PRF
# of the same hash in the IKEv2 registry. MD5 and Tiger are not implemented.
_PRF_OF_HASH: dict[int, PrfId] = {
    P1Hash.SHA1: PrfId.HMAC_SHA1,
    P1Hash.SHA2_256: PrfId.HMAC_SHA2_256,
    P1Hash.SHA2_384: PrfId.HMAC_SHA2_384,
    P1Hash.SHA2_512: PrfId.HMAC_SHA2_512,
}

# ECDSA authentication (RFC 4754 sections 3 and 4; methods 9/10/11) pairs each curve with
# one hash, SHA-256/384/512. charon 5.9.8 also makes HASH_I and HASH_R with the HMAC of
# that hash whatever the proposal's hash: measured, an ECDSA-256 HASH_I under a SHA-1
# proposal is HMAC-SHA-256 (test_v1_keys.py). We do as it does.
_PRF_OF_ECDSA_AUTH: dict[int, PrfId] = {
    AuthMethod.ECDSA_256: PrfId.HMAC_SHA2_256,
    AuthMethod.ECDSA_384: PrfId.HMAC_SHA2_384,
    AuthMethod.ECDSA_521: PrfId.HMAC_SHA2_512,
}


def prf_for_hash(hash_id: int) -> Prf:
    """The prf of a phase 1 Hash Algorithm attribute value: its HMAC (RFC 2409 4)."""
    prf_id = _PRF_OF_HASH.get(hash_id)
    if prf_id is None:
        raise UnsupportedTransform(f"IKEv1 hash algorithm {hash_id} is not supported")
    return prf_for(prf_id)


def hash_for(hash_id: int) -> str:
    """The hashlib name of a phase 1 Hash Algorithm attribute value (for the IVs)."""
    return prf_for_hash(hash_id).hash_name


def auth_prf(auth_method: int, prf: Prf) -> Prf:
    """The prf that makes HASH_I and HASH_R: the negotiated one, except for ECDSA
    authentication, whose curve fixes it (RFC 4754; see _PRF_OF_ECDSA_AUTH)."""
    fixed = _PRF_OF_ECDSA_AUTH.get(auth_method)
    return prf if fixed is None else prf_for(fixed)


def _check_cookies(icookie: bytes, rcookie: bytes) -> None:
    for name, cookie in (("initiator", icookie), ("responder", rcookie)):
        if len(cookie) != _COOKIE_LENGTH:
            raise LocalError(f"{name} cookie must be {_COOKIE_LENGTH} bytes, got {len(cookie)}")


def _mid(message_id: int) -> bytes:
    if not 0 <= message_id <= 0xFFFFFFFF:
        raise LocalError(f"message ID {message_id} does not fit 32 bits")
    return message_id.to_bytes(4, "big")


# -- phase 1 -------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase1Keys:
    """What one ISAKMP SA keys with (RFC 2409 section 5 and Appendix B)."""

    skeyid: bytes
    """Authenticates phase 1: HASH_I and HASH_R are keyed with it."""
    skeyid_d: bytes
    """Derives phase 2 KEYMAT (section 5.5)."""
    skeyid_a: bytes
    """Keys the phase 2 and informational HASH payloads."""
    skeyid_e: bytes
    """The seed of the encryption key."""
    enc_key: bytes
    """The cipher's key: SKEYID_e truncated, or expanded as Appendix B says."""
    iv0: bytes
    """The IV of the first encrypted phase 1 message: hash(g^xi | g^xr), truncated to
    the cipher's block (Appendix B)."""

    def __repr__(self) -> str:  # keys never reach logs
        return "Phase1Keys(<redacted>)"


def skeyid(prf: Prf, psk: bytes | None, ni: bytes, nr: bytes, g_xy: bytes) -> bytes:
    """SKEYID (RFC 2409 section 5): prf(pre-shared-key, Ni_b | Nr_b) for a pre-shared
    key; prf(Ni_b | Nr_b, g^xy) for signatures (``psk`` None).

    Ni_b and Nr_b are the bodies of the phase 1 Nonce payloads.
    """
    if psk is None:
        return prf(ni + nr, g_xy)
    if not psk:
        raise LocalError("the pre-shared key is empty")
    return prf(psk, ni + nr)


def expand_key(prf: Prf, skeyid_e: bytes, length: int) -> bytes:
    """The cipher key from SKEYID_e (RFC 2409 Appendix B): its first ``length`` bytes
    when it is long enough; else Ka = K1 | K2 | ..., K1 = prf(SKEYID_e, 0),
    Kn = prf(SKEYID_e, Kn-1), the 0 being a single zero octet. AES-256 with SHA-1
    (20-byte SKEYID_e, 32-byte key) is the common case that needs it."""
    if length <= len(skeyid_e):
        return skeyid_e[:length]
    out = bytearray()
    block = b"\x00"
    while len(out) < length:
        block = prf(skeyid_e, block)
        out += block
    return bytes(out[:length])


def derive_phase1(
    prf: Prf,
    psk: bytes | None,
    ni: bytes,
    nr: bytes,
    g_xy: bytes,
    icookie: bytes,
    rcookie: bytes,
    encr: Encr,
    g_xi: bytes,
    g_xr: bytes,
) -> Phase1Keys:
    """Every phase 1 key (RFC 2409 section 5), from the negotiated prf, the pre-shared
    key (None for signature authentication), the nonce bodies, the DH shared secret
    g^xy, the cookies, the negotiated cipher and both KE payload bodies.

    SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0),
    SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1),
    SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2).
    """
    _check_cookies(icookie, rcookie)
    if encr.is_aead:
        # RFC 2409 defines only the CBC chaining of Appendix B for ISAKMP.
        raise LocalError(f"{encr.name} cannot protect an ISAKMP SA: IKEv1 needs a CBC cipher")
    root = skeyid(prf, psk, ni, nr, g_xy)
    cookies = icookie + rcookie
    d = prf(root, g_xy + cookies + b"\x00")
    a = prf(root, d + g_xy + cookies + b"\x01")
    e = prf(root, a + g_xy + cookies + b"\x02")
    return Phase1Keys(
        skeyid=root,
        skeyid_d=d,
        skeyid_a=a,
        skeyid_e=e,
        enc_key=expand_key(prf, e, encr.key_length),
        iv0=hashlib.new(prf.hash_name, g_xi + g_xr).digest()[: encr.block_size],
    )


def hash_i(
    prf: Prf,
    skeyid: bytes,
    g_xi: bytes,
    g_xr: bytes,
    icookie: bytes,
    rcookie: bytes,
    sa_i_body: bytes,
    idii_body: bytes,
) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b) (RFC 2409
    section 5). SAi_b is the initiator's whole SA payload body (DOI, situation, every
    proposal and transform it offered) and IDii_b its ID payload body, both without
    the generic payload header. With signatures HASH_I is what SIG_I signs (5.1).
    ``prf`` is ``auth_prf(auth_method, negotiated prf)``."""
    _check_cookies(icookie, rcookie)
    return prf(skeyid, g_xi + g_xr + icookie + rcookie + sa_i_body + idii_body)


def hash_r(
    prf: Prf,
    skeyid: bytes,
    g_xi: bytes,
    g_xr: bytes,
    icookie: bytes,
    rcookie: bytes,
    sa_i_body: bytes,
    idir_body: bytes,
) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b) (RFC 2409
    section 5): the initiator's SA body again, the responder's ID body."""
    _check_cookies(icookie, rcookie)
    return prf(skeyid, g_xr + g_xi + rcookie + icookie + sa_i_body + idir_body)


# -- phase 2 -------------------------------------------------------------------------


def qm_hash1(prf: Prf, skeyid_a: bytes, message_id: int, payloads: bytes) -> bytes:
    """Quick Mode HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [ | KE ] [ | IDci | IDcr ])
    (RFC 2409 section 5.5): ``payloads`` is the message after the HASH payload, every
    payload with its generic header, as sent (before padding and encryption)."""
    return prf(skeyid_a, _mid(message_id) + payloads)


def qm_hash2(prf: Prf, skeyid_a: bytes, message_id: int, ni_b: bytes, payloads: bytes) -> bytes:
    """Quick Mode HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [ | KE ] [ | IDci |
    IDcr ]) (RFC 2409 section 5.5); Ni_b is the body of the initiator's Quick Mode
    Nonce payload, ``payloads`` the responder's message after its HASH payload."""
    return prf(skeyid_a, _mid(message_id) + ni_b + payloads)


def qm_hash3(prf: Prf, skeyid_a: bytes, message_id: int, ni_b: bytes, nr_b: bytes) -> bytes:
    """Quick Mode HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b) (RFC 2409 section
    5.5), the 0 a single zero octet."""
    return prf(skeyid_a, b"\x00" + _mid(message_id) + ni_b + nr_b)


def info_hash(prf: Prf, skeyid_a: bytes, message_id: int, payloads: bytes) -> bytes:
    """An informational (or transaction) exchange's HASH(1) = prf(SKEYID_a, M-ID | N/D)
    (RFC 2409 section 5.7): ``payloads`` is the message after the HASH payload."""
    return prf(skeyid_a, _mid(message_id) + payloads)


def keymat(
    prf: Prf,
    skeyid_d: bytes,
    protocol: int,
    spi: bytes,
    ni_b: bytes,
    nr_b: bytes,
    length: int,
    g_qm: bytes | None = None,
) -> bytes:
    """KEYMAT for one phase 2 SA (RFC 2409 section 5.5):
    K1 = prf(SKEYID_d, [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b),
    Kn = prf(SKEYID_d, Kn-1 | [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b),
    KEYMAT = K1 | K2 | ... cut to ``length`` bytes.

    ``protocol`` is the Protocol-ID of the proposal (3 for ESP, RFC 2407 4.4.1), ``spi``
    that SA's own SPI, as its receiving end chose it: each direction has its own SA and
    so its own KEYMAT. ``g_qm`` is the Quick Mode DH secret when PFS was negotiated.
    The caller cuts the encryption key first, then the integrity key: charon 5.9.8's
    logged ESP keys split its KEYMAT so (test_v1_keys.py).
    """
    if not 0 <= protocol <= 0xFF:
        raise LocalError(f"protocol ID {protocol} does not fit one octet")
    if length <= 0:
        raise LocalError(f"KEYMAT length must be positive, got {length}")
    seed = (g_qm or b"") + bytes([protocol]) + spi + ni_b + nr_b
    out = bytearray()
    block = b""
    while len(out) < length:
        block = prf(skeyid_d, block + seed)
        out += block
    return bytes(out[:length])


def phase2_iv(hash_name: str, last_phase1_block: bytes, message_id: int) -> bytes:
    """The first IV of a phase 2 or informational exchange (RFC 2409 Appendix B):
    hash(last phase 1 CBC output block | M-ID), truncated to the block size (the length
    of ``last_phase1_block``)."""
    digest = hashlib.new(hash_name, last_phase1_block + _mid(message_id)).digest()
    return digest[: len(last_phase1_block)]
