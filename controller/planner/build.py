"""Plans from an inventory: build_plans() and the incremental Planner.

A plan is a pure function of its inputs: hosts, peers and SPD entries are produced in
sorted order, so the same inventory (in any file order) gives equal plans.

SPD layout of every host (first match wins, RFC 4301 section 4.4.1):

1. the topology's ``policies`` that apply to the host, in the order written;
2. one PROTECT entry per (local prefix, remote prefix) of each peer, peers in name
   order (named after the peer, ``peer#n`` when a peer needs several);
3. transit entries: a spoke's entries sending the other spokes' traffic (the aggregate
   of all spoke subnets) to its preferred hub, and a hub's entries forwarding that
   traffic to each spoke, named ``peer/transit``. Direct entries come first, so a
   direct link between two spokes wins over the way through a hub.

There is no catch-all entry at the end. The agent sees only what is routed into its
tunnel device, i.e. traffic towards the prefixes above; its IKE, ESP and control traffic
runs on the underlay and never reaches the SPD. Everything else is not IPsec's business
and passes as if bypassed. Operators who want "fail closed" for a prefix write a
``discard`` policy, which goes before the implicit entries.

Pairs of managed hosts: the proposals each end offers come from its own variables; if
the two ends share no IKE (or no ESP) proposal, or disagree on ``ike_version``,
``ike_aggressive``, ``mode`` or ``auth``, the plan fails naming both hosts (a host and
an external peer likewise on ``ike_version`` and ``ike_aggressive``).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from vpnfleet.controller.inventory import (
    Inventory,
    InventoryError,
    InventoryErrors,
    ResolvedHost,
)

from .credentials import PairKeys
from .model import Mode, NodePlan, Peer, SpdEntry
from .pairs import PairBuilder, policy_entries, spoke_transit
from .profile import HostProfile, Interner, build_profile, profile_key
from .topology import RoleKind, Topology, expand_topology

log = logging.getLogger(__name__)

_peer_name = attrgetter("name")
_entry_peer = attrgetter("peer")


@contextmanager
def _cyclic_collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (as it was, after it).

    A big fleet makes millions of small objects that hold no reference cycles, and the
    collector would scan them again and again while they are being made; paused, it
    scans them once, at its first collection after the block. Measured with
    ``bench/plan_scale.py`` timed in CPU seconds (best of two interleaved rounds on a
    shared 2-core machine, that one collection included): with the collector left on,
    mesh_1000_s took 12.1 s instead of 6.2 s and hubspoke_10000_s 10.1 s instead of
    4.4 s.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class PlanError(InventoryErrors):
    """The inventory loads but cannot be planned (topology, proposals, incompatible pairs)."""

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{n} error{'s' if n != 1 else ''} in the topology or plan:"
        return "\n".join([head, *(f"  {e}" for e in self.errors)])


@dataclass(frozen=True, slots=True)
class _HostResult:
    profile: HostProfile
    plan: NodePlan
    # plan.spd[direct_start:direct_end] are the per-peer entries, grouped in peer order.
    direct_start: int
    direct_end: int


@dataclass(frozen=True, slots=True)
class _Credentials:
    """What a plan is keyed and anchored with; plans made with others are not reused."""

    master_secret: bytes
    trust_anchors: tuple[bytes, ...]
    crls: tuple[bytes, ...]


class Planner:
    """Plans with caches: a re-plan recomputes only the pairs that touch changed hosts.

    Per host it keeps a profile (the interned view of its variables) and its last plan.
    When the topology is unchanged, a re-plan rebuilds the pairs of the hosts whose
    profile changed, and patches their peers' plans only where the new Peer or SPD
    entries differ; every other plan keeps its very Peer and SPD tuples, so
    :meth:`changed_hosts` is mostly identity checks. A change of master secret, trust
    anchors or CRLs starts from scratch (keys and anchors are in every plan).

    ``serve`` keeps one across revisions, and a command that plans several revisions
    shares one, so each plan after the first costs what the change costs. The result is
    always equal to a fresh planner's. One :meth:`plan` at a time (not thread-safe).
    """

    def __init__(self) -> None:
        self._interner = Interner()
        self._credentials: _Credentials | None = None
        self._pairs: PairBuilder | None = None
        self._profile_keys: dict[str, tuple[Any, ...]] = {}
        self._profiles: dict[str, HostProfile] = {}
        self._topology_key: Any = None
        self._topology: Topology | None = None
        self._results: dict[str, _HostResult] = {}
        self._results_topology: Topology | None = None

    def plan(
        self,
        inventory: Inventory,
        *,
        master_secret: bytes,
        trust_anchors: tuple[bytes, ...] = (),
        crls: tuple[bytes, ...] = (),
        generation: int = 1,
        revision: str = "worktree",
    ) -> dict[str, NodePlan]:
        """Plans for every host of ``inventory``; raises :class:`PlanError`.

        ``trust_anchors`` are the fleet CA certificates (PEM) that certificate peers
        accept, ``crls`` the fleet CA's PEM CRLs; both are copied into every plan.
        """
        credentials = _Credentials(
            bytes(master_secret),
            tuple(bytes(a) for a in trust_anchors),
            tuple(bytes(c) for c in crls),
        )
        pairs = self._pairs
        if pairs is None or credentials != self._credentials:
            pairs = PairBuilder(
                PairKeys(credentials.master_secret), credentials.trust_anchors, self._interner
            )
            self._pairs, self._credentials = pairs, credentials
            self._results, self._results_topology = {}, None
        with _cyclic_collector_paused():
            return self._plan(inventory, pairs, credentials, generation, revision)

    @staticmethod
    def changed_hosts(old: Mapping[str, NodePlan], new: Mapping[str, NodePlan]) -> set[str]:
        """Hosts whose plans differ in content: what the content hash covers, so not the
        generation number nor the source revision (``protos/hashing.py``)."""
        out = set()
        for name in old.keys() | new.keys():
            a, b = old.get(name), new.get(name)
            if a is b:
                continue
            if a is None or b is None or not _same_content(a, b):
                out.add(name)
        return out

    # -- steps ----------------------------------------------------------------------

    def _expand(
        self, inventory: Inventory, resolved: Mapping[str, ResolvedHost]
    ) -> tuple[Topology, list[InventoryError]]:
        key = (
            inventory.topology,
            [(name, h.groups, h.vars.get("subnets")) for name, h in resolved.items()],
        )
        if self._topology is not None and key == self._topology_key:
            return self._topology, []
        topology, errors = expand_topology(inventory, resolved)
        for warning in topology.warnings:
            # As the loader says its own: once per topology read, never stopping a command.
            log.warning("warning: %s", warning)
        if not errors:
            self._topology_key, self._topology = key, topology
        return topology, errors

    def _plan(
        self,
        inventory: Inventory,
        pairs: PairBuilder,
        credentials: _Credentials,
        generation: int,
        revision: str,
    ) -> dict[str, NodePlan]:
        resolved = {name: inventory.resolve(name) for name in sorted(inventory.hosts)}
        topology, errors = self._expand(inventory, resolved)
        if errors:
            raise PlanError(_unique(errors))
        profiles: dict[str, HostProfile] = {}
        keys: dict[str, tuple[Any, ...]] = {}
        changed: set[str] = set()
        for name, host in resolved.items():
            overlay = topology.overlay.get(name, "")
            key = keys[name] = profile_key(host, overlay)
            known = self._profiles.get(name)
            if known is not None and self._profile_keys.get(name) == key:
                profiles[name] = known
            else:
                profiles[name] = build_profile(host, overlay, self._interner, errors)
                changed.add(name)
        if errors:
            raise PlanError(_unique(errors))
        pairs.start({name: host.origins for name, host in resolved.items()})
        policies = policy_entries(topology.policies)
        run = _PlanRun(profiles, topology, policies, pairs, credentials, errors)
        if (
            topology is self._results_topology
            and self._results.keys() == profiles.keys()
            and len(changed) * 4 <= len(profiles)
        ):
            results = run.patch(self._results, changed)
        else:
            results = run.full()
        if errors:
            raise PlanError(_unique(errors))
        results = {name: _restamped(r, generation, revision) for name, r in results.items()}
        self._profiles, self._profile_keys = profiles, keys
        self._results, self._results_topology = results, topology
        return {name: result.plan for name, result in results.items()}


@dataclass(frozen=True, slots=True)
class _PlanRun:
    """One :meth:`Planner.plan` call: the hosts' profiles and what every plan shares."""

    profiles: Mapping[str, HostProfile]
    topology: Topology
    policies: Mapping[str, tuple[SpdEntry, ...]]  # policy name -> its SPD entries
    pairs: PairBuilder
    credentials: _Credentials
    errors: list[InventoryError]

    def full(self) -> dict[str, _HostResult]:
        """Every pair built once, both directions at a time, hosts in name order.

        A host's list receives its lower-named managed peers while those are processed,
        then adds its higher-named ones itself, so the lists come out sorted by name.
        """
        profiles, topology, errors = self.profiles, self.topology, self.errors
        peers_of: dict[str, list[Peer]] = {name: [] for name in profiles}
        direct_of: dict[str, list[SpdEntry]] = {name: [] for name in profiles}
        both = self.pairs.both
        adjacency = topology.adjacency
        externals = topology.externals
        results = {}
        for name, profile in profiles.items():
            peers, direct = peers_of[name], direct_of[name]
            roles = adjacency.get(name, {})
            resort = False
            for peer_name in topology.externals_of.get(name, ()):
                got = self.pairs.external(profile, externals[peer_name], errors)
                if got is not None:
                    peers.append(got[0])
                    direct.extend(got[1])
                    resort = True
            names = sorted(roles)
            # Lower-named managed peers were built when that host's turn came.
            for peer_name in names[bisect_right(names, name) :]:
                role = roles[peer_name]
                if role.kind is RoleKind.EXTERNAL:
                    continue
                both(
                    profile,
                    profiles[peer_name],
                    role,
                    role if role.mirrored else adjacency[peer_name][name],
                    errors,
                    peers,
                    direct,
                    peers_of[peer_name],
                    direct_of[peer_name],
                )
            if resort:
                peers.sort(key=_peer_name)
                direct.sort(key=_entry_peer)  # stable: keeps each peer's own order
            results[name] = self.finish(name, peers, direct)
            del peers_of[name], direct_of[name]
        return results

    def patch(
        self, previous: Mapping[str, _HostResult], changed: set[str]
    ) -> dict[str, _HostResult]:
        """``previous`` with the pairs touching ``changed`` hosts rebuilt: the changed
        hosts' plans made anew, the other ends' plans patched."""
        profiles, topology, errors = self.profiles, self.topology, self.errors
        adjacency, externals = topology.adjacency, topology.externals
        pending: set[tuple[str, str]] = set()  # (host, peer) as full() builds the pair
        for name in changed:
            for peer_name in adjacency.get(name, {}):
                if peer_name in externals or name < peer_name:
                    pending.add((name, peer_name))
                else:
                    pending.add((peer_name, name))

        def turn(pair: tuple[str, str]) -> tuple[str, int, int, str]:
            # full() builds a pair at its lower-named host's turn, external peers first:
            # in that order here too, the errors read the same.
            host, other = pair
            if other in externals:
                return host, 0, topology.externals_of[host].index(other), ""
            return host, 1, 0, other

        patches: dict[str, dict[str, tuple[Peer, tuple[SpdEntry, ...]]]] = {
            name: {} for name in changed
        }
        for host, other in sorted(pending, key=turn):
            if other in externals:
                got = self.pairs.external(profiles[host], externals[other], errors)
                if got is not None:
                    patches.setdefault(host, {})[other] = got
                continue
            role = adjacency[host][other]
            peers_a: list[Peer] = []
            direct_a: list[SpdEntry] = []
            peers_b: list[Peer] = []
            direct_b: list[SpdEntry] = []
            if self.pairs.both(
                profiles[host],
                profiles[other],
                role,
                role if role.mirrored else adjacency[other][host],
                errors,
                peers_a,
                direct_a,
                peers_b,
                direct_b,
            ):
                patches.setdefault(host, {})[other] = (peers_a[0], tuple(direct_a))
                patches.setdefault(other, {})[host] = (peers_b[0], tuple(direct_b))
        results = dict(previous)
        for name, patch in patches.items():
            if name in changed:
                peers: list[Peer] = []
                direct: list[SpdEntry] = []
                for peer_name in sorted(patch):
                    peers.append(patch[peer_name][0])
                    direct.extend(patch[peer_name][1])
                results[name] = self.finish(name, peers, direct)
            else:
                results[name] = _patched(results[name], patch)
        return results

    def finish(self, name: str, peers: list[Peer], direct: list[SpdEntry]) -> _HostResult:
        """The host's plan from its peers and direct entries: policies, transit, anchors."""
        profiles, topology, policies = self.profiles, self.topology, self.policies
        profile = profiles[name]
        roles = topology.adjacency.get(name, {})
        own_policies: list[SpdEntry] = []
        for policy in topology.policies:
            if name in policy.hosts and (not policy.peer or policy.peer in roles):
                own_policies.extend(policies[policy.name])
        transit: list[SpdEntry] = []
        if profile.mode is Mode.TUNNEL:
            for role, spokes in topology.hub_of.get(name, ()):
                for spoke in spokes:
                    transit.extend(self.pairs.hub_transit(role, profiles[spoke]))
            for role in topology.spoke_of.get(name, ()):
                transit.extend(spoke_transit(profile, role))
        anchors = list(self.credentials.trust_anchors)
        for external in topology.externals_of.get(name, ()):
            pem = topology.externals[external].ca_pem
            if pem and pem not in anchors:
                anchors.append(pem)
        start = len(own_policies)
        plan = NodePlan(
            host=name,
            generation=0,
            content_hash="",
            identity=profile.identity,
            addresses=profile.addresses,
            subnets=profile.subnets,
            spd=(*own_policies, *direct, *transit),
            peers=tuple(peers),
            trust_anchors=tuple(anchors),
            source_revision="",
            crls=self.credentials.crls,
        )
        return _HostResult(profile, plan, start, start + len(direct))


