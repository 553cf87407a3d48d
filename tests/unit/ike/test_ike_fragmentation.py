"""Sending IKE messages as encrypted fragments (RFC 7383) between two in-memory peers
on fake time: certificate IKE_AUTH crossing as SKF fragments both ways, loss,
duplication and reordering of fragments, peers that did not announce support, and
the datagram size bound of section 2.5.1."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.certs import CA, NOW, dns, make_leaf, name, with_certs
from tests.support.ike_peers import Peers, left_right
from vpnfleet.agent.ike.config import IkeConfig
from vpnfleet.agent.ike.constants import ExchangeType, HeaderFlag, NotifyType, PayloadType
from vpnfleet.agent.ike.crypto import decrypt_message, encrypt_fragment
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import (
    ChildSaEstablished,
    ChildSaRekeyed,
    IkeSaEstablished,
    IkeSaFailed,
)
from vpnfleet.agent.ike.fragments import message_limit
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.message import IkeHeader, parse_message
from vpnfleet.agent.ike.payloads import NotifyPayload, SkfPayload
from vpnfleet.agent.ike.signatures import CertificateAuth
from vpnfleet.agent.ike.states import IkeSaState, Role

GCM = "aes256gcm16-prfsha384-x25519"
CBC = "aes128-sha256-modp2048"
IPV4_UDP = 20 + 8
"""IPv4 and UDP headers: the core's datagrams travel on port 500 in these tests."""


class Wire:
    """Everything the peers put on the wire, by sender (what ``drop`` sees)."""

    def __init__(self, lose: Callable[[str, bytes], bool] = lambda *_: False) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.lose = lose

    def __call__(self, sender: str, data: bytes) -> bool:
        self.sent.append((sender, data))
        return self.lose(sender, data)

    def of(self, sender: str, exchange: int) -> list[bytes]:
        return [
            d
            for s, d in self.sent
            if s == sender and parse_message(d).header.exchange_type == exchange
        ]


def fragment_of(data: bytes) -> SkfPayload | None:
    encrypted = parse_message(data).encrypted
    return encrypted if isinstance(encrypted, SkfPayload) else None


def cert_configs(
    size: int | None = 576, *, proposal: str = GCM, kind: str = "rsa"
) -> tuple[IkeConfig, IkeConfig]:
    left, right = left_right(ike=(proposal,))
    left = with_certs(left, kind, dns("left.example"))
    right = with_certs(right, kind, dns("right.example"))
    if size is not None:
        left, right = replace(left, fragment_size=size), replace(right, fragment_size=size)
    return left, right


def start(left: IkeConfig, right: IkeConfig) -> Peers:
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    return peers


def assert_established(peers: Peers) -> None:
    assert peers.left.sa.state is IkeSaState.ESTABLISHED, peers.left.of(IkeSaFailed)
    assert peers.right.sa.state is IkeSaState.ESTABLISHED, peers.right.of(IkeSaFailed)
    assert len(peers.left.of(ChildSaEstablished)) == len(peers.right.of(ChildSaEstablished)) == 1


@pytest.mark.parametrize("proposal", [GCM, CBC])
def test_certificate_ike_auth_crosses_as_fragments_both_ways(proposal: str) -> None:
    """RFC 7383 section 2.5: with both sides announcing support (section 2.3), an IKE_AUTH
    carrying an RSA certificate goes as SKF messages; fragment 1 names the first inner
    payload (IDi / IDr), the others 0; all share the message ID. Section 2.5.1: no
    datagram is larger than the configured size with IP and UDP headers counted."""
    peers = start(*cert_configs(576, proposal=proposal))
    wire = Wire()
    peers.run(wire)
    assert_established(peers)
    for sender, first_inner in (("left", PayloadType.IDI), ("right", PayloadType.IDR)):
        datagrams = wire.of(sender, ExchangeType.IKE_AUTH)
        fragments = [fragment_of(d) for d in datagrams]
        assert len(datagrams) > 1 and all(f is not None for f in fragments), sender
        total = len(datagrams)
        assert [(f.fragment_number, f.total_fragments) for f in fragments if f] == [
            (n, total) for n in range(1, total + 1)
        ]
        assert [f.first_inner for f in fragments if f] == [first_inner] + [0] * (total - 1)
        assert {parse_message(d).header.message_id for d in datagrams} == {1}
    # IKE_SA_INIT is never fragmented (section 2.5): it is cleartext, one datagram each.
    assert [fragment_of(d) for d in wire.of("left", ExchangeType.IKE_SA_INIT)] == [None]
    assert all(len(d) + IPV4_UDP <= 576 for _, d in wire.sent), max(len(d) for _, d in wire.sent)
    assert max(len(d) for _, d in wire.sent) + IPV4_UDP > 576 - 32  # the room is used


