"""NodePlan message -> validated AgentPlan, and agent state -> status messages.

A plan is checked whole before any of it is used (Tailscale's habit: a whole desired
state, converted by a pure function). Every problem is collected and reported together
in :class:`PlanRejected`, each naming where it is ("peer 'b2' esp proposal 1: ...").
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from vpnfleet.protos import agent_pb2, limits, plan_pb2
from vpnfleet.protos.hashing import plan_content_hash
from vpnfleet.protos.plan_diff import ChangeKind, PlanChange

from .cert_expiry import CertificateExpiry
from .crl import RevokedSet, read_crl, revoked_set
from .ike.constants import EncrId, ProtocolId, enum_name
from .ike.constants import TransformType as IkeTransformType
from .ike.transforms import INTEGS, NEGOTIABLE, PRFS, encr_for, negotiable
from .plan import (
    AgentPlan,
    AuthMethod,
    Credential,
    Dpd,
    Identity,
    IdType,
    IkeVersion,
    IPAddress,
    IPNetwork,
    Lifetimes,
    Mode,
    NatTraversal,
    Peer,
    PlanRejected,
    Proposal,
    SpdAction,
    SpdEntry,
    StartAction,
    TrafficSelector,
    Transform,
    TransformType,
)
from .sink import (
    AdmissionReport,
    DropCount,
    IkeSaReport,
    LivenessOutcome,
    NatState,
    Problem,
    RekeyOutcome,
    RekeyTarget,
    SaEventReport,
    UnmatchedReport,
)

E = TypeVar("E", Mode, StartAction, SpdAction, IkeVersion)

HASH_MISMATCH = "content hash mismatch: plan is corrupt or truncated"

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}" if where else what)


def plan_from_bytes(data: bytes) -> AgentPlan:
    """A plan file (``vpnfleet plan --emit``) or stored plan, parsed and validated whole."""
    return plan_from_proto(parse_plan_message(data))


def parse_plan_message(data: bytes) -> plan_pb2.NodePlan:
    msg = plan_pb2.NodePlan()
    try:
        msg.ParseFromString(data)
    except Exception as exc:  # DecodeError and friends: the bytes are not a NodePlan
        raise PlanRejected(
            [f"not a vpnfleet plan (cannot decode: {exc}); {HASH_MISMATCH}"]
        ) from None
    return msg


def plan_from_proto(msg: plan_pb2.NodePlan, now: datetime.datetime | None = None) -> AgentPlan:
    """Validate ``msg`` whole; raise :class:`PlanRejected` listing every problem. With
    ``now`` (a plan being handed in, not the stored one) its CRLs must not be stale."""
    p = _Problems()
    if not msg.content_hash or msg.content_hash != plan_content_hash(msg):
        p.add("", HASH_MISMATCH)
    if not msg.host:
        p.add("host", "empty: the plan names no host")
    elif not _HOST_RE.match(msg.host):
        p.add("host", f"{msg.host!r} is not a host name")
    identity = _identity(p, "identity", msg.identity)
    addresses = tuple(_address(p, f"addresses[{i}]", a) for i, a in enumerate(msg.addresses))
    subnets = tuple(_prefix(p, f"subnets[{i}]", s) for i, s in enumerate(msg.subnets))
    anchors = _trust_anchors(p, msg.trust_anchors)
    revoked = _crls(p, msg.crls, msg.trust_anchors, now)

    peers: list[Peer] = []
    seen: set[str] = set()
    for i, pm in enumerate(msg.peers):
        where = f"peer {pm.name!r}" if pm.name else f"peers[{i}]"
        if not pm.name:
            p.add(where, "has no name")
        elif pm.name in seen:
            p.add(where, "name used by more than one peer")
        seen.add(pm.name)
        peer = _peer(p, where, pm, anchors)
        if peer is not None:
            peers.append(peer)
    if msg.peers and not msg.addresses:
        p.add("addresses", "empty: a host with peers needs an underlay address")
    dynamic = [pm.name for pm in msg.peers if pm.dynamic_address]
    if len(dynamic) > 1:
        # The source address is all an IKE_SA_INIT tells us of its sender.
        p.add("peers", f"more than one peer with a dynamic address: {', '.join(dynamic)}")

    spd: list[SpdEntry] = []
    spd_names: set[str] = set()
    for i, em in enumerate(msg.spd):
        where = f"spd entry {em.name!r}" if em.name else f"spd[{i}]"
        if not em.name:
            p.add(where, "has no name")
        elif em.name in spd_names:
            p.add(where, "name used by more than one entry")
        spd_names.add(em.name)
        entry = _spd_entry(p, where, em, seen)
        if entry is not None:
            spd.append(entry)

    if p.items:
        raise PlanRejected(p.items)
    assert identity is not None
    return AgentPlan(
        host=msg.host,
        generation=msg.generation,
        content_hash=msg.content_hash,
        identity=identity,
        addresses=tuple(a for a in addresses if a is not None),
        subnets=tuple(s for s in subnets if s is not None),
        spd=tuple(spd),
        peers=tuple(peers),
        trust_anchors=tuple(bytes(a) for a in msg.trust_anchors),
        source_revision=msg.source_revision,
        crls=tuple(bytes(c) for c in msg.crls),
        revoked=revoked,
    )


def _address(p: _Problems, where: str, text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        p.add(where, f"{text!r} is not an IP address")
        return None


def _prefix(p: _Problems, where: str, text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        p.add(where, f"{text!r} is not a prefix ({exc})")
        return None


def _identity(p: _Problems, where: str, msg: plan_pb2.Identity) -> Identity | None:
    try:
        kind = IdType(msg.type)
    except ValueError:
        p.add(where, f"unknown or missing ID type {msg.type}")
        return None
    if not msg.value:
        p.add(where, "empty value")
        return None
    if kind is IdType.IPV4_ADDR or kind is IdType.IPV6_ADDR:
        try:
            addr = ipaddress.ip_address(msg.value)
        except ValueError:
            p.add(where, f"{msg.value!r} is not an IP address")
            return None
        if (addr.version == 4) != (kind is IdType.IPV4_ADDR):
            p.add(where, f"{msg.value!r} does not match ID type {kind.name}")
            return None
    return Identity(kind, msg.value)


def _trust_anchors(p: _Problems, anchors: Iterable[bytes]) -> set[str]:
    fingerprints: set[str] = set()
    for i, pem in enumerate(anchors):
        try:
            cert = x509.load_pem_x509_certificate(bytes(pem))
        except ValueError:
            p.add(f"trust_anchors[{i}]", "not a PEM certificate")
            continue
        fingerprints.add(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())
    return fingerprints


def _crls(
    p: _Problems,
    pems: Sequence[bytes],
    anchor_pems: Sequence[bytes],
    now: datetime.datetime | None,
) -> RevokedSet:
    anchors = []
    for pem in anchor_pems:
        try:
            anchors.append(x509.load_pem_x509_certificate(bytes(pem)))
        except ValueError:
            continue  # reported by _trust_anchors
    good = []
    for i, pem in enumerate(pems):
        try:
            crl, problem = read_crl(bytes(pem), anchors, now)
        except ValueError as exc:
            p.add(f"crls[{i}]", str(exc))
            continue
        if problem is not None:
            p.add(f"crls[{i}]", f"refused: {problem}")
        else:
            good.append(crl)
    return revoked_set(good)


def _credential(
    p: _Problems, where: str, msg: plan_pb2.Credential, anchors: set[str]
) -> Credential | None:
    try:
        method = AuthMethod(msg.method)
    except ValueError:
        p.add(where, f"unknown or missing auth method {msg.method}")
        return None
    ok = True
    if method is AuthMethod.PSK and not msg.psk:
        p.add(where, f"PSK authentication but no PSK ({msg.reference or 'no reference'})")
        ok = False
    if method is AuthMethod.PUBKEY:
        if not anchors:
            p.add(where, "public key authentication but the plan has no trust anchors")
            ok = False
        named = [("ca_fingerprint", msg.ca_fingerprint)] if msg.ca_fingerprint else []
        named += [("accepted_ca_fingerprints", f) for f in msg.accepted_ca_fingerprints]
        for name, value in named:
            fp = value.lower()
            if not re.fullmatch(r"[0-9a-f]{64}", fp):
                p.add(where, f"{name} {value!r} is not a hex SHA-256")
                ok = False
            elif anchors and fp not in anchors:
                p.add(where, f"{name} {fp[:16]}… matches none of the plan's trust anchors")
                ok = False
    elif msg.accepted_ca_fingerprints:
        p.add(where, "accepted_ca_fingerprints given for an authentication without certificates")
        ok = False
    ok = _accepted_psks(p, where, msg, method) and ok
    if not ok:
        return None
    return Credential(
        method,
        msg.reference,
        bytes(msg.psk),
        msg.epoch,
        msg.ca_fingerprint.lower(),
        tuple(f.lower() for f in msg.accepted_ca_fingerprints),
        tuple(bytes(k) for k in msg.accepted_psks),
        tuple(msg.accepted_psk_references),
    )


def _accepted_psks(p: _Problems, where: str, msg: plan_pb2.Credential, method: AuthMethod) -> bool:
    """Further PSKs a peer may authenticate with (a staged key change); named by index
    and reference in errors, never by value."""
    keys = [bytes(k) for k in msg.accepted_psks]
    if keys and method is not AuthMethod.PSK:
        p.add(where, f"accepted_psks given for {method.name} authentication (only for PSK)")
        return False
    ok = True
    if len(msg.accepted_psk_references) > len(keys):
        p.add(
            where,
            f"accepted_psk_references names {len(msg.accepted_psk_references)} keys "
            f"but accepted_psks holds {len(keys)}",
        )
        ok = False
    seen = {bytes(msg.psk)}
    for i, key in enumerate(keys):
        name = f"accepted_psks[{i}]"
        if i < len(msg.accepted_psk_references) and msg.accepted_psk_references[i]:
            name += f" ({msg.accepted_psk_references[i]})"
        if not key:
            p.add(where, f"{name} is empty")
            ok = False
        elif key in seen:
            p.add(where, f"{name} repeats the PSK or an accepted key before it")
            ok = False
        seen.add(key)
    return ok


def _phase1_hashes() -> dict[tuple[IkeTransformType, int], frozenset[int | None]]:
    """The PRFs and integrity algorithms of the IKE core's registry that IKEv2 does not
    negotiate (SHA-1): an IKEv1 peer's phase 1 may hash with them (RFC 2409 Appendix A)."""
    return {
        **{(IkeTransformType.PRF, prf.id): frozenset({None}) for prf in PRFS.values()},
        **{
            (IkeTransformType.INTEG, integ.id): frozenset({None})
            for integ in INTEGS.values()
            if integ.implied_prf is not None
        },
    }


