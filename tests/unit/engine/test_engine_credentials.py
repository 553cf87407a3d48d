"""Engine.replace_ike_credentials on the in-memory engine pair: certificate peers are
re-established with the new certificate make-before-break while traffic flows both ways
in every network round (none may be lost), from either end of the tunnel; PSK peers
are not touched."""

from __future__ import annotations

from pathlib import Path

from tests.support.engine_pair import Fleet, Traffic, enrolled, pubkey_plan, with_credentials
from vpnfleet.agent.engine.translate import IkeCredentials
from vpnfleet.controller.statedir import pki


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.old_dir, self.new_dir = root / "old-ca", root / "new-ca"
        self.old = pki.init_ca(self.old_dir).cert_path.read_bytes()
        self.new = pki.init_ca(self.new_dir).cert_path.read_bytes()

    def credentials(self, host: str, which: str) -> IkeCredentials:
        ca_dir = self.old_dir if which == "old" else self.new_dir
        return enrolled(ca_dir, self.root / f"{host}-{which}", host)


async def certificate_pair(tmp_path: Path) -> tuple[Fleet, Pki]:
    keys = Pki(tmp_path)
    fleet = Fleet("a", "b")
    for host in ("a", "b"):
        with_credentials(fleet, host, keys.credentials(host, "old"))
    await fleet.start()
    await fleet.apply("b", pubkey_plan("b", ["a"], [keys.old, keys.new], accepted=(keys.new,)))
    await fleet.apply("a", pubkey_plan("a", ["b"], [keys.old, keys.new], accepted=(keys.new,)))
    fleet.advance(2)
    assert fleet["a"].engine.peers_up() == fleet["b"].engine.peers_up() == 1
    return fleet, keys


def assert_settled_on(fleet: Fleet, certificates: dict[str, IkeCredentials]) -> None:
    """One IKE SA and one child per side, the same on both, made with the certificates
    given; the old inbound SAs gone after their grace period."""
    a, b = fleet["a"], fleet["b"]
    fleet.advance(10)
    assert a.events("child_down") == b.events("child_down") == []
    for node in (a, b):
        other = "b" if node.host == "a" else "a"
        driver = node.engine.peers[other]
        assert driver.ike is not None and driver.config is not None
        assert driver.ike.config.certificates is not None
        assert driver.ike.config.certificates.certificate == certificates[node.host].certificate
        assert driver.sas() == [driver.ike], node.host
        (report,) = node.engine.ike_sas()
        (child,) = report.children
        assert child.state == "installed" and child.integrity_failures == 0
        assert node.engine.dp is not None
        node.engine.dp.handle_timer()  # no loop here to run the SAD's housekeeping
        assert {sa.spi for sa in node.engine.dp.sad.inbound_sas()} == {child.spi_in}
        assert node.engine.dp.stats().inbound_drops.get("unknown_spi", 0) == 0, node.host
    (ike_a,) = a.engine.ike_sas()
    (ike_b,) = b.engine.ike_sas()
    assert (ike_a.spi_i, ike_a.spi_r) == (ike_b.spi_i, ike_b.spi_r)


async def test_initiator_swaps_its_certificate_without_losing_a_packet(tmp_path: Path) -> None:
    fleet, keys = await certificate_pair(tmp_path)
    a, b = fleet["a"], fleet["b"]
    old_ike = a.engine.peers["b"].ike
    new_a = keys.credentials("a", "new")
    traffic = Traffic(fleet, fleet["a"], fleet["b"])
    traffic.tick()
    assert a.engine.replace_ike_credentials(new_a) == 1
    fleet.pump()
    traffic.tick()
    fleet.advance(5)
    traffic.settle()
    assert len(traffic.sent_ab) >= 6  # traffic crossed every step of the exchange
    assert a.engine.peers["b"].ike is not old_ike
    assert_settled_on(fleet, {"a": new_a, "b": b.engine.ike_credentials})  # type: ignore[dict-item]


