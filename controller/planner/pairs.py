"""Peers and SPD entries for pairs of hosts, and the transit entries of hubs and spokes.

:meth:`PairBuilder.both` is the hot path of a big mesh (once per pair of hosts): it
builds both directions at once so the checks, the PSK derivation and the lookups are
done once per pair, and it is written out inline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from vpnfleet.controller.inventory import DEFAULT_MARK, InventoryError, Mark

from .credentials import PairKeys, pubkey_credential
from .external import ExternalPeer
from .model import (
    AuthMethod,
    Credential,
    IkeVersion,
    Mode,
    NatTraversal,
    Peer,
    Proposal,
    SpdAction,
    SpdEntry,
    StartAction,
    TrafficSelector,
    fast_constructor,
)
from .policy import Policy
from .profile import HostProfile, Interner, host_prefix
from .proposals import ProposalKind, common_proposal
from .topology import Role, transit_order

IKE_PORT = 500
_PROTECT = SpdAction.PROTECT
_RESPOND = StartAction.NONE
_V1 = IkeVersion.V1

new_peer = fast_constructor(Peer)
new_selector = fast_constructor(TrafficSelector)
new_entry = fast_constructor(SpdEntry)


class PairBuilder:
    """Builds peers; keeps the PSK key schedule and the shared small objects."""

    def __init__(self, keys: PairKeys, trust_anchors: tuple[bytes, ...], interner: Interner):
        self.keys = keys
        self.interner = interner
        self.trust_anchors = trust_anchors
        self._fleet_credential: Credential | None = None
        self.compatible: dict[tuple[str, int, int], bool] = {}
        # Per plan() call (ids are only stable while the topology is alive).
        self.ts_cache: dict[tuple[int, int], tuple[str, ...]] = {}
        self.transit_cache: dict[tuple[int, str], tuple[SpdEntry, ...]] = {}
        self.origins: Mapping[str, Mapping[str, Mark]] = {}

    def start(self, origins: Mapping[str, Mapping[str, Mark]]) -> None:
        """Begin a plan() call; ``origins`` tells where each host's variables are set in
        this call's inventory (profiles are kept across calls, file positions are not)."""
        self.ts_cache = {}
        self.transit_cache = {}
        self.origins = origins

    def mark(self, host: HostProfile, var: str) -> Mark | None:
        """Where ``host``'s variable ``var`` is set, for errors."""
        return self.origins[host.name].get(var)

    def set_at(self, host: HostProfile, var: str) -> Mark | None:
        """Where a file sets ``host``'s ``var``; None when it is the default."""
        mark = self.mark(host, var)
        return None if mark == DEFAULT_MARK else mark

    def where(self, host: HostProfile, var: str) -> str:
        """``set at FILE:LINE:COL``, or ``default`` when no file sets ``var``."""
        mark = self.set_at(host, var)
        return "default" if mark is None else f"set at {mark}"

    def fleet_credential(self) -> Credential:
        """Certificate auth anchored at the fleet CA (the first trust anchor), accepting
        the further fleet anchors too (two while a CA rotation runs)."""
        if self._fleet_credential is None:
            first, *others = self.trust_anchors
            self._fleet_credential = pubkey_credential(first, also=tuple(others))
        return self._fleet_credential

    # -- compatibility --------------------------------------------------------------

    def _compatible_lists(self, kind: ProposalKind, a: HostProfile, b: HostProfile) -> bool:
        """Whether a and b share a ``kind`` proposal (both offering none shares nothing)."""
        ka, kb = _key(kind, a), _key(kind, b)
        la, lb = _offered(kind, a), _offered(kind, b)
        if not la or not lb:
            return False
        if ka == kb:
            return True
        key = (kind, ka, kb) if ka < kb else (kind, kb, ka)
        ok = self.compatible.get(key)
        if ok is None:
            ok = self.compatible[key] = common_proposal(la, lb) is not None
        return ok

    def _nat_on_path(self, *hosts: HostProfile) -> str:
        """Why the planner knows a NAT (or forced UDP encapsulation) on the path of the
        ends it manages, as a message tail; empty when it knows none."""
        for host in hosts:
            if host.behind_nat:
                return f"{host.name} is behind a NAT (nat: true, {self.where(host, 'nat')})"
        for host in hosts:
            if host.nat_traversal.force_encap:
                return (
                    f"{host.name} forces UDP encapsulation (force_encap: true, "
                    f"{self.where(host, 'force_encap')})"
                )
        return ""

    def _ah_nat_error(self, a: HostProfile, b: HostProfile) -> InventoryError | None:
        """AH between a and b across a NAT: AH's ICV covers the IP addresses a NAT
        rewrites (RFC 4302 section 3.3.3.1) and only ESP has a UDP encapsulation (RFC
        3948), so the agents would refuse the child; the plan refuses it first."""
        if not self._compatible_lists(ProposalKind.AH, a, b):
            return None  # AH cannot be negotiated between them
        why = self._nat_on_path(a, b)
        if not why:
            return None
        return InventoryError(
            f"hosts {a.name} and {b.name}: AH cannot cross NAT: {why}, and both offer AH "
            f"(ah_proposals set at {self.mark(a, 'ah_proposals')} and "
            f"{self.mark(b, 'ah_proposals')}); AH authenticates the IP addresses a NAT "
            "rewrites and has no UDP encapsulation: use esp_proposals for this pair",
            self.set_at(a, "ah_proposals") or self.mark(b, "ah_proposals"),
        )

    def pair_errors(self, a: HostProfile, b: HostProfile) -> list[InventoryError]:
        """Why hosts a and b cannot form a tunnel (empty when they can)."""
        if a.ike_version is not b.ike_version:
            # A pair never mixes versions by accident; their proposals were read under
            # different rules, so nothing else about them can be compared.
            return [
                InventoryError(
                    f"hosts {a.name} and {b.name} disagree on ike_version: {a.name} speaks "
                    f"{_version(a.ike_version)} ({self.where(a, 'ike_version')}), {b.name} "
                    f"speaks {_version(b.ike_version)} ({self.where(b, 'ike_version')}); "
                    "a pair never mixes versions: give both the same ike_version",
                    self.set_at(a, "ike_version") or self.mark(b, "ike_version"),
                )
            ]
        out = []
        if not self._compatible_lists(ProposalKind.IKE, a, b):
            out.append(
                InventoryError(
                    f"hosts {a.name} and {b.name} share no IKE proposal: "
                    f"{a.name} offers {_listed(a.ike)} (set at {self.mark(a, 'ike_proposals')}), "
                    f"{b.name} offers {_listed(b.ike)} (set at {self.mark(b, 'ike_proposals')})",
                    self.mark(a, "ike_proposals"),
                )
            )
        if not (
            self._compatible_lists(ProposalKind.ESP, a, b)
            or self._compatible_lists(ProposalKind.AH, a, b)
        ):
            if not (a.ah or b.ah):
                out.append(
                    InventoryError(
                        f"hosts {a.name} and {b.name} share no ESP proposal: "
                        f"{a.name} offers {_listed(a.esp)} (set at "
                        f"{self.mark(a, 'esp_proposals')}), {b.name} offers {_listed(b.esp)} "
                        f"(set at {self.mark(b, 'esp_proposals')})",
                        self.mark(a, "esp_proposals"),
                    )
                )
            else:
                var = "ah_proposals" if a.ah else "esp_proposals"
                out.append(
                    InventoryError(
                        f"hosts {a.name} and {b.name} share no child SA proposal, ESP or AH: "
                        f"{a.name} offers {_child_offer(a)}, {b.name} offers "
                        f"{_child_offer(b)} (esp_proposals set at "
                        f"{self.mark(a, 'esp_proposals')} and {self.mark(b, 'esp_proposals')}, "
                        f"ah_proposals at {self.mark(a, 'ah_proposals')} and "
                        f"{self.mark(b, 'ah_proposals')})",
                        self.mark(a, var),
                    )
                )
        nat = self._ah_nat_error(a, b)
        if nat is not None:
            out.append(nat)
        for var, mine_v, theirs_v in (
            ("mode", a.mode.lower(), b.mode.lower()),
            ("auth", a.auth.lower(), b.auth.lower()),
            # RFC 2409 section 5: the initiator picks Main or Aggressive Mode, and an end
            # set for one refuses the other (as strongSwan's and Libreswan's do).
            ("ike_aggressive", _flag(a.aggressive), _flag(b.aggressive)),
        ):
            if mine_v != theirs_v:
                out.append(
                    InventoryError(
                        f"hosts {a.name} and {b.name} disagree on {var}: {a.name} has "
                        f"{mine_v} (set at {self.mark(a, var)}), {b.name} has {theirs_v} "
                        f"(set at {self.mark(b, var)})",
                        self.mark(a, var),
                    )
                )
        return out

    # -- managed pairs --------------------------------------------------------------

    def _joined(self, head: tuple[str, ...], tail: tuple[str, ...]) -> tuple[str, ...]:
        """``head + tail`` as one shared tuple (traffic selectors of hubs and spokes)."""
        key = (id(head), id(tail))
        out = self.ts_cache.get(key)
        if out is None:
            out = self.ts_cache[key] = self.interner.get((*head, *tail))
        return out

    def _towards_nat(self, nat: NatTraversal) -> NatTraversal:
        """``nat`` towards a peer behind a NAT (``nat: true``), whose IKE_SA_INIT may
        come from the NAT router's address rather than the peer's own."""
        return self.interner.get(dataclasses.replace(nat, remote_behind_nat=True))

    def both(
        self,
        a: HostProfile,
        b: HostProfile,
        role_ab: Role,
        role_ba: Role,
        errors: list[InventoryError],
        peers_a: list[Peer],
        direct_a: list[SpdEntry],
        peers_b: list[Peer],
        direct_b: list[SpdEntry],
    ) -> bool:
        """Append both ends' view of the pair {a, b} to their lists.

        False (and errors) when the two hosts cannot form a tunnel.
        """
        if (
            a.ike_key != b.ike_key
            or a.esp_key != b.esp_key
            or a.ah_key != b.ah_key
            or (a.ah and (a.behind_nat or b.behind_nat or a.nat_traversal.force_encap))
            or (b.ah and b.nat_traversal.force_encap)
            or a.mode is not b.mode
            or a.auth != b.auth
            or a.ike_version is not b.ike_version
            or a.aggressive is not b.aggressive
        ):
            problems = self.pair_errors(*((a, b) if a.name < b.name else (b, a)))
            if problems:
                errors.extend(problems)
                return False
        name_a, name_b = a.name, b.name
        init_ab = role_ab.initiator
        if init_ab is None:
            nat = a.behind_nat
            # Peers cannot reach a host behind NAT: it must start the exchange. Else an
            # end that only responds (start_action none) leaves it to the other.
            if nat != b.behind_nat:
                init_ab = nat
            elif (a.start_action is _RESPOND) != (b.start_action is _RESPOND):
                init_ab = b.start_action is _RESPOND
            else:
                init_ab = name_a < name_b
        init_ba = role_ba.initiator
        if init_ba is None:
            init_ba = not init_ab
        if a.auth is AuthMethod.PSK:
            epoch = a.epoch if a.epoch > b.epoch else b.epoch
            auth = (
                self.keys.credential(name_a, name_b, epoch)
                if name_a < name_b
                else self.keys.credential(name_b, name_a, epoch)
            )
        elif self.trust_anchors:
            auth = self.fleet_credential()
        else:
            errors.append(
                InventoryError(
                    f"hosts {name_a} and {name_b} use auth pubkey, but the fleet has no CA "
                    "yet (run `vpnfleet ca init`)",
                    self.mark(a, "auth"),
                )
            )
            return False
        pre_a, pre_b = a.spd_prefixes, b.spd_prefixes
        ts_a_local, ts_a_remote, ts_b_local, ts_b_remote = pre_a, pre_b, pre_b, pre_a
        if a.mode is Mode.TUNNEL:
            if role_ab.extra_local:
                ts_a_local = self._joined(pre_a, role_ab.extra_local)
            if role_ab.extra_remote:
                ts_a_remote = self._joined(pre_b, role_ab.extra_remote)
            if role_ba.extra_local:
                ts_b_local = self._joined(pre_b, role_ba.extra_local)
            if role_ba.extra_remote:
                ts_b_remote = self._joined(pre_a, role_ba.extra_remote)
        if a.ike_version is _V1 and (
            len(ts_a_local) > 1
            or len(ts_a_remote) > 1
            or len(ts_b_local) > 1
            or len(ts_b_remote) > 1
        ):
            errors.append(
                _one_subnet_pair(
                    f"hosts {name_a} and {name_b}",
                    (ts_a_local, ts_a_remote) if name_a < name_b else (ts_b_local, ts_b_remote),
                    self.mark(a, "ike_version"),
                )
            )
            return False
        # Positional, in field order (model.Peer, SpdEntry, TrafficSelector): this runs
        # for every pair. The same calls with keywords made bench/plan_scale.py's
        # mesh_1000_s (1M peers) take 8.5 s instead of 5.9 s (CPU seconds, best of two
        # interleaved rounds on a shared 2-core machine).
        peers_a.append(
            new_peer(
                name_b,  # name
                b.addresses,  # remote_addresses
                a.address,  # local_address
                IKE_PORT,  # remote_port
                a.identity,  # local_id
                b.identity,  # remote_id
                auth,  # auth
                a.ike,  # ike_proposals
                a.esp,  # esp_proposals
                a.mode,  # mode
                a.lifetimes,  # lifetimes
                a.dpd,  # dpd
                self._towards_nat(a.nat_traversal) if b.behind_nat else a.nat_traversal,  # nat
                a.start_action,  # start_action
                ts_a_local,  # local_ts
                ts_a_remote,  # remote_ts
                True,  # managed
                init_ab,  # initiator
                a.fragmentation_off,  # ike_fragmentation_off
                a.fragment_size,  # ike_fragment_size
                False,  # dynamic_address
                a.ike_version,  # ike_version
                a.aggressive,  # ike_aggressive
                a.ah,  # ah_proposals
            )
        )
        peers_b.append(
            new_peer(
                name_a,  # name
                a.addresses,  # remote_addresses
                b.address,  # local_address
                IKE_PORT,  # remote_port
                b.identity,  # local_id
                a.identity,  # remote_id
                auth,  # auth
                b.ike,  # ike_proposals
                b.esp,  # esp_proposals
                b.mode,  # mode
                b.lifetimes,  # lifetimes
                b.dpd,  # dpd
                self._towards_nat(b.nat_traversal) if a.behind_nat else b.nat_traversal,  # nat
                b.start_action,  # start_action
                ts_b_local,  # local_ts
                ts_b_remote,  # remote_ts
                True,  # managed
                init_ba,  # initiator
                b.fragmentation_off,  # ike_fragmentation_off
                b.fragment_size,  # ike_fragment_size
                False,  # dynamic_address
                b.ike_version,  # ike_version
                b.aggressive,  # ike_aggressive
                b.ah,  # ah_proposals
            )
        )
        if len(pre_a) == 1 and len(pre_b) == 1 and a.family_v6 is b.family_v6:
            direct_a.append(
                new_entry(
                    name_b,  # name
                    new_selector(pre_a[0], pre_b[0], 0, 0, 65535, 0, 65535),  # selector
                    _PROTECT,  # action
                    name_b,  # peer
                )
            )
            direct_b.append(
                new_entry(
                    name_a,  # name
                    new_selector(pre_b[0], pre_a[0], 0, 0, 65535, 0, 65535),  # selector
                    _PROTECT,  # action
                    name_a,  # peer
                )
            )
        else:
            direct_a.extend(direct_entries(name_b, pre_a, pre_b))
            direct_b.extend(direct_entries(name_a, pre_b, pre_a))
        return True

    # -- external peers -------------------------------------------------------------

    def external(
        self, local: HostProfile, remote: ExternalPeer, errors: list[InventoryError]
    ) -> tuple[Peer, tuple[SpdEntry, ...]] | None:
        """The managed host's view of a tunnel to a gateway vpnfleet does not manage."""
        for var, mine_v, theirs_v in (
            ("ike_version", _version(local.ike_version), _version(remote.ike_version)),
            ("ike_aggressive", _flag(local.aggressive), _flag(remote.aggressive)),
        ):
            if mine_v != theirs_v:
                errors.append(
                    InventoryError(
                        f"host {local.name} and external peer {remote.name} disagree on "
                        f"{var}: {local.name} has {mine_v} ({self.where(local, var)}), "
                        f"{remote.name} has {theirs_v} (at {remote.mark}); set the same "
                        f"{var} for both ends",
                        self.set_at(local, var) or remote.mark,
                    )
                )
                return None
        for kind, mine, theirs in (
            ("ike", local.ike, remote.ike_proposals),
            ("esp", local.esp, remote.esp_proposals),
        ):
            if theirs and common_proposal(mine, theirs) is None:
                errors.append(
                    InventoryError(
                        f"host {local.name} and external peer {remote.name} share no "
                        f"{kind.upper()} proposal: {local.name} offers "
                        f"{_listed(mine)}, {remote.name} accepts "
                        f"{_listed(theirs)} (at {remote.mark})",
                        self.mark(local, f"{kind}_proposals"),
                    )
                )
                return None
        why = self._nat_on_path(local)
        if local.ah and why:
            errors.append(
                InventoryError(
                    f"host {local.name} and external peer {remote.name}: AH cannot cross "
                    f"NAT: {why}, and {local.name} offers AH (ah_proposals set at "
                    f"{self.mark(local, 'ah_proposals')}); AH authenticates the IP addresses "
                    "a NAT rewrites and has no UDP encapsulation: use esp_proposals for it",
                    self.set_at(local, "ah_proposals") or remote.mark,
                )
            )
            return None
        if remote.auth is AuthMethod.PSK:
            auth = Credential(
                method=AuthMethod.PSK,
                reference=f"psk:{remote.name}/static",
                psk=remote.psk.encode(),
            )
        else:
            auth = Credential(
                method=AuthMethod.PUBKEY,
                reference=f"cert:{remote.name}-ca",
                ca_fingerprint=remote.ca_fingerprint,
            )
        remote_prefixes = remote.subnets
        if local.mode is Mode.TRANSPORT:
            if remote.address is None:
                errors.append(
                    InventoryError(
                        f"host {local.name} uses transport mode, which protects the two "
                        f"ends' own addresses, but external peer {remote.name} (at "
                        f"{remote.mark}) has address any: give its address, or use tunnel "
                        "mode",
                        self.mark(local, "mode"),
                    )
                )
                return None
            remote_prefixes = (host_prefix(remote.address),)
        if local.ike_version is _V1 and (len(local.spd_prefixes) > 1 or len(remote_prefixes) > 1):
            errors.append(
                _one_subnet_pair(
                    f"host {local.name} and external peer {remote.name}",
                    (local.spd_prefixes, remote_prefixes),
                    self.mark(local, "ike_version"),
                )
            )
            return None
        get = self.interner.get
        # What will happen: this end starts the IKE SA unless it only responds (its
        # start_action none), or the peer has no address to send to (address any).
        dynamic = remote.address is None
        start = StartAction.NONE if dynamic else local.start_action
        peer = Peer(
            name=remote.name,
            remote_addresses=() if dynamic else get((remote.address,)),
            local_address=local.address,
            remote_port=remote.port,
            local_id=local.identity,
            remote_id=remote.identity,
            auth=get(auth),
            ike_proposals=local.ike,
            esp_proposals=local.esp,
            mode=local.mode,
            lifetimes=local.lifetimes,
            dpd=local.dpd,
            nat=local.nat_traversal,
            start_action=start,
            local_ts=local.spd_prefixes,
            remote_ts=get(remote_prefixes),
            managed=False,
            initiator=start is not StartAction.NONE,
            ike_fragmentation_off=local.fragmentation_off,
            ike_fragment_size=local.fragment_size,
            dynamic_address=dynamic,
            ike_version=local.ike_version,
            ike_aggressive=local.aggressive,
            ah_proposals=local.ah,
        )
        return peer, direct_entries(remote.name, local.spd_prefixes, remote_prefixes)

    # -- transit through hubs -------------------------------------------------------

    def hub_transit(self, role: Role, spoke: HostProfile) -> tuple[SpdEntry, ...]:
        """A hub's entries forwarding other spokes' traffic to ``spoke`` (shared by hubs)."""
        key = (id(role), spoke.name)
        entries = self.transit_cache.get(key)
        if entries is None:
            entries = self.transit_cache[key] = direct_entries(
                spoke.name, role.extra_local, spoke.subnets, suffix="/transit"
            )
        return entries