_IKEV1_PHASE1 = {**_phase1_hashes(), **NEGOTIABLE}


def _transform(
    p: _Problems, where: str, t: plan_pb2.Transform, kind: ProtocolId, phase1: bool = False
) -> Transform | None:
    """One transform of a ``kind`` (IKE, ESP or AH) proposal, checked against what the
    IKE core negotiates (its registry); ``phase1``: of an IKEv1 peer's IKE proposal,
    which may also use the hashes that IKEv2 does not negotiate."""
    try:
        ttype = TransformType(t.type)
    except ValueError:
        p.add(where, f"unknown transform type {t.type}")
        return None
    lengths = (_IKEV1_PHASE1 if phase1 else NEGOTIABLE).get((IkeTransformType(ttype), t.id))
    if lengths is None:
        have = sorted(int(id) for type_, id in NEGOTIABLE if type_ == ttype)
        p.add(where, f"{ttype.name} transform {t.id} is not implemented (have {have})")
        return None
    if ttype is TransformType.INTEG and not (
        INTEGS[t.id].implied_prf is not None if phase1 else negotiable(ttype, t.id, None, kind)
    ):
        p.add(where, f"INTEG transform {t.id} is not one {kind.name} proposals may carry")
        return None
    # A plan's key length 0 is no Key Length attribute (RFC 7296 section 3.3.5).
    if (t.key_length or None) not in lengths:
        if ttype is TransformType.ENCR:
            bits = sorted(b for b in lengths if b is not None)
            want = f"key length {bits}" if bits else "no key length"
            name = enum_name(EncrId, t.id)
            p.add(where, f"{name} with key length {t.key_length}: needs {want}")
        else:
            p.add(where, f"{ttype.name} transform {t.id} takes no key length, got {t.key_length}")
        return None
    return Transform(ttype, t.id, t.key_length)


