"""The two algorithm registries agree: what the controller writes into a plan (its proposal
keywords, controller/planner/proposals.py) is what the agent negotiates (the IKE core's
registry, agent/ike/transforms.py), and what IKE negotiates for ESP the data plane
implements (agent/esp/transforms.py). The plan's transform IDs (RFC 7296 section 3.3.2,
protos/plan.proto) are the only contract; this test may import both sides."""

from __future__ import annotations

import itertools

import pytest

from vpnfleet.agent.esp.transforms import Encryption, Integrity
from vpnfleet.agent.ike.constants import TransformType
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.sa_payload import Transform as IkeTransform
from vpnfleet.agent.ike.transforms import (
    NEGOTIABLE,
    PROPOSAL_TOKENS,
    encr_for,
    integ_for,
)
from vpnfleet.controller.planner import Proposal, ProposalKind, parse_proposal
from vpnfleet.controller.planner.proposals import TOKENS


def _agent_transforms(proposal: Proposal) -> list[IkeTransform]:
    # What agent/engine/translate.py does with a plan's transforms (key length 0: none).
    return [
        IkeTransform.with_key_length(TransformType(t.type), t.id, t.key_length or None)
        for t in proposal.transforms
    ]


def test_every_controller_keyword_names_the_transform_the_agent_knows_by_it() -> None:
    controller = {
        token: (t.transform.type, t.transform.id, t.transform.key_length or None)
        for token, t in TOKENS.items()
    }
    agent = {token: (int(k), int(id), bits) for token, (k, id, bits) in PROPOSAL_TOKENS.items()}
    assert controller == agent


def test_every_transform_the_agent_negotiates_has_a_controller_keyword() -> None:
    written = {
        (t.transform.type, t.transform.id, t.transform.key_length or None) for t in TOKENS.values()
    }
    negotiated = {
        (int(k), int(id), bits) for (k, id), lengths in NEGOTIABLE.items() for bits in lengths
    }
    assert written == negotiated


def test_both_sides_agree_which_ciphers_are_aead() -> None:
    for token, entry in TOKENS.items():
        t = entry.transform
        if t.type == TransformType.ENCR:
            assert entry.aead == encr_for(t.id, t.key_length or None).is_aead, token


def _keywords(kind: TransformType) -> list[str]:
    return [token for token, (k, _, _) in PROPOSAL_TOKENS.items() if k is kind]


def _ike_texts() -> list[str]:
    texts = []
    for encr, dh in itertools.product(_keywords(TransformType.ENCR), _keywords(TransformType.DH)):
        if encr_for(*PROPOSAL_TOKENS[encr][1:]).is_aead:
            texts += [f"{encr}-{prf}-{dh}" for prf in _keywords(TransformType.PRF)]
        else:
            texts += [f"{encr}-{integ}-{dh}" for integ in _keywords(TransformType.INTEG)]
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


def test_what_ike_negotiates_for_esp_the_data_plane_implements() -> None:
    for (kind, id), lengths in NEGOTIABLE.items():
        for bits in lengths:
            if kind is TransformType.ENCR:
                encr = encr_for(id, bits)
                esp = Encryption.for_transform(id, encr.key_bits)
                assert (esp.is_aead, esp.key_length) == (encr.is_aead, encr.key_length)
            elif kind is TransformType.INTEG:
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
