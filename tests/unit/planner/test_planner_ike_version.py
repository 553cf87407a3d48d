"""IKEv1 from the inventory into plans (issue #16): ``ike_version`` and ``ike_aggressive``
per host, group and external peer; proposals read under IKEv1's rules (RFC 2409
Appendix A for phase 1, RFC 2407 section 4.4.4 for ESP); pairs whose ends disagree
refused; Aggressive Mode warned of (RFC 2409 section 5.4); the fields across the plan
contract."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from vpnfleet.agent.convert import plan_from_bytes
from vpnfleet.agent.plan import IkeVersion as AgentIkeVersion
from vpnfleet.controller.cli.fleet import render_plan_summaries
from vpnfleet.controller.fleet.operations import CompiledFleet, plan_summary
from vpnfleet.controller.inventory import InventoryErrors, load_inventory
from vpnfleet.controller.planner import (
    IkeVersion,
    NodePlan,
    Peer,
    PlanError,
    Planner,
    ProposalError,
    ProposalKind,
    build_plans,
    parse_proposal,
)
from vpnfleet.controller.planner.model import Transform
from vpnfleet.controller.planner.proposals import DH, ENCR, INTEG, PRF
from vpnfleet.controller.transport import convert
from vpnfleet.protos import plan_pb2

SECRET = b"0123456789abcdef0123456789abcdef"
MESH = """
all:
  children:
    mesh:
      hosts:
        a1: {address: 10.99.0.1, subnets: [10.1.1.0/24]}
        a2: {address: 10.99.0.2, subnets: [10.1.2.0/24]}
        a3: {address: 10.99.0.3, subnets: [10.1.3.0/24]}
"""
HUB_SPOKE = """
all:
  children:
    hubs:
      hosts:
        hub: {address: 10.99.1.1, subnets: [10.2.0.0/24]}
    spokes:
      hosts:
        s1: {address: 10.99.1.11, subnets: [10.2.1.0/24]}
        s2: {address: 10.99.1.12, subnets: [10.2.2.0/24]}
"""
MESH_TOPOLOGY = "meshes:\n  - {name: lab, group: mesh}\n"
HUB_SPOKE_TOPOLOGY = "hub_spoke:\n  - {name: br, hubs: hubs, spokes: spokes}\n"


def external(**keys: str) -> str:
    """An external peer of a1, with extra ``keys`` (YAML values as text)."""
    lines = [
        "external_peers:",
        "  - name: partner",
        "    address: 203.0.113.10",
        "    psk: a-long-enough-shared-key",
        "    subnets: [192.0.2.0/24]",
        "    connect: a1",
    ]
    lines += [f"    {key}: {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def make(root: Path, hosts: str = MESH, topology: str = MESH_TOPOLOGY, **files: str) -> Path:
    """An inventory; ``files`` maps ``group_vars__mesh`` style names to YAML text."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "hosts.yaml").write_text(textwrap.dedent(hosts).lstrip("\n"))
    (root / "topology.yaml").write_text(topology)
    for name, text in files.items():
        path = root / (name.replace("__", "/") + ".yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def plans_of(root: Path) -> dict[str, NodePlan]:
    return build_plans(load_inventory(root), master_secret=SECRET)


def plan_errors(root: Path) -> list[str]:
    with pytest.raises(PlanError) as caught:
        plans_of(root)
    return [str(e) for e in caught.value.errors]


def load_errors(root: Path) -> list[str]:
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    return [str(e) for e in caught.value.errors]


def peer(plans: dict[str, NodePlan], host: str, name: str) -> Peer:
    (found,) = (p for p in plans[host].peers if p.name == name)
    return found


V1_MESH = {"group_vars__mesh": "ike_version: 1\n"}


# -- the variables ---------------------------------------------------------------------


def test_default_is_ikev2_and_plans_keep_their_bytes(tmp_path: Path) -> None:
    plans = plans_of(make(tmp_path / "inv"))
    for plan in plans.values():
        assert {(p.ike_version, p.ike_aggressive) for p in plan.peers} == {(IkeVersion.V2, False)}
        # IKE_V2 is 0: unset proto3 scalars are not serialised, so plans written before
        # the fields existed keep their bytes and content hashes.
        for msg in convert.plan_to_proto(plan).peers:
            assert not {fd.name for fd, _ in msg.ListFields()} & {"ike_version", "ike_aggressive"}


def test_ike_version_1_from_group_vars(tmp_path: Path) -> None:
    plans = plans_of(make(tmp_path / "inv", **V1_MESH))
    p = peer(plans, "a1", "a2")
    assert (p.ike_version, p.ike_aggressive) == (IkeVersion.V1, False)
    # No file sets ike_proposals: the IKEv1 default, not the IKEv2 one (AEAD).
    assert [x.text for x in p.ike_proposals] == ["aes256-sha256-modp2048"]
    assert [x.text for x in p.esp_proposals] == ["aes256gcm16"]


def test_explicit_ike_version_2_plans_like_no_setting(tmp_path: Path) -> None:
    unset = plans_of(make(tmp_path / "one"))
    explicit = plans_of(make(tmp_path / "two", group_vars__all="ike_version: 2\n"))
    assert [convert.plan_bytes(p) for p in unset.values()] == [
        convert.plan_bytes(p) for p in explicit.values()
    ]


def test_host_beats_group(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv",
        group_vars__all="ike_version: 2\n",
        group_vars__mesh="ike_version: 1\n",
        host_vars__a3="ike_version: 2\n",
    )
    inventory = load_inventory(root)
    assert [inventory.resolve(h).vars["ike_version"] for h in ("a1", "a2", "a3")] == [1, 1, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ike_version: 3\n", "ike_version: expected 1 (IKEv1) or 2 (IKEv2), got 3"),
        ("ike_version: '1'\n", "got '1' (a number, not text: write ike_version: 1 unquoted)"),
        ("ike_version: true\n", "ike_version: expected 1 (IKEv1) or 2 (IKEv2), got true"),
        ("ike_version: v1\n", "got 'v1'"),
        ("ike_aggressive: 'yes'\n", "ike_aggressive: expected true or false, got 'yes'"),
    ],
)
def test_bad_values_are_refused_where_written(tmp_path: Path, text: str, expected: str) -> None:
    root = make(tmp_path / "inv", host_vars__a2=text)
    (error,) = load_errors(root)
    assert error.startswith(f"{root / 'host_vars' / 'a2.yaml'}:1:")
    assert "host 'a2'" in error and expected in error


