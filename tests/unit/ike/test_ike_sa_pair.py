"""IKE_SA_INIT + IKE_AUTH (PSK) between two in-memory peers on fake time.

The harness moves datagrams by hand, so loss, duplication and delay are explicit;
``now`` only moves when a test says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import pytest

from tests.support.ike_peers import Peers
from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, Mode, selector
from vpnfleet.agent.ike.constants import EncrId, ExchangeType, NotifyType
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    IkeEvent,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
)
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import IkeSaState, Role

LEFT = ("192.0.2.1", 500)
RIGHT = ("192.0.2.2", 500)


def child(
    local: str, remote: str, esp: tuple[str, ...] = ("aes256gcm16", "aes128-sha256")
) -> ChildConfig:
    return ChildConfig(
        "net",
        tuple(EspProposal.parse(e) for e in esp),
        (selector(local),),
        (selector(remote),),
    )


def config(
    local_id: str,
    remote_id: str,
    ike: tuple[str, ...] = ("aes256gcm16-prfsha384-x25519",),
    *,
    psk: bytes = b"correct horse battery staple",
    local_net: str = "10.1.0.0/16",
    remote_net: str = "10.2.0.0/16",
    esp: tuple[str, ...] = ("aes256gcm16", "aes128-sha256"),
) -> IkeConfig:
    return IkeConfig(
        Identity.parse(local_id),
        Identity.parse(remote_id),
        psk,
        tuple(IkeProposal.parse(p) for p in ike),
        child(local_net, remote_net, esp),
    )


class Pair:
    def __init__(self, left: IkeConfig, right: IkeConfig) -> None:
        self.initiator = IkeSa(left, Role.INITIATOR)
        self.responder = IkeSa(right, Role.RESPONDER)
        self.now = 1000.0
        self.i_events: list[IkeEvent] = []
        self.r_events: list[IkeEvent] = []

    def start(self) -> None:
        self.initiator.initiate(RIGHT, self.now)

    def from_initiator(self) -> list[bytes]:
        return [d for d, addr in self.initiator.datagrams_to_send(self.now) if addr == RIGHT]

    def from_responder(self) -> list[bytes]:
        return [d for d, addr in self.responder.datagrams_to_send(self.now) if addr == LEFT]

    def to_responder(self, data: bytes) -> None:
        self.responder.receive_datagram(data, LEFT, self.now)

    def to_initiator(self, data: bytes) -> None:
        self.initiator.receive_datagram(data, RIGHT, self.now)

    def run(self, drop: Callable[[str, int, bytes], bool] = lambda *_: False) -> None:
        """Deliver everything both ways until quiet; ``drop(direction, n, data)``."""
        sent = {"i>r": 0, "r>i": 0}
        for _ in range(50):
            moved = False
            for data in self.from_initiator():
                sent["i>r"] += 1
                moved = True
                if not drop("i>r", sent["i>r"], data):
                    self.to_responder(data)
            for data in self.from_responder():
                sent["r>i"] += 1
                moved = True
                if not drop("r>i", sent["r>i"], data):
                    self.to_initiator(data)
            if not moved:
                break
        self.collect()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for sa in (self.initiator, self.responder):
            timer = sa.get_timer()
            if timer is not None and timer <= self.now:
                sa.handle_timer(self.now)

    def collect(self) -> None:
        for sa, out in ((self.initiator, self.i_events), (self.responder, self.r_events)):
            while (event := sa.next_event()) is not None:
                out.append(event)


def established_pair(left: IkeConfig, right: IkeConfig) -> Pair:
    pair = Pair(left, right)
    pair.start()
    pair.run()
    return pair


T = TypeVar("T")


def events_of(events: list[IkeEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize(
    "proposal",
    [
        "aes256gcm16-prfsha384-x25519",
        "aes128-sha256-modp2048",
        "chacha20poly1305-prfsha256-ecp256",
        "aes256-sha512-ecp384",
    ],
)
def test_ike_sa_and_first_child_come_up(proposal: str) -> None:
    pair = established_pair(
        config("left.example", "right.example", (proposal,)),
        config(
            "right.example",
            "left.example",
            ("aes128-sha256-modp2048", proposal),
            local_net="10.2.0.0/16",
            remote_net="10.1.0.0/16",
        ),
    )
    assert pair.initiator.state is IkeSaState.ESTABLISHED
    assert pair.responder.state is IkeSaState.ESTABLISHED
    (i_ike,) = events_of(pair.i_events, IkeSaEstablished)
    (r_ike,) = events_of(pair.r_events, IkeSaEstablished)
    assert i_ike.proposal == r_ike.proposal == str(IkeProposal.parse(proposal))
    assert (i_ike.spi_i, i_ike.spi_r) == (r_ike.spi_i, r_ike.spi_r)
    assert i_ike.remote_id == "right.example" and r_ike.remote_id == "left.example"
    assert r_ike.peer == LEFT
    (i_child,) = events_of(pair.i_events, ChildSaEstablished)
    (r_child,) = events_of(pair.r_events, ChildSaEstablished)
    # Each side's inbound SA is the other's outbound one, with the same keys.
    assert i_child.spi_in == r_child.spi_out and i_child.spi_out == r_child.spi_in
    assert i_child.encr_key_out == r_child.encr_key_in
    assert i_child.encr_key_in == r_child.encr_key_out
    assert i_child.integ_key_out == r_child.integ_key_in
    assert i_child.encr_key_in != i_child.encr_key_out
    assert i_child.encr_id == EncrId.AES_GCM_16 and len(i_child.encr_key_in) == 36
    assert i_child.local_ts == r_child.remote_ts == (selector("10.1.0.0/16"),)
    assert i_child.mode is r_child.mode is Mode.TUNNEL
    assert pair.initiator.get_timer() is None
    assert pair.initiator.dropped == pair.responder.dropped == 0


def test_cbc_child_has_integrity_keys() -> None:
    left = config("left.example", "right.example", esp=("aes128-sha256",))
    right = config(
        "right.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"
    )
    pair = established_pair(left, right)
    (i_child,) = events_of(pair.i_events, ChildSaEstablished)
    (r_child,) = events_of(pair.r_events, ChildSaEstablished)
    assert i_child.proposal == "aes128-sha256"
    assert len(i_child.encr_key_out) == 16 and len(i_child.integ_key_out) == 32
    assert i_child.integ_key_out == r_child.integ_key_in


def test_traffic_selectors_are_narrowed_by_the_responder() -> None:
    """Section 2.9: the initiator offers 10.1/16 <-> 10.0/8; the responder allows 10.2.3/24."""
    left = config("left.example", "right.example", remote_net="10.0.0.0/8")
    right = config(
        "right.example", "left.example", local_net="10.2.3.0/24", remote_net="10.1.0.0/16"
    )
    pair = established_pair(left, right)
    (i_child,) = events_of(pair.i_events, ChildSaEstablished)
    assert i_child.remote_ts == (selector("10.2.3.0/24"),)
    assert i_child.local_ts == (selector("10.1.0.0/16"),)


def test_wrong_psk_fails_both_sides_with_authentication_failed() -> None:
    left = config("left.example", "right.example", psk=b"wrong")
    right = config(
        "right.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"
    )
    pair = established_pair(left, right)
    (r_fail,) = events_of(pair.r_events, IkeSaFailed)
    (i_fail,) = events_of(pair.i_events, IkeSaFailed)
    assert r_fail.notify == NotifyType.AUTHENTICATION_FAILED
    assert r_fail.reason.startswith("AUTHENTICATION_FAILED: AUTH payload of left.example")
    assert i_fail.reason == "AUTHENTICATION_FAILED: refused by peer"
    assert pair.initiator.state is pair.responder.state is IkeSaState.FAILED
    assert not events_of(pair.i_events, ChildSaEstablished)


def test_unexpected_identity_fails_authentication() -> None:
    left = config("intruder.example", "right.example")
    right = config(
        "right.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"
    )
    pair = established_pair(left, right)
    (r_fail,) = events_of(pair.r_events, IkeSaFailed)
    assert r_fail.reason == (
        "AUTHENTICATION_FAILED: peer identity intruder.example, expected left.example"
    )


def test_no_common_ike_proposal_names_both_sides() -> None:
    left = config("left.example", "right.example", ("aes256gcm16-prfsha384-x25519",))
    right = config("right.example", "left.example", ("aes128-sha256-modp2048",))
    pair = established_pair(left, right)
    (r_fail,) = events_of(pair.r_events, IkeSaFailed)
    (i_fail,) = events_of(pair.i_events, IkeSaFailed)
    assert r_fail.reason == (
        "NO_PROPOSAL_CHOSEN: ours [aes128-sha256-modp2048], theirs [aes256gcm16-prfsha384-x25519]"
    )
    assert i_fail.reason == (
        "NO_PROPOSAL_CHOSEN: peer accepted none of ours [aes256gcm16-prfsha384-x25519]"
    )
    assert i_fail.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_invalid_ke_payload_makes_the_initiator_retry_with_the_asked_group() -> None:
    """Section 1.3: the initiator's first KE is x25519; the responder only takes MODP 2048."""
    left = config(
        "left.example", "right.example", ("aes256gcm16-prfsha384-x25519", "aes128-sha256-modp2048")
    )
    right = config(
        "right.example",
        "left.example",
        ("aes128-sha256-modp2048",),
        local_net="10.2.0.0/16",
        remote_net="10.1.0.0/16",
    )
    pair = Pair(left, right)
    pair.start()
    (first_request,) = pair.from_initiator()
    pair.to_responder(first_request)
    (refusal,) = pair.from_responder()
    assert parse_message(refusal).describe() == "IKE_SA_INIT response 0 [ Notify ]"
    assert pair.responder.state is IkeSaState.CREATED
    assert pair.responder.last_refusal is not None
    assert pair.responder.last_refusal.startswith("INVALID_KE_PAYLOAD: peer sent group x25519")
    pair.to_initiator(refusal)
    pair.run()
    assert pair.initiator.state is pair.responder.state is IkeSaState.ESTABLISHED
    (ike,) = events_of(pair.i_events, IkeSaEstablished)
    assert ike.proposal == "aes128-sha256-modp2048"


