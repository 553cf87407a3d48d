"""IKE from strangers: anyone who can send UDP to an agent can start IKE SAs with it.

Such an IKE_SA_INIT from an address no peer of the plan has is routed only to the one
responder-side peer the plan marks behind a NAT, else dropped and counted; an IKE SA
that fails before the initiator authenticated is counted for the peer it was routed to
(status, metrics, a log line at a bounded rate) and never becomes that peer's
``last_error``, which the controller's health gates judge. The stranger here is an IKE
initiator of our own core with a wrong key, on the in-memory network, on fake time.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.support.engine_pair import Fleet, behind_nat, udp4
from vpnfleet.agent.ike.config import Identity, IdType, IkeConfig
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.io.memory import MemoryEndpoint, nat_translate
from vpnfleet.agent.io.udp import IKE_PORT, Address
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import IkeSaReport
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.reports.status import FleetStatus, HostStatus, fleet_rows
from vpnfleet.controller.transport.convert import status_from_proto

B = ("192.0.2.2", IKE_PORT)
ELSEWHERE = "203.0.113.9"
"""An address no plan has."""


class Stranger:
    """Starts IKE SAs with b claiming ``identity``, signing with a key b does not hold;
    talks from ``host``:``port`` (a port of its own, so that it can share a peer's
    address)."""

    def __init__(self, fleet: Fleet, host: str, port: int, identity: bytes) -> None:
        self.fleet = fleet
        self.local: Address = (host, port)
        self.answers = 0
        self.sas: list[IkeSa] = []
        self.endpoint = MemoryEndpoint(
            fleet.net, self._on_ike, lambda data, src: None, host=host, ike_port=port,
            natt_port=port + 1,
        )  # fmt: skip
        config = fleet["a"].engine.peers["b"].config
        assert config is not None
        self.config: IkeConfig = dataclasses.replace(
            config, psk=b"not the key of a and b", local_id=Identity(IdType.ID_FQDN, identity)
        )

    def attempt(self) -> IkeSa:
        sa = IkeSa(self.config, Role.INITIATOR, self.local)
        self.sas.append(sa)
        sa.initiate(B, self.fleet.clock.now())
        self._flush(sa)
        self.fleet.pump()
        return sa

    def _on_ike(self, data: bytes, src: Address, local_port: int) -> None:
        self.answers += 1
        for sa in self.sas:
            if not sa.is_closed:
                sa.receive_datagram(data, src, self.fleet.clock.now())
                self._flush(sa)

    def _flush(self, sa: IkeSa) -> None:
        for data, addr in sa.datagrams_to_send(self.fleet.clock.now()):
            self.endpoint.send_ike(data, addr, False)


def report(fleet: Fleet, host: str, peer: str) -> IkeSaReport:
    (found,) = [r for r in fleet[host].engine.ike_sas() if r.peer == peer]
    return found


def assert_untouched(fleet: Fleet) -> None:
    """a and b still run their tunnel, with no error, and it carries packets."""
    for host, peer in (("a", "b"), ("b", "a")):
        r = report(fleet, host, peer)
        assert r.state == "established" and r.last_error == "", r
    packet = udp4("10.1.0.5", "10.2.0.7", b"still through")
    fleet["a"].send(packet)
    fleet.pump()
    assert fleet["b"].tun.delivered[-1] == packet


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    assert fleet["a"].engine.peers_up() == 1 and fleet["b"].engine.peers_up() == 1
    return fleet


async def test_stranger_elsewhere_is_not_routed_to_a_peer_not_behind_nat(ab: Fleet) -> None:
    """a initiates to b, so a is b's one responder-side peer; b's plan does not put a
    behind a NAT, so an IKE_SA_INIT from another address is none of a's business."""
    b = ab["b"]
    # (a's first initiation may have reached b before b's plan did)
    unmatched = b.engine.ike_counters()["no_peer"]
    stranger = Stranger(ab, ELSEWHERE, IKE_PORT, b"a")
    stranger.attempt()
    assert stranger.answers == 0  # not answered: no IKE SA, no DH made for it
    assert b.engine.ike_counters()["no_peer"] == unmatched + 1
    assert report(ab, "b", "a").unauthenticated_failures == 0
    assert_untouched(ab)