def _proposal(
    p: _Problems, where: str, msg: plan_pb2.Proposal, kind: ProtocolId, phase1: bool = False
) -> Proposal | None:
    before = len(p.items)
    ts = [
        _transform(p, f"{where} transform {i + 1}", t, kind, phase1)
        for i, t in enumerate(msg.transforms)
    ]
    if len(p.items) != before:
        return None
    transforms = tuple(t for t in ts if t is not None)
    by_type: dict[TransformType, list[Transform]] = {}
    for t in transforms:
        by_type.setdefault(t.type, []).append(t)
    if kind is ProtocolId.AH:
        # RFC 7296 section 3.3.3: AH takes integrity, ESN and an optional DH group.
        if TransformType.ENCR in by_type:
            p.add(where, "AH proposal with an encryption transform (AH only authenticates)")
        if TransformType.PRF in by_type:
            p.add(where, "AH proposal with a PRF")
        if TransformType.INTEG not in by_type:
            p.add(where, "AH proposal without an integrity transform")
        return Proposal(msg.text, transforms) if len(p.items) == before else None
    encr = by_type.get(TransformType.ENCR, [])
    aead = [t for t in encr if encr_for(t.id, t.key_length or None).is_aead]
    if not encr:
        p.add(where, "no encryption transform")
    elif aead and len(aead) != len(encr):
        # RFC 5282 section 8: AEAD and non-AEAD algorithms go in separate proposals.
        p.add(where, "mixes AEAD and non-AEAD encryption in one proposal")
    elif aead and TransformType.INTEG in by_type:
        p.add(where, "AEAD encryption with an integrity transform (RFC 5282 section 8)")
    elif not aead and TransformType.INTEG not in by_type:
        p.add(where, "AES-CBC needs an integrity transform")
    if kind is ProtocolId.IKE:
        if TransformType.PRF not in by_type:
            p.add(where, "IKE proposal without a PRF")
        if TransformType.DH not in by_type:
            p.add(where, "IKE proposal without a key exchange (DH) transform")
        if TransformType.ESN in by_type:
            p.add(where, "IKE proposal with an ESN transform")
    elif TransformType.PRF in by_type:
        p.add(where, "ESP proposal with a PRF")
    if len(p.items) != before:
        return None
    return Proposal(msg.text, transforms)