def test_ini_values_are_typed_as_ansible_types_them(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    root.mkdir()
    (root / "hosts.ini").write_text(
        "[mesh]\n"
        "a1 address=10.99.0.1 ike_version=1 ike_aggressive=True\n"
        "a2 address=10.99.0.2 ike_version=1 ike_aggressive=False\n"
        "[mesh:vars]\nike_version=1\n"
    )
    inventory = load_inventory(root)
    assert inventory.resolve("a1").vars["ike_aggressive"] is True
    assert inventory.resolve("a2").vars["ike_version"] == 1
    (root / "hosts.ini").write_text("[mesh]\na1 address=10.99.0.1 ike_aggressive=true\n")
    (error,) = load_errors(root)
    assert "ike_aggressive: expected true or false, got 'true' (text, not a boolean" in error


def test_a_misspelt_name_gets_a_did_you_mean(tmp_path: Path) -> None:
    (error,) = load_errors(make(tmp_path / "inv", host_vars__a1="ike_versio: 1\n"))
    assert "unknown variable 'ike_versio' (did you mean 'ike_version'?" in error


def test_aggressive_with_ikev2_is_an_error_at_its_definition(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", group_vars__mesh="ike_aggressive: true\n")
    (error,) = load_errors(root)
    assert error.startswith(f"{root / 'group_vars' / 'mesh.yaml'}:1:1: ")
    assert "ike_aggressive (set at" in error and "ike_version is 2 (default)" in error
    assert "hosts a1, a2, a3" in error and "set ike_version: 1 beside it" in error


def test_aggressive_with_psk_is_warned_of_once_per_definition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make(tmp_path / "inv", group_vars__mesh="ike_version: 1\nike_aggressive: true\n")
    with caplog.at_level(logging.WARNING):
        inventory = load_inventory(root)
    (warning,) = inventory.warnings
    assert warning.mark is not None and (warning.mark.line, warning.mark.column) == (2, 1)
    assert "ike_aggressive with auth psk for hosts a1, a2, a3" in warning.message
    assert "RFC 2409 section 5.4" in warning.message and "offline" in warning.message
    assert f"warning: {warning}" in caplog.messages
    plans = build_plans(inventory, master_secret=SECRET)  # a warning never stops a plan
    assert peer(plans, "a1", "a2").ike_aggressive is True


def test_aggressive_with_certificates_warns_of_the_identities(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv", group_vars__mesh="ike_version: 1\nike_aggressive: true\nauth: pubkey\n"
    )
    (warning,) = load_inventory(root).warnings
    assert "auth pubkey" in warning.message and "identities in the clear" in warning.message
    assert "pre-shared" not in warning.message


def test_main_mode_is_not_warned_of(tmp_path: Path) -> None:
    assert load_inventory(make(tmp_path / "inv", **V1_MESH)).warnings == ()


# -- pairs never mix versions ----------------------------------------------------------


def test_a_mesh_pair_with_mixed_versions_is_refused(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", host_vars__a2="ike_version: 1\n")
    errors = plan_errors(root)
    at = f"{root / 'host_vars' / 'a2.yaml'}:1:1"
    assert errors == [
        f"{at}: hosts a1 and a2 disagree on ike_version: a1 speaks IKEv2 (default), a2 "
        f"speaks IKEv1 (set at {at}); a pair never mixes versions: give both the same "
        "ike_version",
        f"{at}: hosts a2 and a3 disagree on ike_version: a2 speaks IKEv1 (set at {at}), a3 "
        "speaks IKEv2 (default); a pair never mixes versions: give both the same ike_version",
    ]


def test_a_hub_and_spoke_with_mixed_versions_is_refused(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv",
        HUB_SPOKE,
        HUB_SPOKE_TOPOLOGY,
        group_vars__spokes="ike_version: 1\n",
    )
    errors = plan_errors(root)
    assert len(errors) == 2
    assert all("disagree on ike_version: hub speaks IKEv2 (default)" in e for e in errors)
    assert {e.split("hub speaks IKEv2 (default), ")[1].split(" ")[0] for e in errors} == {
        "s1",
        "s2",
    }
    # The same construct with one version throughout is refused for another reason: a
    # hub carries the other spokes' subnets, more than IKEv1's one Quick mode ID pair.
    v1 = make(tmp_path / "v1", HUB_SPOKE, HUB_SPOKE_TOPOLOGY, group_vars__all="ike_version: 1\n")
    errors = plan_errors(v1)
    assert len(errors) == 2 and all("one subnet pair per Quick mode SA" in e for e in errors)


def test_an_ikev1_pair_with_more_than_one_subnet_pair_is_refused(tmp_path: Path) -> None:
    """RFC 2409 section 5.5: a Quick mode carries one ID pair; the agent makes one Quick
    mode SA per peer, so a second subnet would go unprotected: refused, named, located."""
    hosts = MESH.replace("subnets: [10.1.1.0/24]", "subnets: [10.1.1.0/24, 10.1.9.0/24]")
    root = make(tmp_path / "inv", hosts, **V1_MESH)
    errors = plan_errors(root)
    assert len(errors) == 2
    assert errors[0] == (
        f"{root / 'group_vars' / 'mesh.yaml'}:1:1: hosts a1 and a2 speak IKEv1, which "
        "negotiates one subnet pair per Quick mode SA, and the agent makes one Quick mode "
        "SA per peer; this tunnel would carry 10.1.1.0/24, 10.1.9.0/24 to 10.1.2.0/24: "
        "give each IKEv1 end one subnet (a hub also carries the other spokes' subnets), "
        "or use ike_version: 2"
    )
    assert "hosts a1 and a3 speak IKEv1" in errors[1]
    # IKEv2 carries both subnets in one child SA.
    assert len(peer(plans_of(make(tmp_path / "v2", hosts)), "a1", "a2").local_ts) == 2
    # An external IKEv1 gateway with two subnets likewise.
    two = external(ike_version="1").replace(
        "subnets: [192.0.2.0/24]", "subnets: [192.0.2.0/24, 198.51.100.0/24]"
    )
    root = make(tmp_path / "ext", topology=MESH_TOPOLOGY + two, **V1_MESH)
    (error,) = plan_errors(root)
    assert "host a1 and external peer partner speak IKEv1" in error
    assert "10.1.1.0/24 to 192.0.2.0/24, 198.51.100.0/24" in error


def test_a_pair_disagreeing_on_aggressive_mode_is_refused(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", **V1_MESH, host_vars__a1="ike_aggressive: true\n")
    errors = plan_errors(root)
    assert len(errors) == 2
    assert "hosts a1 and a2 disagree on ike_aggressive: a1 has true" in errors[0]
    assert "a2 has false" in errors[0]


def test_a_host_and_an_external_peer_disagreeing_on_the_version(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", topology=MESH_TOPOLOGY + external(ike_version="1"))
    (error,) = plan_errors(root)
    assert error == (
        f"{root / 'topology.yaml'}:4:5: host a1 and external peer partner disagree on "
        "ike_version: a1 has IKEv2 (default), partner has IKEv1 (at "
        f"{root / 'topology.yaml'}:4:5); set the same ike_version for both ends"
    )
    root = make(
        tmp_path / "two", topology=MESH_TOPOLOGY + external(), **V1_MESH
    )  # the other way round: the host's definition is the place to look
    (error,) = plan_errors(root)
    assert error.startswith(f"{root / 'group_vars' / 'mesh.yaml'}:1:1: host a1 and external")
    assert "a1 has IKEv1 (set at" in error and "partner has IKEv2" in error


def test_an_ikev1_external_peer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    topology = MESH_TOPOLOGY + external(
        ike_version="1",
        ike_aggressive="true",
        ike_proposals="[aes128-sha256-modp2048, aes256-sha384-ecp384]",
        esp_proposals="[aes128-sha256-modp2048]",
    )
    root = make(
        tmp_path / "inv",
        topology=topology,
        group_vars__mesh="ike_version: 1\nike_aggressive: true\n"
        "ike_proposals: [aes128-sha256-modp2048]\nesp_proposals: [aes128-sha256-modp2048]\n",
    )
    with caplog.at_level(logging.WARNING):
        plans = plans_of(root)
    p = peer(plans, "a1", "partner")
    assert (p.ike_version, p.ike_aggressive, p.managed) == (IkeVersion.V1, True, False)
    warned = [m for m in caplog.messages if "external_peers[0]: ike_aggressive" in m]
    assert len(warned) == 1 and "RFC 2409 section 5.4" in warned[0]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"ike_version": "3"}, "external_peers[0]: ike_version: expected 1 (IKEv1) or 2"),
        ({"ike_version": "'1'"}, "external_peers[0]: ike_version: expected 1 (IKEv1) or 2"),
        ({"ike_aggressive": "'yes'"}, "external_peers[0]: ike_aggressive: expected true or"),
        ({"ike_aggressive": "true"}, "asks for IKEv1 Aggressive Mode, but ike_version is 2"),
        (
            {"ike_version": "1", "ike_proposals": "[aes256gcm16-prfsha384-x25519]"},
            "IKEv1 IKE proposal 'aes256gcm16-prfsha384-x25519': 'aes256gcm16' is an AEAD",
        ),
        ({"ike_versoin": "1"}, "unknown key 'ike_versoin' (did you mean 'ike_version'?)"),
    ],
)
def test_bad_external_peer_settings(tmp_path: Path, keys: dict[str, str], expected: str) -> None:
    root = make(tmp_path / "inv", topology=MESH_TOPOLOGY + external(**keys))
    errors = plan_errors(root)
    assert any(expected in e for e in errors), errors


# -- proposals under IKEv1's rules -----------------------------------------------------


def test_ikev1_proposals_mean_the_same_transforms() -> None:
    """RFC 2409 Appendix A: an IKEv1 phase 1 suite is a cipher, a hash and a group; the
    plan carries it as the IANA transforms, the PRF being the HMAC of the hash."""
    v1 = parse_proposal("aes128-sha256-modp2048", ProposalKind.IKE, IkeVersion.V1)
    assert v1.transforms == (
        Transform(ENCR, 12, 128),
        Transform(PRF, 5),
        Transform(INTEG, 12),
        Transform(DH, 14),
    )
    assert v1 == parse_proposal("aes128-sha256-modp2048", ProposalKind.IKE)
    # The integrity's own PRF may be written; it changes nothing.
    same = parse_proposal("aes128-sha256-prfsha256-modp2048", ProposalKind.IKE, IkeVersion.V1)
    assert same.transforms == v1.transforms
    for text in ("aes256-sha512-x25519", "aes128-sha384-ecp256", "aes256-sha256-curve25519"):
        parse_proposal(text, ProposalKind.IKE, IkeVersion.V1)
    for text in ("aes256gcm16", "aes128-sha256", "aes256-sha512-ecp384", "aes128gcm16-x25519"):
        parse_proposal(text, ProposalKind.ESP, IkeVersion.V1)


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        (
            "aes256gcm16-prfsha384-x25519",
            ProposalKind.IKE,
            "IKEv1 IKE proposal 'aes256gcm16-prfsha384-x25519': 'aes256gcm16' is an AEAD "
            "cipher, which IKEv1 phase 1 does not have (RFC 2409 Appendix A): use a CBC "
            "cipher with a hash, e.g. aes256-sha256-modp2048",
        ),
        (
            "chacha20poly1305-prfsha256-x25519",
            ProposalKind.IKE,
            "'chacha20poly1305' is for IKEv2 peers only",
        ),
        (
            "aes128-sha256-prfsha384-modp2048",
            ProposalKind.IKE,
            "IKEv1 has no PRF of its own, it uses the HMAC of the hash (RFC 2409 section 5): "
            "remove 'prfsha384'",
        ),
        ("chacha20poly1305", ProposalKind.ESP, "'chacha20poly1305' is for IKEv2 peers only"),
        ("aes256-sha256-esn", ProposalKind.ESP, "'esn' is for IKEv2 peers only"),
        ("aes256-sha256", ProposalKind.IKE, "no DH group"),
    ],
)
def test_what_ikev1_cannot_carry_is_refused(text: str, kind: ProposalKind, expected: str) -> None:
    with pytest.raises(ProposalError) as caught:
        parse_proposal(text, kind, IkeVersion.V1)
    assert expected in str(caught.value)
    if "IKEv2 peers only" in expected or "AEAD" in expected or "PRF" in expected:
        parse_proposal(text, kind)  # the same text is fine for an IKEv2 peer


