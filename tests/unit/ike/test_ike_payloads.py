"""Payload codec: every RFC 7296 payload round-trips; every inconsistency is named."""

from __future__ import annotations

import ipaddress

import pytest

from vpnfleet.agent.ike.constants import (
    AuthMethod,
    CertEncoding,
    CfgAttributeType,
    CfgType,
    DhGroup,
    EncrId,
    ExchangeType,
    HeaderFlag,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from vpnfleet.agent.ike.errors import ParseError
from vpnfleet.agent.ike.message import (
    IkeHeader,
    Message,
    parse_message,
    parse_payloads,
    serialize_message,
)
from vpnfleet.agent.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CfgAttribute,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    RawPayload,
    SkfPayload,
    SkPayload,
    TrafficSelector,
    TsPayload,
    TsrPayload,
    VendorIdPayload,
)
from vpnfleet.agent.ike.sa_payload import Proposal, SaPayload, Transform, TransformAttribute

SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("1112131415161718")


def header(exchange: int = ExchangeType.IKE_SA_INIT, message_id: int = 0) -> IkeHeader:
    return IkeHeader(SPI_I, SPI_R, 0, exchange, HeaderFlag.INITIATOR, message_id)


def ike_proposal() -> SaPayload:
    return SaPayload(
        [
            Proposal(
                1,
                ProtocolId.IKE,
                b"",
                [
                    Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, 256),
                    Transform(TransformType.PRF, PrfId.HMAC_SHA2_384),
                    Transform(TransformType.DH, DhGroup.CURVE25519),
                ],
            ),
            Proposal(
                2,
                ProtocolId.IKE,
                b"",
                [
                    Transform.with_key_length(TransformType.ENCR, EncrId.AES_CBC, 128),
                    Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
                    Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
                    Transform(TransformType.DH, DhGroup.MODP_2048),
                ],
            ),
        ]
    )


