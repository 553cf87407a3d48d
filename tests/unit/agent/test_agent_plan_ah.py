"""AH proposals in a plan the agent receives (plan.proto field 24): what it takes, what
it refuses (RFC 7296 section 3.3.3: AH carries INTEG, ESN and DH transforms only), and
the IKE child configuration it builds from them (AH offered before ESP)."""

from __future__ import annotations

import pytest

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine.translate import ike_config, sa_params
from vpnfleet.agent.esp.ah import AhParams
from vpnfleet.agent.esp.sa import Lifetime
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.ike.config import Mode
from vpnfleet.agent.ike.constants import ProtocolId
from vpnfleet.agent.ike.events import ChildSaEstablished
from vpnfleet.agent.ike.proposals import AhProposal, EspProposal
from vpnfleet.agent.plan import PlanRejected
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash


def _plan(*ah: list[tuple[int, int, int]], esp: bool = True) -> plan_pb2.NodePlan:
    msg = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")])
    peer = msg.peers[0]
    if not esp:
        del peer.esp_proposals[:]
    for i, transforms in enumerate(ah):
        peer.ah_proposals.add(
            text=f"ah{i}",
            transforms=[plan_pb2.Transform(type=t, id=n, key_length=k) for t, n, k in transforms],
        )
    msg.content_hash = plan_content_hash(msg)
    return msg


SHA256 = [(3, 12, 0), (5, 0, 0)]  # AUTH_HMAC_SHA2_256_128, no ESN
GMAC = [(3, 9, 0), (5, 1, 0)]  # AUTH_AES_128_GMAC (RFC 4543), ESN


def test_ah_only_peer_is_taken_and_offers_ah_first() -> None:
    plan = plan_from_proto(_plan(SHA256, GMAC, esp=False))
    (peer,) = plan.peers
    assert [p.text for p in peer.ah_proposals] == ["ah0", "ah1"] and peer.esp_proposals == ()
    child = ike_config(plan, peer).child
    assert child.esp_proposals == ()
    assert child.proposals == (AhProposal.parse("sha256"), AhProposal.parse("aes128gmac-esn"))


def test_ah_and_esp_are_offered_ah_first() -> None:
    plan = plan_from_proto(_plan(SHA256))
    child = ike_config(plan, plan.peers[0]).child
    assert isinstance(child.proposals[0], AhProposal)
    assert isinstance(child.proposals[-1], EspProposal)


@pytest.mark.parametrize(
    ("transforms", "reason"),
    [
        ([(1, 20, 256), (3, 12, 0), (5, 0, 0)], "AH proposal with an encryption transform"),
        ([(5, 0, 0)], "AH proposal without an integrity transform"),
        ([(2, 5, 0), (3, 12, 0)], "AH proposal with a PRF"),
    ],
)
def test_bad_ah_proposals_are_refused(transforms: list[tuple[int, int, int]], reason: str) -> None:
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(_plan(transforms))
    assert any(reason in r for r in info.value.reasons), info.value.reasons


def test_ah_only_integrity_is_refused_in_esp_and_ike() -> None:
    msg = _plan()
    esp = msg.peers[0].esp_proposals[0]
    del esp.transforms[:]
    esp.transforms.add(type=1, id=12, key_length=256)
    esp.transforms.add(type=3, id=9)  # AES-GMAC is AH's only
    msg.content_hash = plan_content_hash(msg)
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(msg)
    assert any(
        "INTEG transform 9 is not one ESP proposals may carry" in r for r in info.value.reasons
    )


def test_a_peer_without_esp_or_ah_is_refused() -> None:
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(_plan(esp=False))
    assert any("no esp proposals" in r for r in info.value.reasons)


def test_an_ah_child_is_not_installed_as_esp() -> None:
    """An AH child event becomes AH SA parameters, never ESP ones."""
    event = ChildSaEstablished(
        name="b1",
        spi_in=bytes.fromhex("0000a001"),
        spi_out=bytes.fromhex("0000b001"),
        encr_id=0,
        encr_key_bits=0,
        integ_id=12,
        esn=False,
        encr_key_in=b"",
        integ_key_in=bytes(32),
        encr_key_out=b"",
        integ_key_out=bytes(32),
        local_ts=(),
        remote_ts=(),
        mode=Mode.TUNNEL,
        proposal="AH:sha256",
        protocol=ProtocolId.AH,
    )
    inbound, outbound = sa_params(event, Lifetime(), "10.0.0.1", "10.0.0.2")
    assert isinstance(inbound, AhParams) and isinstance(outbound, AhParams)
    assert (inbound.spi, inbound.src, inbound.dst) == (0xA001, "10.0.0.2", "10.0.0.1")
    assert (outbound.spi, outbound.src, outbound.dst) == (0xB001, "10.0.0.1", "10.0.0.2")
