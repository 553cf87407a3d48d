"""NAT detection (RFC 7296 section 2.23) between two in-memory peers."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import replace

from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
from vpnfleet.agent.ike.events import Address, ChildSaEstablished, IkeEvent, IkeSaEstablished
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.nat import nat_hash
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import IkeSaState, Role

GATEWAY = ("203.0.113.1", 500)


def cfg(me: str, peer: str, local: str, remote: str) -> IkeConfig:
    return IkeConfig(
        Identity.parse(me),
        Identity.parse(peer),
        b"secret",
        (IkeProposal.parse("aes256gcm16-prfsha384-x25519"),),
        ChildConfig(
            "c", (EspProposal.parse("aes256gcm16"),), (selector(local),), (selector(remote),)
        ),
    )


LEFT_CFG = cfg("left.example", "right.example", "10.1.0.0/16", "10.2.0.0/16")
RIGHT_CFG = cfg("right.example", "left.example", "10.2.0.0/16", "10.1.0.0/16")


def run(
    initiator: IkeSa, responder: IkeSa, *, seen_as: dict[int, Address]
) -> tuple[list[IkeEvent], list[IkeEvent], list[Address]]:
    """``seen_as`` maps the destination port the initiator uses to the source address
    the responder sees (what a NAT in between would do)."""
    destinations: list[Address] = []
    for _ in range(6):
        for data, addr in initiator.datagrams_to_send(0.0):
            destinations.append(addr)
            responder.receive_datagram(data, seen_as[addr[1]], 0.0)
        for data, _addr in responder.datagrams_to_send(0.0):
            initiator.receive_datagram(data, GATEWAY, 0.0)
    i_events, r_events = [], []
    while (e := initiator.next_event()) is not None:
        i_events.append(e)
    while (e := responder.next_event()) is not None:
        r_events.append(e)
    return i_events, r_events, destinations


def test_nat_hash_is_sha1_of_spis_address_and_port() -> None:
    """Section 2.23: SHA-1(SPIi | SPIr | IP address | port)."""
    spi_i, spi_r = b"\x01" * 8, bytes(8)
    expected = hashlib.sha1(
        spi_i + spi_r + ipaddress.ip_address("192.0.2.1").packed + (500).to_bytes(2, "big")
    ).digest()
    assert nat_hash(spi_i, spi_r, ("192.0.2.1", 500)) == expected
    assert len(nat_hash(spi_i, spi_r, ("2001:db8::1", 4500))) == 20


def test_no_nat_stays_on_port_500_without_encapsulation() -> None:
    initiator = IkeSa(LEFT_CFG, Role.INITIATOR, local=("198.51.100.7", 500))
    responder = IkeSa(RIGHT_CFG, Role.RESPONDER, local=GATEWAY)
    initiator.initiate(GATEWAY, 0.0)
    i_events, r_events, destinations = run(
        initiator, responder, seen_as={500: ("198.51.100.7", 500)}
    )
    assert destinations == [GATEWAY, GATEWAY]
    (i_ike,) = [e for e in i_events if isinstance(e, IkeSaEstablished)]
    (r_ike,) = [e for e in r_events if isinstance(e, IkeSaEstablished)]
    assert (i_ike.nat_local, i_ike.nat_remote) == (False, False)
    assert (r_ike.nat_local, r_ike.nat_remote) == (False, False)
    assert not any(e.encap for e in i_events + r_events if isinstance(e, ChildSaEstablished))


def test_initiator_behind_nat_moves_to_4500_and_encapsulates() -> None:
    initiator = IkeSa(LEFT_CFG, Role.INITIATOR, local=("10.0.0.5", 500))
    responder = IkeSa(RIGHT_CFG, Role.RESPONDER, local=GATEWAY)
    initiator.initiate(GATEWAY, 0.0)
    nat_500, nat_4500 = ("198.51.100.7", 40000), ("198.51.100.7", 40001)
    i_events, r_events, destinations = run(
        initiator, responder, seen_as={500: nat_500, 4500: nat_4500}
    )
    assert destinations == [GATEWAY, ("203.0.113.1", 4500)]
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED
    (i_ike,) = [e for e in i_events if isinstance(e, IkeSaEstablished)]
    (r_ike,) = [e for e in r_events if isinstance(e, IkeSaEstablished)]
    assert (i_ike.nat_local, i_ike.nat_remote) == (True, False)
    assert (r_ike.nat_local, r_ike.nat_remote) == (False, True)
    assert r_ike.peer == nat_4500  # the responder follows the NAT mapping
    for events in (i_events, r_events):
        (child,) = [e for e in events if isinstance(e, ChildSaEstablished)]
        assert child.encap


def test_force_encap_fakes_a_nat() -> None:
    """strongSwan's encap=yes: the source hash is made not to match."""
    initiator = IkeSa(
        replace(LEFT_CFG, force_encap=True), Role.INITIATOR, local=("198.51.100.7", 500)
    )
    responder = IkeSa(RIGHT_CFG, Role.RESPONDER, local=GATEWAY)
    initiator.initiate(GATEWAY, 0.0)
    i_events, r_events, destinations = run(
        initiator, responder, seen_as={500: ("198.51.100.7", 500), 4500: ("198.51.100.7", 4500)}
    )
    assert destinations[1] == ("203.0.113.1", 4500)
    (r_ike,) = [e for e in r_events if isinstance(e, IkeSaEstablished)]
    assert r_ike.nat_remote
    (i_ike,) = [e for e in i_events if isinstance(e, IkeSaEstablished)]
    assert i_ike.nat_local
    assert all(e.encap for e in i_events + r_events if isinstance(e, ChildSaEstablished))


def test_without_a_local_address_no_nat_detection_is_sent() -> None:
    initiator = IkeSa(LEFT_CFG, Role.INITIATOR)
    initiator.initiate(GATEWAY, 0.0)
    ((data, _),) = initiator.datagrams_to_send(0.0)
    # The two trailing notifies are IKEV2_FRAGMENTATION_SUPPORTED, SIGNATURE_HASH_ALGORITHMS.
    assert parse_message(data).describe() == "IKE_SA_INIT request 0 [ SA KE Nonce Notify Notify ]"
    with_local = IkeSa(LEFT_CFG, Role.INITIATOR, local=("198.51.100.7", 500))
    with_local.initiate(GATEWAY, 0.0)
    ((data, _),) = with_local.datagrams_to_send(0.0)
    assert parse_message(data).describe() == (
        "IKE_SA_INIT request 0 [ SA KE Nonce Notify Notify Notify Notify ]"
    )
