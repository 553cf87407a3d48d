"""Every ISAKMP payload round-trips, and every malformation is refused with the
payload's name and the offset of the fault (RFC 2408 sections 3.2-3.16, RFC 2407
section 4.6, RFC 3947 sections 3.2 and 5.2, RFC 3706 section 5.3).

Byte strings written out in hex follow the RFC figures field by field.
"""

from __future__ import annotations

import pytest

from tests.support.isakmp_vectors import COOKIES, EVERY_PAYLOAD
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.v1.attributes import Attribute
from vpnfleet.agent.ike.v1.constants import (
    DOI_IPSEC,
    SIT_IDENTITY_ONLY,
    EspTransform,
    ExchangeType,
    Flag,
    NotifyType,
    P2Attr,
    PayloadType,
    ProtocolId,
)
from vpnfleet.agent.ike.v1.message import IsakmpHeader, V1ParseError
from vpnfleet.agent.ike.v1.payloads import (
    DeletePayload,
    HashPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    UnknownPayload,
    VendorIdPayload,
    describe,
    encode_message,
    encode_payloads,
    parse_message,
    parse_payloads,
    split_payloads,
)


@pytest.mark.parametrize("payload", EVERY_PAYLOAD, ids=lambda p: type(p).__name__)
def test_each_payload_round_trips_alone(payload: Payload) -> None:
    first, data = encode_payloads([payload])
    assert first == payload.payload_type
    assert parse_payloads(first, data) == [payload]


def test_whole_chain_round_trips_in_a_message() -> None:
    header = IsakmpHeader(COOKIES[:8], COOKIES[8:], 0, ExchangeType.QUICK, Flag.NONE, 77)
    data = encode_message(header, EVERY_PAYLOAD)
    parsed_header, payloads = parse_message(data)
    assert parsed_header.next_payload == PayloadType.SA
    assert parsed_header.length == len(data)
    assert payloads == EVERY_PAYLOAD
    assert encode_message(parsed_header, payloads) == data


def test_sa_layout_matches_rfc_2408_figures() -> None:
    """RFC 2408 sections 3.4-3.6: SA (DOI, Situation), Proposal #, Protocol-Id,
    SPI Size, # of Transforms, SPI, then Transform #, Transform-Id, RESERVED2, TV
    attributes (RFC 2407 section 4.5)."""
    sa = SaPayload(
        DOI_IPSEC,
        SIT_IDENTITY_ONLY,
        (
            Proposal(
                1,
                ProtocolId.IPSEC_ESP,
                bytes.fromhex("11223344"),
                (Transform(1, EspTransform.AES_CBC, (Attribute(P2Attr.KEY_LENGTH, 128),)),),
            ),
        ),
    )
    expected = bytes.fromhex(
        "00000024 00000001 00000001"  # SA: generic header, DOI, Situation
        "00000018 01030401 11223344"  # Proposal: last, 24 bytes, #1 ESP, SPI 4, 1 transform
        "0000000c 010c0000 80060080"  # Transform: last, 12, #1 AES-CBC, key length 128
    )
    assert encode_payloads([sa]) == (PayloadType.SA, expected)
    assert parse_payloads(PayloadType.SA, expected) == [sa]


def test_dpd_notify_sequence() -> None:
    """RFC 3706 section 5.3: the sequence number is the 4-octet notification data."""
    notify = EVERY_PAYLOAD[9]
    assert isinstance(notify, NotifyPayload) and notify.sequence == 7
    with pytest.raises(LocalError):
        _ = NotifyPayload(DOI_IPSEC, 1, b"", NotifyType.INITIAL_CONTACT).sequence


def test_describe_names_each_payload() -> None:
    assert describe(EVERY_PAYLOAD) == (
        "[ SA KE ID ID CERT CERTREQ HASH SIG No N(R_U_THERE) N(INITIAL_CONTACT) D D V "
        "CP(REPLY) NAT-D NAT-D NAT-OA NAT-OA U(132) ]"
    )


def test_encrypted_message_must_be_decrypted_first() -> None:
    header = IsakmpHeader(COOKIES[:8], COOKIES[8:], 0, ExchangeType.QUICK, Flag.ENCRYPTION, 1)
    data = encode_message(header, [HashPayload(b"h" * 20)])
    with pytest.raises(V1ParseError, match="ISAKMP header at offset 19: ENCRYPTION flag set"):
        parse_message(data)