def _proposals(
    p: _Problems,
    where: str,
    msgs: Sequence[plan_pb2.Proposal],
    kind: ProtocolId,
    phase1: bool = False,
    *,
    required: bool = True,
) -> tuple[Proposal, ...]:
    """The proposals of one ``kind``; an empty list is a problem when ``required``."""
    name = kind.name.lower()
    if not msgs and required:
        p.add(where, f"no {name} proposals")
    out = [
        _proposal(p, f"{where} {name} proposal {i + 1} ({m.text!r})", m, kind, phase1)
        for i, m in enumerate(msgs)
    ]
    return tuple(x for x in out if x is not None)


def _limited(p: _Problems, where: str, name: str, value: int, limit: limits.Limit) -> bool:
    problem = limit.problem(value)
    if problem is not None:
        p.add(where, f"{name} {problem}")
    return problem is None


def _lifetimes(p: _Problems, where: str, m: plan_pb2.Lifetimes) -> Lifetimes:
    ok = True
    for name in ("ike_rekey_seconds", "child_rekey_seconds"):
        ok = _limited(p, where, name, getattr(m, name), limits.REKEY_SECONDS) and ok
    ok = _limited(p, where, "rand_seconds", m.rand_seconds, limits.REKEY_JITTER_SECONDS) and ok
    if ok:
        for name in ("ike_rekey_seconds", "child_rekey_seconds"):
            problem = limits.jitter_problem(getattr(m, name), m.rand_seconds)
            if problem is not None:
                p.add(where, f"{name}: {problem}")
    return Lifetimes(
        m.ike_rekey_seconds,
        m.child_rekey_seconds,
        m.child_rekey_bytes,
        m.child_rekey_packets,
        m.rand_seconds,
    )


