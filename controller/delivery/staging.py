"""Pair-aware staging: a change both ends of a tunnel must agree on goes in three steps.

Both ends of a pair negotiate the pre-shared key (RFC 7296 section 2.15), the IKE and ESP
proposals (sections 2.7, 3.3) and where to reach each other. Pushed to the two ends at
different moments, such a change leaves a window where one end holds only the old value
and the other only the new one, and a tunnel that is re-established in that window
fails. Agents keep an SA in force until its replacement is up (make-before-break), so
what must never happen is two ends that cannot agree. Hence three steps, each put in
force on every host before the next one starts:

1. ``accept`` — each end keeps using what is in force and also accepts the new: its
   key stays, the new key is accepted (``accepted_psks``); proposals are the old ones
   followed by the new; remote addresses the old followed by the new.
2. ``use`` — each end uses the new and still accepts the old: the new key with the old
   one accepted; the new proposals first, then the old; the new addresses first.
3. ``final`` — the new plans as compiled: the old values are gone.

Any two neighbouring steps (and the plans in force with step one) agree on every pair,
so a batch may be ahead of the rest by one step, and a rollback can walk the steps back.

A change is staged only when it touches both ends of a pair and both ends are part of
the run: a key change on one end only (the ends would then disagree at the end anyway),
a peer added or removed, an external peer, a pair whose IKE version (or IKEv1 mode)
changes, or a pair with one end outside ``--limit`` goes as any other change, in the
first step. Everything that is not staged (SPD, other
peer fields, added and removed peers) is simply part of the new plans and so goes in with
the first step too.

This module is pure: plans in, plans out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..planner.model import AuthMethod, NodePlan, Peer

# The negotiated peer fields a staging may blend, in the order they are reported.
PSK = "psk"
IKE_PROPOSALS = "ike_proposals"
ESP_PROPOSALS = "esp_proposals"
REMOTE_ADDRESSES = "remote_addresses"
FIELDS = (PSK, IKE_PROPOSALS, ESP_PROPOSALS, REMOTE_ADDRESSES)

ACCEPT = "accept"
USE = "use"
FINAL = "final"
STEP_TEXT = {
    ACCEPT: "each end keeps what is in force and also accepts the new",
    USE: "each end uses the new and still accepts the old",
    FINAL: "the new plans: the old values are removed",
}


@dataclass(frozen=True, slots=True)
class StagedChange:
    """One end's view of a staged pair change: ``host``'s peer ``peer`` and its fields."""

    host: str
    peer: str
    fields: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.host} -> {self.peer}: {', '.join(self.fields)}"


@dataclass(frozen=True, slots=True)
class Unstaged:
    """A negotiated change that goes unstaged (in the first step), and why."""

    host: str
    peer: str
    fields: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        return f"{self.host} -> {self.peer}: {', '.join(self.fields)} not staged: {self.reason}"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a staged rollout: a plan for every host of the run."""

    name: str
    plans: Mapping[str, NodePlan]

    @property
    def description(self) -> str:
        return STEP_TEXT[self.name]


@dataclass(frozen=True, slots=True)
class Staging:
    """What a run stages and the plans of each step; ``steps`` is empty when nothing is
    staged (the new plans then go out in one ordinary rollout)."""

    changes: tuple[StagedChange, ...] = ()
    unstaged: tuple[Unstaged, ...] = ()
    steps: tuple[Step, ...] = ()

    @property
    def staged(self) -> bool:
        return bool(self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "staged": [
                {"host": c.host, "peer": c.peer, "fields": list(c.fields)} for c in self.changes
            ],
            "unstaged": [
                {"host": u.host, "peer": u.peer, "fields": list(u.fields), "reason": u.reason}
                for u in self.unstaged
            ],
        }


def _psk_changed(old: Peer, new: Peer) -> bool:
    a, b = old.auth, new.auth
    return a.method is AuthMethod.PSK and b.method is AuthMethod.PSK and a.psk != b.psk


def _end_fields(old: Peer, new: Peer) -> tuple[str, ...]:
    """The negotiated fields that changed on one end of a pair."""
    out = []
    if _psk_changed(old, new):
        out.append(PSK)
    for name in (IKE_PROPOSALS, ESP_PROPOSALS, REMOTE_ADDRESSES):
        if getattr(old, name) != getattr(new, name):
            out.append(name)
    return tuple(out)


def _peer(plan: NodePlan | None, name: str) -> Peer | None:
    if plan is None:
        return None
    for p in plan.peers:
        if p.name == name:
            return p
    return None


def _other_end_reason(
    previous: Mapping[str, NodePlan],
    new: Mapping[str, NodePlan],
    chosen: set[str],
    host: str,
    peer: Peer,
) -> str:
    """Why the far end of ``host``'s ``peer`` cannot take part ('' when it can)."""
    if not peer.managed:
        return "external peer: its end is not in the inventory"
    if peer.name not in chosen:
        return f"{peer.name} is not part of this run (--limit)"
    if _peer(previous.get(peer.name), host) is None or _peer(new.get(peer.name), host) is None:
        return f"{peer.name} has no peer {host} in both plans"
    return ""


