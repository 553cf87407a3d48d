"""Pair-aware staging (controller.delivery.staging): which changes are staged, and the plans of
each step, from real compiles of copies of inventories/lab (pure: no agent)."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from vpnfleet.agent.convert import plan_from_bytes
from vpnfleet.controller.delivery.staging import (
    ACCEPT,
    ESP_PROPOSALS,
    FINAL,
    IKE_PROPOSALS,
    PSK,
    REMOTE_ADDRESSES,
    USE,
    StagedChange,
    stage,
)
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.planner.model import NodePlan, Peer
from vpnfleet.controller.statedir.state import StateDir
from vpnfleet.controller.transport import convert

LAB = Path(__file__).resolve().parents[3] / "inventories" / "lab"
HOSTS = ["a1", "a2", "a3", "a4"]
Edit = Callable[[Path], None]


@pytest.fixture
def compile_lab(tmp_path: Path) -> Callable[..., dict[str, NodePlan]]:
    state = StateDir(tmp_path / "state")
    count = itertools.count()

    def build(*edits: Edit) -> dict[str, NodePlan]:
        inv = tmp_path / f"inv{next(count)}"
        shutil.copytree(LAB, inv)
        for edit in edits:
            edit(inv)
        return operations.compile_fleet(inv, state).plans

    return build


def append_vars(text: str, where: str = "group_vars/all.yaml") -> Edit:
    def edit(inv: Path) -> None:
        path = inv / where
        path.parent.mkdir(exist_ok=True)
        with path.open("a") as f:
            f.write(text)

    return edit


def replace_text(where: str, old: str, new: str) -> Edit:
    def edit(inv: Path) -> None:
        path = inv / where
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))

    return edit


NEW_PROPOSALS = append_vars(
    "ike_proposals: [aes128gcm16-prfsha256-ecp256]\nesp_proposals: [aes128gcm16-ecp256]\n",
    "group_vars/mesh.yaml",
)


def peer(plan: NodePlan, name: str) -> Peer:
    (p,) = [p for p in plan.peers if p.name == name]
    return p


def texts(proposals: tuple[object, ...]) -> list[str]:
    return [p.text for p in proposals]  # type: ignore[attr-defined]


def test_nothing_changed_stages_nothing(compile_lab: Callable[..., dict[str, NodePlan]]) -> None:
    plans = compile_lab()
    staging = stage(plans, compile_lab(), HOSTS)
    assert not staging.staged and staging.steps == () and staging.unstaged == ()


def test_psk_change_of_both_ends_goes_in_three_steps(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old, new = compile_lab(), compile_lab(append_vars("psk_epoch: 2\n"))
    staging = stage(old, new, HOSTS)
    # Every end of the six pairs, both ways.
    assert len(staging.changes) == 12
    assert StagedChange("a1", "a2", (PSK,)) in staging.changes
    assert StagedChange("a2", "a1", (PSK,)) in staging.changes
    assert [s.name for s in staging.steps] == [ACCEPT, USE, FINAL]
    accept, use, final = (s.plans for s in staging.steps)
    before, after = peer(old["a1"], "a2").auth, peer(new["a1"], "a2").auth
    assert before.psk != after.psk
    a = peer(accept["a1"], "a2").auth
    assert (a.psk, a.reference, a.epoch) == (before.psk, before.reference, before.epoch)
    assert a.accepted_psks == (after.psk,)
    assert a.accepted_psk_references == ("psk:a1+a2/epoch-2",)
    u = peer(use["a1"], "a2").auth
    assert (u.psk, u.reference, u.epoch) == (after.psk, after.reference, after.epoch)
    assert u.accepted_psks == (before.psk,)
    assert u.accepted_psk_references == ("psk:a1+a2/epoch-1",)
    assert final == {h: new[h] for h in HOSTS}
    assert peer(final["a1"], "a2").auth.accepted_psks == ()
    # Secrets never show in what is reported.
    assert after.psk.hex() not in repr(staging.to_json())


def test_proposal_change_lists_old_then_new_then_new_then_old(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old, new = compile_lab(), compile_lab(NEW_PROPOSALS)
    staging = stage(old, new, HOSTS)
    assert StagedChange("a3", "a4", (IKE_PROPOSALS, ESP_PROPOSALS)) in staging.changes
    accept, use, _ = (s.plans for s in staging.steps)
    old_ike = texts(peer(old["a3"], "a4").ike_proposals)
    assert old_ike == ["aes256gcm16-prfsha384-x25519", "aes256-sha256-modp2048"]
    assert texts(peer(accept["a3"], "a4").ike_proposals) == [
        *old_ike,
        "aes128gcm16-prfsha256-ecp256",
    ]
    assert texts(peer(use["a3"], "a4").ike_proposals) == ["aes128gcm16-prfsha256-ecp256", *old_ike]
    assert texts(peer(accept["a3"], "a4").esp_proposals) == [
        "aes256gcm16",
        "aes128gcm16",
        "aes128gcm16-ecp256",
    ]
    assert texts(peer(use["a3"], "a4").esp_proposals) == [
        "aes128gcm16-ecp256",
        "aes256gcm16",
        "aes128gcm16",
    ]
    # The key did not change: the credential is the one in force in every step.
    assert peer(accept["a3"], "a4").auth == peer(old["a3"], "a4").auth


def test_moved_host_is_reached_at_both_addresses_meanwhile(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old = compile_lab()
    new = compile_lab(replace_text("hosts.yaml", "10.99.0.12", "10.99.0.42"))
    staging = stage(old, new, HOSTS)
    # The others' view of a2 changes; a2's view of them does not.
    assert {(c.host, c.peer, c.fields) for c in staging.changes} == {
        (h, "a2", (REMOTE_ADDRESSES,)) for h in ("a1", "a3", "a4")
    }
    accept, use, final = (s.plans for s in staging.steps)
    # The engine initiates to the first address and answers on all of them.
    assert peer(accept["a1"], "a2").remote_addresses == ("10.99.0.12", "10.99.0.42")
    assert peer(use["a1"], "a2").remote_addresses == ("10.99.0.42", "10.99.0.12")
    assert peer(final["a1"], "a2").remote_addresses == ("10.99.0.42",)
    assert accept["a2"].addresses == ("10.99.0.42",)  # a2's own: as compiled


def test_change_of_one_end_only_is_not_staged(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old = compile_lab()
    new = compile_lab(append_vars("esp_proposals: [aes128gcm16]\n", "host_vars/a1.yaml"))
    staging = stage(old, new, HOSTS)
    assert not staging.staged
    assert [str(u) for u in staging.unstaged] == [
        f"a1 -> {p}: esp_proposals not staged: only a1's esp proposals change"
        for p in ("a2", "a3", "a4")
    ]


def test_key_of_one_end_only_is_not_staged(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old = compile_lab()
    a1 = old["a1"]
    changed = dataclasses.replace(
        peer(a1, "a2"), auth=dataclasses.replace(peer(a1, "a2").auth, psk=b"x" * 32)
    )
    new = dict(old)
    new["a1"] = dataclasses.replace(
        a1, peers=tuple(changed if p.name == "a2" else p for p in a1.peers)
    )
    staging = stage(old, new, HOSTS)
    assert not staging.staged
    assert [str(u) for u in staging.unstaged] == [
        "a1 -> a2: psk not staged: only a1's key changes: the ends would not agree"
    ]


def test_ends_with_different_new_keys_are_not_staged(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old, new = compile_lab(), dict(compile_lab(append_vars("psk_epoch: 2\n")))

    def rekeyed(plan: NodePlan, name: str) -> NodePlan:
        p = peer(plan, name)
        other = dataclasses.replace(p, auth=dataclasses.replace(p.auth, psk=b"y" * 32))
        return dataclasses.replace(
            plan, peers=tuple(other if q.name == name else q for q in plan.peers)
        )

    new["a1"] = rekeyed(new["a1"], "a2")
    staging = stage(old, new, HOSTS)
    reasons = {(u.host, u.peer): u.reason for u in staging.unstaged}
    assert reasons == {
        ("a1", "a2"): "the two ends' keys differ: the ends would not agree",
        ("a2", "a1"): "the two ends' keys differ: the ends would not agree",
    }
    assert len(staging.changes) == 10  # the other five pairs are staged


def test_added_and_removed_peers_are_not_staged(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    a5 = "        a5:\n          address: 10.99.0.15\n          subnets: [10.1.5.0/24]\n"
    old = compile_lab()
    new = compile_lab(
        replace_text(
            "hosts.yaml",
            "          subnets: [10.1.4.0/24]\n",
            "          subnets: [10.1.4.0/24]\n" + a5,
        )
    )
    assert len(new["a1"].peers) == 4
    grown = stage(old, new, [*HOSTS, "a5"])
    assert not grown.staged and grown.unstaged == ()
    shrunk = stage(new, old, HOSTS)
    assert not shrunk.staged and shrunk.unstaged == ()


def test_pair_with_one_end_outside_the_run_is_not_staged(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old, new = compile_lab(), compile_lab(append_vars("psk_epoch: 2\n"))
    staging = stage(old, new, ["a1", "a2"])
    assert {(c.host, c.peer) for c in staging.changes} == {("a1", "a2"), ("a2", "a1")}
    assert "a3 is not part of this run (--limit)" in {u.reason for u in staging.unstaged}
    assert set(staging.steps[0].plans) == {"a1", "a2"}


def test_other_changes_go_in_with_the_first_step(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    old = compile_lab()
    new = compile_lab(
        append_vars("psk_epoch: 2\n"), replace_text("group_vars/all.yaml", "30s", "20s")
    )
    accept = stage(old, new, HOSTS).steps[0].plans
    assert peer(accept["a1"], "a2").dpd == peer(new["a1"], "a2").dpd
    assert peer(accept["a1"], "a2").dpd != peer(old["a1"], "a2").dpd


def _signs_and_accepts(plan: NodePlan, name: str) -> tuple[bytes, set[bytes]]:
    auth = peer(plan, name).auth
    return auth.psk, {auth.psk, *auth.accepted_psks}


def _agree(x: Mapping[str, NodePlan], y: Mapping[str, NodePlan], h: str, p: str) -> bool:
    """Whether ``h`` running ``x`` and ``p`` running ``y`` can set up their tunnel: each
    verifies the other's key, they share an IKE and an ESP proposal, and each can reach
    the other's address."""
    sign_h, accept_h = _signs_and_accepts(x[h], p)
    sign_p, accept_p = _signs_and_accepts(y[p], h)
    ph, pp = peer(x[h], p), peer(y[p], h)
    return (
        sign_h in accept_p
        and sign_p in accept_h
        and bool(set(ph.ike_proposals) & set(pp.ike_proposals))
        and bool(set(ph.esp_proposals) & set(pp.esp_proposals))
    )


