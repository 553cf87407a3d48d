"""Certificate peers (RFC 7427 signatures through the fleet CA) in the engine: the plan's
trust anchor, narrowed by the peer's CA fingerprint, and the agent's enrolled IKE
certificate and key, on an in-memory engine pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.engine_pair import Fleet, enrolled, pubkey_plan, udp4, with_credentials
from vpnfleet.agent import cli
from vpnfleet.agent.engine import translate
from vpnfleet.agent.engine.translate import CredentialError, IkeCredentials
from vpnfleet.controller.statedir import pki


def ca(state_dir: Path, algorithm: str = "ecdsa-p256") -> bytes:
    return pki.init_ca(state_dir, algorithm).cert_path.read_bytes()


async def start_pair(
    tmp_path: Path,
    a_ca: str = "fleet",
    b_ca: str = "fleet",
    a_creds: bool = True,
    algorithm: str = "ecdsa-p256",
) -> Fleet:
    """a and b trust the fleet CA; each one's certificate comes from the CA named; the
    CAs' keys are of ``algorithm``."""
    cas = {"fleet": tmp_path / "fleet", "other": tmp_path / "other"}
    pems = {name: ca(path, algorithm) for name, path in cas.items()}
    fleet = Fleet("a", "b")
    creds_a = enrolled(cas[a_ca], tmp_path / "agent-a", "a") if a_creds else None
    with_credentials(fleet, "a", creds_a)
    with_credentials(fleet, "b", enrolled(cas[b_ca], tmp_path / "agent-b", "b"))
    await fleet.start()
    await fleet.apply("b", pubkey_plan("b", ["a"], [pems["fleet"]]))
    # Unrelated anchors in the plan must not widen what this peer accepts.
    await fleet.apply("a", pubkey_plan("a", ["b"], [pems["fleet"], pems["other"]]))
    fleet.advance(2)
    return fleet


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ed25519"])
async def test_certificate_pair_comes_up_and_carries_packets(
    tmp_path: Path, algorithm: str
) -> None:
    """Under a fleet CA of each `ca init --algorithm` (an Ed25519 CA signs the IKE
    certificates with Ed25519, RFC 8410)."""
    fleet = await start_pair(tmp_path, algorithm=algorithm)
    a, b = fleet["a"], fleet["b"]
    assert [e.detail for e in a.events("ike_failed") + b.events("ike_failed")] == []
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    (report,) = a.engine.ike_sas()
    assert report.state == "established" and report.last_error == ""
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    fleet.pump()
    assert b.tun.delivered == [packet]
    reply = udp4("10.2.0.7", "10.1.0.5", b"and back")
    b.send(reply)
    fleet.pump()
    assert a.tun.delivered == [reply]


async def test_initiator_refuses_a_responder_certificate_from_another_ca(
    tmp_path: Path,
) -> None:
    fleet = await start_pair(tmp_path, b_ca="other")
    a, b = fleet["a"], fleet["b"]
    failures = [e.detail for e in a.events("ike_failed")]
    assert failures and all(
        f.startswith("AUTHENTICATION_FAILED: certificate CN=b is not trusted") for f in failures
    ), failures
    assert a.engine.peers_up() == 0
    assert "AUTHENTICATION_FAILED" in a.engine.ike_sas()[0].last_error
    a.send(udp4("10.1.0.5", "10.2.0.7"))
    fleet.pump()
    assert b.tun.delivered == []


async def test_responder_refuses_an_initiator_certificate_from_another_ca(
    tmp_path: Path,
) -> None:
    """RFC 7296 section 2.21.2: the responder answers IKE_AUTH with AUTHENTICATION_FAILED."""
    fleet = await start_pair(tmp_path, a_ca="other")
    a, b = fleet["a"], fleet["b"]
    refused = [e.detail for e in b.events("ike_failed")]
    assert refused and all(
        f.startswith("AUTHENTICATION_FAILED: certificate CN=a is not trusted") for f in refused
    ), refused
    heard = [e.detail for e in a.events("ike_failed")]
    assert "AUTHENTICATION_FAILED: refused by peer" in heard
    assert b.engine.peers_up() == 0
    a.send(udp4("10.1.0.5", "10.2.0.7"))
    fleet.pump()
    assert b.tun.delivered == []