def test_a_host_proposal_bad_for_ikev1_is_refused_where_written(tmp_path: Path) -> None:
    root = make(
        tmp_path / "inv",
        **V1_MESH,
        host_vars__a1="ike_proposals: [aes256gcm16-prfsha384-x25519]\n",
    )
    (error,) = plan_errors(root)
    assert error.startswith(f"{root / 'host_vars' / 'a1.yaml'}:1:")
    assert "ike_proposals: IKEv1 IKE proposal 'aes256gcm16-prfsha384-x25519'" in error


# -- across the plan contract ----------------------------------------------------------


def test_the_fields_cross_to_the_agent(tmp_path: Path) -> None:
    root = make(tmp_path / "inv", group_vars__mesh="ike_version: 1\nike_aggressive: true\n")
    plans = plans_of(root)
    data = convert.plan_bytes(plans["a1"])
    msg = convert.plan_from_bytes(data)
    (a2,) = (p for p in msg.peers if p.name == "a2")
    assert (a2.ike_version, a2.ike_aggressive) == (plan_pb2.IKE_V1, True)
    agent = plan_from_bytes(data)
    got = agent.peer("a2")
    assert got is not None
    assert (got.ike_version, got.ike_aggressive) == (AgentIkeVersion.V1, True)
    v2 = plan_from_bytes(convert.plan_bytes(plans_of(make(tmp_path / "v2"))["a1"])).peer("a2")
    assert v2 is not None and (v2.ike_version, v2.ike_aggressive) == (AgentIkeVersion.V2, False)