def test_under_nat_traversal_the_non_esp_marker_is_counted() -> None:
    """RFC 7383 section 2.5.1 with RFC 7296 section 2.23: once NAT detection moves IKE to
    port 4500, every datagram also carries the 4-byte non-ESP marker, which must fit."""
    left, right = cert_configs()
    left = replace(left, force_encap=True)
    peers = Peers(left, right)
    # With our own addresses known, NAT detection runs (and force_encap fakes a NAT).
    peers.left.sas = [IkeSa(left, Role.INITIATOR, peers.left.address)]
    peers.right.sas = [IkeSa(right, Role.RESPONDER, peers.right.address)]
    peers.left.sa.initiate(peers.right.address, peers.now)
    wire = Wire()
    peers.run(wire)
    assert_established(peers)
    assert peers.left.sa.encap and peers.right.sa.encap
    assert len(wire.of("left", ExchangeType.IKE_AUTH)) > 1
    assert len(wire.of("right", ExchangeType.IKE_AUTH)) > 1
    assert all(len(d) + IPV4_UDP + 4 <= 576 for _, d in wire.sent)


def test_small_messages_are_not_fragmented() -> None:
    """RFC 7383 section 2.5: only a message that does not fit is fragmented; the PSK
    IKE_AUTH fits in 1280 bytes and goes as one SK message."""
    peers = Peers(*left_right())
    peers.left.sa.initiate(peers.right.address, peers.now)
    wire = Wire()
    peers.run(wire)
    assert_established(peers)
    auth = wire.of("left", ExchangeType.IKE_AUTH) + wire.of("right", ExchangeType.IKE_AUTH)
    assert len(auth) == 2 and [fragment_of(d) for d in auth] == [None, None]


