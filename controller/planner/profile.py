"""One host's variables as the planner reads them, with shared (interned) parts.

Child SA protocols: ``esp_proposals`` and ``ah_proposals`` are alternatives, as in
strongSwan's swanctl.conf. A host that writes no ``ah_proposals`` offers ESP only (the
default ``[aes256gcm16]`` when it writes no ``esp_proposals`` either). A host that writes
``ah_proposals`` and leaves ``esp_proposals`` at its default offers AH only (strongSwan
adds its default ESP proposal only to a child with no proposals at all). A host that
writes both offers both, AH first: its plan peers carry ``ah_proposals`` and
``esp_proposals``, and its agent sends them as separate proposals of one SA payload (RFC
7296 section 3.3 lets the proposals of one SA payload name different protocols), the AH
ones numbered first, so that a responder that takes its peer's order picks AH when it
can and ESP otherwise; as responder, it takes the first of its own (AH, then ESP) that
the peer offers.

A 1,000-host fleet usually has a handful of distinct proposal lists, lifetimes and DPD
settings; every host (and every peer built from it) points at the same objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vpnfleet.controller.inventory import (
    DEFAULT_MARK,
    IKEV1_DEFAULT_IKE_PROPOSALS,
    InventoryError,
    Mark,
    ResolvedHost,
    mark_of,
)
from vpnfleet.protos.limits import DEFAULT_IKE_FRAGMENT_SIZE

from .model import (
    AuthMethod,
    Dpd,
    Identity,
    IkeVersion,
    Lifetimes,
    Mode,
    NatTraversal,
    Proposal,
    StartAction,
    identity_of,
)
from .proposals import ProposalError, ProposalKind, parse_proposal

MODES = {"tunnel": Mode.TUNNEL, "transport": Mode.TRANSPORT}
AUTH_METHODS = {"psk": AuthMethod.PSK, "pubkey": AuthMethod.PUBKEY}
"""The inventory's ``auth`` words (controller/inventory/schema.py) as plan methods."""
START_ACTIONS = {"start": StartAction.START, "trap": StartAction.TRAP, "none": StartAction.NONE}
IKE_VERSIONS = {1: IkeVersion.V1, 2: IkeVersion.V2}
"""The inventory's ``ike_version`` numbers as plan versions."""

# The variables a plan reads; a host whose values (and overlay address) are unchanged
# keeps its profile object across re-plans.
PROFILE_VARS = (
    "address",
    "subnets",
    "identity",
    "auth",
    "ike_version",
    "ike_aggressive",
    "ike_proposals",
    "esp_proposals",
    "ah_proposals",
    "mode",
    "start_action",
    "ike_lifetime",
    "child_lifetime",
    "child_lifetime_bytes",
    "child_lifetime_packets",
    "rekey_jitter",
    "dpd_delay",
    "dpd_timeout",
    "nat",
    "force_encap",
    "nat_keepalive",
    "ike_fragmentation",
    "ike_fragment_size",
    "psk_epoch",
)


@dataclass(frozen=True, slots=True, eq=False)
class HostProfile:
    """What the plans read from one host's variables. Compared by identity."""

    name: str
    address: str
    addresses: tuple[str, ...]
    subnets: tuple[str, ...]  # site subnets, or the allocated overlay address
    spd_prefixes: tuple[str, ...]  # subnets in tunnel mode, the address in transport mode
    family_v6: bool | None  # of the only SPD prefix; None when there are several
    identity: Identity
    auth: AuthMethod
    ike_version: IkeVersion
    aggressive: bool  # IKEv1 Aggressive Mode (ike_aggressive)
    ike: tuple[Proposal, ...]
    esp: tuple[Proposal, ...]  # empty when the host offers AH only
    ah: tuple[Proposal, ...]  # empty unless the host writes ah_proposals
    ike_key: int  # equal keys <=> identical proposal lists
    esp_key: int
    ah_key: int
    mode: Mode
    start_action: StartAction
    lifetimes: Lifetimes
    dpd: Dpd
    nat_traversal: NatTraversal
    behind_nat: bool
    fragmentation_off: bool
    fragment_size: int  # 0 when the default (1280), so default plans leave it unset
    epoch: int