def _peer(p: _Problems, where: str, m: plan_pb2.Peer, anchors: set[str]) -> Peer | None:
    before = len(p.items)
    if not m.remote_addresses and not m.dynamic_address:
        p.add(where, "no remote address (and not marked dynamic_address)")
    if m.dynamic_address and not m.remote_addresses:
        # Nothing to send an IKE_SA_INIT to: this end can only answer.
        if m.initiator or m.start_action != plan_pb2.START_ACTION_NONE:
            p.add(
                where,
                "dynamic_address with no remote address can only respond: needs initiator "
                "false and start_action NONE",
            )
        if not m.remote_ts:
            p.add(where, "dynamic_address with no remote address needs remote_ts")
    remote = [
        _address(p, f"{where} remote_addresses[{i}]", a) for i, a in enumerate(m.remote_addresses)
    ]
    local = _address(p, f"{where} local_address", m.local_address) if m.local_address else None
    if m.remote_port > 65535:
        p.add(where, f"remote_port {m.remote_port} is not within 0..65535")
    local_id = _identity(p, f"{where} local_id", m.local_id)
    remote_id = _identity(p, f"{where} remote_id", m.remote_id)
    auth = _credential(p, f"{where} auth", m.auth, anchors)
    phase1 = m.ike_version == plan_pb2.IKE_V1
    ike = _proposals(p, where, m.ike_proposals, ProtocolId.IKE, phase1=phase1)
    # ESP and AH are alternatives (plan.proto): one of the two lists may be empty.
    esp = _proposals(p, where, m.esp_proposals, ProtocolId.ESP, required=not m.ah_proposals)
    ah = _proposals(p, where, m.ah_proposals, ProtocolId.AH, required=False)
    mode = _enum(p, f"{where} mode", Mode, m.mode)
    version = _enum(p, f"{where} ike_version", IkeVersion, m.ike_version)
    if m.ike_aggressive and version is not IkeVersion.V1:
        p.add(where, "ike_aggressive is an IKEv1 mode (RFC 2409 section 5); the peer is IKEv2")
    if version is IkeVersion.V1:
        for proposal in ike:
            if any(_is_aead(t) for t in proposal.transforms):
                p.add(
                    where,
                    f"ike proposal {proposal.text!r}: AEAD encryption, which IKEv1 phase 1 "
                    "does not have (RFC 2409 Appendix A)",
                )
    start = _enum(p, f"{where} start_action", StartAction, m.start_action)
    lifetimes = _lifetimes(p, f"{where} lifetimes", m.lifetimes)
    dpd_ok = _limited(
        p, f"{where} dpd", "delay_seconds", m.dpd.delay_seconds, limits.DPD_DELAY_SECONDS
    )
    dpd_ok = (
        _limited(
            p, f"{where} dpd", "timeout_seconds", m.dpd.timeout_seconds, limits.DPD_TIMEOUT_SECONDS
        )
        and dpd_ok
    )
    dpd_problem = limits.dpd_problem(m.dpd.delay_seconds, m.dpd.timeout_seconds)
    if dpd_ok and dpd_problem is not None:
        p.add(f"{where} dpd", dpd_problem)
    _limited(
        p,
        f"{where} nat",
        "keepalive_seconds",
        m.nat.keepalive_seconds,
        limits.NAT_KEEPALIVE_SECONDS,
    )
    local_ts = [_prefix(p, f"{where} local_ts[{i}]", t) for i, t in enumerate(m.local_ts)]
    remote_ts = [_prefix(p, f"{where} remote_ts[{i}]", t) for i, t in enumerate(m.remote_ts)]
    fragment_size = m.ike_fragment_size or limits.DEFAULT_IKE_FRAGMENT_SIZE
    low, high = limits.IKE_FRAGMENT_SIZE.low, limits.IKE_FRAGMENT_SIZE.high
    if not low <= fragment_size <= high:
        p.add(
            where,
            f"ike_fragment_size {fragment_size} is not within {low}..{high} (0 for the default)",
        )
    if len(p.items) != before:
        return None
    assert local_id and remote_id and auth and mode and start and version
    return Peer(
        name=m.name,
        remote_addresses=tuple(a for a in remote if a is not None),
        local_address=local,
        remote_port=m.remote_port,
        local_id=local_id,
        remote_id=remote_id,
        auth=auth,
        ike_proposals=ike,
        esp_proposals=esp,
        mode=mode,
        lifetimes=lifetimes,
        dpd=Dpd(m.dpd.delay_seconds, m.dpd.timeout_seconds),
        nat=NatTraversal(m.nat.force_encap, m.nat.keepalive_seconds, m.nat.remote_behind_nat),
        start_action=start,
        local_ts=tuple(t for t in local_ts if t is not None),
        remote_ts=tuple(t for t in remote_ts if t is not None),
        managed=m.managed,
        initiator=m.initiator,
        dynamic_address=m.dynamic_address,
        ike_fragmentation=not m.ike_fragmentation_off,
        ike_fragment_size=fragment_size,
        ike_version=version,
        ike_aggressive=m.ike_aggressive,
        ah_proposals=ah,
    )