def test_padding_after_a_decrypted_chain_is_allowed_only_when_asked() -> None:
    """RFC 2409 section 5.3: a decrypted body ends in the cipher's padding."""
    first, data = encode_payloads([HashPayload(b"h" * 20)])
    padded = data + bytes(8)
    assert parse_payloads(first, padded, padded=True) == [HashPayload(b"h" * 20)]
    with pytest.raises(V1ParseError, match="message at offset 52: 8 bytes after the last payload"):
        parse_payloads(first, padded)


def test_unknown_payload_is_kept_and_chained_over() -> None:
    """RFC 2408 section 5.1 would reject it; the codec keeps it for the exchange to
    answer with INVALID-PAYLOAD-TYPE, and must still step over it."""
    first, data = encode_payloads([UnknownPayload(200, b"??"), NoncePayload(b"n" * 8)])
    assert first == 200
    assert parse_payloads(first, data) == [UnknownPayload(200, b"??"), NoncePayload(b"n" * 8)]
    assert [raw.offset for raw in split_payloads(first, data)] == [32, 38]
    with pytest.raises(V1ParseError) as info:
        parse_payloads(first, data, reject_unknown=True)
    assert str(info.value) == "type 200 payload at offset 28: unknown payload type 200"
    assert info.value.notify == NotifyType.INVALID_PAYLOAD_TYPE


# -- refusals: (first type, chain bytes, payload named, offset, words, notify) -----------


def chain(first: int, body: bytes, following: int = 0) -> tuple[int, bytes]:
    """One payload with an honest generic header."""
    return first, bytes([following, 0]) + (4 + len(body)).to_bytes(2, "big") + body


def sa_with(proposals: bytes) -> tuple[int, bytes]:
    return chain(PayloadType.SA, bytes.fromhex("00000001 00000001") + proposals)