def test_child_proposal_mismatch_keeps_the_ike_sa() -> None:
    left = config("left.example", "right.example", esp=("aes128-sha256",))
    right = config(
        "right.example",
        "left.example",
        esp=("chacha20poly1305",),
        local_net="10.2.0.0/16",
        remote_net="10.1.0.0/16",
    )
    pair = established_pair(left, right)
    assert pair.initiator.state is pair.responder.state is IkeSaState.ESTABLISHED
    (r_child,) = events_of(pair.r_events, ChildSaFailed)
    (i_child,) = events_of(pair.i_events, ChildSaFailed)
    assert r_child.reason == ("NO_PROPOSAL_CHOSEN: ours [chacha20poly1305], theirs [aes128-sha256]")
    assert i_child.reason == "NO_PROPOSAL_CHOSEN: refused by peer"


def test_disjoint_traffic_selectors_fail_the_child_with_both_sides_named() -> None:
    left = config(
        "left.example", "right.example", local_net="10.1.0.0/16", remote_net="10.9.0.0/16"
    )
    right = config(
        "right.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"
    )
    pair = established_pair(left, right)
    (r_child,) = events_of(pair.r_events, ChildSaFailed)
    assert r_child.reason == "TS_UNACCEPTABLE: ours [10.2.0.0/16], theirs [10.9.0.0/16]"
    assert r_child.notify == NotifyType.TS_UNACCEPTABLE
    (i_child,) = events_of(pair.i_events, ChildSaFailed)
    assert i_child.notify == NotifyType.TS_UNACCEPTABLE


