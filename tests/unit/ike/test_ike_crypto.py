"""SK payload protection with every supported encryption transform."""

from __future__ import annotations

import pytest

from vpnfleet.agent.ike.constants import (
    EncrId,
    ExchangeType,
    HeaderFlag,
    IntegId,
    NotifyType,
    PayloadType,
)
from vpnfleet.agent.ike.crypto import (
    SkKeys,
    decrypt_fragment,
    decrypt_message,
    encrypt_fragment,
    encrypt_message,
)
from vpnfleet.agent.ike.errors import CryptoError, LocalError, ParseError, UnsupportedTransform
from vpnfleet.agent.ike.message import IkeHeader, parse_message, serialize_message
from vpnfleet.agent.ike.payloads import IdPayload, NoncePayload, NotifyPayload, Payload
from vpnfleet.agent.ike.transforms import encr_for, integ_for, prf_for

SUITES = [
    pytest.param(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, id="aes128-sha256"),
    pytest.param(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256, id="aes256-sha512"),
    pytest.param(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192, id="aes256-sha384"),
    pytest.param(EncrId.AES_GCM_16, 128, None, id="aes128gcm16"),
    pytest.param(EncrId.AES_GCM_16, 256, None, id="aes256gcm16"),
    pytest.param(EncrId.CHACHA20_POLY1305, None, None, id="chacha20poly1305"),
]

INNER: list[Payload] = [
    IdPayload(2, b"left.example"),
    NotifyPayload(NotifyType.INITIAL_CONTACT),
    NoncePayload(b"x" * 33),
]


def keys_for(encr_id: int, bits: int | None, integ_id: int | None) -> SkKeys:
    encr = encr_for(encr_id, bits)
    integ = integ_for(integ_id) if integ_id else None
    return SkKeys(
        encr, bytes(range(encr.key_length)), integ, b"\x5a" * (integ.key_length if integ else 0)
    )


def auth_header() -> IkeHeader:
    return IkeHeader(b"\x01" * 8, b"\x02" * 8, 0, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1)


@pytest.mark.parametrize(("encr_id", "bits", "integ_id"), SUITES)
@pytest.mark.parametrize("extra_pad", [0, 16])
def test_round_trip(encr_id: int, bits: int | None, integ_id: int | None, extra_pad: int) -> None:
    keys = keys_for(encr_id, bits, integ_id)
    data = encrypt_message(auth_header(), INNER, keys, pad_length=extra_pad)
    message = parse_message(data)
    assert message.header.next_payload == PayloadType.SK
    assert message.encrypted is not None and message.encrypted.first_inner == PayloadType.IDI
    assert decrypt_message(data, message, keys) == INNER


