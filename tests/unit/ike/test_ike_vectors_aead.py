"""AEAD transforms and the SK payload against published vectors."""

from __future__ import annotations

import pytest

from vpnfleet.agent.ike.constants import EncrId, ExchangeType, HeaderFlag, NotifyType, PayloadType
from vpnfleet.agent.ike.crypto import SkKeys, decrypt_message, encrypt_message
from vpnfleet.agent.ike.errors import CryptoError
from vpnfleet.agent.ike.message import IkeHeader, parse_message
from vpnfleet.agent.ike.payloads import NotifyPayload
from vpnfleet.agent.ike.transforms import encr_for

H = bytes.fromhex

# McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 3, 4, 15, 16.
GCM_KEY_128 = H("feffe9928665731c6d6a8f9467308308")
GCM_KEY_256 = GCM_KEY_128 * 2
GCM_SALT = H("cafebabe")
GCM_IV = H("facedbaddecaf888")
GCM_PLAIN = H(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
GCM_AAD = H("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_CASES = [
    (
        3,
        128,
        GCM_PLAIN,
        b"",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (
        4,
        128,
        GCM_PLAIN[:60],
        GCM_AAD,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (
        15,
        256,
        GCM_PLAIN,
        b"",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    (
        16,
        256,
        GCM_PLAIN[:60],
        GCM_AAD,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]


@pytest.mark.parametrize(("case", "bits", "plain", "aad", "expected"), GCM_CASES)
def test_aes_gcm16_mcgrew_viega(
    case: int, bits: int, plain: bytes, aad: bytes, expected: str
) -> None:
    """McGrew & Viega GCM test cases 3, 4, 15, 16, cut the RFC 5282 / RFC 4106 way:
    the 12-byte IV is a 4-byte salt (last bytes of the key material) plus 8-byte IV."""
    encr = encr_for(EncrId.AES_GCM_16, bits)
    key = (GCM_KEY_128 if bits == 128 else GCM_KEY_256) + GCM_SALT
    assert len(key) == encr.key_length
    assert encr.encrypt(key, GCM_IV, plain, aad).hex() == expected
    assert encr.decrypt(key, GCM_IV, H(expected), aad) == plain
    tampered = bytearray(H(expected))
    tampered[0] ^= 1
    with pytest.raises(CryptoError, match="integrity check failed"):
        encr.decrypt(key, GCM_IV, bytes(tampered), aad)


def test_chacha20_poly1305_rfc8439_section_2_8_2() -> None:
    """RFC 8439 section 2.8.2: AEAD_CHACHA20_POLY1305 example; the 12-byte nonce
    07000000 || 4041424344454647 is split into salt and IV as RFC 7634 does."""
    encr = encr_for(EncrId.CHACHA20_POLY1305, None)
    key = H("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f") + H("07000000")
    iv = H("4041424344454647")
    aad = H("50515253c0c1c2c3c4c5c6c7")
    plain = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    expected = H(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116"
        "1ae10b594f09e26a7e902ecbd0600691"
    )
    assert encr.encrypt(key, iv, plain, aad) == expected
    assert encr.decrypt(key, iv, expected, aad) == plain


# RFC 7634 Appendix B: an INFORMATIONAL request protected with ChaCha20-Poly1305.
RFC7634_KEY = H("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f") + H("a0a1a2a3")
RFC7634_IV = H("1011121314151617")
RFC7634_AAD = H("c0c1c2c3c4c5c6c7d0d1d2d3d4d5d6d72e202500000000090000004529000029")
RFC7634_CIPHER = H("610394701f8d017f7c129248896b71bfe25236efd7cdc67066906315b2")
RFC7634_MESSAGE = RFC7634_AAD + RFC7634_IV + RFC7634_CIPHER


def _rfc7634_keys() -> SkKeys:
    return SkKeys(encr_for(EncrId.CHACHA20_POLY1305, None), RFC7634_KEY)


def test_sk_payload_chacha20_poly1305_rfc7634_appendix_b_encrypt() -> None:
    """RFC 7634 Appendix B: build the whole message from its header and the inner
    Notify (SET_WINDOW_SIZE 10), with the RFC's IV and no padding."""
    header = IkeHeader(
        spi_i=H("c0c1c2c3c4c5c6c7"),
        spi_r=H("d0d1d2d3d4d5d6d7"),
        next_payload=0,
        exchange_type=ExchangeType.INFORMATIONAL,
        flags=HeaderFlag.NONE,
        message_id=9,
    )
    inner = [NotifyPayload(NotifyType.SET_WINDOW_SIZE, H("0000000a"))]
    data = encrypt_message(header, inner, _rfc7634_keys(), iv=RFC7634_IV)
    assert data == RFC7634_MESSAGE
    assert len(data) == 0x45


def test_sk_payload_chacha20_poly1305_rfc7634_appendix_b_decrypt() -> None:
    """RFC 7634 Appendix B, the other way: parse, authenticate, open."""
    message = parse_message(RFC7634_MESSAGE)
    assert message.header.exchange_type == ExchangeType.INFORMATIONAL
    assert message.header.message_id == 9
    sk = message.encrypted
    assert sk is not None and sk.first_inner == PayloadType.NOTIFY
    inner = decrypt_message(RFC7634_MESSAGE, message, _rfc7634_keys())
    assert inner == [NotifyPayload(NotifyType.SET_WINDOW_SIZE, H("0000000a"))]


@pytest.mark.parametrize("position", [0, 20, 29, 32, 40, 60, 68])
def test_sk_payload_any_flipped_bit_fails_authentication(position: int) -> None:
    """Header (AAD), IV, ciphertext and tag are all covered (RFC 5282 section 5.1)."""
    data = bytearray(RFC7634_MESSAGE)
    data[position] ^= 0x01
    message = parse_message(bytes(data))
    with pytest.raises(CryptoError, match="integrity check failed"):
        decrypt_message(bytes(data), message, _rfc7634_keys())