def default_pair() -> Pair:
    return Pair(
        config("left.example", "right.example"),
        config("right.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"),
    )


def test_lost_request_is_retransmitted_on_the_timer() -> None:
    pair = default_pair()
    pair.start()
    assert pair.initiator.get_timer() == pair.now + 2.0
    pair.from_initiator()  # lost
    pair.advance(1.9)
    assert pair.from_initiator() == []
    pair.advance(0.1)
    (again,) = pair.from_initiator()
    assert pair.initiator.get_timer() == pair.now + 4.0  # section 2.1: exponential back-off
    pair.to_responder(again)
    pair.run()
    assert pair.initiator.state is IkeSaState.ESTABLISHED


def test_lost_response_is_replayed_from_the_responders_cache() -> None:
    """Section 2.1: the responder answers a retransmitted request with the same bytes,
    without processing it again."""
    pair = default_pair()
    pair.start()
    (init,) = pair.from_initiator()
    pair.to_responder(init)
    pair.to_initiator(pair.from_responder()[0])
    (auth,) = pair.from_initiator()
    pair.to_responder(auth)
    (lost,) = pair.from_responder()
    pair.advance(2.0)
    (auth_again,) = pair.from_initiator()
    assert auth_again == auth
    pair.to_responder(auth_again)
    (replayed,) = pair.from_responder()
    assert replayed == lost
    pair.to_initiator(replayed)
    pair.collect()
    assert len(events_of(pair.r_events, IkeSaEstablished)) == 1
    assert len(events_of(pair.r_events, ChildSaEstablished)) == 1
    assert pair.initiator.state is IkeSaState.ESTABLISHED


