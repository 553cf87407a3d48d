"""AH from the inventory into plans (issue #17): ``ah_proposals`` in strongSwan notation
(RFC 4302 authenticates only: integrity, ESN and PFS group transforms, RFC 7296 section
3.3.3), how it combines with ``esp_proposals``, pairs that share no child proposal, AH
refused across a NAT, and the field across the plan contract (plan.proto field 24)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vpnfleet.agent.convert import plan_from_bytes
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import (
    IkeVersion,
    NodePlan,
    Peer,
    PlanError,
    ProposalError,
    ProposalKind,
    build_plans,
    parse_proposal,
)
from vpnfleet.controller.planner.model import Transform
from vpnfleet.controller.planner.proposals import DH, ESN, INTEG
from vpnfleet.controller.transport import convert

SECRET = b"0123456789abcdef0123456789abcdef"
MESH = """
all:
  children:
    mesh:
      hosts:
        a1: {address: 10.99.0.1, subnets: [10.1.1.0/24]}
        a2: {address: 10.99.0.2, subnets: [10.1.2.0/24]}
"""
TOPOLOGY = "meshes:\n  - {name: lab, group: mesh}\n"


def make(root: Path, **files: str) -> Path:
    """An inventory; ``files`` maps ``group_vars__mesh`` style names to YAML text."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "hosts.yaml").write_text(textwrap.dedent(MESH).lstrip("\n"))
    (root / "topology.yaml").write_text(TOPOLOGY)
    for name, text in files.items():
        path = root / (name.replace("__", "/") + ".yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def plans_of(root: Path) -> dict[str, NodePlan]:
    return build_plans(load_inventory(root), master_secret=SECRET)


def plan_errors(root: Path) -> list[str]:
    with pytest.raises(PlanError) as caught:
        plans_of(root)
    return [str(e) for e in caught.value.errors]


def peer(plans: dict[str, NodePlan], host: str, name: str) -> Peer:
    (found,) = (p for p in plans[host].peers if p.name == name)
    return found


# -- proposals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "transforms"),
    [
        # IANA "Transform Type 3" (RFC 4868, RFC 4543, RFC 2404) and ESN (type 5).
        ("sha256", (Transform(INTEG, 12), Transform(ESN, 0))),
        ("sha384-sha512", (Transform(INTEG, 13), Transform(INTEG, 14), Transform(ESN, 0))),
        ("sha256-esn", (Transform(INTEG, 12), Transform(ESN, 1))),
        ("aes128gmac", (Transform(INTEG, 9), Transform(ESN, 0))),
        ("aes256gmac-noesn", (Transform(INTEG, 11), Transform(ESN, 0))),
        ("sha1", (Transform(INTEG, 2), Transform(ESN, 0))),
        ("sha256-x25519", (Transform(INTEG, 12), Transform(DH, 31), Transform(ESN, 0))),
    ],
)
def test_ah_proposals(text: str, transforms: tuple[Transform, ...]) -> None:
    assert parse_proposal(text, ProposalKind.AH).transforms == transforms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aes256-sha256", "'aes256' is an encryption algorithm, and AH only authenticates"),
        ("aes256gcm16", "'aes256gcm16' is an encryption algorithm, and AH only authenticates"),
        ("sha256-prfsha256", "'prfsha256' \\(a PRF\\) only applies to IKE proposals"),
        ("esn", "no integrity algorithm"),
        ("sha265", "unknown algorithm 'sha265'"),
    ],
)
def test_bad_ah_proposals(text: str, message: str) -> None:
    with pytest.raises(ProposalError, match=message):
        parse_proposal(text, ProposalKind.AH)


def test_gmac_is_for_ah_only_and_esn_for_ikev2_only() -> None:
    with pytest.raises(ProposalError, match="'aes128gmac' is for AH proposals only"):
        parse_proposal("aes256-aes128gmac", ProposalKind.ESP)
    with pytest.raises(ProposalError, match="'esn' is for IKEv2 peers only"):
        parse_proposal("sha256-esn", ProposalKind.AH, IkeVersion.V1)
    assert parse_proposal("aes128gmac", ProposalKind.AH, IkeVersion.V1).transforms[0] == (
        Transform(INTEG, 9)
    )


# -- plans -------------------------------------------------------------------------------


def test_no_ah_by_default(tmp_path: Path) -> None:
    p = peer(plans_of(make(tmp_path / "inv")), "a1", "a2")
    assert p.ah_proposals == () and [x.text for x in p.esp_proposals] == ["aes256gcm16"]


def test_ah_proposals_alone_offer_ah_only(tmp_path: Path) -> None:
    """As in strongSwan, the default ESP proposal is not offered beside explicit AH."""
    plans = plans_of(make(tmp_path / "inv", group_vars__mesh="ah_proposals: [sha256-esn]\n"))
    for host, other in (("a1", "a2"), ("a2", "a1")):
        p = peer(plans, host, other)
        assert [x.text for x in p.ah_proposals] == ["sha256-esn"]
        assert p.esp_proposals == ()