def _patched(
    old: _HostResult, patch: Mapping[str, tuple[Peer, tuple[SpdEntry, ...]]]
) -> _HostResult:
    """``old`` with some peers (and their direct SPD entries) replaced; same object if equal."""
    plan = old.plan
    peers: list[Peer] | None = None
    spd: list[SpdEntry] | None = None
    # Right to left, so the entry offsets still to patch do not move.
    for peer_name in sorted(patch, reverse=True):
        peer, entries = patch[peer_name]
        i = bisect_left(plan.peers, peer_name, key=_peer_name)
        lo = bisect_left(plan.spd, peer_name, old.direct_start, old.direct_end, key=_entry_peer)
        hi = bisect_right(plan.spd, peer_name, lo, old.direct_end, key=_entry_peer)
        if plan.peers[i] == peer and plan.spd[lo:hi] == entries:
            continue
        if peers is None or spd is None:
            peers, spd = list(plan.peers), list(plan.spd)
        peers[i] = peer
        spd[lo:hi] = entries
    if peers is None or spd is None:
        return old
    new_plan = dataclasses.replace(plan, spd=tuple(spd), peers=tuple(peers))
    shift = len(spd) - len(plan.spd)
    return _HostResult(old.profile, new_plan, old.direct_start, old.direct_end + shift)


