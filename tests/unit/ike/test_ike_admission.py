"""Caps on what initiators not yet authenticated make a responder hold (admission.py):
half-open IKE SAs per source address, per gate and per agent, bytes of one pre-auth
message and of every pre-auth fragment together, expiry in creation order, and the
notices the agent logs. All on fake time, initiators being real IkeSa objects."""

from __future__ import annotations

import pytest

from tests.support.ike_peers import RIGHT, left_right
from vpnfleet.agent.ike.admission import HalfOpenTable, Limit, LimitNotice, ResponderLimits
from vpnfleet.agent.ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType
from vpnfleet.agent.ike.crypto import encrypt_fragment
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import Address, IkeSaEstablished
from vpnfleet.agent.ike.gate import IkeResponderGate
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.message import IkeHeader, parse_message, serialize_message
from vpnfleet.agent.ike.payloads import NotifyPayload, VendorIdPayload
from vpnfleet.agent.ike.states import IkeSaState, Role

NOW = 1000.0


def source(n: int, port: int = 500) -> Address:
    return (f"192.0.2.{n}", port)


def table(**limits: int) -> HalfOpenTable:
    return HalfOpenTable(ResponderLimits(**limits))


def gate_on(shared: HalfOpenTable, threshold: int = 64) -> IkeResponderGate:
    _, right = left_right()
    return IkeResponderGate(
        right, half_open_threshold=threshold, secret_source=lambda n: b"s" * n, table=shared
    )


def initiator(now: float = NOW) -> IkeSa:
    left, _ = left_right()
    sa = IkeSa(left, Role.INITIATOR)
    sa.initiate(RIGHT, now)
    return sa


def request(sa: IkeSa, now: float = NOW) -> bytes:
    ((data, _),) = sa.datagrams_to_send(now)
    return data


def half_open(g: IkeResponderGate, addr: Address, now: float = NOW) -> tuple[IkeSa, IkeSa]:
    """An initiator and the half-open responder the gate made for it (IKE_SA_INIT done)."""
    left = initiator(now)
    decision = g.receive_datagram(request(left, now), addr, now)
    assert decision.new and decision.sa is not None, decision.reason
    right = decision.sa
    ((answer, _),) = right.datagrams_to_send(now)
    left.receive_datagram(answer, RIGHT, now)
    assert left.state is IkeSaState.AUTH_SENT
    left.datagrams_to_send(now)  # its own IKE_AUTH request: not sent
    return left, right


def auth_fragment(left: IkeSa, number: int, total: int, size: int) -> bytes:
    """One SKF fragment of an IKE_AUTH request, encrypted with the initiator's keys: as
    authentic as anything an initiator can send before IKE_AUTH is checked."""
    assert left._sk_out is not None
    header = IkeHeader(left.spi_i, left.spi_r, 0, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1)
    return encrypt_fragment(header, PayloadType.IDI, b"\x00" * size, number, total, left._sk_out)


def test_half_open_sas_per_source_address_are_capped() -> None:
    shared = table(half_open_per_source=2)
    g = gate_on(shared)
    half_open(g, source(1, 500))
    half_open(g, source(1, 40000))  # another port, the same address
    over = g.receive_datagram(request(initiator()), source(1, 40001), NOW)
    assert over.sa is None and over.reply is None
    assert over.limit is Limit.HALF_OPEN_PER_SOURCE
    assert over.reason == "over half_open_per_source (2)"
    half_open(g, source(2))  # another address still gets in
    assert shared.refused[Limit.HALF_OPEN_PER_SOURCE] == 1
    assert len(shared) == 3 and shared.count_source("192.0.2.1") == 2


def test_half_open_sas_per_peer_gate_are_capped_and_other_gates_go_on() -> None:
    shared = table(half_open_per_peer=2)
    first, second = gate_on(shared), gate_on(shared)
    half_open(first, source(1))
    half_open(first, source(2))
    over = first.receive_datagram(request(initiator()), source(3), NOW)
    assert over.limit is Limit.HALF_OPEN_PER_PEER and over.sa is None
    half_open(second, source(3))
    assert (shared.count(first), shared.count(second)) == (2, 1)
    assert shared.refused[Limit.HALF_OPEN_PER_PEER] == 1


def test_half_open_sas_of_the_whole_agent_are_capped() -> None:
    shared = table(half_open_total=3)
    first, second = gate_on(shared), gate_on(shared)
    half_open(first, source(1))
    half_open(first, source(2))
    half_open(second, source(3))
    for g in (first, second):
        over = g.receive_datagram(request(initiator()), source(4), NOW)
        assert over.limit is Limit.HALF_OPEN_TOTAL and over.sa is None
    assert shared.refused[Limit.HALF_OPEN_TOTAL] == 2 and len(shared) == 3


