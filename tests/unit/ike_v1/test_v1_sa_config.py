"""IkeV1Config and phase 1 proposals in strongSwan's notation: what is refused, and why."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.ike_v1_peers import left_right
from vpnfleet.agent.ike.config import ChildConfig, selector
from vpnfleet.agent.ike.errors import LocalError, UnsupportedTransform
from vpnfleet.agent.ike.proposals import EspProposal
from vpnfleet.agent.ike.v1.config import Phase1Proposal
from vpnfleet.agent.ike.v1.constants import P1Hash


@pytest.mark.parametrize(
    ("text", "bits", "hash_", "group"),
    [
        ("aes128-sha1-modp2048", 128, P1Hash.SHA1, 14),
        ("aes192-sha256-ecp256", 192, P1Hash.SHA2_256, 19),
        ("aes256-prfsha384-ecp384", 256, P1Hash.SHA2_384, 20),
        ("AES256-SHA512-curve25519", 256, P1Hash.SHA2_512, 31),
    ],
)
def test_phase1_proposals_parse(text: str, bits: int, hash_: P1Hash, group: int) -> None:
    proposal = Phase1Proposal.parse(text)
    assert (proposal.encr.key_bits, proposal.hash, proposal.group) == (bits, hash_, group)
    assert Phase1Proposal.parse(str(proposal)) == proposal


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aes256gcm16-prfsha256-ecp256", "unknown or unsupported 'aes256gcm16'"),
        ("aes256-sha256", "needs AES-CBC, a hash"),
        ("aes256-aes128-sha256-ecp256", "two ciphers"),
        ("aes256-sha256-modp1024", "unknown or unsupported 'modp1024'"),
        ("aes512-sha256-ecp256", "512-bit keys"),
        ("aes256-md5-ecp256", "unknown or unsupported 'md5'"),
    ],
)
def test_bad_phase1_proposals_are_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(LocalError, match=message):
        Phase1Proposal.parse(text)


def _child(*esp: str) -> ChildConfig:
    return ChildConfig(
        "net",
        tuple(EspProposal.parse(e) for e in esp),
        (selector("10.1.0.0/16"),),
        (selector("10.2.0.0/16"),),
    )


def test_quick_mode_offers_one_pfs_group() -> None:
    left, _ = left_right()
    with pytest.raises(LocalError, match="one PFS group"):
        replace(left, child=_child("aes128-sha256-modp2048", "aes128-sha256-ecp256"))
    with pytest.raises(LocalError, match="one PFS group"):
        replace(left, child=_child("aes128-sha256-modp2048", "aes128-sha256"))
    replace(left, child=_child("aes128-sha256-ecp256", "aes256gcm16-ecp256"))


def test_esn_empty_psk_and_bad_lifetimes_are_refused() -> None:
    left, _ = left_right()
    with pytest.raises(UnsupportedTransform, match="extended sequence numbers"):
        replace(left, child=_child("aes128-sha256-esn"))
    with pytest.raises(LocalError, match="empty pre-shared key"):
        replace(left, psk=b"")
    with pytest.raises(LocalError, match="child_lifetime must be positive"):
        replace(left, child_lifetime=0)
    with pytest.raises(LocalError, match="no IKEv1 proposals"):
        replace(left, ike_proposals=())