def test_both_lists_are_offered(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv",
        group_vars__mesh="ah_proposals: [sha512]\nesp_proposals: [aes128gcm16]\n",
    )
    p = peer(plans_of(root), "a1", "a2")
    assert [x.text for x in p.ah_proposals] == ["sha512"]
    assert [x.text for x in p.esp_proposals] == ["aes128gcm16"]


def test_ah_on_one_end_and_esp_shared_is_a_valid_pair(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv", host_vars__a1="ah_proposals: [sha256]\nesp_proposals: [aes256gcm16]\n"
    )
    plans = plans_of(root)
    assert [x.text for x in peer(plans, "a1", "a2").ah_proposals] == ["sha256"]
    assert peer(plans, "a2", "a1").ah_proposals == ()


def test_bad_ah_proposal_names_its_file_and_line(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", group_vars__mesh="nat: false\nah_proposals: [aes256-sha256]\n")
    (error,) = set(plan_errors(root))
    assert "group_vars/mesh.yaml:2" in error
    assert "ah_proposals: AH proposal 'aes256-sha256': 'aes256' is an encryption" in error


def test_ah_only_against_esp_only_shares_no_child_proposal(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", host_vars__a1="ah_proposals: [sha256]\n")
    (error,) = plan_errors(root)
    assert "hosts a1 and a2 share no child SA proposal, ESP or AH" in error
    assert "a1 offers ah [sha256], a2 offers esp [aes256gcm16]" in error
    assert "host_vars/a1.yaml:1" in error


def test_ah_proposals_that_do_not_meet(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv",
        host_vars__a1="ah_proposals: [sha256]\n",
        host_vars__a2="ah_proposals: [sha512]\n",
    )
    (error,) = plan_errors(root)
    assert "a1 offers ah [sha256], a2 offers ah [sha512]" in error


# -- NAT -----------------------------------------------------------------------------------


def test_ah_across_a_nat_is_refused(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv",
        group_vars__mesh="ah_proposals: [sha256]\n",
        host_vars__a2="nat: true\n",
    )
    (error,) = plan_errors(root)
    assert "hosts a1 and a2: AH cannot cross NAT: a2 is behind a NAT (nat: true, set at " in error
    assert "host_vars/a2.yaml:1" in error and "group_vars/mesh.yaml:1" in error


def test_ah_with_forced_encapsulation_is_refused(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv",
        group_vars__mesh="ah_proposals: [sha256]\n",
        host_vars__a1="force_encap: true\n",
    )
    (error,) = plan_errors(root)
    assert "hosts a1 and a2: AH cannot cross NAT: a1 forces UDP encapsulation" in error


def test_a_nat_without_shared_ah_is_no_error(tmp_path: Path) -> None:
    """a1 offers AH and ESP, a2 ESP only: AH is never negotiated, so the NAT is fine."""
    root = make(
        tmp_path / "inv",
        host_vars__a1="ah_proposals: [sha256]\nesp_proposals: [aes256gcm16]\n",
        host_vars__a2="nat: true\n",
    )
    assert peer(plans_of(root), "a2", "a1").ah_proposals == ()


# -- the plan contract -------------------------------------------------------------------


def test_ah_proposals_cross_the_plan_contract(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", group_vars__mesh="ah_proposals: [sha256-esn, aes128gmac]\n")
    plan = plans_of(root)["a1"]
    (msg,) = convert.plan_to_proto(plan).peers
    assert [p.text for p in msg.ah_proposals] == ["sha256-esn", "aes128gmac"]
    assert not msg.esp_proposals
    (agent_peer,) = plan_from_bytes(convert.plan_bytes(plan)).peers
    assert [p.text for p in agent_peer.ah_proposals] == ["sha256-esn", "aes128gmac"]
    assert agent_peer.esp_proposals == ()


def test_plans_without_ah_keep_their_bytes(tmp_path: Path) -> None:
    """Field 24 is unset when empty: plans without AH serialise as before it existed."""
    plan = plans_of(make(tmp_path / "inv"))["a1"]
    for msg in convert.plan_to_proto(plan).peers:
        assert "ah_proposals" not in {fd.name for fd, _ in msg.ListFields()}


def test_ah_towards_an_external_peer_from_behind_a_nat_is_refused(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", host_vars__a1="nat: true\nah_proposals: [sha256]\n")
    (root / "topology.yaml").write_text(
        TOPOLOGY
        + "external_peers:\n"
        + "  - {name: partner, address: 203.0.113.10, psk: a-long-enough-shared-key,\n"
        + "     subnets: [192.0.2.0/24], connect: a1}\n"
    )
    (error,) = [e for e in plan_errors(root) if "external peer" in e]
    assert "host a1 and external peer partner: AH cannot cross NAT: a1 is behind a NAT" in error
    assert "host_vars/a1.yaml:2" in error
