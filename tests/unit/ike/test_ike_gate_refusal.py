"""The responder gate says why it created nothing as a :class:`GateRefusal` value (the
engine branches on it, never on the reason's text), beside the reason for logs."""

from __future__ import annotations

from tests.support.ike_peers import LEFT, RIGHT, left_right
from vpnfleet.agent.ike.admission import GateRefusal, HalfOpenTable, Limit, ResponderLimits
from vpnfleet.agent.ike.constants import HeaderFlag
from vpnfleet.agent.ike.gate import IkeResponderGate
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.states import Role

NOW = 1000.0


def request() -> tuple[IkeSa, bytes]:
    left, _ = left_right()
    sa = IkeSa(left, Role.INITIATOR)
    sa.initiate(RIGHT, NOW)
    ((data, _),) = sa.datagrams_to_send(NOW)
    return sa, data


def gate(threshold: int = 5, table: HalfOpenTable | None = None) -> IkeResponderGate:
    _, right = left_right()
    return IkeResponderGate(right, half_open_threshold=threshold, table=table)


def test_an_admitted_request_has_no_refusal() -> None:
    decision = gate().receive_datagram(request()[1], LEFT, NOW)
    assert decision.new and decision.refusal is None and decision.reason == ""


def test_cookie_required_then_a_bad_cookie() -> None:
    """RFC 7296 section 2.6: over the threshold a COOKIE is asked for; a forged one is
    refused with a fresh challenge."""
    g = gate(threshold=0)
    left, data = request()
    asked = g.receive_datagram(data, LEFT, NOW)
    assert asked.refusal is GateRefusal.COOKIE_REQUIRED and asked.reason == "cookie required"
    assert asked.reply is not None
    forged = bytearray(asked.reply)
    forged[-1] ^= 1
    left.receive_datagram(bytes(forged), RIGHT, NOW)
    ((again, _),) = left.datagrams_to_send(NOW)
    refused = g.receive_datagram(again, LEFT, NOW)
    assert refused.refusal is GateRefusal.BAD_COOKIE and refused.reason == "bad cookie"


def test_malformed_and_not_a_first_request() -> None:
    g = gate()
    garbage = g.receive_datagram(b"\x00" * 10, LEFT, NOW)
    assert garbage.refusal is GateRefusal.MALFORMED and garbage.reason.startswith("malformed: ")
    response = bytearray(request()[1])
    response[19] = HeaderFlag.RESPONSE
    wrong = g.receive_datagram(bytes(response), LEFT, NOW)
    assert wrong.refusal is GateRefusal.NOT_INIT_REQUEST


def test_over_a_cap_names_the_limit() -> None:
    table = HalfOpenTable(ResponderLimits(half_open_per_source=1))
    g = gate(table=table)
    assert g.receive_datagram(request()[1], LEFT, NOW).new
    over = g.receive_datagram(request()[1], LEFT, NOW)
    assert over.refusal is GateRefusal.OVER_LIMIT
    assert over.limit is Limit.HALF_OPEN_PER_SOURCE


def test_refused_without_state() -> None:
    """Section 1.3: a key exchange in a group we do not take gets INVALID_KE_PAYLOAD
    and nothing is kept."""
    left, _ = left_right(ike=("aes256gcm16-prfsha384-ecp256", "aes256gcm16-prfsha384-x25519"))
    sa = IkeSa(left, Role.INITIATOR)
    sa.initiate(RIGHT, NOW)
    ((data, _),) = sa.datagrams_to_send(NOW)
    refused = gate().receive_datagram(data, LEFT, NOW)
    assert refused.refusal is GateRefusal.REFUSED and refused.sa is None
    assert refused.reason.startswith("refused: INVALID_KE_PAYLOAD")
