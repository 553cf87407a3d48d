"""The Encrypted (SK) and Encrypted Fragment (SKF) payloads.

RFC 7296 section 3.14: the inner payloads, then padding and a Pad Length octet,
encrypted; AES-CBC adds a random IV and a truncated HMAC over the whole message
(checked before anything is decrypted). AEAD transforms (RFC 5282 for AES-GCM,
RFC 7634 for ChaCha20-Poly1305) use an 8-byte IV, a nonce of salt || IV, and as
AAD everything from the IKE header to the end of the SK generic header (RFC 7383
section 2.5: for SKF, to the end of the Total Fragments field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .constants import GENERIC_PAYLOAD_HEADER_LENGTH, IKE_HEADER_LENGTH, PayloadType
from .errors import CryptoError, LocalError, ParseError
from .message import IkeHeader, Message, parse_payloads, serialize_payloads
from .payloads import Payload, SkfPayload, SkPayload
from .transforms import Encr, Integ, random_bytes


@dataclass(frozen=True)
class SkKeys:
    """Keys protecting one direction: (SK_ei, SK_ai) or (SK_er, SK_ar)."""

    encr: Encr
    encr_key: bytes
    integ: Integ | None = None
    integ_key: bytes = b""

    def __post_init__(self) -> None:
        if not self.encr.is_aead and self.integ is None:
            raise LocalError(f"{self.encr.name} needs an integrity transform")

    @property
    def icv_length(self) -> int:
        if self.encr.is_aead:
            return self.encr.icv_length
        assert self.integ is not None
        return self.integ.icv_length

    def __repr__(self) -> str:  # keys never reach logs
        return f"SkKeys({self.encr.name}, {self.integ.name if self.integ else 'aead'})"


def encrypt_message(
    header: IkeHeader,
    inner: Sequence[Payload],
    keys: SkKeys,
    *,
    cleartext: Sequence[Payload] | None = None,
    iv: bytes | None = None,
    pad_length: int = 0,
) -> bytes:
    """Serialise ``header`` + ``cleartext`` payloads + an SK payload holding ``inner``.

    ``iv`` and ``pad_length`` (extra padding on top of what alignment needs) exist so
    tests can reproduce published vectors; in use the IV is random.
    """
    first_inner, inner_bytes = serialize_payloads(inner)
    return _protect(
        header, first_inner, inner_bytes, keys, cleartext or [], iv, pad_length, fragment=None
    )


def encrypt_fragment(
    header: IkeHeader,
    first_inner: int,
    chunk: bytes,
    number: int,
    total: int,
    keys: SkKeys,
    *,
    iv: bytes | None = None,
) -> bytes:
    """One SKF message (RFC 7383 section 2.5); ``first_inner`` only in fragment 1."""
    return _protect(
        header, first_inner if number == 1 else 0, chunk, keys, [], iv, 0, fragment=(number, total)
    )


def _protect(
    header: IkeHeader,
    first_inner: int,
    inner: bytes,
    keys: SkKeys,
    cleartext: Sequence[Payload],
    iv: bytes | None,
    pad_length: int,
    fragment: tuple[int, int] | None,
) -> bytes:
    encr = keys.encr
    if iv is None:
        iv = random_bytes(encr.iv_length)
    if pad_length % encr.block_size:
        raise LocalError(f"extra padding must be a multiple of {encr.block_size} bytes")
    pad = (-(len(inner) + 1)) % encr.block_size + pad_length
    if pad > 255:
        raise LocalError(f"{pad} bytes of padding do not fit the Pad Length octet")
    plaintext = inner + bytes(pad) + bytes([pad])
    ct_length = len(plaintext) + (encr.icv_length if encr.is_aead else 0)
    prefix = (
        b"" if fragment is None else fragment[0].to_bytes(2, "big") + fragment[1].to_bytes(2, "big")
    )
    sk_length = (
        GENERIC_PAYLOAD_HEADER_LENGTH
        + len(prefix)
        + len(iv)
        + ct_length
        + (0 if encr.is_aead else keys.icv_length)
    )
    sk_type = PayloadType.SK if fragment is None else PayloadType.SKF
    clear_first, clear_bytes = serialize_payloads(cleartext, next_after_last=sk_type)
    header.next_payload = clear_first if cleartext else sk_type
    header.length = IKE_HEADER_LENGTH + len(clear_bytes) + sk_length
    sk_header = bytes([first_inner, 0]) + sk_length.to_bytes(2, "big") + prefix
    authenticated = header.serialize() + clear_bytes + sk_header
    if encr.is_aead:
        return authenticated + iv + encr.encrypt(keys.encr_key, iv, plaintext, authenticated)
    assert keys.integ is not None
    body = authenticated + iv + encr.encrypt(keys.encr_key, iv, plaintext)
    return body + keys.integ.sign(keys.integ_key, body)


def decrypt_message(data: bytes, message: Message, keys: SkKeys) -> list[Payload]:
    """Verify and open the SK payload of a parsed message; return the inner payloads."""
    first_inner, plaintext, inner_offset = open_message(data, message, keys)
    return parse_payloads(plaintext, first_inner, inner_offset)


def open_message(data: bytes, message: Message, keys: SkKeys) -> tuple[int, bytes, int]:
    """Verify and decrypt the SK payload: (first inner payload type, the inner payload
    chain, its offset in the message). A ParseError from parsing that chain afterwards
    comes from an authenticated peer (RFC 7296 section 2.21.2 answers it)."""
    sk = message.encrypted
    if not isinstance(sk, SkPayload):
        raise ParseError("message carries no SK payload", payload="SK", offset=IKE_HEADER_LENGTH)
    plaintext, inner_offset = _unprotect(data, sk.offset, GENERIC_PAYLOAD_HEADER_LENGTH, keys, "SK")
    return sk.first_inner, plaintext, inner_offset


def decrypt_fragment(data: bytes, message: Message, keys: SkKeys) -> bytes:
    """Verify and open one SKF payload; return its plaintext chunk (padding removed)."""
    skf = message.encrypted
    if not isinstance(skf, SkfPayload):
        raise ParseError("message carries no SKF payload", payload="SKF", offset=IKE_HEADER_LENGTH)
    plaintext, _ = _unprotect(data, skf.offset, GENERIC_PAYLOAD_HEADER_LENGTH + 4, keys, "SKF")
    return plaintext


def _unprotect(
    data: bytes, offset: int, header_length: int, keys: SkKeys, name: str
) -> tuple[bytes, int]:
    encr = keys.encr
    start = offset + header_length
    body = data[start:]
    icv_length = keys.icv_length
    minimum = encr.iv_length + icv_length + (16 if not encr.is_aead else 1)
    if len(body) < minimum:
        raise ParseError(
            f"{len(body)} bytes of IV, ciphertext and ICV; {encr.name} needs at least {minimum}",
            payload=name,
            offset=start,
        )
    iv = body[: encr.iv_length]
    if encr.is_aead:
        plaintext = encr.decrypt(keys.encr_key, iv, body[encr.iv_length :], data[:start])
    else:
        assert keys.integ is not None
        # RFC 7296 section 3.14: the ICV covers the whole message up to it; check first.
        if not keys.integ.verify(keys.integ_key, data[:-icv_length], data[-icv_length:]):
            raise CryptoError(f"{name} integrity check failed ({keys.integ.name})")
        ciphertext = body[encr.iv_length : -icv_length]
        if len(ciphertext) % encr.block_size:
            raise ParseError(
                f"ciphertext of {len(ciphertext)} bytes is not a multiple of {encr.block_size}",
                payload=name,
                offset=start + encr.iv_length,
            )
        plaintext = encr.decrypt(keys.encr_key, iv, ciphertext)
    pad = plaintext[-1]
    if pad + 1 > len(plaintext):
        raise ParseError(
            f"pad length {pad} exceeds the {len(plaintext)}-byte plaintext",
            payload=name,
            offset=start + encr.iv_length,
        )
    return plaintext[: -(pad + 1)], start + encr.iv_length