def _agreed(
    field: str,
    previous: Mapping[str, NodePlan],
    new: Mapping[str, NodePlan],
    host: str,
    peer: str,
    far_fields: tuple[str, ...],
) -> str:
    """'' when the far end changes ``field`` in agreement with ``host``, else why not."""
    near_old, near_new = _peer(previous[host], peer), _peer(new[host], peer)
    far_old, far_new = _peer(previous[peer], host), _peer(new[peer], host)
    assert near_old and near_new and far_old and far_new
    if field == PSK:
        if PSK not in far_fields:
            return f"only {host}'s key changes: the ends would not agree"
        if near_new.auth.psk != far_new.auth.psk or near_old.auth.psk != far_old.auth.psk:
            return "the two ends' keys differ: the ends would not agree"
        return ""
    if field == REMOTE_ADDRESSES:
        # The far end moved: its own addresses (or the address it speaks from) changed.
        moved = (
            previous[peer].addresses != new[peer].addresses
            or far_old.local_address != far_new.local_address
        )
        return "" if moved else f"{peer}'s own addresses do not change"
    if field not in far_fields:
        return f"only {host}'s {field.replace('_', ' ')} change"
    return ""


def find_changes(
    previous: Mapping[str, NodePlan], new: Mapping[str, NodePlan], hosts: Sequence[str]
) -> tuple[tuple[StagedChange, ...], tuple[Unstaged, ...]]:
    """The pair changes of ``hosts`` to stage, and the negotiated ones that will not be."""
    chosen = set(hosts)
    staged: list[StagedChange] = []
    unstaged: list[Unstaged] = []
    for host in hosts:
        if host not in previous or host not in new:
            continue  # a host that comes or goes is not staged
        for peer in new[host].peers:
            old = _peer(previous[host], peer.name)
            if old is None:
                continue  # an added peer: nothing of its is in force
            changed = _end_fields(old, peer)
            if not changed:
                continue
            why = _other_end_reason(previous, new, chosen, host, peer)
            if (old.ike_version, old.ike_aggressive) != (peer.ike_version, peer.ike_aggressive):
                # An end speaks one IKE version (and mode) to a peer, so it cannot accept
                # both; the old proposals may not even be valid in the new one (IKEv1 has
                # no AEAD phase 1, RFC 2409 Appendix A).
                why = "the IKE version or mode changes: an end speaks one at a time"
            if why:
                unstaged.append(Unstaged(host, peer.name, changed, why))
                continue
            far_old, far_new = _peer(previous[peer.name], host), _peer(new[peer.name], host)
            assert far_old is not None and far_new is not None
            far = _end_fields(far_old, far_new)
            ok, refused = [], []
            for f in changed:
                reason = _agreed(f, previous, new, host, peer.name, far)
                if reason:
                    refused.append((f, reason))
                else:
                    ok.append(f)
            if ok:
                staged.append(StagedChange(host, peer.name, tuple(ok)))
            for f, reason in refused:
                unstaged.append(Unstaged(host, peer.name, (f,), reason))
    return tuple(staged), tuple(unstaged)


def _union(first: tuple[Any, ...], then: tuple[Any, ...]) -> tuple[Any, ...]:
    return first + tuple(x for x in then if x not in first)


def accepting_peer(old: Peer, new: Peer, fields: Sequence[str]) -> Peer:
    """Step ``accept``: what is in force first, the new accepted too."""
    changes: dict[str, Any] = {}
    if PSK in fields:
        changes["auth"] = dataclasses.replace(
            old.auth,
            accepted_psks=(new.auth.psk,),
            accepted_psk_references=(new.auth.reference,),
        )
    for name in (IKE_PROPOSALS, ESP_PROPOSALS, REMOTE_ADDRESSES):
        if name in fields:
            changes[name] = _union(getattr(old, name), getattr(new, name))
    return dataclasses.replace(new, **changes)


def using_peer(old: Peer, new: Peer, fields: Sequence[str]) -> Peer:
    """Step ``use``: the new first, what was in force still accepted."""
    changes: dict[str, Any] = {}
    if PSK in fields:
        changes["auth"] = dataclasses.replace(
            new.auth,
            accepted_psks=(old.auth.psk,),
            accepted_psk_references=(old.auth.reference,),
        )
    for name in (IKE_PROPOSALS, ESP_PROPOSALS, REMOTE_ADDRESSES):
        if name in fields:
            changes[name] = _union(getattr(new, name), getattr(old, name))
    return dataclasses.replace(new, **changes)


PeerBlend = Callable[[Peer, Peer, Sequence[str]], Peer]


def _step_plans(
    previous: Mapping[str, NodePlan],
    new: Mapping[str, NodePlan],
    hosts: Sequence[str],
    by_end: Mapping[tuple[str, str], tuple[str, ...]],
    blend: PeerBlend,
) -> dict[str, NodePlan]:
    plans = {}
    for host in hosts:
        plan = new[host]
        peers = []
        for peer in plan.peers:
            fields = by_end.get((host, peer.name))
            old = _peer(previous.get(host), peer.name)
            peers.append(blend(old, peer, fields) if fields and old else peer)
        plans[host] = dataclasses.replace(plan, peers=tuple(peers))
    return plans


def stage(
    previous: Mapping[str, NodePlan], new: Mapping[str, NodePlan], hosts: Sequence[str]
) -> Staging:
    """The staging of moving ``hosts`` from the ``previous`` plans (those in force) to the
    ``new`` ones: the three steps' plans when a pair change is staged, else none."""
    changes, unstaged = find_changes(previous, new, hosts)
    if not changes:
        return Staging((), unstaged, ())
    by_end = {(c.host, c.peer): c.fields for c in changes}
    return Staging(
        changes,
        unstaged,
        (
            Step(ACCEPT, _step_plans(previous, new, hosts, by_end, accepting_peer)),
            Step(USE, _step_plans(previous, new, hosts, by_end, using_peer)),
            Step(FINAL, {h: new[h] for h in hosts}),
        ),
    )
