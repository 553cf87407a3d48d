"""Plan -> IKE configuration -> data plane parameters: the engine's pure conversions."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from tests.support.engine_pair import node_plan, plan_message
from vpnfleet.agent.engine import translate
from vpnfleet.agent.engine.host import data_plane_choice
from vpnfleet.agent.esp.spd import Action
from vpnfleet.agent.ike.config import Mode as IkeMode
from vpnfleet.agent.ike.constants import IdType
from vpnfleet.agent.ike.events import ChildSaEstablished
from vpnfleet.agent.io.dataplane_model import Encap
from vpnfleet.agent.io.tunnel_mtu import AEAD_GCM16, CBC_SHA512
from vpnfleet.agent.plan import (
    Identity,
    Proposal,
    Transform,
    TransformType,
)
from vpnfleet.agent.plan import (
    IdType as PlanIdType,
)
from vpnfleet.agent.plan import Mode as PlanMode
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.plan_diff import Section, plan_changes


def test_ike_config_from_a_sample_plan() -> None:
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    config = translate.ike_config(plan, peer)
    assert str(config.local_id) == "a" and str(config.remote_id) == "b"
    assert config.local_id.id_type == IdType.ID_FQDN
    assert [str(p) for p in config.ike_proposals] == ["aes256gcm16-prfsha384-x25519"]
    assert [str(p) for p in config.child.esp_proposals] == ["aes256gcm16"]
    assert config.child.name == "b" and config.child.mode is IkeMode.TUNNEL
    assert [str(s.start_address) for s in config.child.local_ts] == ["10.1.0.0"]
    assert [str(s.end_address) for s in config.child.remote_ts] == ["10.2.0.255"]
    assert config.dpd_delay == 30.0 and config.psk == peer.auth.psk
    # DPD timeout 150 s: retransmissions at 1, 2, 4 … give up after 128 s.
    assert config.retransmit_tries == 6


def test_proposals_are_built_from_transform_ids_whatever_the_text_says() -> None:
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    odd = Proposal(
        "AES_CBC_256/HMAC_SHA2_256_128",
        (
            Transform(TransformType.ENCR, 12, 256),
            Transform(TransformType.INTEG, 12, 0),
            Transform(TransformType.ESN, 0, 0),
        ),
    )
    config = translate.ike_config(plan, replace(peer, esp_proposals=(odd,)))
    assert [str(p) for p in config.child.esp_proposals] == ["aes256-sha256"]


def test_text_and_ids_that_disagree_negotiate_the_ids_and_show_the_text() -> None:
    """Issue 15 item 6: the agent validated the IDs, so it negotiates them; the text is
    what the operator wrote, shown in plan differences (never parsed here)."""

    def disagree(msg: plan_pb2.NodePlan) -> None:
        (peer,) = msg.peers
        del peer.ike_proposals[:]
        ike = peer.ike_proposals.add(text="aes128-sha256-modp2048")
        ike.transforms.add(type=TransformType.ENCR, id=20, key_length=256)
        ike.transforms.add(type=TransformType.PRF, id=6)
        ike.transforms.add(type=TransformType.DH, id=31)
        del peer.esp_proposals[:]
        esp = peer.esp_proposals.add(text="aes128-sha256")
        esp.transforms.add(type=TransformType.ENCR, id=28)

    plan = node_plan("a", ["b"], edit=disagree)
    (peer,) = plan.peers
    config = translate.ike_config(plan, peer)
    assert [str(p) for p in config.ike_proposals] == ["aes256gcm16-prfsha384-x25519"]
    assert [str(p) for p in config.child.esp_proposals] == ["chacha20poly1305"]
    before, after = plan_message("a", ["b"]), plan_message("a", ["b"], edit=disagree)
    (change,) = [c for c in plan_changes(before, after) if c.section is Section.PEER]
    assert change.details == (
        "ike aes256gcm16-prfsha384-x25519 -> aes128-sha256-modp2048",
        "esp aes256gcm16 -> aes128-sha256",
    )


def test_several_transforms_of_one_type_are_alternatives() -> None:
    """RFC 7296 section 3.3: each combination becomes one proposal, in the plan's order."""
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    both = Proposal(
        "aes128-aes256-sha256-x25519-ecp256",
        (
            Transform(TransformType.ENCR, 12, 128),
            Transform(TransformType.ENCR, 12, 256),
            Transform(TransformType.PRF, 5, 0),
            Transform(TransformType.INTEG, 12, 0),
            Transform(TransformType.DH, 31, 0),
            Transform(TransformType.DH, 19, 0),
        ),
    )
    config = translate.ike_config(plan, replace(peer, ike_proposals=(both,)))
    assert [str(p) for p in config.ike_proposals] == [
        "aes128-sha256-x25519",
        "aes128-sha256-ecp256",
        "aes256-sha256-x25519",
        "aes256-sha256-ecp256",
    ]


