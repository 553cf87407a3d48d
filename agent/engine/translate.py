"""Pure conversions between the plan, the IKE core and the ESP data plane.

The plan speaks in its own model (:mod:`..plan`), IKE in IkeConfig / ChildConfig and its
events, the data plane in SPD entries and SaParams. Nothing here does I/O or keeps
state, so every conversion is tested on its own; a plan the IKE core cannot express
raises :class:`PeerConfigError` naming the peer and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..esp.ah import AhParams
from ..esp.sa import Lifetime, SaParams
from ..esp.sa import Mode as EspMode
from ..esp.spd import Action, Selector, SpdEntry, TrafficSelector
from ..esp.transforms import Encryption, Integrity
from ..ike.config import ChildConfig, IkeConfig, selector
from ..ike.config import Identity as IkeIdentity
from ..ike.config import Mode as IkeMode
from ..ike.constants import EncrId, IdType, IntegId, ProtocolId
from ..ike.constants import TransformType as IkeTransformType
from ..ike.errors import LocalError, UnsupportedTransform
from ..ike.events import ChildSaEstablished
from ..ike.payloads import TrafficSelector as IkeTrafficSelector
from ..ike.proposals import AhProposal, EspProposal, IkeProposal
from ..ike.sa_payload import Transform as IkeTransform
from ..ike.signatures import CertificateAuth, SigningKey, identity_in_certificate
from ..ike.tasks.child_create import AH_NAT
from ..ike.traffic_selectors import format_selector
from ..ike.v1.config import (
    DEFAULT_CHILD_LIFETIME,
    ExchangeMode,
    IkeV1Config,
    Phase1Proposal,
    aes_cbc,
)
from ..ike.v1.constants import P1Hash
from ..io.dataplane_model import ChildSaParams, Encap
from ..io.tunnel_mtu import AEAD_GCM16, CBC_SHA256, EspOverhead
from ..io.udp import NATT_PORT
from ..plan import (
    AgentPlan,
    AuthMethod,
    Identity,
    IkeVersion,
    IPNetwork,
    Peer,
    Proposal,
    SpdAction,
    TransformType,
)
from ..plan import Mode as PlanMode

RETRANSMIT_TIMEOUT = 1.0
"""Seconds before the first IKE retransmission (RFC 7296 section 2.1 leaves it open)."""
MIN_RETRANSMIT_TRIES = 2
MAX_RETRANSMIT_TRIES = 8


T = TypeVar("T")


class PeerConfigError(ValueError):
    """A peer of a valid plan that this engine cannot turn into an IKE configuration."""


class CredentialError(ValueError):
    """The agent's own IKE certificate or key cannot be used."""