def test_a_valid_cookie_does_not_pass_a_cap() -> None:
    """Above the cookie threshold the cookie proves the source address, nothing more:
    each address that answers one still counts against the caps (RFC 7296 2.6)."""
    shared = table(half_open_per_source=1)
    g = gate_on(shared, threshold=0)
    accepted = 0
    for _ in range(3):
        left = initiator()
        challenge = g.receive_datagram(request(left), source(1), NOW)
        assert challenge.reason == "cookie required" and challenge.reply is not None
        left.receive_datagram(challenge.reply, RIGHT, NOW)
        decision = g.receive_datagram(request(left), source(1), NOW)
        if decision.new:
            accepted += 1
        else:
            assert decision.limit is Limit.HALF_OPEN_PER_SOURCE
    assert accepted == 1 and shared.refused[Limit.HALF_OPEN_PER_SOURCE] == 2


def test_entries_expire_oldest_first_and_leave_when_no_longer_half_open() -> None:
    shared = table(half_open_per_source=2)
    g = gate_on(shared)
    half_open(g, source(1), NOW)
    half_open(g, source(1), NOW + 10)
    assert g.receive_datagram(request(initiator()), source(1), NOW + 29).limit is not None
    # At NOW + 30 the first one's half-open time is over, not the second one's.
    half_open(g, source(1), NOW + 30)
    assert shared.count_source("192.0.2.1") == 2
    shared.expire(NOW + 39.9)
    assert len(shared) == 2
    shared.expire(NOW + 40)
    assert len(shared) == 1
    shared.expire(NOW + 60)
    assert len(shared) == 0 and shared.count_source("192.0.2.1") == 0


def test_an_established_or_failed_sa_gives_its_place_back_at_once() -> None:
    shared = table(half_open_per_source=1)
    g = gate_on(shared)
    left = initiator()
    right = g.receive_datagram(request(left), source(1), NOW).sa
    assert right is not None and right.half_open_slot is not None
    over = g.receive_datagram(request(initiator()), source(1), NOW)
    assert over.limit is Limit.HALF_OPEN_PER_SOURCE
    for _ in range(2):
        for data, _ in right.datagrams_to_send(NOW):
            left.receive_datagram(data, RIGHT, NOW)
        for data, _ in left.datagrams_to_send(NOW):
            right.receive_datagram(data, source(1), NOW)
    assert right.state is IkeSaState.ESTABLISHED
    assert any(isinstance(e, IkeSaEstablished) for e in iter(right.next_event, None))
    assert right.half_open_slot is None and len(shared) == 0
    _, failing = half_open(g, source(1))
    failing.fail("deleted before it was established")
    assert len(shared) == 0
    half_open(g, source(1))


def test_one_pre_auth_message_is_capped_in_bytes() -> None:
    shared = table(preauth_message_bytes=10_000)
    g = gate_on(shared)
    left, right = half_open(g, source(1))
    right.receive_datagram(auth_fragment(left, 1, 3, 4000), source(1), NOW)
    right.receive_datagram(auth_fragment(left, 2, 3, 4000), source(1), NOW)
    assert shared.held == 8000
    # The third would make 12,000 bytes: the message is dropped whole...
    right.receive_datagram(auth_fragment(left, 3, 3, 4000), source(1), NOW)
    assert shared.held == 0 and shared.refused[Limit.PREAUTH_MESSAGE_BYTES] == 1
    # ... with the fragments that follow it.
    right.receive_datagram(auth_fragment(left, 1, 3, 100), source(1), NOW)
    assert shared.held == 0 and shared.refused[Limit.PREAUTH_MESSAGE_BYTES] == 2
    # One datagram larger than the cap is dropped before it is decrypted.
    dropped = right.dropped
    right.receive_datagram(auth_fragment(left, 1, 64, 60_000), source(1), NOW)
    assert right.dropped == dropped + 1
    assert shared.refused[Limit.PREAUTH_MESSAGE_BYTES] == 3
    assert right.state is IkeSaState.INIT_DONE and right.get_timer() == NOW + 30