def direct_entries(
    peer: str, local: tuple[str, ...], remote: tuple[str, ...], suffix: str = ""
) -> tuple[SpdEntry, ...]:
    """PROTECT entries for every (local, remote) prefix pair of one family, via ``peer``."""
    if (
        len(local) == 1
        and len(remote) == 1
        and (":" in local[0]) == (":" in remote[0])
        and not (suffix and local[0] == remote[0])
    ):
        selector = new_selector(local_prefix=local[0], remote_prefix=remote[0])
        return (new_entry(name=peer + suffix, selector=selector, action=_PROTECT, peer=peer),)
    out: list[SpdEntry] = []
    for lp in local:
        for rp in remote:
            if (":" in lp) != (":" in rp) or (suffix and lp == rp):
                # An IPv4 prefix never talks to an IPv6 one; a prefix to itself is local
                # traffic (a hub's aggregate of the spokes holds the spoke's own subnet).
                continue
            selector = new_selector(local_prefix=lp, remote_prefix=rp)
            out.append(
                new_entry(
                    name=f"{peer}{suffix}#{len(out)}", selector=selector, action=_PROTECT, peer=peer
                )
            )
    return tuple(out)


def spoke_transit(spoke: HostProfile, role: Role) -> list[SpdEntry]:
    """A spoke's entries sending traffic for the other spokes through its preferred hub.

    Only the preferred hub gets SPD entries (one per aggregate prefix): with thousands of
    spokes and tens of hubs, an entry per hub would multiply the SPD by the hub count
    while only the first could ever match. The child SAs to every hub still carry the
    aggregate as traffic selectors, so traffic coming back through any hub is accepted.
    """
    hub = transit_order(spoke.name, role.hubs)[0]
    selectors = [
        new_selector(local_prefix=lp, remote_prefix=rp)
        for lp in spoke.spd_prefixes
        for rp in role.extra_remote
        if (":" in lp) == (":" in rp) and lp != rp
    ]
    if len(selectors) == 1:
        return [new_entry(name=f"{hub}/transit", selector=selectors[0], action=_PROTECT, peer=hub)]
    return [
        new_entry(name=f"{hub}/transit#{i}", selector=s, action=_PROTECT, peer=hub)
        for i, s in enumerate(selectors)
    ]


