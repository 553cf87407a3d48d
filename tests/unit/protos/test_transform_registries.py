"""The two algorithm registries agree: what the controller writes into a plan (its proposal
keywords, controller/planner/proposals.py) is what the agent negotiates (the IKE core's
registry, agent/ike/transforms.py), and what IKE negotiates for ESP the data plane
implements (agent/esp/transforms.py). Keywords carry an IKE version dimension: what
only IKEv1 peers may name is in the agent's registry too, and every IKEv1 proposal the
controller writes passes the agent's plan validation. The plan's transform IDs (RFC
7296 section 3.3.2, protos/plan.proto) are the only contract; this test may import
both sides."""

from __future__ import annotations

import itertools

import pytest

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.esp.transforms import Encryption, Integrity
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.ike.constants import ProtocolId, TransformType
from vpnfleet.agent.ike.proposals import AhProposal, EspProposal, IkeProposal
from vpnfleet.agent.ike.sa_payload import Transform as IkeTransform
from vpnfleet.agent.ike.transforms import (
    INTEGS,
    NEGOTIABLE,
    PRFS,
    PROPOSAL_TOKENS,
    encr_for,
    integ_for,
    negotiable,
    transform_keyword,
)
from vpnfleet.controller.planner import (
    IkeVersion,
    Proposal,
    ProposalKind,
    Transform,
    parse_proposal,
)
from vpnfleet.controller.planner.proposals import TOKENS, Token
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash


def _agent_transforms(proposal: Proposal) -> list[IkeTransform]:
    # What agent/engine/translate.py does with a plan's transforms (key length 0: none).
    return [
        IkeTransform.with_key_length(TransformType(t.type), t.id, t.key_length or None)
        for t in proposal.transforms
    ]


def _ids(token: Token) -> tuple[int, int, int | None]:
    t = token.transform
    return (t.type, t.id, t.key_length or None)


IKEV2_TOKENS = {name: t for name, t in TOKENS.items() if IkeVersion.V2 in t.versions}
IKEV1_ONLY_TOKENS = {
    name: t
    for name, t in TOKENS.items()
    if any(t.allowed_versions(k) == {IkeVersion.V1} for k in t.kinds)
}


def test_every_controller_keyword_names_the_transform_the_agent_knows_by_it() -> None:
    controller = {token: _ids(t) for token, t in IKEV2_TOKENS.items()}
    agent = {token: (int(k), int(id), bits) for token, (k, id, bits) in PROPOSAL_TOKENS.items()}
    assert controller == agent


def test_every_ikev1_only_keyword_names_a_transform_of_the_agent_registry() -> None:
    """What only IKEv1 peers' IKE SAs may name (the SHA-1 phase 1 hash, RFC 2409 Appendix
    A) is in the IKE core's registry under the same keyword; IKEv2 offers it for AH only."""
    assert set(IKEV1_ONLY_TOKENS) == {"sha1"}
    for token, entry in IKEV1_ONLY_TOKENS.items():
        kind, id, bits = _ids(entry)
        assert transform_keyword(kind, id, bits) == token
        assert (kind, id) == (TransformType.INTEG, INTEGS[id].id)
        assert INTEGS[id].implied_prf in PRFS
        assert not negotiable(kind, id, bits, ProtocolId.IKE)
        assert not negotiable(kind, id, bits, ProtocolId.ESP)
        assert negotiable(kind, id, bits, ProtocolId.AH)


def test_each_kind_of_proposal_takes_the_same_integrity_on_both_sides() -> None:
    """The controller's AH-only and IKE/ESP integrity keywords are the agent's per
    protocol (AES-GMAC and HMAC-SHA1-96 for AH only, RFC 4543 and RFC 2404)."""
    kinds = {
        ProposalKind.IKE: ProtocolId.IKE,
        ProposalKind.ESP: ProtocolId.ESP,
        ProposalKind.AH: ProtocolId.AH,
    }
    for token, entry in TOKENS.items():
        kind, id, bits = _ids(entry)
        if kind != TransformType.INTEG:
            continue
        for planner_kind, protocol in kinds.items():
            v2 = IkeVersion.V2 in entry.allowed_versions(planner_kind)
            written = planner_kind in entry.kinds and v2
            assert written == negotiable(kind, id, bits, protocol), (token, planner_kind)


def test_every_transform_the_agent_negotiates_has_a_controller_keyword() -> None:
    written = {_ids(t) for t in IKEV2_TOKENS.values()}
    negotiated = {
        (int(k), int(id), bits) for (k, id), lengths in NEGOTIABLE.items() for bits in lengths
    }
    assert written == negotiated


def test_both_sides_agree_which_ciphers_are_aead() -> None:
    for token, entry in TOKENS.items():
        t = entry.transform
        if t.type == TransformType.ENCR:
            assert entry.aead == encr_for(t.id, t.key_length or None).is_aead, token


def _keywords(kind: TransformType, protocol: ProtocolId = ProtocolId.ESP) -> list[str]:
    """The agent's keywords of one transform type that ``protocol``'s proposals take."""
    return [
        token
        for token, (k, id, bits) in PROPOSAL_TOKENS.items()
        if k is kind and negotiable(k, id, bits, protocol)
    ]


def _ike_texts() -> list[str]:
    texts = []
    for encr, dh in itertools.product(_keywords(TransformType.ENCR), _keywords(TransformType.DH)):
        if encr_for(*PROPOSAL_TOKENS[encr][1:]).is_aead:
            texts += [f"{encr}-{prf}-{dh}" for prf in _keywords(TransformType.PRF)]
        else:
            texts += [
                f"{encr}-{integ}-{dh}" for integ in _keywords(TransformType.INTEG, ProtocolId.IKE)
            ]
            texts += [f"{encr}-sha256-{prf}-{dh}" for prf in _keywords(TransformType.PRF)]
    return texts