ALL_PAYLOADS: list[Payload] = [
    ike_proposal(),
    SaPayload(
        [
            Proposal(
                1,
                ProtocolId.ESP,
                b"\xca\xfe\x00\x01",
                [
                    Transform(
                        TransformType.ENCR,
                        EncrId.AES_CBC,
                        [TransformAttribute(14, 256), TransformAttribute(99, b"tlv")],
                    ),
                    Transform(TransformType.ESN, 0),
                ],
            )
        ]
    ),
    KePayload(DhGroup.CURVE25519, b"\x42" * 32),
    IdPayload(IdType.ID_FQDN, b"gw.example.net"),
    IdrPayload(IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
    IdPayload(IdType.ID_IPV6_ADDR, ipaddress.IPv6Address("2001:db8::1").packed),
    CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x82der"),
    CertReqPayload(CertEncoding.X509_SIGNATURE, b"\x11" * 20),
    AuthPayload(AuthMethod.SHARED_KEY_MIC, b"\x99" * 32),
    NoncePayload(b"\x07" * 32),
    NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"\x01" * 20),
    NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\x00\x00\x10\x01"),
    DeletePayload(ProtocolId.ESP, [b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"]),
    DeletePayload(ProtocolId.IKE, []),
    VendorIdPayload(b"vendor"),
    TsPayload(
        [TrafficSelector(ipaddress.ip_address("10.0.0.0"), ipaddress.ip_address("10.0.0.255"))]
    ),
    TsrPayload(
        [
            TrafficSelector(
                ipaddress.ip_address("2001:db8::"),
                ipaddress.ip_address("2001:db8::ffff"),
                17,
                500,
                500,
            ),
            TrafficSelector(
                ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("192.0.2.7"), 6, 0, 65535
            ),
        ]
    ),
    CpPayload(
        CfgType.CFG_REQUEST,
        [CfgAttribute(CfgAttributeType.INTERNAL_IP4_ADDRESS), CfgAttribute(3, b"\x08\x08\x08\x08")],
    ),
    EapPayload(1, 7, b"\x01identity"),
    RawPayload(200, b"opaque", critical=False),
]


def test_every_payload_round_trips_in_one_message() -> None:
    data = serialize_message(header(), list(ALL_PAYLOADS))
    message = parse_message(data)
    assert message.payloads == ALL_PAYLOADS
    assert message.header.length == len(data)
    assert serialize_message(message.header, message.payloads) == data


def test_header_round_trip_and_flags() -> None:
    h = IkeHeader(
        SPI_I, SPI_R, 0, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR | HeaderFlag.RESPONSE, 7
    )
    data = serialize_message(h, [NoncePayload(b"n" * 16)])
    parsed = parse_message(data).header
    assert parsed.exchange_type == ExchangeType.IKE_AUTH
    assert parsed.is_response and parsed.is_initiator
    assert parsed.message_id == 7
    assert (parsed.major_version, parsed.minor_version) == (2, 0)


def test_key_length_attribute_is_tv_format() -> None:
    """RFC 7296 section 3.3.5: Key Length is AF=1, type 14, 2-byte value."""
    sa = SaPayload(
        [
            Proposal(
                1,
                ProtocolId.IKE,
                b"",
                [Transform.with_key_length(TransformType.ENCR, EncrId.AES_CBC, 256)],
            )
        ]
    )
    body = sa.serialize_body()
    assert body.endswith(bytes.fromhex("800e0100"))
    assert sa.proposals[0].transforms[0].key_length == 256


def test_describe_is_strongswan_like() -> None:
    data = serialize_message(
        header(), [ike_proposal(), KePayload(31, b"k" * 32), NoncePayload(b"n" * 32)]
    )
    assert parse_message(data).describe() == "IKE_SA_INIT request 0 [ SA KE Nonce ]"


def test_sk_payload_is_opaque_and_last() -> None:
    sk = SkPayload(PayloadType.IDI, b"\xaa" * 40)
    data = serialize_message(header(ExchangeType.IKE_AUTH, 1), [NotifyPayload(16430), sk])
    message = parse_message(data)
    assert message.encrypted == sk
    assert message.encrypted is not None and message.encrypted.offset == 28 + 8


def test_skf_fields() -> None:
    skf = SkfPayload(PayloadType.IDI, 1, 3, b"\xbb" * 40)
    message = parse_message(serialize_message(header(ExchangeType.IKE_AUTH, 1), [skf]))
    assert message.encrypted == skf


# -- errors, one test per kind -----------------------------------------------------


def parse_error(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    return info.value


def good() -> bytes:
    return serialize_message(
        header(), [ike_proposal(), KePayload(31, b"k" * 32), NoncePayload(b"n" * 32)]
    )


def test_short_datagram() -> None:
    err = parse_error(b"\x00" * 20)
    assert err.payload == "IKE header" and err.offset == 0 and "shorter than" in str(err)


def test_header_length_mismatch() -> None:
    err = parse_error(good() + b"\x00")
    assert err.payload == "IKE header" and err.offset == 24


def test_wrong_major_version_asks_for_invalid_major_version() -> None:
    data = bytearray(good())
    data[17] = 0x30
    err = parse_error(bytes(data))
    assert err.notify == NotifyType.INVALID_MAJOR_VERSION and err.offset == 17


def test_zero_initiator_spi() -> None:
    data = bytearray(good())
    data[0:8] = bytes(8)
    assert parse_error(bytes(data)).notify == NotifyType.INVALID_IKE_SPI


def test_payload_length_below_header() -> None:
    data = bytearray(good())
    data[30:32] = b"\x00\x03"
    err = parse_error(bytes(data))
    assert err.payload == "SA" and err.offset == 30 and "below 4" in str(err)


def test_payload_length_past_end() -> None:
    data = serialize_message(header(), [NoncePayload(b"n" * 32)])
    broken = bytearray(data)
    broken[30:32] = (100).to_bytes(2, "big")
    err = parse_error(bytes(broken))
    assert err.payload == "Nonce" and "runs past the end" in str(err)


def test_bytes_after_last_payload() -> None:
    data = bytearray(serialize_message(header(), [NoncePayload(b"n" * 32)]) + b"\x00\x00")
    data[24:28] = len(data).to_bytes(4, "big")
    err = parse_error(bytes(data))
    assert err.payload == "payload chain" and err.offset == len(data) - 2


def test_truncated_generic_header() -> None:
    data = bytearray(serialize_message(header(), [NoncePayload(b"n" * 32)]))
    data[28] = PayloadType.NOTIFY  # claims another payload follows, but nothing does
    err = parse_error(bytes(data))
    assert err.payload == "Notify" and "generic payload header" in str(err)


def test_unknown_critical_payload_is_refused_with_its_type() -> None:
    data = serialize_message(
        header(), [RawPayload(222, b"x", critical=True), NoncePayload(b"n" * 16)]
    )
    err = parse_error(data)
    assert err.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert err.notify_data == bytes([222])
    assert err.payload == "payload type 222" and err.offset == 28


def test_unknown_non_critical_payload_is_kept_raw() -> None:
    data = serialize_message(header(), [RawPayload(222, b"x"), NoncePayload(b"n" * 16)])
    message = parse_message(data)
    assert message.payloads[0] == RawPayload(222, b"x")
    assert isinstance(message.payloads[1], NoncePayload)


def test_known_payload_with_critical_bit_is_accepted() -> None:
    """RFC 7296 section 2.5: the critical bit only matters for unknown payloads."""
    data = bytearray(serialize_message(header(), [NoncePayload(b"n" * 16)]))
    data[29] = 0x80
    assert isinstance(parse_message(bytes(data)).payloads[0], NoncePayload)


def test_bytes_after_encrypted_payload() -> None:
    data = bytearray(serialize_message(header(), [SkPayload(PayloadType.IDI, b"\x00" * 20)]))
    data[30:32] = (24 - 2).to_bytes(2, "big")
    err = parse_error(bytes(data))
    assert err.payload == "SK" and "must be last" in str(err)


def body_error(payload_type: int, body: bytes) -> ParseError:
    chunk = bytes([0, 0]) + (4 + len(body)).to_bytes(2, "big") + body
    with pytest.raises(ParseError) as info:
        parse_payloads(chunk, payload_type, 28)
    return info.value


@pytest.mark.parametrize(
    ("payload_type", "body", "name", "needle"),
    [
        (PayloadType.SA, b"", "SA", "no proposals"),
        (PayloadType.SA, bytes.fromhex("01000008 01010000"), "SA", "'last' field is 1"),
        (PayloadType.SA, bytes.fromhex("00000007 010100"), "SA", "below 8"),
        (PayloadType.SA, bytes.fromhex("02000008 01010000"), "SA", "disagrees with payload length"),
        (PayloadType.SA, bytes.fromhex("00000008 02010000"), "SA", None),  # a reply to #2
        (PayloadType.SA, bytes.fromhex("00000008 00010000"), "SA", "proposal number 0"),
        (PayloadType.SA, bytes.fromhex("00000008 01010002"), "SA", "announces 2 transforms"),
        (PayloadType.SA, bytes.fromhex("00000009 01010800 aa"), "SA", "need 8 bytes"),
        (PayloadType.SA, bytes.fromhex("00000010 01010001 00000008 01000014"), "SA", None),
        (
            PayloadType.SA,
            bytes.fromhex("00000010 01010001 03000008 01000014"),
            "SA",
            "disagrees with proposal",
        ),
        (
            PayloadType.SA,
            bytes.fromhex("00000010 01010001 05000008 01000014"),
            "SA",
            "'last' field is 5",
        ),
        (PayloadType.SA, bytes.fromhex("00000010 01010001 00000007 01000014"), "SA", "below 8"),
        (
            PayloadType.SA,
            bytes.fromhex("00000014 01010001 0000000c 0100000c 000e0010"),
            "SA",
            "need 16 bytes",
        ),
        (PayloadType.KE, bytes.fromhex("001f0000"), "KE", "empty key exchange"),
        (PayloadType.KE, bytes.fromhex("001f"), "KE", "need 2 bytes"),
        (PayloadType.IDI, bytes.fromhex("01000000 c000"), "IDi", "needs 4 bytes"),
        (PayloadType.IDR, bytes.fromhex("05000000 c0000201"), "IDr", "needs 16 bytes"),
        (PayloadType.IDI, bytes.fromhex("02000000"), "IDi", "empty identification"),
        (PayloadType.AUTH, bytes.fromhex("02000000"), "AUTH", "empty authentication"),
        (PayloadType.NONCE, b"n" * 15, "Nonce", "must be 16..256"),
        (PayloadType.NONCE, b"n" * 257, "Nonce", "must be 16..256"),
        (PayloadType.NOTIFY, bytes.fromhex("0304 4009 0000"), "Notify", "need 4 bytes"),
        (
            PayloadType.DELETE,
            bytes.fromhex("01080001 0000000000000000"),
            "Delete",
            "carries no SPIs",
        ),
        (PayloadType.DELETE, bytes.fromhex("03080001 0000000000000000"), "Delete", "must be 4"),
        (PayloadType.DELETE, bytes.fromhex("03040002 00000001"), "Delete", "do not fill"),
        (PayloadType.TSI, bytes.fromhex("00000000"), "TSi", "no traffic selectors"),
        (
            PayloadType.TSI,
            bytes.fromhex("01000000 09000010 0000ffff 0a000000 0a0000ff"),
            "TSi",
            "unknown traffic selector type 9",
        ),
        (
            PayloadType.TSR,
            bytes.fromhex("01000000 07000028 0000ffff 0a000000 0a0000ff"),
            "TSr",
            "needs 16",
        ),
        (
            PayloadType.TSI,
            bytes.fromhex("02000000 07000010 0000ffff 0a000000 0a0000ff"),
            "TSi",
            "need 1 bytes",
        ),
        (
            PayloadType.TSI,
            bytes.fromhex("01000000 07000010 0000ffff 0a000000 0a0000ff 00"),
            "TSi",
            "1 bytes after 1 selectors",
        ),
        (PayloadType.CP, bytes.fromhex("01000000 0001 0004 0a00"), "CP", "need 4 bytes"),
        (PayloadType.EAP, bytes.fromhex("0107 0009 01"), "EAP", "EAP length 9"),
        (PayloadType.SKF, bytes.fromhex("0003 0002"), "SKF", "fragment 3 of 2"),
        (PayloadType.SKF, bytes.fromhex("0000 0002"), "SKF", "fragment 0 of 2"),
        (PayloadType.CERT, b"", "CERT", "need 1 bytes"),
    ],
)
def test_malformed_bodies_name_payload_and_offset(
    payload_type: int, body: bytes, name: str, needle: str | None
) -> None:
    if needle is None:  # a well-formed control case for the neighbouring rows
        parse_payloads(bytes([0, 0]) + (4 + len(body)).to_bytes(2, "big") + body, payload_type, 28)
        return
    err = body_error(payload_type, body)
    assert err.payload == name
    assert needle in str(err)
    assert 32 <= err.offset <= 32 + len(body)


def test_error_offset_points_at_the_fault() -> None:
    """A bad transform inside the second payload: the offset is the transform's."""
    nonce = NoncePayload(b"n" * 16)
    sa_body = bytes.fromhex("00000010 01010001 05000008 01000014")
    data = bytearray(serialize_message(header(), [nonce, RawPayload(PayloadType.SA, sa_body)]))
    err = parse_error(bytes(data))
    # header 28 + Nonce 20 + SA generic header 4 + proposal header 8 = 60
    assert (err.payload, err.offset) == ("SA", 60)


def test_message_get_returns_payloads_of_a_class() -> None:
    message = Message(
        header(), [NoncePayload(b"n" * 16), KePayload(31, b"k"), NoncePayload(b"m" * 16)]
    )
    assert len(message.get(NoncePayload)) == 2