REFUSALS = [
    # Generic header (RFC 2408 section 3.2) and the chain.
    ((PayloadType.NONCE, b"\x00\x00\x00"), "NONCE payload", 28, "needs 4 bytes, 3 left", None),
    (
        (PayloadType.NONCE, b"\x00\x00\x00\x03"),
        "NONCE payload",
        28,
        "payload length 3 below 4",
        None,
    ),
    (
        (PayloadType.NONCE, b"\x00\x00\x00\x30" + bytes(8)),
        "NONCE payload",
        28,
        "payload length 48 runs past the 12 bytes left",
        NotifyType.UNEQUAL_PAYLOAD_LENGTHS,
    ),
    (
        chain(PayloadType.HASH, b"h", following=PayloadType.NONCE),
        "NONCE payload",
        33,
        "needs 4 bytes, 0 left",
        None,
    ),
    (
        chain(PayloadType.PROPOSAL, b"x" * 8),
        "PROPOSAL payload",
        28,
        "outside an SA payload",
        NotifyType.INVALID_PAYLOAD_TYPE,
    ),
    (
        (PayloadType.HASH, chain(PayloadType.HASH, b"h")[1] + b"x"),
        "message",
        33,
        "1 bytes after the last payload",
        NotifyType.UNEQUAL_PAYLOAD_LENGTHS,
    ),
    # Fixed parts below their size (offset is the payload's start).
    (chain(PayloadType.ID, b"\x02\x00\x00"), "ID payload", 28, "payload length 7 below 8", None),
    (chain(PayloadType.NOTIFY, bytes(7)), "NOTIFY payload", 28, "payload length 11 below 12", None),
    (chain(PayloadType.DELETE, bytes(7)), "DELETE payload", 28, "payload length 11 below 12", None),
    (chain(PayloadType.CERT, b""), "CERT payload", 28, "payload length 4 below 5", None),
    (chain(PayloadType.CERTREQ, b""), "CERTREQ payload", 28, "payload length 4 below 5", None),
    (chain(PayloadType.ATTRIBUTE, b"\x01"), "ATTRIBUTE payload", 28, "length 5 below 8", None),
    (chain(PayloadType.NAT_OA, b"\x01\x00\x00"), "NAT_OA payload", 28, "length 7 below 8", None),
    (chain(PayloadType.SA, bytes(7)), "SA payload", 28, "payload length 11 below 12", None),
    # Empty or out-of-range data.
    (chain(PayloadType.KE, b""), "KE payload", 32, "empty key exchange data", None),
    (chain(PayloadType.HASH, b""), "HASH payload", 32, "empty hash data", None),
    (chain(PayloadType.SIG, b""), "SIG payload", 32, "empty signature data", None),
    (chain(PayloadType.VENDOR_ID, b""), "VENDOR_ID payload", 32, "empty vendor ID", None),
    (chain(PayloadType.NAT_D, b""), "NAT_D payload", 32, "empty hash", None),
    (
        chain(PayloadType.NONCE, b"n" * 7),
        "NONCE payload",
        32,
        "nonce of 7 bytes outside 8..256",
        None,
    ),
    (chain(PayloadType.NONCE, b"n" * 257), "NONCE payload", 32, "nonce of 257 bytes", None),
    # RFC 2407 section 4.6.2: ID data lengths of the address types.
    (
        chain(PayloadType.ID, bytes.fromhex("01000000 0a0000")),
        "ID payload",
        36,
        "IPV4_ADDR needs 4 bytes, got 3",
        NotifyType.INVALID_ID_INFORMATION,
    ),
    (
        chain(PayloadType.ID, bytes.fromhex("06000000") + bytes(16)),
        "ID payload",
        36,
        "IPV6_ADDR_SUBNET needs 32 bytes, got 16",
        NotifyType.INVALID_ID_INFORMATION,
    ),
    (
        chain(PayloadType.ID, bytes.fromhex("02000000")),
        "ID payload",
        36,
        "empty identification",
        None,
    ),
    # Notify and Delete (RFC 2408 sections 3.14, 3.15; RFC 3706 section 5.3).
    (
        chain(PayloadType.NOTIFY, bytes.fromhex("00000001 01100000") + bytes(4)),
        "NOTIFY payload",
        37,
        "SPI size 16 runs past the 4 bytes left",
        None,
    ),
    (
        chain(PayloadType.NOTIFY, bytes.fromhex("00000001 01008d28 000000")),
        "NOTIFY payload",
        40,
        "R_U_THERE needs a 4-byte sequence number, got 3 bytes",
        None,
    ),
    (
        chain(PayloadType.DELETE, bytes.fromhex("00000001 03040002 00000001")),
        "DELETE payload",
        38,
        "2 SPIs of 4 bytes, but 4 bytes follow",
        None,
    ),
    (
        chain(PayloadType.DELETE, bytes.fromhex("00000001 03040000")),
        "DELETE payload",
        38,
        "no SPI",
        None,
    ),
    # NAT-OA (RFC 3947 section 5.2).
    (
        chain(PayloadType.NAT_OA, bytes.fromhex("02000000 c0000209")),
        "NAT_OA payload",
        32,
        "ID type 2 is not IPV4_ADDR or IPV6_ADDR",
        None,
    ),
    (
        chain(PayloadType.NAT_OA_DRAFT, bytes.fromhex("05000000 c0000209")),
        "NAT_OA payload",
        36,
        "IPV6_ADDR needs 16 bytes, got 4",
        None,
    ),
    # SA, Proposal, Transform (RFC 2408 sections 3.4-3.6).
    (
        chain(PayloadType.SA, bytes.fromhex("00000000 00000001")),
        "SA payload",
        32,
        "DOI 0 is not IPsec (1)",
        NotifyType.DOI_NOT_SUPPORTED,
    ),
    (
        chain(PayloadType.SA, bytes.fromhex("00000001 00000003")),
        "SA payload",
        36,
        "situation 0x3 has labelled secrecy or integrity",
        NotifyType.SITUATION_NOT_SUPPORTED,
    ),
    (sa_with(b""), "SA payload", 40, "no proposal", NotifyType.BAD_PROPOSAL_SYNTAX),
    (sa_with(bytes.fromhex("000000")), "Proposal", 40, "header needs 4 bytes, 3 left", None),
    (
        sa_with(bytes.fromhex("0300000c 01010001 0000000c")),
        "Proposal",
        40,
        "next payload 3, expected 2 or 0",
        NotifyType.BAD_PROPOSAL_SYNTAX,
    ),
    (sa_with(bytes.fromhex("00000003 01010001")), "Proposal", 40, "length 3 below 4", None),
    (
        sa_with(bytes.fromhex("00000010 01010001")),
        "Proposal",
        40,
        "length 16 runs past the 8 bytes left",
        None,
    ),
    (
        sa_with(bytes.fromhex("00000008 01010001 00")),
        "Proposal",
        48,
        "1 bytes after the last Proposal",
        None,
    ),
    (
        sa_with(bytes.fromhex("02000008 01010000")),
        "Proposal",
        48,
        "header needs 4 bytes, 0 left",
        None,
    ),
    (sa_with(bytes.fromhex("00000007 010100")), "Proposal", 40, "payload length 7 below 8", None),
    (
        sa_with(bytes.fromhex("0000000c 01030801 11223344")),
        "Proposal",
        46,
        "SPI size 8 runs past the 4 bytes left",
        None,
    ),
    (
        sa_with(bytes.fromhex("00000008 01010001")),
        "Proposal",
        47,
        "1 transforms announced, 0 present",
        NotifyType.BAD_PROPOSAL_SYNTAX,
    ),
    (
        sa_with(bytes.fromhex("00000014 01010002 0000000c 01010000 80010007")),
        "Proposal",
        47,
        "2 transforms announced, 1 present",
        NotifyType.BAD_PROPOSAL_SYNTAX,
    ),
    (
        sa_with(bytes.fromhex("00000014 01010001 0300000c 01010000 80010007")),
        "Transform",
        60,
        "header needs 4 bytes, 0 left",
        None,
    ),
    (
        sa_with(bytes.fromhex("0000000f 01010001 00000007 010100")),
        "Transform",
        48,
        "payload length 7 below 8",
        None,
    ),
    # RFC 2409 Appendix A: ENCRYPTION is Basic, so a length is refused in phase 1 ...
    (
        sa_with(bytes.fromhex("00000016 01010001 0000000e 01010000 00010002 0007")),
        "Transform",
        56,
        "attribute type 1 is basic (TV only) but sent with length 2",
        NotifyType.ATTRIBUTES_NOT_SUPPORTED,
    ),
    # ... and RFC 2407 section 4.5: ENCAPSULATION is Basic in phase 2.
    (
        sa_with(bytes.fromhex("0000001a 01030401 11223344 0000000e 010c0000 00040002 0001")),
        "Transform",
        60,
        "attribute type 4 is basic (TV only)",
        NotifyType.ATTRIBUTES_NOT_SUPPORTED,
    ),
    (
        sa_with(bytes.fromhex("00000012 01010001 0000000a 01010000 8001")),
        "Transform",
        56,
        "data attribute needs 4 bytes, 2 left",
        None,
    ),
    (
        chain(PayloadType.ATTRIBUTE, bytes.fromhex("02000007 0001 0008 0a000001")),
        "ATTRIBUTE payload",
        38,
        "length 8 runs past the 4 bytes left",
        None,
    ),
]