def _is_aead(t: Transform) -> bool:
    return t.type is TransformType.ENCR and encr_for(t.id, t.key_length or None).is_aead


def _enum(p: _Problems, where: str, cls: type[E], value: int) -> E | None:
    try:
        return cls(value)
    except ValueError:
        names = ", ".join(x.name.lower() for x in cls)
        p.add(where, f"unknown or missing value {value} (expected one of {names})")
        return None


def _port_range(p: _Problems, where: str, start: int, end: int) -> tuple[int, int]:
    if start > 65535 or end > 65535:
        p.add(where, f"port range {start}-{end} is not within 0..65535")
    elif start > end:
        p.add(where, f"port range {start}-{end} starts after it ends")
    return (start, end)


def _spd_entry(p: _Problems, where: str, m: plan_pb2.SpdEntry, peers: set[str]) -> SpdEntry | None:
    before = len(p.items)
    s = m.selector
    local = _prefix(p, f"{where} local_prefix", s.local_prefix)
    remote = _prefix(p, f"{where} remote_prefix", s.remote_prefix)
    if local is not None and remote is not None and local.version != remote.version:
        p.add(where, f"local {local} and remote {remote} are of different address families")
    if s.protocol > 255:
        p.add(where, f"protocol {s.protocol} is not within 0..255")
    lports = _port_range(p, f"{where} local ports", s.local_port_start, s.local_port_end)
    rports = _port_range(p, f"{where} remote ports", s.remote_port_start, s.remote_port_end)
    action = _enum(p, f"{where} action", SpdAction, m.action)
    if action is SpdAction.PROTECT:
        if not m.peer:
            p.add(where, "protect entry names no peer")
        elif m.peer not in peers:
            p.add(where, f"protect entry names peer {m.peer!r}, which is not in the plan")
    elif action is not None and m.peer:
        p.add(where, f"{action.name.lower()} entry names a peer ({m.peer!r})")
    if len(p.items) != before:
        return None
    assert local and remote and action
    return SpdEntry(
        m.name, TrafficSelector(local, remote, s.protocol, lports, rports), action, m.peer
    )


# -- agent state -> messages -------------------------------------------------------------

_CHANGE_KIND = {
    ChangeKind.ADDED: agent_pb2.Change.ADDED,
    ChangeKind.REMOVED: agent_pb2.Change.REMOVED,
    ChangeKind.CHANGED: agent_pb2.Change.CHANGED,
}


def changes_to_proto(changes: Iterable[PlanChange]) -> list[agent_pb2.Change]:
    return [
        agent_pb2.Change(
            kind=_CHANGE_KIND[c.kind],
            section=c.section.value,
            name=c.name,
            details=list(c.details),
        )
        for c in changes
    ]


def admission_to_proto(report: AdmissionReport) -> agent_pb2.IkeAdmission:
    return agent_pb2.IkeAdmission(
        half_open=report.half_open,
        preauth_fragment_bytes=report.preauth_fragment_bytes,
        cookies_sent=report.cookies_sent,
        limits=[
            agent_pb2.AdmissionLimit(name=limit.name, value=limit.value, refused=limit.refused)
            for limit in report.limits
        ],
    )


_IKE_VERSION = {IkeVersion.V2: plan_pb2.IKE_V2, IkeVersion.V1: plan_pb2.IKE_V1}


