"""The load responder of bench/ike_rate.py --version 1 (tests/support/ike_v1_responder.py)
on fake time with no sockets: a responder per Main mode message 1 (RFC 2409 section 5),
routed by initiator cookie, retransmissions to the same SA, and what it counts."""

from __future__ import annotations

from typing import Any

from tests.support.ike_v1_driver import load_config
from tests.support.ike_v1_responder import Responders
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.ike.v1.sa import IkeV1Sa, V1State

OURS, THEIRS = ("192.0.2.1", 500), ("192.0.2.2", 500)
SPEC: dict[str, Any] = {
    "local": OURS[0],
    "peer": THEIRS[0],
    "local_id": "ours.example",
    "remote_id": "charon.example",
    "psk": "bench pre-shared key",
    "ike": ["aes128-sha256-ecp256"],
    "esp": ["aes128gcm16"],
    "local_ts": ["10.1.0.0/16"],
    "remote_ts": ["10.2.0.0/16"],
}
INITIATOR_SPEC = {
    **SPEC,
    "local": THEIRS[0],
    "peer": OURS[0],
    "local_id": SPEC["remote_id"],
    "remote_id": SPEC["local_id"],
    "local_ts": SPEC["remote_ts"],
    "remote_ts": SPEC["local_ts"],
}


class FakeHandle:
    def cancel(self) -> None:
        pass


class FakeLoop:
    def __init__(self) -> None:
        self.now = 1000.0
        self.armed: float | None = None

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: object) -> FakeHandle:
        self.armed = when
        return FakeHandle()


class Captured(Responders):
    """Datagrams kept instead of sent."""

    def __init__(self, spec: dict[str, Any], loop: Any) -> None:
        super().__init__(spec, loop)
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def _run(responders: Captured, initiators: list[IkeV1Sa], loop: FakeLoop) -> None:
    """Move datagrams both ways until nothing moves (the initiators all at one address,
    as charon's are: only the cookies tell them apart)."""
    for _ in range(50):
        touched = []
        for sa in initiators:
            for data, _ in sa.datagrams_to_send(loop.now):
                routed = responders.datagram(data, THEIRS)
                if routed is not None:
                    touched.append(routed)
        responders.pump(touched)
        replies, responders.sent = responders.sent, []
        if not touched and not replies:
            return
        for data, _ in replies:
            for sa in initiators:
                if sa.icookie == data[:8]:
                    sa.receive_datagram(data, OURS, loop.now)


def _initiators(count: int, loop: FakeLoop) -> list[IkeV1Sa]:
    config = load_config(INITIATOR_SPEC)
    out = [IkeV1Sa(config, Role.INITIATOR, THEIRS) for _ in range(count)]
    for sa in out:
        sa.initiate(OURS, loop.now)
    return out


def test_one_responder_per_main_mode_each_with_its_child() -> None:
    loop = FakeLoop()
    responders = Captured(SPEC, loop)
    initiators = _initiators(3, loop)
    _run(responders, initiators, loop)
    assert all(sa.state is V1State.ESTABLISHED and sa.children for sa in initiators)
    count = responders.counts()
    assert count["created"] == 3 and count["open"] == 3
    assert count["events"] == {"IkeSaEstablished": 3, "ChildSaEstablished": 3}
    assert count["dropped"] == count["unrouted"] == 0 and not count["raised"]
    assert set(responders.sas) == {sa.icookie for sa in initiators}


def test_retransmitted_message_1_goes_to_the_same_responder() -> None:
    loop = FakeLoop()
    responders = Captured(SPEC, loop)
    (initiator,) = _initiators(1, loop)
    ((first, _),) = initiator.datagrams_to_send(loop.now)
    for _ in range(3):
        responders.pump([sa for sa in [responders.datagram(first, THEIRS)] if sa is not None])
    assert responders.created == 1
    # The same answer each time (RFC 2409 has no message ID rule in phase 1: a
    # responder answers a request it took again with its last reply).
    assert len({data for data, _ in responders.sent}) == 1 and len(responders.sent) == 3


def test_datagrams_for_no_sa_are_counted_not_taken() -> None:
    loop = FakeLoop()
    responders = Captured(SPEC, loop)
    (initiator,) = _initiators(1, loop)
    ((first, _),) = initiator.datagrams_to_send(loop.now)
    # A responder cookie already set: not a Main mode message 1 and no SA of its cookie.
    assert responders.datagram(first[:8] + b"\x01" * 8 + first[16:], THEIRS) is None
    assert responders.datagram(b"short", THEIRS) is None
    assert responders.unrouted == 2 and responders.created == 0


def test_an_sa_that_fails_is_counted_with_its_reason_and_forgotten() -> None:
    loop = FakeLoop()
    responders = Captured(SPEC, loop)
    (initiator,) = _initiators(1, loop)
    ((first, _),) = initiator.datagrams_to_send(loop.now)
    sa = responders.datagram(first, THEIRS)
    assert sa is not None
    responders.pump([sa])
    assert loop.armed is not None  # the half-open expiry
    loop.now += sa.config.half_open_timeout + 1
    responders.on_timer()
    count = responders.counts()
    assert count["events"] == {"IkeSaFailed": 1} and count["open"] == 0
    ((reason, times),) = count["failure_reasons"].items()
    assert "phase 1 not complete" in reason and times == 1
