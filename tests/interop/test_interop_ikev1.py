"""Our IKEv1 core against a real strongSwan charon (Debian 5.9, ``version = 1``) in
network namespaces: Main mode with a pre-shared key, then Quick mode, each side
initiating; Quick mode with PFS; Delete and DPD.

charon runs with kernel-libipsec, which always claims a NAT (INTEROP.md), so every
test also exercises NAT traversal (RFC 3947): NAT-D, the float to UDP 4500 with the
non-ESP marker, and the UDP-encapsulated tunnel mode in Quick mode. What charon
reports through ``swanctl --list-sas --raw`` is compared with our events. Each test
gets fresh namespaces and a charon of its own, removed whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.charon import (
    CHARON_ID,
    CHARON_NET,
    OUR_ID,
    OUR_NET,
    PSK,
    Charon,
    connection,
    interop_setup,
    our_spec,
    skip_reason,
)
from tests.support.ike_v1_driver import V1Peer

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

IKE = "aes256-sha256-modp2048"
ESP = "aes128-sha256"


class Lab:
    def __init__(self, charon: Charon, our_ns: str, directory: Any) -> None:
        self.charon, self.our_ns, self.dir = charon, our_ns, directory
        self.ours: V1Peer | None = None

    def load(self, ike: str, esp: str, *, charon_initiates: bool) -> V1Peer:
        session = self.charon.session()
        session.load_shared({"type": "IKE", "data": PSK, "owners": [OUR_ID, CHARON_ID]})
        conn = connection(ike, esp, initiator=charon_initiates)
        conn["net-ike"]["version"] = "1"
        conn["net-ike"]["reauth_time"] = "0"
        conn["net-ike"]["dpd_delay"] = "0"
        session.load_conn(conn)
        self.ours = V1Peer(self.our_ns, self.dir, our_spec(ike, esp))
        return self.ours

    def establish(self, *, charon_initiates: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self.ours is not None
        if charon_initiates:
            self.charon.swanctl(
                "--initiate", "--ike", "net-ike", "--child", "net", "--timeout", "10"
            )
        else:
            self.ours.command("initiate")
        try:
            ike = self.ours.wait("IkeSaEstablished", timeout=15)
            child = self.ours.wait("ChildSaEstablished", timeout=15)
        except AssertionError:
            raise AssertionError(self.charon.log_text()[-6000:]) from None
        return ike, child


@pytest.fixture
def lab() -> Iterator[Lab]:
    with interop_setup(log_level=2) as (topology, charon, directory):
        built = Lab(charon, topology.our_ns, directory)
        try:
            yield built
        finally:
            if built.ours is not None:
                built.ours.close()


def _charon_sa(charon: Charon) -> tuple[dict[str, Any], dict[str, Any]]:
    (ike,) = [sa for sa in charon.list_sas() if sa.get("state") == "ESTABLISHED"]
    children = [c for c in ike.get("child-sas", {}).values() if c.get("state") == "INSTALLED"]
    assert len(children) == 1, ike
    return ike, children[0]


def _check(lab: Lab, ours_ike: dict[str, Any], ours_child: dict[str, Any]) -> None:
    ike, child = _charon_sa(lab.charon)
    assert ike["version"] == "1"
    assert (ike["initiator-spi"], ike["responder-spi"]) == (ours_ike["spi_i"], ours_ike["spi_r"])
    assert ike["encr-alg"] == "AES_CBC" and ike["encr-keysize"] == "256"
    assert ike["integ-alg"] == "HMAC_SHA2_256_128" and ike["dh-group"] == "MODP_2048"
    assert ike["local-id"] == CHARON_ID and ike["remote-id"] == OUR_ID
    assert ours_ike["remote_id"] == CHARON_ID
    # kernel-libipsec claims a NAT: IKE floated to 4500 and ESP goes in UDP.
    assert ike["remote-port"] == "4500" and ike.get("nat-any") == "yes"
    assert child["encap"] == "yes" and ours_child["encap"] is True
    assert child["mode"] == "TUNNEL" and child["protocol"] == "ESP"
    assert (child["spi-in"], child["spi-out"]) == (ours_child["spi_out"], ours_child["spi_in"])
    assert child["local-ts"] == [CHARON_NET] and child["remote-ts"] == [OUR_NET]


@pytest.mark.parametrize("charon_initiates", [False, True], ids=["we-initiate", "charon-initiates"])
def test_main_mode_psk_and_quick_mode(lab: Lab, charon_initiates: bool) -> None:
    lab.load(IKE, ESP, charon_initiates=charon_initiates)
    ours_ike, ours_child = lab.establish(charon_initiates=charon_initiates)
    _check(lab, ours_ike, ours_child)
    _, child = _charon_sa(lab.charon)
    assert child["encr-alg"] == "AES_CBC" and child["integ-alg"] == "HMAC_SHA2_256_128"
    assert ours_child["encr_id"] == 12 and ours_child["integ_id"] == 12


def test_quick_mode_with_pfs(lab: Lab) -> None:
    lab.load(IKE, "aes256gcm16-ecp256", charon_initiates=False)
    ours_ike, ours_child = lab.establish(charon_initiates=False)
    _check(lab, ours_ike, ours_child)
    _, child = _charon_sa(lab.charon)
    assert child["encr-alg"] == "AES_GCM_16" and child["dh-group"] == "ECP_256"
    assert ours_child["encr_id"] == 20 and ours_child["proposal"] == "aes256gcm16-ecp256"


def test_delete_and_dpd(lab: Lab) -> None:
    peer = lab.load(IKE, ESP, charon_initiates=False)
    lab.establish(charon_initiates=False)
    peer.command("liveness")
    peer.wait("LivenessAnswered", timeout=10)
    peer.command("delete_child")
    peer.wait("ChildSaDeleted", timeout=5)
    peer.command("delete_ike")
    peer.wait("IkeSaDeleted", timeout=5)
    for _ in range(50):
        if not lab.charon.list_sas():
            break
        time.sleep(0.1)
    assert lab.charon.list_sas() == []