@pytest.mark.parametrize(("encr_id", "bits", "integ_id"), SUITES)
def test_every_byte_is_authenticated(encr_id: int, bits: int | None, integ_id: int | None) -> None:
    keys = keys_for(encr_id, bits, integ_id)
    data = encrypt_message(auth_header(), INNER, keys)
    for position in (0, 8, 20, 29, 33, len(data) // 2, len(data) - 1):
        tampered = bytearray(data)
        tampered[position] ^= 0x80
        with pytest.raises(CryptoError, match="integrity check failed"):
            decrypt_message(bytes(tampered), parse_message(bytes(tampered)), keys)


def test_cbc_ciphertext_is_block_aligned_with_random_iv() -> None:
    keys = keys_for(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    first = encrypt_message(auth_header(), INNER, keys)
    second = encrypt_message(auth_header(), INNER, keys)
    assert first[:32] == second[:32] and first != second  # same header, fresh IV
    sk_body = len(first) - 28 - 4 - 16 - 16  # header, SK header, IV, ICV
    assert sk_body % 16 == 0


def test_cleartext_payloads_before_sk_are_authenticated() -> None:
    keys = keys_for(EncrId.AES_GCM_16, 256, None)
    clear: list[Payload] = [NotifyPayload(NotifyType.COOKIE, b"c" * 16)]
    data = encrypt_message(auth_header(), INNER, keys, cleartext=clear)
    message = parse_message(data)
    assert message.payloads[0] == clear[0]
    assert decrypt_message(data, message, keys) == INNER
    tampered = bytearray(data)
    tampered[40] ^= 1
    with pytest.raises(CryptoError):
        decrypt_message(bytes(tampered), parse_message(bytes(tampered)), keys)


def test_wrong_key_fails() -> None:
    keys = keys_for(EncrId.CHACHA20_POLY1305, None, None)
    data = encrypt_message(auth_header(), INNER, keys)
    other = SkKeys(keys.encr, b"\x00" * keys.encr.key_length)
    with pytest.raises(CryptoError):
        decrypt_message(data, parse_message(data), other)


def test_bad_pad_length_after_valid_icv_is_a_parse_error() -> None:
    keys = keys_for(EncrId.AES_GCM_16, 128, None)
    # An inner chain of one byte whose value claims 200 bytes of padding.
    data = encrypt_message(auth_header(), [], keys)
    message = parse_message(data)
    assert decrypt_message(data, message, keys) == []
    forged = encr_for(EncrId.AES_GCM_16, 128)
    iv = b"\x01" * 8
    aad = data[: message.encrypted.offset + 4] if message.encrypted else b""
    ct = forged.encrypt(keys.encr_key, iv, bytes([200]), aad)
    forged_msg = aad + iv + ct
    with pytest.raises(ParseError, match="pad length 200"):
        decrypt_message(forged_msg, parse_message(forged_msg), keys)


def test_too_short_sk_body_is_a_parse_error() -> None:
    keys = keys_for(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    data = encrypt_message(auth_header(), INNER, keys)
    message = parse_message(data)
    assert message.encrypted is not None
    cut = data[: message.encrypted.offset + 4 + 20]
    cut = cut[:24] + len(cut).to_bytes(4, "big") + cut[28:]
    cut = cut[:30] + (len(cut) - 28).to_bytes(2, "big") + cut[32:]
    with pytest.raises(ParseError, match="needs at least"):
        decrypt_message(cut, parse_message(cut), keys)


def test_decrypt_without_sk_payload() -> None:
    keys = keys_for(EncrId.AES_GCM_16, 128, None)
    data = serialize_message(auth_header(), [NoncePayload(b"n" * 16)])
    with pytest.raises(ParseError, match="no SK payload"):
        decrypt_message(data, parse_message(data), keys)


def test_skf_fragment_round_trip_and_aad_covers_fragment_numbers() -> None:
    """RFC 7383 section 2.5: Fragment Number and Total Fragments are in the AAD."""
    keys = keys_for(EncrId.AES_GCM_16, 256, None)
    data = encrypt_fragment(auth_header(), PayloadType.IDI, b"chunk-1", 1, 2, keys)
    message = parse_message(data)
    assert decrypt_fragment(data, message, keys) == b"chunk-1"
    tampered = bytearray(data)
    tampered[33] = 2  # fragment number 1 -> 2
    with pytest.raises(CryptoError):
        decrypt_fragment(bytes(tampered), parse_message(bytes(tampered)), keys)


def test_cbc_without_integrity_is_our_error() -> None:
    with pytest.raises(LocalError, match="needs an integrity transform"):
        SkKeys(encr_for(EncrId.AES_CBC, 128), b"k" * 16)


def test_keys_do_not_print() -> None:
    assert "00010203" not in repr(keys_for(EncrId.AES_GCM_16, 128, None))


@pytest.mark.parametrize(
    ("encr_id", "bits", "needle"),
    [
        (EncrId.AES_CBC, None, "needs a Key Length"),
        (EncrId.AES_CBC, 192, "192-bit keys is not supported"),
        (EncrId.DES3, 192, "transform 3 "),
        (EncrId.CHACHA20_POLY1305, 128, "takes no Key Length"),
    ],
)
def test_unsupported_encryption_is_named(encr_id: int, bits: int | None, needle: str) -> None:
    with pytest.raises(UnsupportedTransform, match=needle):
        encr_for(encr_id, bits)


def test_unsupported_prf_and_integ_are_named() -> None:
    with pytest.raises(UnsupportedTransform, match="PRF transform 4 "):
        prf_for(4)
    with pytest.raises(UnsupportedTransform, match="integrity transform 5 "):
        integ_for(5)


def test_encr_refuses_wrong_iv_and_key_sizes() -> None:
    """What we encrypt with is ours (LocalError); what we decrypt is the peer's."""
    encr = encr_for(EncrId.AES_GCM_16, 128)
    with pytest.raises(LocalError, match="8-byte IV"):
        encr.encrypt(b"k" * 20, b"iv", b"p")
    with pytest.raises(LocalError, match="20 key bytes"):
        encr.encrypt(b"k" * 16, b"i" * 8, b"p")
    with pytest.raises(CryptoError, match="8-byte IV"):
        encr.decrypt(b"k" * 20, b"iv", b"p" * 16)
    cbc = encr_for(EncrId.AES_CBC, 128)
    with pytest.raises(LocalError, match="not block aligned"):
        cbc.encrypt(b"k" * 16, b"i" * 16, b"p")
    with pytest.raises(CryptoError, match="not block aligned"):
        cbc.decrypt(b"k" * 16, b"i" * 16, b"p" * 15)
    with pytest.raises(CryptoError, match="shorter than its tag"):
        encr.decrypt(b"k" * 20, b"i" * 8, b"short")


def test_padding_limits_are_local_errors() -> None:
    keys = keys_for(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    with pytest.raises(LocalError, match="multiple of 16"):
        encrypt_message(auth_header(), INNER, keys, pad_length=3)
    with pytest.raises(LocalError, match="do not fit the Pad Length octet"):
        encrypt_message(auth_header(), INNER, keys, pad_length=256)
