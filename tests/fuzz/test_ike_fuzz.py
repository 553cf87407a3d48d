"""Property tests: random and mutated datagrams through the IKE parser and SK opener.

Only the documented error types (ParseError, CryptoError; both ProtocolError) may
escape; IndexError, struct.error, ValueError and friends must not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpnfleet.agent.ike.constants import (
    DhGroup,
    EncrId,
    ExchangeType,
    HeaderFlag,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from vpnfleet.agent.ike.crypto import SkKeys, decrypt_message, encrypt_message
from vpnfleet.agent.ike.errors import ParseError, ProtocolError
from vpnfleet.agent.ike.message import IkeHeader, parse_message, parse_payloads, serialize_message
from vpnfleet.agent.ike.payloads import (
    CfgAttribute,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    RawPayload,
    TrafficSelector,
    TsPayload,
)
from vpnfleet.agent.ike.sa_payload import Proposal, SaPayload, Transform
from vpnfleet.agent.ike.transforms import encr_for, integ_for

# VPNFLEET_FUZZ_EXAMPLES raises the budget for a deep run; CI keeps the default.
EXAMPLES = int(os.environ.get("VPNFLEET_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def seed_message() -> bytes:
    header = IkeHeader(b"\x01" * 8, bytes(8), 0, ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR, 0)
    payloads: list[Payload] = [
        SaPayload(
            [
                Proposal(
                    1,
                    ProtocolId.IKE,
                    b"",
                    [
                        Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, 256),
                        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
                        Transform(TransformType.DH, DhGroup.CURVE25519),
                    ],
                )
            ]
        ),
        KePayload(DhGroup.CURVE25519, b"k" * 32),
        NoncePayload(b"n" * 32),
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"s" * 20),
        IdPayload(1, b"\x0a\x00\x00\x01"),
        TsPayload(
            [TrafficSelector(ipaddress.ip_address("10.0.0.0"), ipaddress.ip_address("10.0.0.255"))]
        ),
        DeletePayload(ProtocolId.ESP, [b"\x00\x00\x00\x01"]),
        CpPayload(1, [CfgAttribute(1)]),
        EapPayload(1, 1, b"x"),
        RawPayload(200, b"raw"),
    ]
    return serialize_message(header, payloads)


SEED = seed_message()


def parse_only_documented_errors(data: bytes) -> None:
    try:
        parse_message(data)
    except ParseError as exc:
        assert exc.payload and exc.offset >= 0


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    parse_only_documented_errors(data)


@FUZZ
@given(st.binary(min_size=28, max_size=600))
def test_random_bytes_with_consistent_header(data: bytes) -> None:
    """Make the header plausible so the payload walker gets exercised."""
    fixed = bytearray(data)
    fixed[0] |= 1  # non-zero initiator SPI
    fixed[17] = 0x20
    fixed[24:28] = len(fixed).to_bytes(4, "big")
    parse_only_documented_errors(bytes(fixed))


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_mutated_seed(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(SEED)
    for position, value in mutations:
        data[position] = value
    parse_only_documented_errors(bytes(data))


@FUZZ
@given(st.integers(28, len(SEED)), st.binary(max_size=40))
def test_truncated_or_extended_seed(cut: int, tail: bytes) -> None:
    data = bytearray(SEED[:cut] + tail)
    data[24:28] = len(data).to_bytes(4, "big")
    parse_only_documented_errors(bytes(data))


@FUZZ
@given(
    st.sampled_from([t.value for t in PayloadType if t != 0] + [1, 99, 200, 255]),
    st.binary(max_size=120),
)
def test_every_payload_type_with_random_body(payload_type: int, body: bytes) -> None:
    chunk = bytes([0, 0]) + (4 + len(body)).to_bytes(2, "big") + body
    with contextlib.suppress(ParseError):
        parse_payloads(chunk, payload_type, 28)


KEYS = [
    SkKeys(
        encr_for(EncrId.AES_CBC, 128), b"e" * 16, integ_for(IntegId.HMAC_SHA2_256_128), b"a" * 32
    ),
    SkKeys(encr_for(EncrId.AES_GCM_16, 256), b"e" * 36),
    SkKeys(encr_for(EncrId.CHACHA20_POLY1305, None), b"e" * 36),
]


@FUZZ
@given(st.sampled_from(KEYS), st.binary(max_size=300))
def test_random_sk_body_only_documented_errors(keys: SkKeys, body: bytes) -> None:
    header = IkeHeader(
        b"\x01" * 8, b"\x02" * 8, PayloadType.SK, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1
    )
    sk = bytes([PayloadType.IDI, 0]) + (4 + len(body)).to_bytes(2, "big") + body
    header.length = 28 + len(sk)
    data = header.serialize() + sk
    with contextlib.suppress(ProtocolError):
        decrypt_message(data, parse_message(data), keys)


@FUZZ
@given(st.sampled_from(KEYS), st.binary(max_size=200), st.integers(0, 255))
def test_garbage_inner_payloads_under_valid_icv(keys: SkKeys, inner: bytes, first: int) -> None:
    """An authenticated peer can still send a broken inner chain: ParseError only."""
    header = IkeHeader(b"\x01" * 8, b"\x02" * 8, 0, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1)
    data = encrypt_message(header, [RawPayload(first, inner)], keys)
    with contextlib.suppress(ParseError):
        decrypt_message(data, parse_message(data), keys)


# -- the state machine: garbage never changes an established SA --------------------


def _established_pair() -> tuple[object, object, list[bytes]]:
    from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
    from vpnfleet.agent.ike.ike_sa import IkeSa
    from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
    from vpnfleet.agent.ike.states import Role

    def cfg(me: str, peer: str, local: str, remote: str) -> IkeConfig:
        return IkeConfig(
            Identity.parse(me),
            Identity.parse(peer),
            b"psk",
            (IkeProposal.parse("aes256gcm16-prfsha384-x25519"),),
            ChildConfig(
                "c", (EspProposal.parse("aes256gcm16"),), (selector(local),), (selector(remote),)
            ),
        )

    left = IkeSa(cfg("a.example", "b.example", "10.1.0.0/16", "10.2.0.0/16"), Role.INITIATOR)
    right = IkeSa(cfg("b.example", "a.example", "10.2.0.0/16", "10.1.0.0/16"), Role.RESPONDER)
    left.initiate(("192.0.2.2", 500), 0.0)
    seen: list[bytes] = []
    for _ in range(4):
        for data, _addr in left.datagrams_to_send(0.0):
            seen.append(data)
            right.receive_datagram(data, ("192.0.2.1", 500), 0.0)
        for data, _addr in right.datagrams_to_send(0.0):
            seen.append(data)
            left.receive_datagram(data, ("192.0.2.2", 500), 0.0)
    for sa in (left, right):
        kinds = []
        while (event := sa.next_event()) is not None:
            kinds.append(type(event).__name__)
        assert kinds == ["IkeSaEstablished", "ChildSaEstablished"]
    return left, right, seen


@settings(
    max_examples=max(200, EXAMPLES // 10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_mutated_datagrams_never_disturb_an_established_sa(data: st.DataObject) -> None:
    from vpnfleet.agent.ike.ike_sa import IkeSa
    from vpnfleet.agent.ike.states import IkeSaState

    left, right, seen = _established_pair()
    assert isinstance(left, IkeSa) and isinstance(right, IkeSa)
    assert left.state is right.state is IkeSaState.ESTABLISHED
    for _ in range(data.draw(st.integers(1, 5))):
        base = bytearray(data.draw(st.sampled_from(seen)))
        for position, value in data.draw(
            st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=4)
        ):
            base[position] = value
        junk = data.draw(st.one_of(st.just(bytes(base)), st.binary(max_size=200)))
        target = data.draw(st.sampled_from([left, right]))
        target.receive_datagram(junk, ("192.0.2.9", 500), 1.0)
        assert target.next_event() is None, "garbage produced an event"
    assert left.state is right.state is IkeSaState.ESTABLISHED


@FUZZ
@given(st.data())
def test_mutated_ike_sa_init_to_a_fresh_responder(data: st.DataObject) -> None:
    """A fresh responder takes any first datagram without raising."""
    from vpnfleet.agent.ike.ike_sa import IkeSa
    from vpnfleet.agent.ike.states import IkeSaState, Role

    _left, right, seen = _established_pair()
    assert isinstance(right, IkeSa)
    fresh = IkeSa(right.config, Role.RESPONDER)
    request = bytearray(seen[0])
    for position, value in data.draw(
        st.lists(st.tuples(st.integers(0, len(request) - 1), st.integers(0, 255)), max_size=6)
    ):
        request[position] = value
    fresh.receive_datagram(bytes(request), ("192.0.2.1", 500), 0.0)
    assert fresh.state in (IkeSaState.CREATED, IkeSaState.INIT_DONE, IkeSaState.FAILED)
    fresh.datagrams_to_send(0.0)


def _inner_payloads() -> st.SearchStrategy[list[Payload]]:
    """Authenticated but arbitrary CREATE_CHILD_SA / INFORMATIONAL content."""
    spi4 = st.binary(min_size=4, max_size=4)
    transform = st.builds(
        Transform,
        st.sampled_from(list(TransformType)),
        st.sampled_from([0, 12, 20, 28, 5, 6, 14, 19, 31, 1, 999]),
    )
    proposal = st.builds(
        Proposal,
        st.integers(1, 3),
        st.sampled_from([ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH]),
        st.sampled_from([b"", bytes(4), b"\x01\x02\x03\x04", b"\x05" * 8]),
        st.lists(transform, min_size=1, max_size=5),
    )
    selector = st.just(
        TrafficSelector(ipaddress.ip_address("10.0.0.0"), ipaddress.ip_address("10.255.255.255"))
    )
    one = st.one_of(
        st.builds(SaPayload, st.lists(proposal, min_size=1, max_size=3)),
        st.builds(NoncePayload, st.binary(min_size=16, max_size=40)),
        st.builds(
            KePayload, st.sampled_from([14, 19, 31, 20, 7]), st.binary(min_size=1, max_size=64)
        ),
        st.builds(
            NotifyPayload,
            st.sampled_from([NotifyType.REKEY_SA, NotifyType.INVALID_SPI, 16391, 43, 1, 60000]),
            st.binary(max_size=8),
            st.sampled_from([0, ProtocolId.ESP]),
            st.one_of(st.just(b""), spi4),
        ),
        st.builds(DeletePayload, st.just(ProtocolId.ESP), st.lists(spi4, min_size=1, max_size=3)),
        st.builds(TsPayload, st.lists(selector, min_size=1, max_size=2)),
    )
    return st.lists(one, max_size=7)


@settings(
    max_examples=max(150, EXAMPLES // 10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from([ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL]),
    _inner_payloads(),
)
def test_authenticated_nonsense_requests_never_raise(exchange: int, inner: list[Payload]) -> None:
    """Well-protected requests with arbitrary content: answered or refused, never a crash,
    and the IKE SA stays up (no IKE Delete is ever generated here)."""
    from vpnfleet.agent.ike.ike_sa import IkeSa
    from vpnfleet.agent.ike.states import IkeSaState

    left, right, _seen = _established_pair()
    assert isinstance(left, IkeSa) and isinstance(right, IkeSa)
    request = left.build_message(exchange, 2, False, inner)
    right.receive_datagram(request, ("192.0.2.1", 500), 1.0)
    assert right.state is IkeSaState.ESTABLISHED
    (answer,) = right.datagrams_to_send(1.0)
    assert parse_message(answer[0]).header.is_response
    while right.next_event() is not None:
        pass
