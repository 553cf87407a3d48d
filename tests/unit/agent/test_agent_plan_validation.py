"""plan_from_proto: every rejection reason, and that all problems are reported together."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.agent.convert import HASH_MISMATCH, plan_from_bytes, plan_from_proto
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import AuthMethod, PlanRejected, SpdAction
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

Mutation = Callable[[plan_pb2.NodePlan], None]


def good_plan() -> plan_pb2.NodePlan:
    return sample_plan(
        "a1",
        "10.0.0.1",
        "10.1.0.0/24",
        [("b1", "10.0.0.2", "10.2.0.0/24"), ("c1", "10.0.0.3", "10.3.0.0/24")],
    )


def rejected(mutate: Mutation, rehash: bool = True) -> list[str]:
    msg = good_plan()
    mutate(msg)
    if rehash:
        msg.content_hash = plan_content_hash(msg)
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(msg)
    return info.value.reasons


def test_good_plan_converts() -> None:
    plan = plan_from_proto(good_plan())
    assert plan.host == "a1"
    assert [p.name for p in plan.peers] == ["b1", "c1"]
    assert plan.spd[0].action is SpdAction.PROTECT
    assert plan.peers[0].auth.method is AuthMethod.PSK
    assert "psk=" not in repr(plan.peers[0].auth)  # secrets stay out of repr and logs


def test_hash_mismatch_when_content_altered() -> None:
    reasons = rejected(lambda m: setattr(m.peers[0], "remote_port", 4501), rehash=False)
    assert reasons == [HASH_MISMATCH]


def test_hash_ignores_revision_label() -> None:
    # The source revision labels where a plan came from; a commit that does not change
    # this host must not make its agent see a new plan.
    msg = good_plan()
    before = plan_content_hash(msg)
    msg.source_revision = "0123abcd"
    msg.generation += 5
    assert plan_content_hash(msg) == before


def test_truncated_bytes_are_refused() -> None:
    data = good_plan().SerializeToString(deterministic=True)
    for cut in (len(data) // 2, len(data) - 3):
        with pytest.raises(PlanRejected) as info:
            plan_from_bytes(data[:cut])
        assert any("corrupt or truncated" in r for r in info.value.reasons)


def test_generation_is_outside_the_hash() -> None:
    msg = good_plan()
    msg.generation = 99
    assert plan_from_proto(msg).generation == 99


def _peer(m: plan_pb2.NodePlan) -> plan_pb2.Peer:
    return m.peers[0]


def _set_transforms(proposal: plan_pb2.Proposal, *ts: tuple[int, int, int]) -> None:
    del proposal.transforms[:]
    for t, i, k in ts:
        proposal.transforms.add(type=t, id=i, key_length=k)


CASES: list[tuple[str, Mutation, str]] = [
    ("empty host", lambda m: setattr(m, "host", ""), "host: empty"),
    ("bad host", lambda m: setattr(m, "host", "a b"), "is not a host name"),
    ("bad address", lambda m: m.addresses.__setitem__(0, "10.0.0.300"), "not an IP address"),
    ("bad subnet", lambda m: m.subnets.append("10.1.0.1/24"), "is not a prefix"),
    ("no identity", lambda m: m.ClearField("identity"), "identity: unknown or missing ID"),
    (
        "ipv4 id with v6",
        lambda m: m.identity.CopyFrom(plan_pb2.Identity(type=plan_pb2.ID_IPV4_ADDR, value="::1")),
        "does not match ID type",
    ),
    ("duplicate peer", lambda m: m.peers.add().CopyFrom(m.peers[0]), "more than one peer"),
    ("peer without name", lambda m: setattr(_peer(m), "name", ""), "has no name"),
    ("peer no address", lambda m: _peer(m).ClearField("remote_addresses"), "no remote address"),
    ("peer bad port", lambda m: setattr(_peer(m), "remote_port", 70000), "remote_port 70000"),
    ("psk missing", lambda m: setattr(_peer(m).auth, "psk", b""), "PSK authentication but no PSK"),
    ("auth missing", lambda m: setattr(_peer(m).auth, "method", 0), "unknown or missing auth"),
    (
        "pubkey without anchors",
        lambda m: setattr(_peer(m).auth, "method", plan_pb2.AUTH_METHOD_PUBKEY),
        "has no trust anchors",
    ),
    ("bad trust anchor", lambda m: m.trust_anchors.append(b"junk"), "not a PEM certificate"),
    ("no ike proposals", lambda m: _peer(m).ClearField("ike_proposals"), "no ike proposals"),
    ("no esp proposals", lambda m: _peer(m).ClearField("esp_proposals"), "no esp proposals"),
    (
        "unknown encr",
        lambda m: setattr(_peer(m).ike_proposals[0].transforms[0], "id", 3),
        "ENCR transform 3 is not implemented",
    ),
    (
        "bad aes key",
        lambda m: setattr(_peer(m).esp_proposals[0].transforms[0], "key_length", 192),
        "key length 192",
    ),
    (
        "chacha with key length",
        lambda m: _set_transforms(_peer(m).esp_proposals[0], (1, 28, 256)),
        "needs no key length",
    ),
    (
        "unknown prf",
        lambda m: setattr(_peer(m).ike_proposals[0].transforms[1], "id", 2),
        "PRF transform 2",
    ),
    (
        "unknown dh",
        lambda m: setattr(_peer(m).ike_proposals[0].transforms[2], "id", 2),
        "DH transform 2",
    ),
    (
        "unknown transform type",
        lambda m: _peer(m).ike_proposals[0].transforms.add(type=9, id=1),
        "unknown transform type 9",
    ),
    (
        "bad esn",
        lambda m: setattr(_peer(m).esp_proposals[0].transforms[1], "id", 2),
        "ESN transform 2",
    ),
    (
        "cbc without integrity",
        lambda m: _set_transforms(_peer(m).esp_proposals[0], (1, 12, 128)),
        "AES-CBC needs an integrity transform",
    ),
    (
        "aead with integrity",
        lambda m: _set_transforms(_peer(m).esp_proposals[0], (1, 20, 128), (3, 12, 0)),
        "AEAD encryption with an integrity transform",
    ),
    (
        "mixed aead",
        lambda m: _set_transforms(
            _peer(m).esp_proposals[0], (1, 20, 128), (1, 12, 128), (3, 12, 0)
        ),
        "mixes AEAD and non-AEAD",
    ),
    (
        "unknown integ",
        lambda m: _set_transforms(_peer(m).esp_proposals[0], (1, 12, 128), (3, 2, 0)),
        "INTEG transform 2",
    ),
    (
        "ike without prf",
        lambda m: _set_transforms(_peer(m).ike_proposals[0], (1, 20, 256), (4, 31, 0)),
        "IKE proposal without a PRF",
    ),
    (
        "ike without dh",
        lambda m: _set_transforms(_peer(m).ike_proposals[0], (1, 20, 256), (2, 5, 0)),
        "without a key exchange",
    ),
    (
        "esp with prf",
        lambda m: _set_transforms(_peer(m).esp_proposals[0], (1, 20, 256), (2, 5, 0)),
        "ESP proposal with a PRF",
    ),
    ("mode missing", lambda m: setattr(_peer(m), "mode", 0), "mode: unknown or missing"),
    ("start missing", lambda m: setattr(_peer(m), "start_action", 0), "start_action: unknown"),
    (
        "lifetime zero",
        lambda m: setattr(_peer(m).lifetimes, "child_rekey_seconds", 0),
        "child_rekey_seconds 0s is below the minimum of 10s",
    ),
    (
        "jitter too large",
        lambda m: setattr(_peer(m).lifetimes, "rand_seconds", 3600),
        "child_rekey_seconds: the rekey jitter 3600s is not below the rekey time 3600s",
    ),
    (
        "dpd timeout short",
        lambda m: setattr(_peer(m).dpd, "timeout_seconds", 5),
        "the DPD timeout 5s is shorter than the DPD delay 30s",
    ),
    ("bad ts", lambda m: _peer(m).local_ts.append("nonsense"), "local_ts[1]"),
    (
        "spd unknown peer",
        lambda m: setattr(m.spd[0], "peer", "zz"),
        "names peer 'zz', which is not in the plan",
    ),
    ("spd no peer", lambda m: setattr(m.spd[0], "peer", ""), "protect entry names no peer"),
    (
        "bypass with peer",
        lambda m: setattr(m.spd[0], "action", plan_pb2.SPD_ACTION_BYPASS),
        "bypass entry names a peer",
    ),
    ("spd no action", lambda m: setattr(m.spd[0], "action", 0), "action: unknown or missing"),
    ("spd duplicate", lambda m: setattr(m.spd[1], "name", m.spd[0].name), "more than one entry"),
    ("spd protocol", lambda m: setattr(m.spd[0].selector, "protocol", 256), "protocol 256"),
    (
        "spd port range",
        lambda m: setattr(m.spd[0].selector, "local_port_start", 70000),
        "not within 0..65535",
    ),
    (
        "spd start after end",
        lambda m: m.spd[0].selector.MergeFrom(
            plan_pb2.TrafficSelector(remote_port_start=80, remote_port_end=79)
        ),
        "starts after it ends",
    ),
    (
        "spd families",
        lambda m: setattr(m.spd[0].selector, "remote_prefix", "fd00::/64"),
        "different address families",
    ),
    (
        "spd bad prefix",
        lambda m: setattr(m.spd[0].selector, "local_prefix", ""),
        "local_prefix: '' is not a prefix",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rejection_reason(mutate: Mutation, expected: str) -> None:
    reasons = rejected(mutate)
    assert any(expected in r for r in reasons), reasons


def test_all_problems_are_reported_together() -> None:
    def many(m: plan_pb2.NodePlan) -> None:
        m.host = ""
        m.peers[0].auth.psk = b""
        m.spd[0].peer = "nobody"
        m.spd[1].selector.protocol = 300

    reasons = rejected(many)
    assert len(reasons) == 4, reasons
    assert any("'b1' auth" in r for r in reasons)  # the reason names where it is


def test_pubkey_with_matching_anchor_is_accepted(tmp_path: Path) -> None:
    from vpnfleet.controller.statedir.pki import fingerprint, init_ca

    init_ca(tmp_path)
    ca_pem = (tmp_path / "pki" / "ca.pem").read_bytes()
    msg = good_plan()
    msg.trust_anchors.append(ca_pem)
    for peer in msg.peers:
        peer.auth.CopyFrom(
            plan_pb2.Credential(
                method=plan_pb2.AUTH_METHOD_PUBKEY,
                reference="cert:fleet-ca",
                ca_fingerprint=fingerprint(ca_pem),
            )
        )
    msg.content_hash = plan_content_hash(msg)
    assert plan_from_proto(msg).peers[0].auth.method is AuthMethod.PUBKEY
    msg.peers[0].auth.ca_fingerprint = "ab" * 32
    msg.content_hash = plan_content_hash(msg)
    with pytest.raises(PlanRejected, match="matches none of the plan's trust anchors"):
        plan_from_proto(msg)


def test_accepted_ca_fingerprints_are_checked_like_the_main_one(tmp_path: Path) -> None:
    from vpnfleet.controller.statedir.pki import fingerprint, init_ca

    init_ca(tmp_path / "old")
    init_ca(tmp_path / "new")
    old_pem = (tmp_path / "old" / "pki" / "ca.pem").read_bytes()
    new_pem = (tmp_path / "new" / "pki" / "ca.pem").read_bytes()
    msg = good_plan()
    msg.trust_anchors.extend([old_pem, new_pem])
    for peer in msg.peers:
        peer.auth.CopyFrom(
            plan_pb2.Credential(
                method=plan_pb2.AUTH_METHOD_PUBKEY,
                reference="cert:fleet-ca",
                ca_fingerprint=fingerprint(old_pem),
                accepted_ca_fingerprints=[fingerprint(new_pem).upper()],
            )
        )

    def rejected(edit: Callable[[plan_pb2.Credential], None], reason: str) -> None:
        bad = plan_pb2.NodePlan()
        bad.CopyFrom(msg)
        edit(bad.peers[0].auth)
        bad.content_hash = plan_content_hash(bad)
        with pytest.raises(PlanRejected, match=reason):
            plan_from_proto(bad)

    msg.content_hash = plan_content_hash(msg)
    auth = plan_from_proto(msg).peers[0].auth
    assert auth.ca_fingerprints == (fingerprint(old_pem), fingerprint(new_pem))
    rejected(
        lambda a: a.accepted_ca_fingerprints.append("zz"),
        "accepted_ca_fingerprints 'zz' is not a hex SHA-256",
    )
    rejected(
        lambda a: a.accepted_ca_fingerprints.append("cd" * 32),
        "accepted_ca_fingerprints cdcdcdcdcdcdcdcd… matches none of the plan's trust anchors",
    )

    def as_psk(a: plan_pb2.Credential) -> None:
        a.method = plan_pb2.AUTH_METHOD_PSK
        a.psk = b"k" * 32

    rejected(as_psk, "accepted_ca_fingerprints given for an authentication without certificates")