def ike_sa_to_proto(sa: IkeSaReport) -> agent_pb2.IkeSaStatus:
    msg = agent_pb2.IkeSaStatus(
        peer=sa.peer,
        state=sa.state,
        spi_i=sa.spi_i,
        spi_r=sa.spi_r,
        proposal=sa.proposal,
        local_address=sa.local_address,
        remote_address=sa.remote_address,
        initiator=sa.initiator,
        nat_detected=sa.nat is NatState.DETECTED,
        nat=_NAT[sa.nat],
        established_at=sa.established_at,
        rekeyed_at=sa.rekeyed_at,
        next_rekey_at=sa.next_rekey_at,
        last_liveness_at=sa.last_liveness_at,
        last_error=sa.last_error,
        unauthenticated_failures=sa.unauthenticated_failures,
        last_unauthenticated_failure=sa.last_unauthenticated_failure,
        ike_version=_IKE_VERSION[sa.ike_version],
    )
    for c in sa.children:
        msg.children.add(
            name=c.name,
            state=c.state,
            spi_in=c.spi_in,
            spi_out=c.spi_out,
            proposal=c.proposal,
            mode=str(c.mode),
            local_ts=list(c.local_ts),
            remote_ts=list(c.remote_ts),
            established_at=c.established_at,
            rekeyed_at=c.rekeyed_at,
            next_rekey_at=c.next_rekey_at,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            packets_in=c.packets_in,
            packets_out=c.packets_out,
            replay_drops=c.replay_drops,
            integrity_failures=c.integrity_failures,
            policy_drops=c.policy_drops,
        )
    return msg


_NAT = {
    NatState.UNSPECIFIED: agent_pb2.IkeSaStatus.NAT_UNSPECIFIED,
    NatState.NONE: agent_pb2.IkeSaStatus.NONE,
    NatState.DETECTED: agent_pb2.IkeSaStatus.DETECTED,
    NatState.FORCED: agent_pb2.IkeSaStatus.FORCED,
}


def certificates_to_proto(certs: Iterable[CertificateExpiry]) -> list[agent_pb2.CertificateExpiry]:
    return [
        agent_pb2.CertificateExpiry(
            kind=agent_pb2.CertificateExpiry.Kind.Value(c.kind.name),
            not_after=c.not_after,
            subject=c.subject,
            not_before=c.not_before,
        )
        for c in certs
    ]


def problems_to_proto(problems: Iterable[Problem]) -> list[agent_pb2.Problem]:
    return [
        agent_pb2.Problem(
            kind=agent_pb2.Problem.Kind.Value(p.kind.name),
            subject=p.subject,
            message=p.message,
            since=p.since,
        )
        for p in problems
    ]


def drops_to_proto(drops: Iterable[DropCount]) -> list[agent_pb2.DropCount]:
    return [
        agent_pb2.DropCount(
            layer=agent_pb2.DropCount.Layer.Value(d.layer.name),
            reason=agent_pb2.DropCount.Reason.Value(d.reason.name),
            count=d.count,
        )
        for d in drops
    ]


def unmatched_to_proto(report: UnmatchedReport) -> agent_pb2.UnmatchedIkeSaInit:
    return agent_pb2.UnmatchedIkeSaInit(
        count=report.count,
        recent=[
            agent_pb2.UnmatchedSource(
                address=s.address, port=s.port, count=s.count, last_at=s.last_at
            )
            for s in report.recent
        ],
    )


def event_to_proto(event: SaEventReport) -> agent_pb2.StatusEvent:
    return agent_pb2.StatusEvent(
        time=event.time,
        sa_event=agent_pb2.SaEvent(kind=event.kind, peer=event.peer, detail=event.detail),
    )


def rekey_target_from_proto(target: int) -> RekeyTarget:
    if target == agent_pb2.RekeyRequest.IKE:
        return RekeyTarget.IKE
    if target == agent_pb2.RekeyRequest.CHILD:
        return RekeyTarget.CHILD
    return RekeyTarget.BOTH


def rekey_results_to_proto(results: Iterable[RekeyOutcome]) -> agent_pb2.RekeyResponse:
    return agent_pb2.RekeyResponse(
        results=[agent_pb2.RekeyResult(peer=r.peer, ok=r.ok, detail=r.detail) for r in results]
    )


def liveness_results_to_proto(
    results: Iterable[LivenessOutcome],
) -> agent_pb2.CheckLivenessResponse:
    return agent_pb2.CheckLivenessResponse(
        results=[
            agent_pb2.LivenessResult(
                peer=r.peer,
                answered=r.answered,
                round_trip_seconds=r.round_trip,
                detail=r.detail,
            )
            for r in results
        ]
    )