def test_pre_auth_fragments_of_the_whole_agent_are_capped_in_bytes() -> None:
    shared = table(preauth_message_bytes=10_000, preauth_fragment_bytes=12_000)
    g = gate_on(shared)
    left1, right1 = half_open(g, source(1))
    left2, right2 = half_open(g, source(2))
    for n in (1, 2):
        right1.receive_datagram(auth_fragment(left1, n, 3, 4000), source(1), NOW)
    right2.receive_datagram(auth_fragment(left2, 1, 3, 4000), source(2), NOW)
    assert shared.held == 12_000
    right2.receive_datagram(auth_fragment(left2, 2, 3, 4000), source(2), NOW)
    assert shared.refused[Limit.PREAUTH_FRAGMENT_BYTES] == 1
    assert shared.held == 8000  # the refused message's fragments are let go
    # An SA that leaves the table (its half-open time over) frees what it held.
    left3, right3 = half_open(g, source(3), NOW + 20)
    shared.expire(NOW + 30)
    assert shared.held == 0 and len(shared) == 1
    for n in (1, 2, 3):
        right3.receive_datagram(auth_fragment(left3, n, 3, 3000), source(3), NOW + 21)
    assert shared.held == 0  # reassembled (and refused as malformed): nothing held
    assert shared.refused[Limit.PREAUTH_MESSAGE_BYTES] == 0


def test_a_half_open_sa_past_its_time_takes_nothing_more() -> None:
    """Between the table letting an entry go and the SA's own timer failing it, the SA
    keeps no fragment outside the budget."""
    shared = table()
    g = gate_on(shared)
    left, right = half_open(g, source(1))
    shared.expire(NOW + 30)
    assert len(shared) == 0 and right.state is IkeSaState.INIT_DONE
    dropped = right.dropped
    right.receive_datagram(auth_fragment(left, 1, 3, 4000), source(1), NOW + 30)
    assert right.dropped == dropped + 1
    assert right._fragments._by_response[False].held == 0


def test_an_ike_sa_init_over_the_message_cap_is_dropped_unread() -> None:
    shared = table(preauth_message_bytes=2000)
    g = gate_on(shared)
    message = parse_message(request(initiator()))
    padded = serialize_message(message.header, [*message.payloads, VendorIdPayload(bytes(2000))])
    decision = g.receive_datagram(padded, source(1), NOW)
    assert decision.sa is None and decision.reply is None
    assert decision.limit is Limit.PREAUTH_MESSAGE_BYTES
    assert shared.refused[Limit.PREAUTH_MESSAGE_BYTES] == 1


def test_an_ike_sa_init_refused_without_state_is_answered_and_not_kept() -> None:
    """Section 1.3: INVALID_KE_PAYLOAD names the group and keeps no state."""
    left, _ = left_right(ike=("aes256gcm16-prfsha384-ecp256", "aes256gcm16-prfsha384-x25519"))
    sa = IkeSa(left, Role.INITIATOR)
    sa.initiate(RIGHT, NOW)
    shared = table()
    decision = gate_on(shared).receive_datagram(request(sa), source(1), NOW)
    assert decision.sa is None and decision.reply is not None
    assert decision.reason.startswith("refused: INVALID_KE_PAYLOAD: peer sent group ecp256")
    (notify,) = parse_message(decision.reply).payloads
    assert isinstance(notify, NotifyPayload) and notify.notify_type == NotifyType.INVALID_KE_PAYLOAD
    assert len(shared) == 0


def test_refusals_give_one_notice_per_cap_per_interval() -> None:
    shared = HalfOpenTable(ResponderLimits(half_open_per_source=1), notice_interval=10.0)
    g = gate_on(shared)
    half_open(g, source(1))
    for i in range(5):
        assert g.receive_datagram(request(initiator()), source(1), NOW + i).limit is not None
    assert shared.next_notice() == LimitNotice(Limit.HALF_OPEN_PER_SOURCE, 1, 1, "192.0.2.1")
    assert shared.next_notice() is None
    g.receive_datagram(request(initiator()), source(1), NOW + 10)
    assert shared.next_notice() == LimitNotice(Limit.HALF_OPEN_PER_SOURCE, 1, 5, "192.0.2.1")
    assert shared.refused[Limit.HALF_OPEN_PER_SOURCE] == 6


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"half_open_total": 0}, "half_open_total must be a whole number of at least 1, not 0"),
        ({"half_open_per_source": True}, "half_open_per_source must be a whole number"),
        ({"preauth_message_bytes": 500}, "preauth_message_bytes must be at least 2000"),
        (
            {"preauth_message_bytes": 20_000, "preauth_fragment_bytes": 10_000},
            r"preauth_fragment_bytes \(10000\) must be at least preauth_message_bytes",
        ),
    ],
)
def test_bad_limits_are_refused_with_their_name(limits: dict[str, int], message: str) -> None:
    with pytest.raises(LocalError, match=message):
        ResponderLimits(**limits)