async def test_missing_local_certificate_is_a_clear_peer_error(tmp_path: Path) -> None:
    fleet = await start_pair(tmp_path, a_creds=False)
    a = fleet["a"]
    (report,) = a.engine.ike_sas()
    assert "needs this agent's IKE certificate and key" in report.last_error
    assert "ike.pem" in report.last_error
    assert [e.peer for e in a.events("peer_error")] == ["b"]
    assert a.engine.peers_up() == 0


def test_trust_anchors_are_narrowed_to_the_peer_ca(tmp_path: Path) -> None:
    fleet_pem, other_pem = ca(tmp_path / "fleet"), ca(tmp_path / "other")
    creds = enrolled(tmp_path / "fleet", tmp_path / "agent-a", "a")
    plan = pubkey_plan("a", ["b"], [other_pem, fleet_pem])
    (peer,) = plan.peers
    assert peer.auth.ca_fingerprint == pki.fingerprint(other_pem)
    config = translate.ike_config(plan, peer, creds)
    assert config.certificates is not None
    assert [translate.ca_fingerprint(c) for c in config.certificates.trust_anchors] == [
        pki.fingerprint(other_pem)
    ]
    assert config.certificates.certificate == creds.certificate


def test_certificate_without_the_local_identity_is_refused(tmp_path: Path) -> None:
    fleet_pem = ca(tmp_path / "fleet")
    creds = enrolled(tmp_path / "fleet", tmp_path / "agent-c", "c")
    plan = pubkey_plan("a", ["b"], [fleet_pem])
    (peer,) = plan.peers
    with pytest.raises(translate.PeerConfigError, match="does not carry the local identity a"):
        translate.ike_config(plan, peer, creds)


def test_credentials_that_do_not_fit_are_named(tmp_path: Path) -> None:
    ca(tmp_path / "fleet")
    enrolled(tmp_path / "fleet", tmp_path / "agent-a", "a")
    enrolled(tmp_path / "fleet", tmp_path / "agent-b", "b")
    cert_a = (tmp_path / "agent-a" / "ike.pem").read_bytes()
    key_a = (tmp_path / "agent-a" / "ike.key").read_bytes()
    key_b = (tmp_path / "agent-b" / "ike.key").read_bytes()
    with pytest.raises(CredentialError, match="does not belong to the IKE certificate"):
        IkeCredentials.from_pem(cert_a, key_b, "a")
    with pytest.raises(CredentialError, match=r"IKE certificate \(a\) is not PEM"):
        IkeCredentials.from_pem(b"junk", key_a, "a")
    with pytest.raises(CredentialError, match=r"IKE key \(a\) is not an unencrypted PEM key"):
        IkeCredentials.from_pem(cert_a, b"junk", "a")


def test_agent_loads_its_ike_credentials_from_the_state_dir(tmp_path: Path) -> None:
    ca(tmp_path / "fleet")
    state = tmp_path / "agent-a"
    creds = enrolled(tmp_path / "fleet", state, "a")
    loaded = cli._ike_credentials(None, None, state)
    assert loaded is not None and loaded.certificate == creds.certificate
    given = cli._ike_credentials(state / "ike.pem", state / "ike.key", None)
    assert given is not None and given.certificate == creds.certificate
    # Not enrolled yet: no credentials, PSK peers still work.
    assert cli._ike_credentials(None, None, tmp_path / "empty") is None
    assert cli._ike_credentials(None, None, None) is None
    with pytest.raises(CredentialError, match="--ike-cert and --ike-key go together"):
        cli._ike_credentials(state / "ike.pem", None, None)
    with pytest.raises(CredentialError, match=r"cannot read .*missing\.key"):
        cli._ike_credentials(state / "ike.pem", tmp_path / "missing.key", None)