async def test_responder_swaps_its_certificate_and_starts_the_new_sa(tmp_path: Path) -> None:
    """b answers a in the plan; b starts the new IKE SA itself, or its new certificate
    would wait for a's next authentication."""
    fleet, keys = await certificate_pair(tmp_path)
    a, b = fleet["a"], fleet["b"]
    old_ike = b.engine.peers["a"].ike
    assert old_ike is not None and not old_ike.is_initiator
    new_b = keys.credentials("b", "new")
    traffic = Traffic(fleet, fleet["a"], fleet["b"])
    traffic.tick()
    assert b.engine.replace_ike_credentials(new_b) == 1
    fleet.pump()
    traffic.tick()
    fleet.advance(5)
    traffic.settle()
    new_ike = b.engine.peers["a"].ike
    assert new_ike is not old_ike and new_ike is not None and new_ike.is_initiator
    assert [e.detail for e in b.events("reauthenticate")] == ["new IKE certificate: initiating"]
    assert_settled_on(fleet, {"a": a.engine.ike_credentials, "b": new_b})  # type: ignore[dict-item]


async def test_both_ends_swap_one_after_the_other(tmp_path: Path) -> None:
    fleet, keys = await certificate_pair(tmp_path)
    a, b = fleet["a"], fleet["b"]
    new = {"a": keys.credentials("a", "new"), "b": keys.credentials("b", "new")}
    traffic = Traffic(fleet, fleet["a"], fleet["b"])
    for host in ("b", "a"):
        traffic.tick()
        assert fleet[host].engine.replace_ike_credentials(new[host]) == 1
        fleet.pump()
        traffic.tick()
        fleet.advance(3)
    traffic.settle()
    assert_settled_on(fleet, new)
    assert a.engine.ike_credentials is new["a"] and b.engine.ike_credentials is new["b"]


async def test_both_ends_swap_at_once_without_crossing(tmp_path: Path) -> None:
    """a re-establishes at once; b, the responder, sees the new IKE SA come within its
    wait (answered with its new certificate) and starts none of its own."""
    fleet, keys = await certificate_pair(tmp_path)
    a, b = fleet["a"], fleet["b"]
    new = {"a": keys.credentials("a", "new"), "b": keys.credentials("b", "new")}
    traffic = Traffic(fleet, fleet["a"], fleet["b"])
    traffic.tick()
    assert b.engine.replace_ike_credentials(new["b"]) == 1
    assert a.engine.replace_ike_credentials(new["a"]) == 1
    fleet.pump()
    traffic.tick()
    fleet.advance(5)
    traffic.settle()
    assert b.events("reauthenticate") == []
    assert len(a.events("ike_up")) == len(b.events("ike_up")) == 2  # the first and the new
    assert_settled_on(fleet, new)


async def test_psk_peers_are_not_touched(tmp_path: Path) -> None:
    keys = Pki(tmp_path)
    fleet = Fleet("a", "b")
    for host in ("a", "b"):
        with_credentials(fleet, host, keys.credentials(host, "old"))
    await fleet.start()
    await fleet.mesh()  # the sample plans: PSK
    a = fleet["a"]
    before = a.engine.peers["b"].ike
    spis = a.child_spis("b")
    new_a = keys.credentials("a", "new")
    assert a.engine.replace_ike_credentials(new_a) == 0
    fleet.advance(5)
    assert a.engine.peers["b"].ike is before and a.child_spis("b") == spis
    assert a.engine.ike_credentials is new_a
    assert a.events("peer_changed") == []


async def test_certificate_peer_waiting_for_credentials_comes_up(tmp_path: Path) -> None:
    """An agent started before it was enrolled: its certificate peer reports the
    missing certificate until one is installed, then comes up."""
    keys = Pki(tmp_path)
    fleet = Fleet("a", "b")
    with_credentials(fleet, "b", keys.credentials("b", "old"))
    await fleet.start()
    await fleet.apply("b", pubkey_plan("b", ["a"], [keys.old]))
    await fleet.apply("a", pubkey_plan("a", ["b"], [keys.old]))
    fleet.advance(2)
    a = fleet["a"]
    assert a.engine.peers_up() == 0
    assert "needs this agent's IKE certificate" in a.engine.ike_sas()[0].last_error
    assert a.engine.replace_ike_credentials(keys.credentials("a", "old")) == 1
    fleet.advance(2)
    assert a.engine.peers_up() == fleet["b"].engine.peers_up() == 1