class Interner:
    """One object per distinct value, across hosts and across re-plans."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.proposal_lists: dict[tuple[str, ...], tuple[int, tuple[Proposal, ...]]] = {}
        """By (kind, version, texts): one key per distinct list, for the pair checks."""

    def get(self, value: Any) -> Any:
        return self.values.setdefault(value, value)

    def proposals(
        self,
        texts: Iterable[str],
        kind: ProposalKind,
        version: IkeVersion,
        mark: Mark | None,
        errors: list[InventoryError],
        *,
        may_be_empty: bool = False,
    ) -> tuple[int, tuple[Proposal, ...]]:
        """Parsed proposals and a small key naming the list; bad items become errors (an
        empty list too, unless ``may_be_empty``)."""
        texts = tuple(texts)
        key = (kind, version, *(str(t) for t in texts))
        known = self.proposal_lists.get(key)
        if known is not None:
            return known
        parsed = []
        for text in texts:
            try:
                parsed.append(parse_proposal(str(text), kind, version))
            except ProposalError as exc:
                errors.append(InventoryError(f"{kind}_proposals: {exc}", mark_of(text) or mark))
        if not texts and not may_be_empty:
            errors.append(InventoryError(f"{kind}_proposals: the list is empty", mark))
        if len(parsed) != len(texts) or not (texts or may_be_empty):
            return (-1, ())
        out = (len(self.proposal_lists), tuple(parsed))
        self.proposal_lists[key] = out
        return out


def host_prefix(address: str) -> str:
    return f"{address}/128" if ":" in address else f"{address}/32"


def profile_key(host: ResolvedHost, overlay: str) -> tuple[Any, ...]:
    v = host.vars
    return (overlay, *(v.get(name) for name in PROFILE_VARS))


def build_profile(
    host: ResolvedHost, overlay: str, interner: Interner, errors: list[InventoryError]
) -> HostProfile:
    v = host.vars
    origins = host.origins
    get = interner.get
    subnets = tuple(str(s) for s in v.get("subnets") or ()) or ((overlay,) if overlay else ())
    address = str(v["address"])
    mode = MODES[v["mode"]]
    spd_prefixes = get(subnets if mode is Mode.TUNNEL else (host_prefix(address),))
    version = IKE_VERSIONS[v["ike_version"]]
    ike_texts = v["ike_proposals"]
    if version is IkeVersion.V1 and origins.get("ike_proposals") in (None, DEFAULT_MARK):
        ike_texts = IKEV1_DEFAULT_IKE_PROPOSALS  # the IKEv2 default is AEAD
    ike_key, ike = interner.proposals(
        ike_texts, ProposalKind.IKE, version, origins.get("ike_proposals"), errors
    )
    ah_key, ah = interner.proposals(
        v["ah_proposals"],
        ProposalKind.AH,
        version,
        origins.get("ah_proposals"),
        errors,
        may_be_empty=True,
    )
    esp_texts = v["esp_proposals"]
    if ah and origins.get("esp_proposals") in (None, DEFAULT_MARK):
        esp_texts = ()  # AH only: the default ESP proposal is not offered beside it
    esp_key, esp = interner.proposals(
        esp_texts,
        ProposalKind.ESP,
        version,
        origins.get("esp_proposals"),
        errors,
        may_be_empty=bool(ah),
    )
    return HostProfile(
        name=host.name,
        address=address,
        addresses=get((address,)),
        subnets=get(subnets),
        spd_prefixes=spd_prefixes,
        family_v6=(":" in spd_prefixes[0]) if len(spd_prefixes) == 1 else None,
        identity=get(identity_of(str(v["identity"]))),
        auth=AUTH_METHODS[v["auth"]],
        ike_version=version,
        aggressive=bool(v["ike_aggressive"]),
        ike=ike,
        esp=esp,
        ah=ah,
        ike_key=ike_key,
        esp_key=esp_key,
        ah_key=ah_key,
        mode=mode,
        start_action=START_ACTIONS[v["start_action"]],
        lifetimes=get(
            Lifetimes(
                ike_rekey_seconds=int(v["ike_lifetime"]),
                child_rekey_seconds=int(v["child_lifetime"]),
                child_rekey_bytes=int(v["child_lifetime_bytes"]),
                child_rekey_packets=int(v["child_lifetime_packets"]),
                rand_seconds=int(v["rekey_jitter"]),
            )
        ),
        dpd=get(Dpd(delay_seconds=int(v["dpd_delay"]), timeout_seconds=int(v["dpd_timeout"]))),
        nat_traversal=get(
            NatTraversal(
                force_encap=bool(v["force_encap"]), keepalive_seconds=int(v["nat_keepalive"])
            )
        ),
        behind_nat=bool(v["nat"]),
        fragmentation_off=not v["ike_fragmentation"],
        fragment_size=(
            0
            if int(v["ike_fragment_size"]) == DEFAULT_IKE_FRAGMENT_SIZE
            else int(v["ike_fragment_size"])
        ),
        epoch=int(v["psk_epoch"]),
    )