def test_replan_after_a_version_change(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    planner = Planner()
    old = planner.plan(load_inventory(make(root)), master_secret=SECRET)
    new = planner.plan(load_inventory(make(root, **V1_MESH)), master_secret=SECRET)
    assert new == plans_of(root)  # incremental result equals a full rebuild
    assert planner.changed_hosts(old, new) == {"a1", "a2", "a3"}
    assert {p.ike_version for plan in new.values() for p in plan.peers} == {IkeVersion.V1}


def test_plan_shows_the_version_where_it_is_not_ikev2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vpnfleet plan`` (text and JSON) names an IKEv1 peer and its mode; IKEv2 peers read
    as before."""
    root = make(tmp_path / "inv", group_vars__mesh="ike_version: 1\nike_aggressive: true\n")
    inventory = load_inventory(root)
    plans = build_plans(inventory, master_secret=SECRET)
    fleet = CompiledFleet(inventory, ["a1"], plans, endpoints={"a1": "10.99.0.1:50051"})
    summary = plan_summary(fleet, "a1")
    assert {(p["name"], p["ike_version"], p["ike_aggressive"]) for p in summary["peers"]} == {
        ("a2", 1, True),
        ("a3", 1, True),
    }
    render_plan_summaries([summary])
    lines = [line for line in capsys.readouterr().out.splitlines() if "peer a2:" in line]
    assert lines == [
        "  peer a2: 10.99.0.2, initiator, IKEv1 aggressive, psk:a1+a2/epoch-1, tunnel, start=start"
    ]
    v2 = load_inventory(make(tmp_path / "v2"))
    fleet = CompiledFleet(
        v2, ["a1"], build_plans(v2, master_secret=SECRET), endpoints={"a1": "10.99.0.1:50051"}
    )
    render_plan_summaries([plan_summary(fleet, "a1")])
    assert "IKEv" not in capsys.readouterr().out


def test_a_host_and_an_external_peer_disagreeing_on_aggressive_mode(tmp_path: Path) -> None:
    topology = MESH_TOPOLOGY + external(
        ike_version="1", ike_proposals="[aes256-sha256-modp2048]", ike_aggressive="true"
    )
    (error,) = plan_errors(make(tmp_path / "inv", topology=topology, **V1_MESH))
    assert "host a1 and external peer partner disagree on ike_aggressive: a1 has false " in error
    assert "(default), partner has true (at" in error