def test_duplicated_datagrams_are_processed_once() -> None:
    pair = default_pair()
    pair.start()
    pair.run(drop=lambda *_: False)
    # Deliver every datagram twice from the start on a fresh pair.
    dup = default_pair()
    dup.start()
    for _ in range(10):
        for data in dup.from_initiator():
            dup.to_responder(data)
            dup.to_responder(data)
        for data in dup.from_responder():
            dup.to_initiator(data)
            dup.to_initiator(data)
    dup.collect()
    assert dup.initiator.state is dup.responder.state is IkeSaState.ESTABLISHED
    assert len(events_of(dup.i_events, ChildSaEstablished)) == 1
    assert len(events_of(dup.r_events, ChildSaEstablished)) == 1
    assert dup.initiator.dropped >= 1  # the duplicated responses


def test_retransmission_exhaustion_fails_the_sa() -> None:
    pair = default_pair()
    pair.start()
    sends = len(pair.from_initiator())
    for _ in range(20):
        timer = pair.initiator.get_timer()
        if timer is None:
            break
        pair.now = timer
        pair.initiator.handle_timer(pair.now)
        sends += len(pair.from_initiator())
    pair.collect()
    assert sends == 1 + 4
    (fail,) = events_of(pair.i_events, IkeSaFailed)
    assert fail.reason == "no response to IKE_SA_INIT request 0 after 4 retransmissions"
    assert pair.initiator.state is IkeSaState.FAILED
    assert pair.initiator.get_timer() is None
    assert pair.now == 1000.0 + 2 + 4 + 8 + 16 + 32


def test_reordered_stale_response_is_ignored() -> None:
    pair = default_pair()
    pair.start()
    (init,) = pair.from_initiator()
    pair.to_responder(init)
    (init_response,) = pair.from_responder()
    pair.to_initiator(init_response)
    pair.to_initiator(init_response)  # arrives again, late: not the expected message ID
    assert pair.initiator.dropped == 1
    pair.run()
    assert pair.initiator.state is IkeSaState.ESTABLISHED


def test_garbage_and_forgeries_do_not_change_an_established_sa() -> None:
    pair = default_pair()
    pair.start()
    pair.run()
    before = (pair.initiator.state, pair.responder.state)
    liveness = bytearray(pair.initiator.build_message(37, 2, False, []))
    liveness[-1] ^= 1  # forged: the ICV no longer verifies
    header_only = bytearray(liveness[:28])
    header_only[24:28] = (28).to_bytes(4, "big")
    samples = [b"", b"\x00" * 28, b"garbage" * 10, bytes(liveness), bytes(header_only)]
    for data in samples:
        pair.to_responder(data)
        pair.to_initiator(data)
    pair.collect()
    assert (pair.initiator.state, pair.responder.state) == before
    assert pair.responder.dropped == pair.initiator.dropped == len(samples)
    assert pair.from_responder() == [] and pair.from_initiator() == []
    assert not pair.i_events[2:] and not pair.r_events[2:]


def test_liveness_request_gets_an_empty_response() -> None:
    pair = default_pair()
    pair.start()
    pair.run()
    request = pair.initiator.build_message(37, 2, False, [])
    pair.to_responder(request)
    (response,) = pair.from_responder()
    message = parse_message(response)
    assert message.header.is_response and message.header.message_id == 2
    assert pair.responder.dropped == 0


def test_initiating_twice_is_local_misuse() -> None:
    pair = default_pair()
    pair.start()
    with pytest.raises(
        LocalError, match="initiator IKE SA in state init-sent cannot take input initiate"
    ):
        pair.initiator.initiate(RIGHT, pair.now)


def test_config_refuses_nonsense() -> None:
    base = config("a.example", "b.example")
    with pytest.raises(LocalError, match="no IKE proposals"):
        replace(base, ike_proposals=())
    with pytest.raises(LocalError, match="empty pre-shared key"):
        replace(base, psk=b"")
    with pytest.raises(LocalError, match="mode 'beet'"):
        replace(base.child, mode="beet")


