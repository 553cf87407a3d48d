"""Property tests of the ISAKMP codec: random and mutated datagrams raise nothing but
V1ParseError, and generated payload lists round-trip (RFC 2408 section 3).

Seeds are the strongSwan vectors of tests/support/isakmp_vectors.py plus a message that
carries every payload type.
"""

from __future__ import annotations

import ipaddress
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.isakmp_vectors import (
    AGGRESSIVE_1,
    EVERY_PAYLOAD,
    INFO_AUTH_FAILED,
    MAIN_1,
    MAIN_3,
)
from vpnfleet.agent.ike.v1.attributes import Attribute, parse_attributes
from vpnfleet.agent.ike.v1.constants import (
    DOI_IPSEC,
    P1_BASIC_ATTRIBUTES,
    ExchangeType,
    Flag,
    IdType,
    PayloadType,
    ProtocolId,
)
from vpnfleet.agent.ike.v1.message import IsakmpHeader, V1ParseError
from vpnfleet.agent.ike.v1.payloads import (
    NONCE_MAX,
    NONCE_MIN,
    AttributePayload,
    CertPayload,
    CertReqPayload,
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SigPayload,
    Transform,
    UnknownPayload,
    VendorIdPayload,
    encode_message,
    encode_payloads,
    parse_message,
    parse_payloads,
)

EXAMPLES = int(os.environ.get("VPNFLEET_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EVERY = encode_message(
    IsakmpHeader(b"\x01" * 8, b"\x02" * 8, 0, ExchangeType.QUICK, Flag.NONE, 9), EVERY_PAYLOAD
)
SEEDS = [MAIN_1, MAIN_3, AGGRESSIVE_1, INFO_AUTH_FAILED, EVERY]


def only_v1_parse_errors(data: bytes) -> None:
    try:
        parse_message(data)
    except V1ParseError as exc:
        assert exc.payload and 0 <= exc.offset <= len(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    only_v1_parse_errors(data)


@FUZZ
@given(st.binary(min_size=28, max_size=600))
def test_random_bytes_behind_a_plausible_header(data: bytes) -> None:
    fixed = bytearray(data)
    fixed[0] |= 1  # a non-zero initiator cookie
    fixed[17] = 0x10
    fixed[19] &= ~Flag.ENCRYPTION & 0xFF
    fixed[24:28] = len(fixed).to_bytes(4, "big")
    only_v1_parse_errors(bytes(fixed))


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_seed(seed: bytes, mutations: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for position, value in mutations:
        data[position % len(data)] = value
    only_v1_parse_errors(bytes(data))


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(28, 2_000), st.binary(max_size=40))
def test_truncated_or_extended_seed(seed: bytes, cut: int, tail: bytes) -> None:
    data = bytearray(seed[: 28 + cut % (len(seed) - 27)] + tail)
    data[24:28] = len(data).to_bytes(4, "big")
    only_v1_parse_errors(bytes(data))


@FUZZ
@given(
    st.sampled_from([t.value for t in PayloadType if t != 0] + [15, 99, 132, 255]),
    st.binary(max_size=120),
    st.booleans(),
)
def test_every_payload_type_with_random_body(payload_type: int, body: bytes, padded: bool) -> None:
    chunk = bytes([0, 0]) + (4 + len(body)).to_bytes(2, "big") + body
    try:
        parse_payloads(payload_type, chunk, 28, padded=padded)
    except V1ParseError as exc:
        assert 28 <= exc.offset <= 28 + len(chunk)


@FUZZ
@given(st.binary(max_size=80), st.booleans())
def test_random_attributes(data: bytes, basic: bool) -> None:
    try:
        attributes = parse_attributes(data, 0, basic=P1_BASIC_ATTRIBUTES if basic else frozenset())
    except V1ParseError:
        return
    assert b"".join(a.encode() for a in attributes) == data


# -- generated payloads round-trip ------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
data = st.binary(min_size=1, max_size=40)
attributes = st.lists(
    st.builds(
        Attribute,
        st.integers(0, 0x7FFF),
        st.one_of(u16, st.binary(max_size=12)),
    ),
    max_size=4,
).map(tuple)
# Basic types only in TV form where they are refused otherwise.
p1_attributes = attributes.map(
    lambda attrs: tuple(
        a for a in attrs if a.is_tv or (a.type not in P1_BASIC_ATTRIBUTES and a.type > 11)
    )
)
transforms = st.lists(st.builds(Transform, u8, u8, p1_attributes), min_size=1, max_size=3)
proposals = st.lists(
    st.builds(
        Proposal,
        u8,
        st.just(ProtocolId.ISAKMP),
        st.binary(max_size=16),
        transforms.map(tuple),
    ),
    min_size=1,
    max_size=3,
)
addresses = st.one_of(
    st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
)
free_id_types = st.sampled_from([IdType.FQDN, IdType.USER_FQDN, IdType.KEY_ID, 200])
spi_size = st.integers(0, 16)

payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(SaPayload, st.just(DOI_IPSEC), st.sampled_from([0, 1]), proposals.map(tuple)),
    st.builds(KePayload, data),
    st.builds(IdPayload, free_id_types, u8, u16, data),
    st.builds(IdPayload, st.just(IdType.IPV4_ADDR), u8, u16, st.binary(min_size=4, max_size=4)),
    st.builds(CertPayload, u8, st.binary(max_size=40)),
    st.builds(CertReqPayload, u8, st.binary(max_size=40)),
    st.builds(HashPayload, data),
    st.builds(SigPayload, data),
    st.builds(NoncePayload, st.binary(min_size=NONCE_MIN, max_size=NONCE_MAX)),
    st.builds(
        NotifyPayload,
        st.integers(0, 2**32 - 1),
        u8,
        st.binary(max_size=16),
        st.integers(1, 16383),
        st.binary(max_size=20),
    ),
    spi_size.flatmap(
        lambda size: st.builds(
            DeletePayload,
            st.integers(0, 2**32 - 1),
            u8,
            st.lists(st.binary(min_size=size, max_size=size), min_size=1, max_size=4).map(tuple),
        )
    ),
    st.builds(VendorIdPayload, data),
    st.builds(AttributePayload, u8, u16, attributes),
    st.builds(NatDPayload, data, st.sampled_from([PayloadType.NAT_D, PayloadType.NAT_D_DRAFT])),
    st.builds(
        NatOaPayload, addresses, st.sampled_from([PayloadType.NAT_OA, PayloadType.NAT_OA_DRAFT])
    ),
    st.builds(UnknownPayload, st.sampled_from([15, 99, 132, 200, 255]), st.binary(max_size=20)),
)


@FUZZ
@given(st.lists(payloads, min_size=1, max_size=6))
def test_generated_payload_lists_round_trip(generated: list[Payload]) -> None:
    first, data = encode_payloads(generated)
    parsed = parse_payloads(first, data)
    assert parsed == generated
    assert encode_payloads(parsed) == (first, data)


@FUZZ
@given(
    st.lists(payloads, max_size=4),
    st.binary(min_size=8, max_size=8).filter(any),
    st.binary(min_size=8, max_size=8),
    st.sampled_from(list(ExchangeType)),
    st.integers(0, 2**32 - 1),
)
def test_generated_messages_round_trip(
    generated: list[Payload], icookie: bytes, rcookie: bytes, exchange: int, mid: int
) -> None:
    header = IsakmpHeader(icookie, rcookie, 0, exchange, Flag.COMMIT, mid)
    message = encode_message(header, generated)
    parsed_header, parsed = parse_message(message)
    assert parsed == generated
    assert encode_message(parsed_header, parsed) == message