def policy_entries(policies: tuple[Policy, ...]) -> dict[str, tuple[SpdEntry, ...]]:
    """The SPD entries of each policy, shared by every host it applies to."""
    out = {}
    for policy in policies:
        names = [f"policy:{policy.name}"]
        if len(policy.selectors) > 1:
            names.append(f"policy:{policy.name}/v6")
        out[policy.name] = tuple(
            SpdEntry(name=n, selector=s, action=policy.action, peer=policy.peer)
            for n, s in zip(names, policy.selectors, strict=True)
        )
    return out


def _one_subnet_pair(
    ends: str, selectors: tuple[tuple[str, ...], tuple[str, ...]], mark: Mark | None
) -> InventoryError:
    """An IKEv1 pair whose tunnel would carry more than one subnet on a side: a Quick mode
    negotiates one ID pair (RFC 2409 section 5.5, one subnet or range each way), and the
    agent makes one Quick mode SA per peer, so the other subnets would go unprotected."""
    local, remote = selectors
    return InventoryError(
        f"{ends} speak IKEv1, which negotiates one subnet pair per Quick mode SA, and the "
        "agent makes one Quick mode SA per peer; this tunnel would carry "
        f"{', '.join(local)} to {', '.join(remote)}: give each IKEv1 end one subnet (a hub "
        "also carries the other spokes' subnets), or use ike_version: 2",
        mark,
    )