def with_chain(config: IkeConfig, host: str) -> IkeConfig:
    """An RSA leaf under an intermediate CA: both certificates go in IKE_AUTH (RFC 7296
    section 3.6), about 1.6 kB with the signature."""
    ca_cert, ca_key = CA
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = (
        x509.CertificateBuilder()
        .subject_name(name("Intermediate CA"))
        .issuer_name(ca_cert.subject)
        .public_key(mid_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(mid_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(65537, 2048)
    leaf = make_leaf((mid, mid_key), "gw", key, dns(host))
    auth = CertificateAuth(leaf, key, (ca_cert,), (mid,))
    return replace(config, psk=b"", certificates=auth)


def test_default_size_is_1280_and_bounds_every_datagram() -> None:
    """Section 2.5.1: by default no datagram exceeds 1280 bytes; an IKE_AUTH carrying a
    certificate chain does not fit and goes as fragments both ways."""
    left, right = left_right()
    assert left.fragment_size == 1280
    peers = start(with_chain(left, "left.example"), with_chain(right, "right.example"))
    wire = Wire()
    peers.run(wire)
    assert_established(peers)
    assert len(wire.of("left", ExchangeType.IKE_AUTH)) == 2
    assert len(wire.of("right", ExchangeType.IKE_AUTH)) == 2
    assert all(len(d) + IPV4_UDP <= 1280 for _, d in wire.sent)


def lose_once(lost: list[bytes], sender: str, number: int) -> Callable[[str, bytes], bool]:
    """A drop rule for Wire: the first fragment ``number`` ``sender`` sends, into ``lost``."""

    def drop(by: str, data: bytes) -> bool:
        fragment = fragment_of(data)
        if by == sender and fragment and fragment.fragment_number == number and not lost:
            lost.append(data)
            return True
        return False

    return drop


def test_lost_fragment_makes_the_initiator_resend_every_fragment() -> None:
    """RFC 7383 section 2.6: a lost fragment loses the message; on the retransmission
    timer the initiator resends all fragments of it, and the exchange completes."""
    lost: list[bytes] = []
    peers = start(*cert_configs())
    wire = Wire(lose_once(lost, "left", 2))
    peers.run(wire)
    first_try = wire.of("left", ExchangeType.IKE_AUTH)
    assert lost and peers.right.sa.state is IkeSaState.INIT_DONE
    assert wire.of("right", ExchangeType.IKE_AUTH) == []
    wire.sent.clear()
    peers.advance(peers.left.sa.config.retransmit_timeout)
    peers.run(wire)
    assert wire.of("left", ExchangeType.IKE_AUTH) == first_try  # the same datagrams
    assert_established(peers)


def test_lost_response_fragment_is_replayed_whole_once_per_retransmission() -> None:
    """RFC 7383 section 2.6.1: a retransmitted fragmented request makes the responder
    resend all fragments of its cached response, and only on request fragment 1, so one
    retransmission brings back one copy of the response, not one per fragment."""
    lost: list[bytes] = []
    peers = start(*cert_configs())
    wire = Wire(lose_once(lost, "right", 3))
    peers.run(wire)
    response = wire.of("right", ExchangeType.IKE_AUTH)
    assert lost and len(response) >= 3
    assert peers.right.sa.state is IkeSaState.ESTABLISHED
    assert peers.left.sa.state is IkeSaState.AUTH_SENT
    request = wire.of("left", ExchangeType.IKE_AUTH)
    assert len(request) >= 2
    wire.sent.clear()
    peers.advance(peers.left.sa.config.retransmit_timeout)
    peers.run(wire)
    assert wire.of("left", ExchangeType.IKE_AUTH) == request
    assert wire.of("right", ExchangeType.IKE_AUTH) == response  # one copy, same bytes
    assert_established(peers)
    assert len(peers.right.of(IkeSaEstablished)) == 1  # the request ran once


def test_duplicated_and_reordered_fragments_are_reassembled_once() -> None:
    """RFC 7383 section 2.6: fragments are put together in any order and duplicates are
    harmless; the message is processed once, when the last missing one arrives."""
    peers = start(*cert_configs())
    (init_request,) = peers.outgoing(peers.left)
    peers.deliver(peers.right, init_request)
    (init_response,) = peers.outgoing(peers.right)
    peers.deliver(peers.left, init_response)
    request = peers.outgoing(peers.left)
    assert len(request) >= 3
    shuffled = [request[-1], request[-1], *reversed(request[1:-1]), request[1]]
    for data in shuffled:
        peers.deliver(peers.right, data)
    assert peers.outgoing(peers.right) == []  # fragment 1 still missing
    peers.deliver(peers.right, request[0])
    response = peers.outgoing(peers.right)
    assert len(response) >= 2 and all(fragment_of(d) for d in response)
    # A duplicate of fragment 1 after the answer is a retransmission: the whole answer
    # once (section 2.6.1); a duplicate of any other fragment is ignored.
    peers.deliver(peers.right, request[0])
    assert peers.outgoing(peers.right) == response
    peers.deliver(peers.right, request[1])
    assert peers.outgoing(peers.right) == []
    for data in [response[-1], *response, response[0]]:
        peers.deliver(peers.left, data)
    assert_established(peers)
    assert peers.left.sa.dropped == 2  # the two late duplicates, after the exchange ended
    assert peers.right.sa.dropped == 0


@pytest.mark.parametrize("silent", ["left", "right"])
def test_a_peer_without_fragmentation_support_gets_no_fragments(silent: str) -> None:
    """RFC 7383 section 2.3: fragmentation is used only when both sides announced
    IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT; otherwise the large IKE_AUTH goes
    whole (left to IP fragmentation)."""
    left, right = cert_configs()
    if silent == "left":
        left = replace(left, fragmentation=False)
    else:
        right = replace(right, fragmentation=False)
    peers = start(left, right)
    wire = Wire()
    peers.run(wire)
    assert_established(peers)
    (init_request,) = wire.of("left", ExchangeType.IKE_SA_INIT)
    announced = [
        p.notify_type for p in parse_message(init_request).payloads if isinstance(p, NotifyPayload)
    ]
    assert (NotifyType.IKEV2_FRAGMENTATION_SUPPORTED in announced) is (silent == "right")
    (request,) = wire.of("left", ExchangeType.IKE_AUTH)
    (response,) = wire.of("right", ExchangeType.IKE_AUTH)
    assert fragment_of(request) is None and fragment_of(response) is None
    assert len(request) + IPV4_UDP > 576 and len(response) + IPV4_UDP > 576
    assert not peers.left.sa.peer_fragmentation and not peers.right.sa.peer_fragmentation


def test_later_exchanges_and_rekeyed_sa_fragment_too() -> None:
    """RFC 7383 section 2.5: every message protected by SK may be fragmented, not just
    IKE_AUTH; the support announced in IKE_SA_INIT carries over to a rekeyed IKE SA."""
    # MODP-2048 key exchange payloads (256 bytes) in the rekeys overflow 256-byte datagrams.
    left, right = left_right(ike=(CBC,), esp=("aes128-sha256-modp2048",))
    peers = Peers(replace(left, fragment_size=256), replace(right, fragment_size=256))
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    assert_established(peers)
    old = peers.left.sa
    wire = Wire()
    old.rekey(peers.now)
    peers.run(wire)
    rekey = wire.of("left", ExchangeType.CREATE_CHILD_SA)
    assert len(rekey) > 1 and all(fragment_of(d) for d in rekey)
    new = peers.left.sa
    assert new is not old and new.peer_fragmentation
    wire.sent.clear()
    child = next(iter(peers.left.sa.children))
    peers.left.sa.rekey_child(child, peers.now)
    peers.run(wire)
    assert len(wire.of("left", ExchangeType.CREATE_CHILD_SA)) > 1
    assert len(wire.of("right", ExchangeType.CREATE_CHILD_SA)) > 1
    assert len(peers.left.of(ChildSaRekeyed)) == 1
    assert all(len(d) + IPV4_UDP <= 256 for _, d in wire.sent)


def _request_fragments(sa: IkeSa, message_id: int, chunks: list[bytes], first: int) -> list[bytes]:
    keys = sa._sk_out
    assert keys is not None
    return [
        encrypt_fragment(
            IkeHeader(
                sa.spi_i, sa.spi_r, 0, ExchangeType.INFORMATIONAL, HeaderFlag.INITIATOR, message_id
            ),
            first,
            chunk,
            number,
            len(chunks),
            keys,
        )
        for number, chunk in enumerate(chunks, start=1)
    ]


@pytest.mark.parametrize(
    ("inner", "notify", "notify_data"),
    [
        # A Notify whose length runs past the end of the reassembled chain.
        (bytes.fromhex("00000040") + bytes(12), NotifyType.INVALID_SYNTAX, b""),
        # An unknown payload type 200 marked critical (RFC 7296 section 2.5).
        (bytes.fromhex("00800008") + bytes(4), NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, b"\xc8"),
    ],
    ids=["invalid-syntax", "critical"],
)
def test_malformed_reassembled_request_is_refused_like_an_unfragmented_one(
    inner: bytes, notify: NotifyType, notify_data: bytes
) -> None:
    """RFC 7383 section 2.6: the reassembled message is processed as if it came whole,
    so RFC 7296 sections 2.5 / 2.21.2 apply: the authenticated but malformed request is
    answered with INVALID_SYNTAX or UNSUPPORTED_CRITICAL_PAYLOAD and its ID is used."""
    peers = Peers.established()
    left, right = peers.left.sa, peers.right.sa
    first = PayloadType.NOTIFY if notify == NotifyType.INVALID_SYNTAX else 200
    fragments = _request_fragments(left, 2, [inner[:5], inner[5:]], first)
    peers.outgoing(peers.right)
    for data in reversed(fragments):
        right.receive_datagram(data, peers.left.address, peers.now, peers.wall)
    (answer,) = peers.outgoing(peers.right)
    message = parse_message(answer)
    assert message.header.is_response and message.header.message_id == 2
    assert left._sk_in is not None
    assert decrypt_message(answer, message, left._sk_in) == [NotifyPayload(notify, notify_data)]
    assert right.state is IkeSaState.ESTABLISHED and right.last_refusal is not None
    assert right.tasks.expected_request_id == 3
    # Fragment 1 again is a retransmission: the same refusal (section 2.6.1).
    right.receive_datagram(fragments[0], peers.left.address, peers.now, peers.wall)
    assert peers.outgoing(peers.right) == [answer]


def test_fragments_with_an_unexpected_message_id_are_dropped() -> None:
    """RFC 7296 section 2.3: a request ID other than the next one expected is dropped,
    fragment or not, and keeps no reassembly state."""
    peers = Peers.established()
    left, right = peers.left.sa, peers.right.sa
    fragments = _request_fragments(left, 7, [b"\x00" * 4, b"\x00" * 4], PayloadType.NOTIFY)
    for data in fragments:
        right.receive_datagram(data, peers.left.address, peers.now, peers.wall)
    assert peers.outgoing(peers.right) == []
    assert right.dropped == 2


def test_message_limit_counts_ip_udp_and_the_non_esp_marker() -> None:
    """RFC 7383 section 2.5.1: the size is of the IP datagram, so IPv4 (20) or IPv6 (40)
    and UDP (8) headers come off it, and on port 4500 the non-ESP marker (RFC 3948
    section 2.2, 4 bytes) too."""
    assert message_limit(1280, ("192.0.2.2", 500)) == 1252
    assert message_limit(1280, ("192.0.2.2", 4500)) == 1248
    assert message_limit(576, ("2001:db8::2", 500)) == 528
    assert message_limit(576, ("2001:db8::2", 4500)) == 524
    # Behind a NAT the peer's port is whatever the NAT chose, but we talk on 4500.
    assert message_limit(1280, ("198.51.100.7", 31000), encap=True) == 1248


def test_fragment_size_config_is_checked() -> None:
    left, _ = left_right()
    with pytest.raises(LocalError, match="fragment_size must be 256 to 65535 bytes, got 255"):
        replace(left, fragment_size=255)
    with pytest.raises(LocalError, match="fragment_size must be 256 to 65535 bytes, got 65536"):
        replace(left, fragment_size=65536)