async def test_failed_stranger_from_a_peer_address_is_counted_not_the_peer_error(
    ab: Fleet,
) -> None:
    """From a's own address (another port): routed to a's responder gate, answered, and
    its AUTH refused. The failure is counted for a; a's tunnel knows nothing of it."""
    b = ab["b"]
    stranger = Stranger(ab, "192.0.2.1", 5000, b"a")
    sa = stranger.attempt()
    assert sa.is_closed and stranger.answers == 2  # IKE_SA_INIT, then AUTHENTICATION_FAILED
    r = report(ab, "b", "a")
    assert r.unauthenticated_failures == 1
    assert r.last_unauthenticated_failure == (
        "from 192.0.2.1:5000: AUTHENTICATION_FAILED: AUTH payload of a does not verify "
        "with the pre-shared key"
    )
    assert [e.detail for e in b.events("ike_failed")] == []
    (said,) = b.events("ike_failed_unauthenticated", "a")
    assert said.detail.startswith("IKE SA from 192.0.2.1:5000 failed before authentication")
    assert_untouched(ab)


async def test_a_flood_is_counted_in_full_and_logged_at_a_bounded_rate(ab: Fleet) -> None:
    b = ab["b"]
    stranger = Stranger(ab, "192.0.2.1", 5000, b"a")
    for _ in range(50):
        stranger.attempt()
    assert report(ab, "b", "a").unauthenticated_failures == 50
    assert len(b.events("ike_failed_unauthenticated")) == 1
    ab.advance(11)
    stranger.attempt()
    said = b.events("ike_failed_unauthenticated")
    assert len(said) == 2
    assert said[1].detail.endswith("(49 more since the last report)"), said[1].detail
    assert report(ab, "b", "a").unauthenticated_failures == 51
    assert_untouched(ab)


async def test_what_a_stranger_claims_reaches_status_and_log_printable_and_bounded(
    ab: Fleet,
) -> None:
    b = ab["b"]
    claim = b"gw.example\n2026-12-06 a: ike_up forged\x1b[2J" + b"x" * 5000
    Stranger(ab, "192.0.2.1", 5000, claim).attempt()
    text = report(ab, "b", "a").last_unauthenticated_failure
    assert "peer identity gw.example\\n2026-12-06 a: ike_up forged\\x1b[2J" in text, text
    assert text.isprintable() and len(text) <= 300 and text.endswith("…"), text
    (said,) = b.events("ike_failed_unauthenticated")
    assert said.detail.isprintable() and len(said.detail) <= 400, said.detail
    assert_untouched(ab)


async def test_peer_behind_nat_is_reached_from_a_new_address_and_strangers_only_counted() -> None:
    """b's plan puts a behind a NAT: a's IKE_SA_INIT from the NAT's address (none of
    a's) comes up as before; a stranger from yet another address is routed to a too
    (nothing tells the two apart before IKE_AUTH), fails, and is only counted."""
    fleet = Fleet("a", "b")
    fleet.net.translate = nat_translate("192.0.2.1", "198.51.100.1")
    await fleet.start()
    await fleet.mesh(b=behind_nat("a"))
    assert fleet["a"].engine.peers_up() == 1 and fleet["b"].engine.peers_up() == 1
    assert report(fleet, "b", "a").remote_address.startswith("198.51.100.1:")
    stranger = Stranger(fleet, ELSEWHERE, IKE_PORT, b"a")
    stranger.attempt()
    assert stranger.answers == 2
    r = report(fleet, "b", "a")
    assert r.unauthenticated_failures == 1 and r.last_error == "" and r.state == "established"
    assert fleet["a"].engine.peers_up() == 1 and fleet["b"].engine.peers_up() == 1


async def test_status_carries_the_counts_to_the_fleet_table(ab: Fleet, tmp_path: Path) -> None:
    """GetStatus: the peer's count and last failure, the agent's IKE counters (no_peer);
    the controller's fleet table notes them for the host."""
    b = ab["b"]
    plan = b.engine.plan
    assert plan is not None
    agent = AgentService("b", PlanStore(tmp_path), b.engine, b.hub)
    Stranger(ab, "192.0.2.1", 5000, b"a").attempt()
    Stranger(ab, ELSEWHERE, IKE_PORT, b"a").attempt()
    msg = agent.status()
    (ike,) = msg.ike_sas
    assert ike.unauthenticated_failures == 1 and ike.last_error == ""
    assert ike.last_unauthenticated_failure.startswith("from 192.0.2.1:5000: AUTHENTICATION")
    assert msg.ike_counters["no_peer"] == b.engine.ike_counters()["no_peer"] >= 1
    view = status_from_proto(msg)
    assert view.ike_counters["no_peer"] == msg.ike_counters["no_peer"]
    (row,) = fleet_rows(FleetStatus([HostStatus("b", msg.content_hash, view)]))
    assert msg.unmatched_ike_sa_init.count == msg.ike_counters["no_peer"]
    assert row[-1] == (
        f"1 IKE SA(s) failed before auth; {msg.ike_counters['no_peer']} IKE_SA_INIT matched "
        f"no peer, last from {ELSEWHERE}:{IKE_PORT}"
    )