@pytest.mark.parametrize(
    "edits",
    [
        (append_vars("psk_epoch: 2\n"),),
        (NEW_PROPOSALS,),
        (append_vars("psk_epoch: 3\n"), NEW_PROPOSALS),
    ],
    ids=["psk", "proposals", "both"],
)
def test_neighbouring_steps_agree_on_every_pair_where_the_ends_alone_do_not(
    compile_lab: Callable[..., dict[str, NodePlan]], edits: tuple[Edit, ...]
) -> None:
    old, new = compile_lab(), compile_lab(*edits)
    staging = stage(old, new, HOSTS)
    sequence = [old, *(s.plans for s in staging.steps)]
    pairs = [(h, p) for h in HOSTS for p in HOSTS if h != p]
    for x, y in itertools.pairwise(sequence):
        for h, p in pairs:
            assert _agree(x, y, h, p) and _agree(y, x, h, p)
    # Without the staging, an end that got the new plan first meets one on the old.
    assert not all(_agree(old, new, h, p) for h, p in pairs)


def test_a_change_of_ike_version_is_not_staged(
    compile_lab: Callable[..., dict[str, NodePlan]],
) -> None:
    """An end speaks one IKE version to a peer: it cannot accept both, and the proposals
    in force (AEAD for IKE) mean nothing to IKEv1 (RFC 2409 Appendix A). The change goes
    in at once, and every step's plan is one the agent takes."""
    old = compile_lab()
    new = compile_lab(append_vars("ike_version: 1\nike_proposals: [aes256-sha256-modp2048]\n"))
    staging = stage(old, new, HOSTS)
    assert not staging.staged
    assert {u.reason for u in staging.unstaged} == {
        "the IKE version or mode changes: an end speaks one at a time"
    }
    assert IKE_PROPOSALS in staging.unstaged[0].fields
    for step in staging.steps:
        for plan in step.plans.values():
            plan_from_bytes(convert.plan_bytes(plan))  # not refused by the agent