@dataclass(frozen=True)
class IkeCredentials:
    """The agent's own IKE certificate and private key (issued at enrolment), used for
    every peer the plan authenticates with certificates (RFC 7427)."""

    certificate: x509.Certificate
    private_key: SigningKey = field(repr=False)
    source: str = ""
    """Where they were loaded from, for error messages."""

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, source: str = "") -> IkeCredentials:
        where = f" ({source})" if source else ""
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise CredentialError(f"IKE certificate{where} is not PEM: {exc}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, None)
        except (ValueError, TypeError) as exc:
            raise CredentialError(f"IKE key{where} is not an unencrypted PEM key: {exc}") from None
        if not isinstance(key, SigningKey):
            raise CredentialError(f"IKE key{where}: unsupported key type {type(key).__name__}")
        ours = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if ours != theirs:
            raise CredentialError(f"IKE key{where} does not belong to the IKE certificate")
        return cls(certificate, key, source)


def ike_identity(identity: Identity) -> IkeIdentity:
    """RFC 7296 section 3.5: the plan's typed identity as the IKE core carries it (both
    number their ID types as IANA does)."""
    kind = IdType(int(identity.type))
    value = identity.value
    if kind in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
        return IkeIdentity(kind, ipaddress.ip_address(value).packed)
    if kind == IdType.ID_DER_ASN1_DN:
        return IkeIdentity.parse(value)
    return IkeIdentity(kind, value.encode())


def _transforms(proposal: Proposal) -> list[IkeTransform]:
    """A plan proposal's transform IDs as the IKE core reads them (a key length of 0 in
    the plan: no Key Length attribute)."""
    return [
        IkeTransform.with_key_length(IkeTransformType(t.type), t.id, t.key_length or None)
        for t in proposal.transforms
    ]


def ike_proposals(peer: Peer) -> tuple[IkeProposal, ...]:
    """The peer's IKE proposals, built from their transform IDs; the operator's text is
    only shown (where it says something else, the IDs win)."""
    return _built(peer, peer.ike_proposals, IkeProposal.from_transforms)


def esp_proposals(peer: Peer) -> tuple[EspProposal, ...]:
    """The peer's ESP proposals, built from their transform IDs like ike_proposals."""
    return _built(peer, peer.esp_proposals, EspProposal.from_transforms)


def ah_proposals(peer: Peer) -> tuple[AhProposal, ...]:
    """The peer's AH proposals (RFC 4302), built from their transform IDs likewise."""
    return _built(peer, peer.ah_proposals, AhProposal.from_transforms)


def _built(
    peer: Peer,
    proposals: tuple[Proposal, ...],
    build: Callable[[list[IkeTransform]], list[T]],
) -> tuple[T, ...]:
    out: list[T] = []
    for proposal in proposals:
        try:
            out.extend(build(_transforms(proposal)))
        except (LocalError, UnsupportedTransform) as exc:
            raise PeerConfigError(
                f"peer {peer.name}: proposal {proposal.text!r} cannot be used: {exc}"
            ) from None
    return tuple(dict.fromkeys(out))


def _selectors(
    networks: tuple[IPNetwork, ...], fallback: str | None
) -> tuple[IkeTrafficSelector, ...]:
    if not networks and fallback is not None:
        networks = (ipaddress.ip_network(fallback),)
    return tuple(selector(n) for n in networks)


def retransmit_tries(timeout_seconds: int) -> int:
    """How many retransmissions (timeout doubling from RETRANSMIT_TIMEOUT, section 2.1)
    make the whole exchange last about the plan's DPD timeout before the peer is dead."""
    if timeout_seconds <= 0:
        return 4
    # Total wait of an exchange is RETRANSMIT_TIMEOUT * 2 ** (tries + 1).
    tries = int(math.log2(max(timeout_seconds / RETRANSMIT_TIMEOUT, 1.0))) - 1
    return max(MIN_RETRANSMIT_TRIES, min(MAX_RETRANSMIT_TRIES, tries))


def ca_fingerprint(certificate: x509.Certificate) -> str:
    """Hex SHA-256 of a certificate's DER encoding, as plans name a peer's CA."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_auth(
    plan: AgentPlan, peer: Peer, credentials: IkeCredentials | None
) -> CertificateAuth:
    """Our certificate and key, with only the plan's trust anchor this peer's credential
    names (its CA fingerprint): a certificate from another fleet CA is not accepted."""
    if credentials is None:
        raise PeerConfigError(
            f"peer {peer.name}: pubkey authentication needs this agent's IKE certificate "
            "and key, and none are loaded (enrol the agent so ike.pem and ike.key are in "
            "its state dir)"
        )
    wanted = {f.lower().replace(":", "") for f in peer.auth.ca_fingerprints if f}
    if not wanted:
        raise PeerConfigError(f"peer {peer.name}: pubkey credential names no CA fingerprint")
    anchors = []
    for index, pem in enumerate(plan.trust_anchors):
        try:
            anchor = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise PeerConfigError(
                f"peer {peer.name}: plan trust anchor {index} is not a PEM certificate"
            ) from None
        if ca_fingerprint(anchor) in wanted:
            anchors.append(anchor)
    if not anchors:
        shown = ", ".join(sorted(f[:16] + "…" for f in wanted))
        raise PeerConfigError(
            f"peer {peer.name}: no plan trust anchor has the CA fingerprint {shown} "
            f"({len(plan.trust_anchors)} anchors in the plan)"
        )
    local_id = ike_identity(peer.local_id)
    if not identity_in_certificate(local_id.id_type, local_id.data, credentials.certificate):
        raise PeerConfigError(
            f"peer {peer.name}: our IKE certificate "
            f"({credentials.certificate.subject.rfc4514_string()}) does not carry the local "
            f"identity {local_id} in its subjectAltName or subject"
        )
    try:
        return CertificateAuth(
            credentials.certificate, credentials.private_key, tuple(anchors), revoked=plan.revoked
        )
    except LocalError as exc:
        raise PeerConfigError(f"peer {peer.name}: {exc}") from None


_IKE_MODE = {PlanMode.TUNNEL: IkeMode.TUNNEL, PlanMode.TRANSPORT: IkeMode.TRANSPORT}
"""The plan's mode as IKE negotiates it (RFC 7296 section 1.3.1)."""
_ESP_MODE = {IkeMode.TUNNEL: EspMode.TUNNEL, IkeMode.TRANSPORT: EspMode.TRANSPORT}
"""The negotiated mode as the ESP core applies it (RFC 4303 section 3.1)."""


def peer_config(
    plan: AgentPlan, peer: Peer, credentials: IkeCredentials | None = None
) -> IkeConfig | IkeV1Config:
    """The configuration of the IKE core the plan names for ``peer`` (its
    ``ike_version``): :func:`ike_config` or :func:`ike_v1_config`."""
    if peer.ike_version is IkeVersion.V1:
        return ike_v1_config(plan, peer, credentials)
    return ike_config(plan, peer, credentials)


def _certificates(
    plan: AgentPlan, peer: Peer, credentials: IkeCredentials | None
) -> CertificateAuth | None:
    """Our certificate for a peer that authenticates with certificates; None with a
    pre-shared key. The same for either IKE version."""
    if peer.auth.method is AuthMethod.PUBKEY:
        return certificate_auth(plan, peer, credentials)
    if peer.auth.method is not AuthMethod.PSK:
        raise PeerConfigError(
            f"peer {peer.name}: {peer.auth.method.name.lower()} authentication is not supported"
        )
    return None


def _child_config(plan: AgentPlan, peer: Peer) -> ChildConfig:
    """The peer's child SA policy, the same for either IKE version: ESP and AH proposals,
    traffic selectors, mode. Raises LocalError for what the IKE core refuses."""
    local = local_address(plan, peer)
    remote = str(peer.remote_addresses[0]) if peer.remote_addresses else None
    return ChildConfig(
        peer.name,
        esp_proposals(peer),
        _selectors(peer.local_ts, local),
        _selectors(peer.remote_ts, remote),
        mode=_IKE_MODE[peer.mode],
        ah_proposals=ah_proposals(peer),
    )


def ike_config(plan: AgentPlan, peer: Peer, credentials: IkeCredentials | None = None) -> IkeConfig:
    """The IKE SA and first child SA configuration for one plan peer; ``credentials``
    (our IKE certificate and key) serve the peers that authenticate with certificates."""
    if peer.ike_version is not IkeVersion.V2:
        raise PeerConfigError(f"peer {peer.name}: an IKEv1 peer has no IKEv2 configuration")
    certificates = _certificates(plan, peer, credentials)
    try:
        child = _child_config(plan, peer)
        return IkeConfig(
            ike_identity(peer.local_id),
            ike_identity(peer.remote_id),
            peer.auth.psk if certificates is None else b"",
            ike_proposals(peer),
            child,
            retransmit_timeout=RETRANSMIT_TIMEOUT,
            retransmit_tries=retransmit_tries(peer.dpd.timeout_seconds),
            force_encap=peer.nat.force_encap,
            dpd_delay=float(peer.dpd.delay_seconds) if peer.dpd.delay_seconds else None,
            certificates=certificates,
            accepted_psks=peer.auth.accepted_psks if certificates is None else (),
            fragmentation=peer.ike_fragmentation,
            fragment_size=peer.ike_fragment_size,
        )
    except LocalError as exc:
        raise PeerConfigError(f"peer {peer.name}: {exc}") from None


_P1_HASHES = {
    IntegId.HMAC_SHA1_96: P1Hash.SHA1,
    IntegId.HMAC_SHA2_256_128: P1Hash.SHA2_256,
    IntegId.HMAC_SHA2_384_192: P1Hash.SHA2_384,
    IntegId.HMAC_SHA2_512_256: P1Hash.SHA2_512,
}
"""The plan's integrity transform of an IKEv1 proposal names the phase 1 hash (RFC 2409
Appendix A; its HMAC is the prf, section 5), as strongSwan reads ``aes256-sha256``."""


def ike_v1_proposals(peer: Peer) -> tuple[Phase1Proposal, ...]:
    """RFC 2409 Appendix A: each phase 1 transform is one cipher, one hash, one group;
    a plan proposal naming several of a kind offers every combination, in its order."""
    out: list[Phase1Proposal] = []
    for proposal in peer.ike_proposals:
        by_type: dict[TransformType, list[tuple[int, int]]] = {t: [] for t in TransformType}
        for t in proposal.transforms:
            by_type[t.type].append((t.id, t.key_length))
        ciphers, hashes = by_type[TransformType.ENCR], by_type[TransformType.INTEG]
        try:
            if any(i != EncrId.AES_CBC for i, _ in ciphers):
                raise UnsupportedTransform("IKEv1 phase 1 here takes AES-CBC only")
            unknown = [i for i, _ in hashes if i not in _P1_HASHES]
            if unknown:
                raise UnsupportedTransform(f"integrity {unknown[0]} names no IKEv1 hash")
            if not (ciphers and hashes):
                raise LocalError("an IKEv1 proposal needs AES-CBC and a hash")
            out.extend(
                Phase1Proposal(aes_cbc(bits or 128), _P1_HASHES[IntegId(integ)], group)
                for _, bits in ciphers
                for integ, _ in hashes
                for group, _ in by_type[TransformType.DH]
            )
        except (LocalError, UnsupportedTransform) as exc:
            raise PeerConfigError(
                f"peer {peer.name}: IKEv1 proposal {proposal.text!r} cannot be used: {exc}"
            ) from None
    return tuple(dict.fromkeys(out))


def ike_v1_config(
    plan: AgentPlan, peer: Peer, credentials: IkeCredentials | None = None
) -> IkeV1Config:
    """The ISAKMP SA and Quick mode configuration for an IKEv1 plan peer (RFC 2409):
    Main mode, or Aggressive mode where the plan says so; a pre-shared key, or our
    certificate (RSA or ECDSA signatures, the auth method following the key). The
    offered lifetimes are the hard ones: the engine replaces each SA earlier, at its
    jittered rekey time (IKEv1 has no rekey exchange)."""
    if peer.ike_version is not IkeVersion.V1:
        raise PeerConfigError(f"peer {peer.name}: an IKEv2 peer has no IKEv1 configuration")
    certificates = _certificates(plan, peer, credentials)
    life = peer.lifetimes
    limits = child_lifetime(peer)
    try:
        child = _child_config(plan, peer)
        return IkeV1Config(
            ike_identity(peer.local_id),
            ike_identity(peer.remote_id),
            peer.auth.psk if certificates is None else b"",
            ike_v1_proposals(peer),
            child,
            phase1_mode=ExchangeMode.AGGRESSIVE if peer.ike_aggressive else ExchangeMode.MAIN,
            certificates=certificates,
            ike_lifetime=math.ceil(life.ike_rekey_seconds * 1.1 + life.rand_seconds),
            child_lifetime=math.ceil(limits.hard_seconds or DEFAULT_CHILD_LIFETIME),
            # RFC 2407 section 4.5: the volume limit offered in kilobytes, the hard one
            # (the engine rekeys at the plan's soft limit first).
            child_lifetime_kb=math.ceil(limits.hard_bytes / 1024) if limits.hard_bytes else None,
            retransmit_timeout=RETRANSMIT_TIMEOUT,
            retransmit_tries=retransmit_tries(peer.dpd.timeout_seconds),
            force_encap=peer.nat.force_encap,
            dpd_delay=float(peer.dpd.delay_seconds) if peer.dpd.delay_seconds else None,
            accepted_psks=peer.auth.accepted_psks if certificates is None else (),
        )
    except LocalError as exc:
        raise PeerConfigError(f"peer {peer.name}: {exc}") from None


def local_address(plan: AgentPlan, peer: Peer) -> str | None:
    if peer.local_address is not None:
        return str(peer.local_address)
    if not peer.remote_addresses:  # a dynamic address: either family may come
        return str(plan.addresses[0]) if plan.addresses else None
    for address in plan.addresses:
        if address.version == peer.remote_addresses[0].version:
            return str(address)
    return None


def spd_entries(plan: AgentPlan) -> list[SpdEntry]:
    """The plan's ordered SPD as the data plane's; a protect entry's SA set is its peer's
    (one child SA per peer)."""
    out: list[SpdEntry] = []
    for entry in plan.spd:
        sel = entry.selector
        ports = sel.protocol in (6, 17, 132, 136)
        selector = Selector(
            sel.local_prefix,
            sel.remote_prefix,
            sel.protocol or None,
            sel.local_ports if ports and sel.local_ports != (0, 65535) else None,
            sel.remote_ports if ports and sel.remote_ports != (0, 65535) else None,
        )
        action = {
            SpdAction.PROTECT: Action.PROTECT,
            SpdAction.BYPASS: Action.BYPASS,
            SpdAction.DISCARD: Action.DISCARD,
        }[entry.action]
        policy = entry.peer if entry.action is SpdAction.PROTECT else ""
        out.append(SpdEntry(selector, action, policy, entry.name))
    return out


def protected_prefixes(plan: AgentPlan) -> list[str]:
    """Remote prefixes routed into the TUN device: those of protect entries."""
    seen = dict.fromkeys(
        str(e.selector.remote_prefix) for e in plan.spd if e.action is SpdAction.PROTECT
    )
    return list(seen)


def esp_overhead(plan: AgentPlan) -> EspOverhead:
    """The costliest ESP transform any peer may negotiate (for the TUN MTU); an AH
    transform counts as an ESP one with its IV and ICV and no padding beyond 4-byte
    words, which costs 6 octets more than AH's header does (RFC 4302 section 2), so
    AH packets fit too."""
    worst = AEAD_GCM16
    for peer in plan.peers:
        for p in peer.ah_proposals:
            for t in p.transforms:
                if t.type is TransformType.INTEG:
                    integrity = Integrity.for_transform(t.id)
                    cost = EspOverhead(iv=integrity.iv_length, block=4, icv=integrity.icv_length)
                    if cost.iv + cost.icv > worst.iv + worst.icv:
                        worst = cost
        for p in peer.esp_proposals:
            for t in p.transforms:
                if t.type is TransformType.INTEG:
                    # Only AES-CBC takes an integrity transform (a validated plan).
                    icv = Integrity.for_transform(t.id).icv_length
                    cost = dataclasses.replace(CBC_SHA256, icv=icv)
                    if cost.iv + cost.icv > worst.iv + worst.icv:
                        worst = cost
    return worst


def child_lifetime(
    peer: Peer, agreed_seconds: int | None = None, agreed_kilobytes: int | None = None
) -> Lifetime:
    """Data-plane limits of a child SA: the plan's volume limits are soft (the engine
    rekeys), hard limits sit 10% later; time is hard only, as the engine schedules the
    time-based rekey itself (with jitter) and the SA must outlive a late one.

    ``agreed_*``: what an IKEv1 Quick mode settled on, which a responder may have made
    shorter than offered (RESPONDER-LIFETIME, RFC 2407 section 4.6.3.1): the peer's SA
    ends then, so ours does no later (and a soft volume limit comes before it)."""
    life = peer.lifetimes
    hard_seconds = life.child_rekey_seconds * 1.1 + life.rand_seconds
    soft_bytes = life.child_rekey_bytes or None
    hard_bytes = int(soft_bytes * 1.1) if soft_bytes else None
    if agreed_seconds is not None:
        hard_seconds = min(hard_seconds, agreed_seconds)
    if agreed_kilobytes is not None and (
        hard_bytes is None or agreed_kilobytes * 1024 < hard_bytes
    ):
        hard_bytes = agreed_kilobytes * 1024
        soft_bytes = int(hard_bytes / 1.1)
    soft_packets = life.child_rekey_packets or None
    return Lifetime(
        soft_bytes=soft_bytes,
        hard_bytes=hard_bytes,
        soft_packets=soft_packets,
        hard_packets=int(soft_packets * 1.1) if soft_packets else None,
        hard_seconds=hard_seconds,
    )


def sa_params(
    event: ChildSaEstablished, lifetime: Lifetime, local: str | None, remote: str
) -> tuple[ChildSaParams, ChildSaParams]:
    """Inbound and outbound SA parameters from the keys IKE handed out (section 2.17):
    ESP ``SaParams``, or ``AhParams`` for an AH child (``event.protocol``)."""
    if event.protocol == ProtocolId.AH:
        return ah_params(event, lifetime, local, remote)
    if event.protocol != ProtocolId.ESP:
        raise PeerConfigError(f"child {event.name}: IPsec protocol {event.protocol} unknown")
    # The transform IDs IKE negotiated, as the ESP core names them (RFC 7296 section 3.3.2).
    key_bits = event.encr_key_bits if event.encr_id != EncrId.CHACHA20_POLY1305 else 256
    try:
        encryption = Encryption.for_transform(event.encr_id, key_bits)
        integrity = None
        if event.integ_id is not None and event.integ_id != IntegId.NONE:
            integrity = Integrity.for_transform(event.integ_id)
    except ValueError as exc:
        raise PeerConfigError(f"child {event.name}: {exc}") from None
    mode = _ESP_MODE[event.mode]
    here = local or "*"
    inbound = SaParams(
        int.from_bytes(event.spi_in, "big"),
        encryption,
        event.encr_key_in,
        integrity,
        event.integ_key_in,
        mode=mode,
        esn=event.esn,
        lifetime=lifetime,
        src=remote,
        dst=here,
    )
    outbound = SaParams(
        int.from_bytes(event.spi_out, "big"),
        encryption,
        event.encr_key_out,
        integrity,
        event.integ_key_out,
        mode=mode,
        esn=event.esn,
        lifetime=lifetime,
        src=here,
        dst=remote,
    )
    return inbound, outbound


def ah_params(
    event: ChildSaEstablished, lifetime: Lifetime, local: str | None, remote: str
) -> tuple[AhParams, AhParams]:
    """Inbound and outbound AH SA parameters (RFC 4302): integrity only, the key of each
    direction from IKE (an AES-GMAC key ends with its salt, RFC 4543 section 7). A
    tunnel-mode AH SA builds its outer header, so it needs our outer address."""
    if event.integ_id is None:
        raise PeerConfigError(f"child {event.name}: an AH child without an integrity transform")
    try:
        integrity = Integrity.for_transform(event.integ_id)
    except ValueError as exc:
        raise PeerConfigError(f"child {event.name}: {exc}") from None
    mode = _ESP_MODE[event.mode]
    if mode is EspMode.TUNNEL and local is None:
        raise PeerConfigError(
            f"child {event.name}: AH tunnel mode needs our outer address towards {remote}"
        )
    here = local or "*"
    spi_in = int.from_bytes(event.spi_in, "big")
    spi_out = int.from_bytes(event.spi_out, "big")
    try:
        inbound = AhParams(
            spi_in, integrity, event.integ_key_in, mode, event.esn, lifetime, remote, here
        )
        outbound = AhParams(
            spi_out, integrity, event.integ_key_out, mode, event.esn, lifetime, here, remote
        )
    except ValueError as exc:
        raise PeerConfigError(f"child {event.name}: {exc}") from None
    return inbound, outbound


def esp_selectors(selectors: tuple[IkeTrafficSelector, ...]) -> list[TrafficSelector]:
    return [
        TrafficSelector(
            s.start_address.version,
            int(s.start_address),
            int(s.end_address),
            s.ip_protocol,
            s.start_port,
            s.end_port,
        )
        for s in selectors
    ]


def describe_selectors(selectors: tuple[IkeTrafficSelector, ...]) -> tuple[str, ...]:
    """Negotiated selectors as status shows them, in the IKE core's notation."""
    return tuple(format_selector(s) for s in selectors)


def esp_path(
    encap: bool, ike_peer: tuple[str, int] | None, remote: str, raw: bool, *, ah: bool = False
) -> tuple[str | tuple[str, int], Encap, tuple[str, int]]:
    """Where a child SA's ESP goes: (the data plane's peer argument, its encapsulation,
    the path recorded for hand-overs). With a NAT found (or faked by force_encap) ESP
    follows the IKE SA to its NAT-T port in UDP (RFC 3948); without one it is plain IP
    protocol 50 (RFC 7296 section 2.23) when the engine has a raw ESP socket, else UDP
    to port 4500 (in-memory tests, where both ends then agree on UDP).

    AH (``ah``) is always plain IP protocol 51; with a NAT found it has no path at all
    (PeerConfigError beginning ``AH_NAT``, as the IKE core words it)."""
    if ah:
        if encap:
            raise PeerConfigError(
                f"{AH_NAT}the IKE SA with {remote} found a NAT (or UDP "
                "encapsulation is forced), and AH's ICV covers the addresses a NAT rewrites"
            )
        return remote, Encap.RAW, (remote, 0)
    if encap and ike_peer is not None:
        return ike_peer, Encap.UDP, ike_peer
    if raw:
        return remote, Encap.RAW, (remote, 0)
    return (remote, NATT_PORT), Encap.UDP, (remote, NATT_PORT)