def _esp_texts() -> list[str]:
    texts = []
    for encr in _keywords(TransformType.ENCR):
        aead = encr_for(*PROPOSAL_TOKENS[encr][1:]).is_aead
        bases = [encr] if aead else [f"{encr}-{i}" for i in _keywords(TransformType.INTEG)]
        for base in bases:
            texts += [base, f"{base}-esn", f"{base}-noesn"]
            texts += [f"{base}-{dh}" for dh in _keywords(TransformType.DH)]
    return texts


@pytest.mark.parametrize("text", _ike_texts())
def test_an_ike_proposal_means_the_same_on_both_sides(text: str) -> None:
    """The controller's transforms for a text build the proposal the agent reads from it
    (implied PRF included)."""
    from_ids = IkeProposal.from_transforms(
        _agent_transforms(parse_proposal(text, ProposalKind.IKE))
    )
    assert from_ids == [IkeProposal.parse(text)]


@pytest.mark.parametrize("text", _esp_texts())
def test_an_esp_proposal_means_the_same_on_both_sides(text: str) -> None:
    from_ids = EspProposal.from_transforms(
        _agent_transforms(parse_proposal(text, ProposalKind.ESP))
    )
    assert from_ids == [EspProposal.parse(text)]


def _ah_texts() -> list[str]:
    texts = []
    for integ in _keywords(TransformType.INTEG, ProtocolId.AH):
        texts += [integ, f"{integ}-esn", f"{integ}-noesn"]
        texts += [f"{integ}-{dh}" for dh in _keywords(TransformType.DH, ProtocolId.AH)]
    return texts


@pytest.mark.parametrize("text", _ah_texts())
def test_an_ah_proposal_means_the_same_on_both_sides(text: str) -> None:
    from_ids = AhProposal.from_transforms(_agent_transforms(parse_proposal(text, ProposalKind.AH)))
    assert from_ids == [AhProposal.parse(text)]


def _ikev1_texts(kind: ProposalKind) -> list[str]:
    """Every cipher-hash-group (IKE) or cipher[-hash][-group] (ESP) the controller lets an
    IKEv1 peer's proposal hold."""
    allowed = {
        name: t
        for name, t in TOKENS.items()
        if IkeVersion.V1 in t.versions and kind in t.kinds and name != "curve25519"
    }

    def of(type_: int) -> list[str]:
        return [name for name, t in allowed.items() if t.transform.type == type_]

    encr, integ, dh = of(TransformType.ENCR), of(TransformType.INTEG), of(TransformType.DH)
    if kind is ProposalKind.IKE:
        return [f"{e}-{i}-{d}" for e in encr if not allowed[e].aead for i in integ for d in dh]
    texts = []
    for e in encr:
        base = [e] if allowed[e].aead else [f"{e}-{i}" for i in integ]
        texts += base + [f"{b}-{d}" for b in base for d in dh]
    return texts


@pytest.mark.parametrize(
    ("kind", "text"),
    [(ProposalKind.IKE, t) for t in _ikev1_texts(ProposalKind.IKE)]
    + [(ProposalKind.ESP, t) for t in _ikev1_texts(ProposalKind.ESP)],
)
def test_an_ikev1_proposal_the_controller_writes_the_agent_takes(
    kind: ProposalKind, text: str
) -> None:
    """A plan the controller writes for an IKEv1 peer passes the agent's validation."""
    proposal = parse_proposal(text, kind, IkeVersion.V1)
    msg = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")])
    peer = msg.peers[0]
    peer.ike_version = plan_pb2.IKE_V1
    target = peer.ike_proposals if kind is ProposalKind.IKE else peer.esp_proposals
    if kind is ProposalKind.ESP:
        del peer.ike_proposals[:]
        ike = parse_proposal("aes256-sha256-modp2048", ProposalKind.IKE, IkeVersion.V1)
        peer.ike_proposals.add(text=ike.text, transforms=[_message(t) for t in ike.transforms])
    del target[:]
    target.add(text=text, transforms=[_message(t) for t in proposal.transforms])
    msg.content_hash = plan_content_hash(msg)
    (got,) = plan_from_proto(msg).peers
    proposals = got.ike_proposals if kind is ProposalKind.IKE else got.esp_proposals
    assert [p.text for p in proposals] == [text]


def _message(t: Transform) -> plan_pb2.Transform:
    return plan_pb2.Transform(type=t.type, id=t.id, key_length=t.key_length)


def test_what_ike_negotiates_for_esp_the_data_plane_implements() -> None:
    for (kind, id), lengths in NEGOTIABLE.items():
        for bits in lengths:
            if kind is TransformType.ENCR:
                encr = encr_for(id, bits)
                esp = Encryption.for_transform(id, encr.key_bits)
                assert (esp.is_aead, esp.key_length) == (encr.is_aead, encr.key_length)
            elif kind is TransformType.INTEG and negotiable(kind, id, bits, ProtocolId.ESP):
                integ = integ_for(id)
                esp_integ = Integrity.for_transform(id)
                assert (esp_integ.key_length, esp_integ.icv_length) == (
                    integ.key_length,
                    integ.icv_length,
                )


def test_every_data_plane_transform_is_negotiated() -> None:
    for encryption in Encryption:
        attribute = encr_for(encryption.transform_id, encryption.key_bits).key_attribute
        assert attribute in NEGOTIABLE[(TransformType.ENCR, encryption.transform_id)]
    for integrity in Integrity:
        assert (TransformType.INTEG, integrity.transform_id) in NEGOTIABLE