async def test_a_second_ca_is_accepted_in_place_and_admits_its_certificates(
    tmp_path: Path,
) -> None:
    """The first step of a CA rotation: both ends accept the next CA besides the fleet
    CA. Which CAs an end accepts is its own business, so the SAs stay; afterwards a peer
    re-enrolled under the next CA is admitted."""
    fleet = await start_pair(tmp_path)
    a, b = fleet["a"], fleet["b"]
    fleet_pem, next_pem = (
        (tmp_path / "fleet" / "pki" / "ca.pem").read_bytes(),
        ca(tmp_path / "next"),
    )
    old_ike, old_spis = a.engine.peers["b"].ike, a.child_spis("b")
    both = [fleet_pem, next_pem]
    await fleet.apply("a", pubkey_plan("a", ["b"], both, accepted=(next_pem,), generation=2))
    await fleet.apply("b", pubkey_plan("b", ["a"], both, accepted=(next_pem,), generation=2))
    fleet.advance(5)
    assert a.engine.peers["b"].ike is old_ike and a.child_spis("b") == old_spis
    for node in (a, b):
        assert [e.detail for e in node.events("peer_changed")] == [
            "updated in place (no new SA needed)"
        ]
    config = a.engine.peers["b"].config
    assert config is not None and config.certificates is not None
    assert {translate.ca_fingerprint(c) for c in config.certificates.trust_anchors} == {
        pki.fingerprint(fleet_pem),
        pki.fingerprint(next_pem),
    }
    # b comes back with a certificate from the next CA (a restart after re-enrolment).
    assert b.engine.endpoint is not None
    b.engine.endpoint.close()
    with_credentials(fleet, "b", enrolled(tmp_path / "next", tmp_path / "agent-b2", "b"))
    await b.engine.start()
    await fleet.apply("b", pubkey_plan("b", ["a"], both, accepted=(next_pem,), generation=2))
    fleet.advance(5)
    new_ike = a.engine.peers["b"].ike
    assert new_ike is not old_ike and a.engine.peers_up() == b.engine.peers_up() == 1
    assert a.events("ike_failed") == [] and b.events("ike_failed") == []
    packet = udp4("10.1.0.5", "10.2.0.7", b"under the next CA")
    a.send(packet)
    fleet.pump()
    assert b.tun.delivered[-1:] == [packet]


async def test_trust_anchor_change_alone_reaches_the_certificate_peers(tmp_path: Path) -> None:
    """A plan whose only change is its trust anchors: the PEM objects the peers' checks
    use are replaced without new SAs."""
    fleet = await start_pair(tmp_path)
    a = fleet["a"]
    fleet_pem = (tmp_path / "fleet" / "pki" / "ca.pem").read_bytes()
    other_pem = (tmp_path / "other" / "pki" / "ca.pem").read_bytes()
    old_ike = a.engine.peers["b"].ike
    before = a.engine.peers["b"].config
    await fleet.apply("a", pubkey_plan("a", ["b"], [fleet_pem], generation=2))
    assert a.engine.peers["b"].ike is old_ike
    assert a.engine.peers["b"].config is not before
    await fleet.apply("a", pubkey_plan("a", ["b"], [fleet_pem, other_pem], generation=3))
    assert [e.detail for e in a.events("peer_changed")] == [
        "updated in place (no new SA needed)"
    ] * 2


async def test_a_crl_reaches_the_certificate_peers_in_place_and_refuses_a_revoked_peer(
    tmp_path: Path,
) -> None:
    """A plan whose only change is a CRL: the SAs in force stay (as strongSwan keeps an
    SA when a CRL arrives), and the responder's configuration takes it in place: the
    revoked initiator's next authentication fails there."""
    fleet = await start_pair(tmp_path)
    a, b = fleet["a"], fleet["b"]
    fleet_pem = (tmp_path / "fleet" / "pki" / "ca.pem").read_bytes()
    old_ike = b.engine.peers["a"].ike
    pki.revoke_host(tmp_path / "fleet", "a")
    crls = pki.fleet_crls(tmp_path / "fleet")
    await fleet.apply("b", pubkey_plan("b", ["a"], [fleet_pem], generation=2, crls=crls))
    assert b.engine.peers["a"].ike is old_ike
    assert [e.detail for e in b.events("peer_changed")] == ["updated in place (no new SA needed)"]
    a.engine.terminate_peer("b")
    fleet.advance(1)
    a.engine.initiate_peer("b")
    fleet.advance(2)
    (refused,) = [e.detail for e in b.events("ike_failed_unauthenticated")]
    assert "AUTHENTICATION_FAILED: certificate CN=a (serial " in refused
    assert "is revoked by the CRL of CN=vpnfleet fleet CA" in refused
    assert [e.detail for e in a.events("ike_failed")] == ["AUTHENTICATION_FAILED: refused by peer"]
    assert a.engine.peers_up() == b.engine.peers_up() == 0