def _restamped(result: _HostResult, generation: int, revision: str) -> _HostResult:
    """``result`` with its plan carrying this run's generation and revision."""
    plan = result.plan
    if plan.generation == generation and plan.source_revision == revision:
        return result
    plan = dataclasses.replace(plan, generation=generation, source_revision=revision)
    return _HostResult(result.profile, plan, result.direct_start, result.direct_end)


def _same_content(a: NodePlan, b: NodePlan) -> bool:
    return (
        a.host == b.host
        and a.identity == b.identity
        and a.addresses == b.addresses
        and a.subnets == b.subnets
        and (a.peers is b.peers or a.peers == b.peers)
        and (a.spd is b.spd or a.spd == b.spd)
        and a.trust_anchors == b.trust_anchors
        and a.crls == b.crls
    )


def _unique(errors: list[InventoryError]) -> list[InventoryError]:
    """Errors once each (a bad value in group_vars/all would repeat for every host)."""
    seen: dict[tuple[str, Any], InventoryError] = {}
    for e in errors:
        seen.setdefault((e.message, e.mark), e)
    return list(seen.values())


def build_plans(
    inventory: Inventory,
    *,
    master_secret: bytes,
    trust_anchors: tuple[bytes, ...] = (),
    crls: tuple[bytes, ...] = (),
    generation: int = 1,
    revision: str = "worktree",
) -> dict[str, NodePlan]:
    """One plan per host of ``inventory``: a pure function of its arguments."""
    return Planner().plan(
        inventory,
        master_secret=master_secret,
        trust_anchors=trust_anchors,
        crls=crls,
        generation=generation,
        revision=revision,
    )