def test_unknown_transform_names_the_peer() -> None:
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    bad = Proposal("weird", (Transform(TransformType.ENCR, 12, 192),))
    with pytest.raises(translate.PeerConfigError, match="peer b: proposal 'weird'"):
        translate.ike_config(plan, replace(peer, esp_proposals=(bad,)))


@pytest.mark.parametrize(
    ("kind", "value", "id_type", "data"),
    [
        (PlanIdType.IPV4_ADDR, "192.0.2.1", IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
        (PlanIdType.IPV6_ADDR, "2001:db8::1", IdType.ID_IPV6_ADDR, None),
        (PlanIdType.FQDN, "gw.example.net", IdType.ID_FQDN, b"gw.example.net"),
        (PlanIdType.RFC822_ADDR, "ops@example.net", IdType.ID_RFC822_ADDR, b"ops@example.net"),
        (PlanIdType.KEY_ID, "k1", IdType.ID_KEY_ID, b"k1"),
    ],
)
def test_identities_keep_their_rfc_7296_section_3_5_type(
    kind: PlanIdType, value: str, id_type: int, data: bytes | None
) -> None:
    ike = translate.ike_identity(Identity(kind, value))
    assert ike.id_type == id_type
    assert ike.data == (data if data is not None else ipaddress.ip_address(value).packed)


def test_every_plan_id_type_is_the_ike_id_type_of_its_number() -> None:
    """The plan and the IKE core each define the RFC 7296 section 3.5 ID types; the
    conversion in translate goes by number, so both must number them as IANA does."""
    for kind in PlanIdType:
        assert IdType(int(kind)).name == f"ID_{kind.name}"


@pytest.mark.parametrize("mode", list(PlanMode))
def test_the_plan_mode_reaches_ike_and_esp_unchanged(mode: PlanMode) -> None:
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    config = translate.ike_config(plan, replace(peer, mode=mode))
    assert config.child.mode.name == mode.name
    event = ChildSaEstablished(
        "b",
        bytes.fromhex("00001001"),
        bytes.fromhex("00002002"),
        20,
        256,
        None,
        False,
        bytes(36),
        b"",
        bytes(36),
        b"",
        config.child.local_ts,
        config.child.remote_ts,
        config.child.mode,
        "aes256gcm16",
    )
    lifetime = translate.child_lifetime(peer)
    inbound, outbound = translate.sa_params(event, lifetime, None, "192.0.2.2")
    assert inbound.mode.name == outbound.mode.name == mode.name


def test_spd_and_routes_follow_the_plan() -> None:
    def add_bypass(msg: plan_pb2.NodePlan) -> None:
        msg.spd.insert(
            0,
            plan_pb2.SpdEntry(
                name="dns",
                selector=plan_pb2.TrafficSelector(
                    local_prefix="10.1.0.0/24",
                    remote_prefix="10.2.0.0/24",
                    protocol=17,
                    local_port_end=65535,
                    remote_port_start=53,
                    remote_port_end=53,
                ),
                action=plan_pb2.SPD_ACTION_BYPASS,
            ),
        )

    plan = node_plan("a", ["b", "c"], edit=add_bypass)
    entries = translate.spd_entries(plan)
    assert [(e.name, e.action, e.policy) for e in entries] == [
        ("dns", Action.BYPASS, ""),
        ("protect-b", Action.PROTECT, "b"),
        ("protect-c", Action.PROTECT, "c"),
    ]
    assert entries[0].selector.protocol == 17 and entries[0].selector.remote_ports == (53, 53)
    assert entries[1].selector.protocol is None and entries[1].selector.local_ports is None
    assert translate.protected_prefixes(plan) == ["10.2.0.0/24", "10.3.0.0/24"]
    assert translate.esp_overhead(plan) == AEAD_GCM16


def test_costliest_esp_transform_sets_the_overhead() -> None:
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    cbc = Proposal(
        "aes256-sha512",
        (Transform(TransformType.ENCR, 12, 256), Transform(TransformType.INTEG, 14, 0)),
    )
    plan = replace(plan, peers=(replace(peer, esp_proposals=(*peer.esp_proposals, cbc)),))
    assert translate.esp_overhead(plan) == CBC_SHA512


def test_child_lifetime_volume_limits_are_soft_with_hard_ones_after() -> None:
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    life = replace(peer.lifetimes, child_rekey_bytes=1000, child_rekey_packets=0)
    limits = translate.child_lifetime(replace(peer, lifetimes=life))
    assert limits.soft_bytes == 1000 and limits.hard_bytes == 1100
    assert limits.soft_packets is None and limits.soft_seconds is None
    assert limits.hard_seconds == pytest.approx(3600 * 1.1 + 60)


def test_child_lifetime_is_no_longer_than_an_ikev1_quick_mode_agreed() -> None:
    """RFC 2407 section 4.6.3.1: a responder may answer a shorter lifetime than offered;
    the peer's SA ends then, so ours does too (a soft volume limit before the hard)."""
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    peer = replace(peer, lifetimes=replace(peer.lifetimes, child_rekey_bytes=10_000_000))
    limits = translate.child_lifetime(peer, agreed_seconds=600, agreed_kilobytes=1000)
    assert limits.hard_seconds == 600
    assert limits.hard_bytes == 1_024_000 and limits.soft_bytes == int(1_024_000 / 1.1)
    # Longer than the plan's own: the plan's limits stand.
    longer = translate.child_lifetime(peer, agreed_seconds=100_000, agreed_kilobytes=10**9)
    assert longer == translate.child_lifetime(peer)


def test_data_plane_is_opt_in_outside_a_named_namespace() -> None:
    assert not data_plane_choice(False).enabled
    assert "--no-data-plane" in data_plane_choice(False).reason
    auto = data_plane_choice(None)
    if auto.enabled:  # pragma: no cover - only when the tests run inside `ip netns exec`
        assert "network namespace" in auto.reason
    else:
        assert "plan only" in auto.reason


def test_esp_path_follows_nat_detection() -> None:
    """RFC 7296 section 2.23 / RFC 3948: ESP in UDP to the IKE SA's NAT-T address once a
    NAT was found; straight over IP (protocol 50) without one, if there is a raw socket."""
    ike_peer = ("198.51.100.2", 4500)
    assert translate.esp_path(True, ike_peer, "198.51.100.2", raw=True) == (
        ike_peer,
        Encap.UDP,
        ike_peer,
    )
    assert translate.esp_path(False, ("198.51.100.2", 500), "198.51.100.2", raw=True) == (
        "198.51.100.2",
        Encap.RAW,
        ("198.51.100.2", 0),
    )
    # No raw socket (the in-memory network): both ends then use UDP 4500.
    assert translate.esp_path(False, None, "198.51.100.2", raw=False) == (
        ("198.51.100.2", 4500),
        Encap.UDP,
        ("198.51.100.2", 4500),
    )