@pytest.mark.parametrize("initial_contact", [True, False])
def test_initial_contact_reaches_the_responder(initial_contact: bool) -> None:
    """RFC 7296 section 2.4: an initiator that holds no other IKE SA with its peer says
    so with INITIAL_CONTACT in its IKE_AUTH request (a status notify, so the exchange
    goes on as usual); the responder reports it with the established SA."""
    pair = Pair(
        config("left", "right"),
        config("right", "left", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"),
    )
    pair.initiator.initial_contact = initial_contact
    pair.start()
    pair.run()
    (up_r,) = events_of(pair.r_events, IkeSaEstablished)
    (up_i,) = events_of(pair.i_events, IkeSaEstablished)
    assert up_r.initial_contact is initial_contact
    assert up_i.initial_contact is False  # only a responder reports what it was told
    assert pair.responder.state is IkeSaState.ESTABLISHED
    assert len(events_of(pair.r_events, ChildSaEstablished)) == 1


def test_initiator_refusing_the_responders_auth_tells_it_in_an_informational() -> None:
    """RFC 7296 section 2.21.2: when the initiator refuses the responder's
    authentication it sends AUTHENTICATION_FAILED in a separate INFORMATIONAL request,
    and the responder, which thought the SA established, deletes it and its child."""
    left = config("left.example", "right.example")
    impostor = config(
        "impostor.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"
    )
    peers = Peers(left, impostor)
    sent: list[tuple[str, bytes]] = []

    def record(sender: str, data: bytes) -> bool:
        sent.append((sender, data))
        return False

    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run(record)
    (refused,) = peers.left.of(IkeSaFailed)
    assert refused.reason == (
        "AUTHENTICATION_FAILED: peer identity impostor.example, expected right.example"
    )
    headers = [(who, parse_message(d).header) for who, d in sent]
    informational = [
        h
        for who, h in headers
        if who == "left" and h.exchange_type == ExchangeType.INFORMATIONAL and not h.is_response
    ]
    assert [h.message_id for h in informational] == [2]
    (sa,) = peers.right.sas
    assert sa.state is IkeSaState.DELETED
    (deleted,) = peers.right.of(IkeSaDeleted)
    assert deleted.reason == "AUTHENTICATION_FAILED: the peer refused our authentication"
    (child_gone,) = peers.right.of(ChildSaDeleted)
    assert child_gone.reason.startswith("IKE SA deleted: AUTHENTICATION_FAILED")
    # Sent once and not retransmitted: the initiator's SA is already gone.
    assert peers.left.sa.get_timer() is None


def test_an_initiator_asking_for_eap_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7296 section 2.16: an IKE_AUTH request without AUTH asks for EAP, which is
    not offered; the responder answers AUTHENTICATION_FAILED and says why."""
    from vpnfleet.agent.ike.payloads import AuthPayload
    from vpnfleet.agent.ike.tasks import ike_auth

    build = ike_auth.IkeAuth.build_request

    def without_auth(task: ike_auth.IkeAuth) -> list[object]:
        return [p for p in build(task) if not isinstance(p, AuthPayload)]

    monkeypatch.setattr(ike_auth.IkeAuth, "build_request", without_auth)
    left = config("left.example", "right.example")
    right = config(
        "right.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"
    )
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    (refused,) = peers.right.of(IkeSaFailed)
    assert refused.reason == "AUTHENTICATION_FAILED: initiator asks for EAP, which is not offered"
    assert refused.notify == NotifyType.AUTHENTICATION_FAILED
    (failed,) = peers.left.of(IkeSaFailed)
    assert failed.reason == "AUTHENTICATION_FAILED: refused by peer"


def test_malformed_ike_auth_request_fails_with_invalid_syntax(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 7296 section 2.21.2: a malformed IKE_AUTH request (checked once it has been
    decrypted) gets INVALID_SYNTAX alone; the responder's half-open SA fails."""
    from vpnfleet.agent.ike.constants import PayloadType
    from vpnfleet.agent.ike.payloads import Payload, RawPayload
    from vpnfleet.agent.ike.tasks import ike_auth

    build = ike_auth.IkeAuth.build_request

    def with_bad_nonce(task: ike_auth.IkeAuth) -> list[Payload]:
        return [*build(task), RawPayload(PayloadType.NONCE, b"short")]

    monkeypatch.setattr(ike_auth.IkeAuth, "build_request", with_bad_nonce)
    left = config("left.example", "right.example")
    right = config(
        "right.example", "left.example", local_net="10.2.0.0/16", remote_net="10.1.0.0/16"
    )
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    (refused,) = peers.right.of(IkeSaFailed)
    assert refused.reason.startswith("INVALID_SYNTAX: Nonce at offset ")
    assert refused.reason.endswith(": nonce of 5 bytes, must be 16..256")
    (failed,) = peers.left.of(IkeSaFailed)
    assert failed.reason == "INVALID_SYNTAX: refused by peer"
    assert failed.notify == NotifyType.INVALID_SYNTAX