@pytest.mark.parametrize(
    ("first_and_data", "payload", "offset", "words", "notify"),
    REFUSALS,
    ids=[f"{case[1]}-{case[3]}" for case in REFUSALS],
)
def test_refusal_names_payload_and_offset(
    first_and_data: tuple[int, bytes],
    payload: str,
    offset: int,
    words: str,
    notify: NotifyType | None,
) -> None:
    first, data = first_and_data
    with pytest.raises(V1ParseError) as info:
        parse_payloads(first, data, 28)
    assert (info.value.payload, info.value.offset) == (payload, offset), str(info.value)
    assert words in str(info.value)
    assert str(info.value).startswith(f"{payload} at offset {offset}: ")
    if notify is not None:
        assert info.value.notify == notify


def test_the_same_attribute_in_tlv_form_is_fine_where_it_is_variable() -> None:
    """RFC 2407 section 4.5: SA Life Duration is Variable, so TLV is allowed."""
    body = bytes.fromhex("0000001c 01030401 11223344 00000010 010c0000 00020004 00015180")
    (sa,) = parse_payloads(*sa_with(body))
    assert isinstance(sa, SaPayload)
    (attribute,) = sa.proposals[0].transforms[0].attributes
    assert attribute == Attribute(P2Attr.LIFE_DURATION, bytes.fromhex("00015180"))


@pytest.mark.parametrize(
    "payload",
    [
        NotifyPayload(DOI_IPSEC, 1, bytes(256), NotifyType.INITIAL_CONTACT),
        DeletePayload(DOI_IPSEC, 3, (b"\x00\x00\x00\x01", b"\x00\x01")),
        VendorIdPayload(bytes(0x10000)),
        Proposal(1, 3, bytes(256), ()),
    ],
    ids=["notify-spi", "delete-unequal", "oversized", "proposal-spi"],
)
def test_encoding_what_cannot_be_sent_is_a_local_error(payload: object) -> None:
    with pytest.raises(LocalError):
        if isinstance(payload, Proposal):
            payload.encode(True)
        else:
            encode_payloads([payload])  # type: ignore[list-item]
