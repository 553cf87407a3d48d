"""Quick mode (RFC 2409 section 5.5) between two IkeV1Sa on fake time: ESP proposals,
PFS, ID payloads as selectors, tunnel and transport, NAT-T encapsulation, loss."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from tests.support.ike_v1_peers import Peers, left_right
from vpnfleet.agent.ike.config import Mode, selector
from vpnfleet.agent.ike.constants import EncrId, IntegId
from vpnfleet.agent.ike.errors import CommandRefused, LocalError, ProtocolError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyed,
    IkeSaEstablished,
)
from vpnfleet.agent.ike.v1.constants import ExchangeType, Flag, NotifyType
from vpnfleet.agent.ike.v1.message import IsakmpHeader
from vpnfleet.agent.ike.v1.payloads import NatOaPayload
from vpnfleet.agent.ike.v1.quick import QuickState
from vpnfleet.agent.ike.v1.sa import Received, V1State


def _children(peers: Peers) -> tuple[ChildSaEstablished, ChildSaEstablished]:
    (left,) = peers.left.of(ChildSaEstablished)
    (right,) = peers.right.of(ChildSaEstablished)
    return left, right


def _cross_keyed(left: ChildSaEstablished, right: ChildSaEstablished) -> None:
    """What one side sends with, the other receives with (KEYMAT per direction)."""
    assert (left.spi_out, left.spi_in) == (right.spi_in, right.spi_out)
    assert left.encr_key_out == right.encr_key_in and left.encr_key_in == right.encr_key_out
    assert left.integ_key_out == right.integ_key_in and left.integ_key_in == right.integ_key_out
    assert left.encr_key_in != left.encr_key_out


@pytest.mark.parametrize(
    ("esp", "encr_id", "bits", "integ_id", "key_bytes", "integ_bytes"),
    [
        ("aes128-sha256", EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, 16, 32),
        ("aes256-sha512", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256, 32, 64),
        ("aes128gcm16", EncrId.AES_GCM_16, 128, None, 20, 0),
        ("aes256gcm16", EncrId.AES_GCM_16, 256, None, 36, 0),
    ],
)
def test_quick_mode_installs_ikev2_numbered_transforms(
    esp: str, encr_id: int, bits: int, integ_id: int | None, key_bytes: int, integ_bytes: int
) -> None:
    peers = Peers.established(esp=(esp,))
    left, right = _children(peers)
    _cross_keyed(left, right)
    assert (left.encr_id, left.encr_key_bits, left.integ_id) == (encr_id, bits, integ_id)
    assert len(left.encr_key_in) == key_bytes and len(left.integ_key_in) == integ_bytes
    assert left.proposal == right.proposal == esp
    assert left.local_ts == (selector("10.1.0.0/16"),) == right.remote_ts
    assert left.remote_ts == (selector("10.2.0.0/16"),) == right.local_ts
    assert left.mode is right.mode is Mode.TUNNEL and not left.encap and not left.esn
    assert set(peers.left.sa.children) == {left.spi_in}


def test_pfs_adds_a_key_exchange_and_fresh_keys() -> None:
    plain = Peers.established(esp=("aes128-sha256",))
    pfs = Peers.established(esp=("aes128-sha256-ecp256",))
    left, right = _children(pfs)
    _cross_keyed(left, right)
    assert left.proposal == "aes128-sha256-ecp256"
    quick = [d for _, d in pfs.sent if d[18] == ExchangeType.QUICK]
    quick_plain = [d for _, d in plain.sent if d[18] == ExchangeType.QUICK]
    # KE payloads (64 bytes of P-256 point and a header) make messages 1 and 2 longer.
    assert len(quick[0]) >= len(quick_plain[0]) + 64
    assert len(quick[1]) >= len(quick_plain[1]) + 64


def test_pfs_on_one_side_only_is_no_proposal_chosen_naming_both() -> None:
    peers = Peers(*left_right(left={"esp": ("aes128-sha256-modp2048",)}))
    peers.start()
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    (responder,) = peers.right.of(ChildSaFailed)
    assert responder.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "ours [aes128-sha256-tunnel]" in responder.reason
    assert "theirs [aes128-sha256-modp2048]" in responder.reason
    (initiator,) = peers.left.of(ChildSaFailed)
    assert initiator.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "aes128-sha256-modp2048" in initiator.reason
    assert not peers.left.of(ChildSaEstablished) and not peers.right.of(ChildSaEstablished)


def test_transport_mode() -> None:
    peers = Peers.established(mode=Mode.TRANSPORT)
    left, right = _children(peers)
    assert left.mode is right.mode is Mode.TRANSPORT


def test_tunnel_against_transport_is_refused() -> None:
    peers = Peers(*left_right(left={"mode": Mode.TRANSPORT}))
    peers.start()
    peers.run()
    (failed,) = peers.right.of(ChildSaFailed)
    assert "transport" in failed.reason and "tunnel" in failed.reason


def test_selectors_outside_the_responders_policy_are_refused() -> None:
    peers = Peers(*left_right(right={"local_net": "10.2.1.0/24"}))
    peers.start()
    peers.run()
    (failed,) = peers.right.of(ChildSaFailed)
    assert failed.notify == NotifyType.INVALID_ID_INFORMATION
    assert "10.2.1.0/24" in failed.reason and "10.2.0.0/16" in failed.reason
    assert peers.left.of(ChildSaFailed)[0].notify == NotifyType.INVALID_ID_INFORMATION


def test_narrower_initiator_selectors_are_taken_as_sent() -> None:
    peers = Peers(*left_right(left={"local_net": "10.1.7.0/24", "remote_net": "10.2.3.4/32"}))
    peers.start()
    peers.run()
    _, right = _children(peers)
    assert right.remote_ts == (selector("10.1.7.0/24"),)
    assert right.local_ts == (selector("10.2.3.4/32"),)


def test_forced_encapsulation_floats_to_4500_and_uses_udp_modes() -> None:
    peers = Peers.established(left={"force_encap": True})
    left, right = _children(peers)
    assert left.encap and right.encap
    assert peers.left.sa.peer == ("192.0.2.2", 4500)
    up = peers.right.of(IkeSaEstablished)[0]
    assert up.nat_remote and not up.nat_local
    assert peers.left.of(IkeSaEstablished)[0].nat_local


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_each_lost_quick_mode_message_is_recovered(lost: int) -> None:
    peers = Peers(*left_right())
    count = {"n": 0}

    def drop(_sender: str, data: bytes) -> bool:
        if data[18] != ExchangeType.QUICK:
            return False
        count["n"] += 1
        return count["n"] == lost

    peers.start()
    peers.run(drop)
    for _ in range(3):
        peers.advance(2.0)
        peers.run(drop)
    left, right = _children(peers)
    _cross_keyed(left, right)
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def test_unanswered_quick_mode_fails_the_child_only() -> None:
    peers = Peers(*left_right(retransmit_timeout=1.0, retransmit_tries=2))
    peers.start()
    peers.run(drop=lambda sender, data: sender == "right" and data[18] == ExchangeType.QUICK)
    for _ in range(5):
        peers.advance(4.0)
        peers.run(drop=lambda sender, data: sender == "right" and data[18] == ExchangeType.QUICK)
    (failed,) = peers.left.of(ChildSaFailed)
    assert "Quick mode message 1 after 2 retransmissions" in failed.reason
    assert peers.left.sa.state is V1State.ESTABLISHED


def test_responder_lifetime_shortens_the_initiators() -> None:
    peers = Peers.established(right={"child_lifetime": 600})
    (exchange,) = peers.left.sa.quick.values()
    assert exchange.state is QuickState.DONE
    assert exchange.lifetime == 600


def test_commit_bit_is_answered_without_it() -> None:
    """RFC 2408 section 3.1's commit bit asks the responder to hold the SA until a
    CONNECTED notify; we answer as always, without the bit and without the notify."""
    peers = Peers(*left_right())
    sa = peers.left.sa
    plain_header = sa._header

    def committing(exchange: int, mid: int, first: int, flags: Flag, length: int) -> bytes:
        if exchange == ExchangeType.QUICK:
            flags |= Flag.COMMIT
        return plain_header(exchange, mid, first, flags, length)

    sa._header = committing  # type: ignore[method-assign]
    peers.start()
    peers.run()
    left, right = _children(peers)
    _cross_keyed(left, right)
    quick = [(name, d) for name, d in peers.sent if d[18] == ExchangeType.QUICK]
    assert [bool(d[19] & Flag.COMMIT) for _, d in quick] == [True, False, True]
    notifies = [
        d for name, d in peers.sent if name == "right" and d[18] == ExchangeType.INFORMATIONAL
    ]
    assert notifies == []


@pytest.mark.parametrize("by", ["left", "right"])
def test_rekey_child_replaces_it_make_before_break(by: str) -> None:
    """A new Quick mode for the same policy, then a Delete of the old SA: ChildSaRekeyed
    on both sides (the rekey's initiator first), the old SA deleted as rekeyed."""
    peers = Peers.established(esp=("aes128-sha256-ecp256",))
    old_left, old_right = _children(peers)
    rekeying = peers.left if by == "left" else peers.right
    other = peers.right if by == "left" else peers.left
    old = old_left if by == "left" else old_right
    rekeying.sa.rekey_child(old.spi_in, peers.now)
    with pytest.raises(CommandRefused, match="already being rekeyed"):
        rekeying.sa.rekey_child(old.spi_in, peers.now)
    peers.run()
    (ours,) = rekeying.of(ChildSaRekeyed)
    (theirs,) = other.of(ChildSaRekeyed)
    assert ours.initiator and not theirs.initiator
    assert ours.old_spi_in == old.spi_in and theirs.old_spi_out == old.spi_in
    _cross_keyed(ours.new, theirs.new)
    assert ours.new.encr_key_in not in (old_left.encr_key_in, old_left.encr_key_out)
    for endpoint in (rekeying, other):
        (deleted,) = endpoint.of(ChildSaDeleted)
        assert deleted.reason == "rekeyed"
        assert list(endpoint.sa.children) == [(ours if endpoint is rekeying else theirs).new.spi_in]


@pytest.mark.parametrize(
    ("left_net", "right_net"),
    [
        ("2001:db8:1::/48", "2001:db8:2::/48"),  # IPV6_ADDR_SUBNET
        ("10.1.0.5/32", "10.2.0.0/16"),  # IPV4_ADDR for a single host
    ],
)
def test_ipv6_and_host_selectors(left_net: str, right_net: str) -> None:
    peers = Peers.established(
        left={"local_net": left_net, "remote_net": right_net},
        right={"local_net": right_net, "remote_net": left_net},
    )
    left, right = _children(peers)
    assert left.local_ts == (selector(left_net),) == right.remote_ts
    assert left.remote_ts == (selector(right_net),) == right.local_ts


def test_ranges_and_ports_travel_as_id_payloads() -> None:
    """RFC 2407 section 4.6.2: a range that is no subnet goes as IPV4_ADDR_RANGE, and a
    single protocol and port as the ID payload's own fields."""
    from vpnfleet.agent.ike.payloads import TrafficSelector
    from vpnfleet.agent.ike.v1.constants import IdType
    from vpnfleet.agent.ike.v1.selectors import id_for_selector, selector_for_id

    ts = TrafficSelector(ip_address("10.0.0.3"), ip_address("10.0.0.9"), 17, 500, 500)
    payload = id_for_selector(ts)
    assert (payload.id_type, payload.protocol, payload.port) == (IdType.IPV4_ADDR_RANGE, 17, 500)
    assert selector_for_id(payload, "IDci") == ts
    with pytest.raises(LocalError, match="one port or all"):
        id_for_selector(TrafficSelector(ip_address("10.0.0.3"), ip_address("10.0.0.9"), 6, 1, 9))


def test_a_mask_that_is_no_netmask_is_refused() -> None:
    from vpnfleet.agent.ike.errors import ProtocolError
    from vpnfleet.agent.ike.v1.constants import IdType
    from vpnfleet.agent.ike.v1.payloads import IdPayload
    from vpnfleet.agent.ike.v1.selectors import selector_for_id

    bad = IdPayload(IdType.IPV4_ADDR_SUBNET, 0, 0, bytes([10, 0, 0, 0, 255, 0, 255, 0]))
    with pytest.raises(ProtocolError, match="is not a netmask"):
        selector_for_id(bad, "IDcr")
    six = IdPayload(IdType.IPV6_ADDR_SUBNET, 0, 0, bytes(16) + bytes(16))
    assert selector_for_id(six, "IDcr") == selector("::/0")


# -- NAT-OA (RFC 3947 section 5.2) ---------------------------------------------------


def test_nat_oa_gives_each_side_the_peers_original_address() -> None:
    """UDP-encapsulated transport mode: the initiator behind a NAT (its socket address
    is not the one the responder sees) sends NAT-OAi with its own address; the
    responder's NAT-OAr is its own. Each side keeps the peer's."""
    peers = Peers(*left_right(mode=Mode.TRANSPORT))
    peers.left.sa.local = ("10.0.0.5", 500)  # behind a NAT: NAT-D differs, ESP goes in UDP
    peers.start()
    peers.run()
    left, right = _children(peers)
    assert left.encap and right.encap and left.mode is Mode.TRANSPORT
    assert peers.right.sa.child_original_address(right.spi_in) == ip_address("10.0.0.5")
    assert peers.left.sa.child_original_address(left.spi_in) == ip_address("192.0.2.2")


def test_no_nat_oa_in_tunnel_mode_or_without_encapsulation() -> None:
    for peers in (
        Peers.established(left={"force_encap": True}),
        Peers.established(mode=Mode.TRANSPORT),
    ):
        left, right = _children(peers)
        assert peers.left.sa.child_original_address(left.spi_in) is None
        assert peers.right.sa.child_original_address(right.spi_in) is None


def test_one_nat_oa_alone_is_refused() -> None:
    """RFC 3947 section 5.2: NAT-OAi and NAT-OAr come as a pair (or not at all)."""
    peers = Peers.established(mode=Mode.TRANSPORT, left={"force_encap": True})
    exchange = next(iter(peers.right.sa.quick.values()))
    header = IsakmpHeader(bytes(8), bytes(8), 0, ExchangeType.QUICK, Flag.ENCRYPTION, 1, 28)
    lone = Received(header, [], [NatOaPayload(ip_address("10.0.0.5"))], b"", None)
    with pytest.raises(ProtocolError, match="1 NAT-OA payloads, not 0 or 2"):
        exchange._peer_original(lone, 0)