def _key(kind: ProposalKind, host: HostProfile) -> int:
    """The key of ``host``'s ``kind`` proposal list (equal keys: identical lists)."""
    if kind is ProposalKind.IKE:
        return host.ike_key
    return host.esp_key if kind is ProposalKind.ESP else host.ah_key


def _offered(kind: ProposalKind, host: HostProfile) -> tuple[Proposal, ...]:
    if kind is ProposalKind.IKE:
        return host.ike
    return host.esp if kind is ProposalKind.ESP else host.ah


def _child_offer(host: HostProfile) -> str:
    """A host's child SA proposals, by protocol: ``ah [sha256], esp [aes256gcm16]``."""
    kinds = (ProposalKind.AH, ProposalKind.ESP)
    return ", ".join(f"{k} {_listed(_offered(k, host))}" for k in kinds if _offered(k, host))


def _version(version: IkeVersion) -> str:
    """``IKEv1`` or ``IKEv2``, as messages name them."""
    return f"IKE{version.lower()}"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _listed(proposals: Iterable[Proposal]) -> str:
    """Proposals as the operator wrote them (strongSwan notation), as the agent lists
    its own and a peer's in NO_PROPOSAL_CHOSEN: ``[aes128-sha256, aes256gcm16]``."""
    return f"[{', '.join(p.text for p in proposals)}]"
