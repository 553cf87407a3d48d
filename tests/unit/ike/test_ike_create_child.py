"""CREATE_CHILD_SA between two in-memory peers on fake time (RFC 7296 sections 1.3, 2.8,
2.8.1, 2.8.2, 2.18): new child SAs, child rekey with and without PFS, IKE SA rekey,
and simultaneous rekeys resolved by the lowest nonce."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import ike_peers
from tests.support.ike_peers import Endpoint, Peers
from vpnfleet.agent.ike.config import ChildConfig, selector
from vpnfleet.agent.ike.constants import NotifyType
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyed,
    IkeSaDeleted,
    IkeSaRekeyed,
)
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.payloads import KePayload
from vpnfleet.agent.ike.proposals import EspProposal
from vpnfleet.agent.ike.states import IkeSaState
from vpnfleet.agent.ike.tasks import child_create, ike_rekey


def established(**kw: object) -> Peers:
    peers = Peers.established(**kw)
    peers.clear_events()
    return peers


def only_child(endpoint: Endpoint) -> ChildSaEstablished:
    (event,) = endpoint.of(ChildSaEstablished)
    return event


def assert_paired(a: ChildSaEstablished, b: ChildSaEstablished) -> None:
    assert a.spi_in == b.spi_out and a.spi_out == b.spi_in
    assert a.encr_key_in == b.encr_key_out and a.encr_key_out == b.encr_key_in
    assert a.integ_key_in == b.integ_key_out and a.integ_key_out == b.integ_key_in
    assert a.encr_key_in != a.encr_key_out


def nonces(monkeypatch: pytest.MonkeyPatch, module: object, firsts: list[int]) -> None:
    """Make the next nonces (32-byte random draws) in ``module`` start with these bytes,
    in the order they are drawn; other sizes (SPIs) stay random."""
    queue: Iterator[int] = iter(firsts)

    def fake(size: int) -> bytes:
        if size == 32:
            return bytes([next(queue)]) + os.urandom(31)
        return os.urandom(size)

    monkeypatch.setattr(module, "random_bytes", fake)


def test_new_child_sa_with_its_own_policy() -> None:
    db_left = ChildConfig(
        "db",
        (EspProposal.parse("aes128gcm16"),),
        (selector("10.1.5.0/24"),),
        (selector("10.2.5.0/24"),),
    )
    db_right = ChildConfig(
        "db",
        (EspProposal.parse("aes128gcm16"),),
        (selector("10.2.5.0/24"),),
        (selector("10.1.5.0/24"),),
    )
    peers = Peers.established()
    peers.left.sa.config.__dict__["extra_children"] = (db_left,)  # frozen: test-only patch
    peers.right.sa.config.__dict__["extra_children"] = (db_right,)
    peers.clear_events()
    peers.left.sa.create_child("db", peers.now)
    peers.run()
    left, right = only_child(peers.left), only_child(peers.right)
    assert left.name == right.name == "db"
    assert left.proposal == "aes128gcm16" and len(left.encr_key_in) == 20
    assert left.local_ts == right.remote_ts == (selector("10.1.5.0/24"),)
    assert_paired(left, right)
    assert len(peers.left.sa.children) == len(peers.right.sa.children) == 2


def test_new_child_with_no_matching_policy_fails_only_the_child() -> None:
    peers = established()
    peers.left.sa.config.__dict__["extra_children"] = (
        ChildConfig(
            "db",
            (EspProposal.parse("aes256gcm16"),),
            (selector("10.9.0.0/16"),),
            (selector("10.8.0.0/16"),),
        ),
    )
    peers.left.sa.create_child("db", peers.now)
    peers.run()
    (failed,) = peers.left.of(ChildSaFailed)
    assert failed.name == "db" and failed.notify == NotifyType.TS_UNACCEPTABLE
    assert failed.reason == "TS_UNACCEPTABLE: peer refused the new child SA"
    (theirs,) = peers.right.of(ChildSaFailed)
    assert theirs.reason.startswith("TS_UNACCEPTABLE")
    assert peers.left.sa.state is IkeSaState.ESTABLISHED


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    "esp", [("aes256gcm16",), ("aes128gcm16-x25519",), ("aes128-sha256-ecp256",)]
)
def test_child_rekey_by_either_side_is_make_before_break(side: str, esp: tuple[str, ...]) -> None:
    peers = Peers(*ike_peers.left_right(esp=esp))
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    old_left, old_right = only_child(peers.left), only_child(peers.right)
    peers.clear_events()
    us = peers.left if side == "left" else peers.right
    old = old_left if side == "left" else old_right
    us.sa.rekey_child(old.spi_in, peers.now)
    (request,) = peers.outgoing(us)
    other = peers.other(us)
    payloads = other.sa._open(parse_message(request), request)
    has_ke = any(isinstance(p, KePayload) for p in payloads)
    assert has_ke == (EspProposal.parse(esp[0]).dh is not None)  # PFS only when asked
    peers.deliver(other, request)
    peers.run()
    for endpoint, before in ((peers.left, old_left), (peers.right, old_right)):
        rekeyed, deleted = endpoint.events
        assert isinstance(rekeyed, ChildSaRekeyed) and isinstance(deleted, ChildSaDeleted)
        assert (rekeyed.old_spi_in, rekeyed.old_spi_out) == (before.spi_in, before.spi_out)
        assert (deleted.spi_in, deleted.reason) == (before.spi_in, "rekeyed")
        assert rekeyed.new.proposal == esp[0]  # with its PFS group, unlike IKE_AUTH's
        assert rekeyed.new.local_ts == before.local_ts
        assert list(endpoint.sa.children) == [rekeyed.new.spi_in]
    new_left = peers.left.of(ChildSaRekeyed)[0].new
    new_right = peers.right.of(ChildSaRekeyed)[0].new
    assert_paired(new_left, new_right)
    assert new_left.encr_key_in != old_left.encr_key_in
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def test_child_rekey_retries_with_the_pfs_group_the_peer_asks_for() -> None:
    """Section 1.3: INVALID_KE_PAYLOAD names the group; the retry is a new exchange."""
    left = ike_peers.ike_config(
        "left.example",
        "right.example",
        "10.1.0.0/16",
        "10.2.0.0/16",
        esp=("aes128gcm16-ecp256", "aes128gcm16-x25519"),
    )
    right = ike_peers.ike_config(
        "right.example", "left.example", "10.2.0.0/16", "10.1.0.0/16", esp=("aes128gcm16-x25519",)
    )
    peers = Peers(left, right)
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    old = only_child(peers.left)
    peers.clear_events()
    peers.left.sa.rekey_child(old.spi_in, peers.now)
    peers.run()
    (rekeyed,) = peers.left.of(ChildSaRekeyed)
    assert rekeyed.new.proposal == "aes128gcm16-x25519"
    assert peers.left.sa.tasks.next_message_id == 5  # rekey, retry, delete after 0 and 1
    assert not peers.left.of(ChildSaFailed)


@pytest.mark.parametrize(("left_ni", "loser"), [(0x10, "left"), (0x50, "right")])
def test_simultaneous_child_rekey_lowest_nonce_loses(
    monkeypatch: pytest.MonkeyPatch, left_ni: int, loser: str
) -> None:
    """Section 2.8.1: left's exchange uses (left_ni, 0x30), right's (0x20, 0x40)."""
    peers = established()
    old_left = next(iter(peers.left.sa.children.values()))
    old_right = next(iter(peers.right.sa.children.values()))
    nonces(monkeypatch, child_create, [left_ni, 0x20, 0x30, 0x40])
    peers.left.sa.rekey_child(old_left.spi_in, peers.now)
    peers.right.sa.rekey_child(old_right.spi_in, peers.now)
    (from_left,) = peers.outgoing(peers.left)
    (from_right,) = peers.outgoing(peers.right)
    peers.deliver(peers.right, from_left)
    peers.deliver(peers.left, from_right)
    peers.run()
    loser_end = peers.left if loser == "left" else peers.right
    winner_end = peers.other(loser_end)
    for endpoint in (peers.left, peers.right):
        assert len(endpoint.of(ChildSaRekeyed)) == 2
        reasons = sorted(e.reason for e in endpoint.of(ChildSaDeleted))
        assert reasons == sorted(
            [
                "rekeyed",
                "redundant after simultaneous rekey"
                if endpoint is loser_end
                else "deleted by peer",
            ]
        )
    (left_child,) = peers.left.sa.children.values()
    (right_child,) = peers.right.sa.children.values()
    assert (left_child.spi_in, left_child.spi_out) == (right_child.spi_out, right_child.spi_in)
    # The survivor is the SA the winner's exchange created: the winner chose its inbound SPI
    # in its own request, the loser in its answer.
    survivor = [e.new for e in winner_end.of(ChildSaRekeyed)]
    winners_own = [c for c in survivor if c.spi_in in winner_end.sa.children]
    assert len(winners_own) == 1
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def test_rekey_of_a_child_the_peer_is_deleting_is_refused() -> None:
    """Section 2.25: TEMPORARY_FAILURE for a child being deleted; both halves go."""
    peers = established()
    left_spi = next(iter(peers.left.sa.children))
    right_spi = next(iter(peers.right.sa.children))
    peers.left.sa.rekey_child(left_spi, peers.now)
    peers.right.sa.delete_child(right_spi, peers.now)
    (from_left,) = peers.outgoing(peers.left)
    (from_right,) = peers.outgoing(peers.right)
    peers.deliver(peers.right, from_left)
    peers.deliver(peers.left, from_right)
    peers.run()
    (failed,) = peers.left.of(ChildSaFailed)
    assert failed.notify == NotifyType.TEMPORARY_FAILURE
    assert not peers.left.sa.children and not peers.right.sa.children


@pytest.mark.parametrize("side", ["left", "right"])
def test_ike_sa_rekey_by_either_side_moves_the_children(side: str) -> None:
    peers = established()
    us = peers.left if side == "left" else peers.right
    old_left, old_right = peers.left.sa, peers.right.sa
    children_left = dict(old_left.children)
    old_keys = old_left.keys
    us.sa.rekey(peers.now)
    peers.run()
    (left_rekeyed,) = peers.left.of(IkeSaRekeyed)
    (right_rekeyed,) = peers.right.of(IkeSaRekeyed)
    new_left, new_right = left_rekeyed.new_sa, right_rekeyed.new_sa
    assert (new_left.spi_i, new_left.spi_r) == (new_right.spi_i, new_right.spi_r)
    assert (left_rekeyed.new_spi_i, left_rekeyed.new_spi_r) == (new_left.spi_i, new_left.spi_r)
    assert (left_rekeyed.old_spi_i, left_rekeyed.old_spi_r) == (old_left.spi_i, old_left.spi_r)
    assert {new_left.spi_i, new_left.spi_r}.isdisjoint({old_left.spi_i, old_left.spi_r})
    # Section 2.18: the rekey initiator is the new SA's original initiator.
    assert new_left.is_initiator == (side == "left")
    assert new_left.keys is not None and new_right.keys is not None and old_keys is not None
    assert new_left.keys.sk_d == new_right.keys.sk_d != old_keys.sk_d
    assert new_left.keys.sk_ei == new_right.keys.sk_ei
    assert new_left.children == children_left and not old_left.children
    for endpoint in (peers.left, peers.right):
        (deleted,) = endpoint.of(IkeSaDeleted)
        assert deleted.reason == "rekeyed"
        assert not endpoint.of(ChildSaDeleted)
    assert old_left.state is old_right.state is IkeSaState.DELETED
    assert new_left.state is new_right.state is IkeSaState.ESTABLISHED
    # The new SA works: message IDs restart at 0 and a child rekey goes through it.
    peers.clear_events()
    spi = next(iter(new_left.children))
    new_left.rekey_child(spi, peers.now)
    peers.run()
    assert len(peers.left.of(ChildSaRekeyed)) == len(peers.right.of(ChildSaRekeyed)) == 1
    assert new_left.tasks.next_message_id == 2 if side == "left" else 2


@pytest.mark.parametrize(("left_ni", "loser"), [(0x10, "left"), (0x50, "right")])
def test_simultaneous_ike_rekey_lowest_nonce_loses(
    monkeypatch: pytest.MonkeyPatch, left_ni: int, loser: str
) -> None:
    """Section 2.8.2: left's exchange uses (left_ni, 0x30), right's (0x20, 0x40)."""
    peers = established()
    old_left, old_right = peers.left.sa, peers.right.sa
    children = set(old_left.children)
    nonces(monkeypatch, ike_rekey, [left_ni, 0x20, 0x30, 0x40])
    old_left.rekey(peers.now)
    old_right.rekey(peers.now)
    (from_left,) = peers.outgoing(peers.left)
    (from_right,) = peers.outgoing(peers.right)
    peers.deliver(peers.right, from_left)
    peers.deliver(peers.left, from_right)
    peers.run()
    assert old_left.state is old_right.state is IkeSaState.DELETED
    live_left = [s for s in peers.left.sas if s.state is IkeSaState.ESTABLISHED]
    live_right = [s for s in peers.right.sas if s.state is IkeSaState.ESTABLISHED]
    assert len(live_left) == len(live_right) == 1
    (left_sa,), (right_sa,) = live_left, live_right
    assert (left_sa.spi_i, left_sa.spi_r) == (right_sa.spi_i, right_sa.spi_r)
    # The winner initiated the surviving SA.
    assert left_sa.is_initiator == (loser == "right")
    assert set(left_sa.children) == children and right_sa.children
    loser_end = peers.left if loser == "left" else peers.right
    reasons = sorted(e.reason for e in loser_end.of(IkeSaDeleted))
    assert reasons == ["redundant after simultaneous rekey", "rekeyed"]
    winner_reasons = sorted(e.reason for e in peers.other(loser_end).of(IkeSaDeleted))
    assert winner_reasons == ["deleted by peer", "rekeyed"]
    for endpoint in (peers.left, peers.right):
        assert not endpoint.of(ChildSaDeleted)
        last = [e for e in endpoint.of(IkeSaRekeyed) if e.carries_children][-1]
        assert last.new_sa is (left_sa if endpoint is peers.left else right_sa)


def test_delete_after_ike_rekey_runs_on_the_new_sa() -> None:
    peers = established()
    peers.left.sa.rekey(peers.now)
    peers.run()
    peers.clear_events()
    peers.right.sa.delete(peers.now)
    peers.run()
    assert [e.reason for e in peers.left.of(IkeSaDeleted)] == ["deleted by peer"]
    assert len(peers.left.of(ChildSaDeleted)) == 1


def test_rekey_misuse_is_named() -> None:
    peers = established()
    with pytest.raises(LocalError, match="cannot rekey child SA 00000000: unknown"):
        peers.left.sa.rekey_child(bytes(4), peers.now)
    with pytest.raises(LocalError, match="no child configuration named 'nope'"):
        peers.left.sa.create_child("nope", peers.now)
    peers.left.sa.rekey(peers.now)
    with pytest.raises(LocalError, match="an IKE SA rekey is already under way"):
        peers.left.sa.rekey(peers.now)


def _drop_first_from(sender: str) -> object:
    dropped: list[bytes] = []

    def drop(name: str, data: bytes) -> bool:
        if name == sender and not dropped:
            dropped.append(data)
            return True
        return False

    return drop


@pytest.mark.parametrize("what", ["child rekey", "IKE rekey", "child delete", "new child"])
def test_lost_responses_are_replayed_and_processed_once(what: str) -> None:
    """Section 2.1: the initiator resends, the responder answers from its cache and does
    not run the exchange twice."""
    peers = established()
    sa = peers.left.sa
    spi = next(iter(sa.children))
    if what == "child rekey":
        sa.rekey_child(spi, peers.now)
    elif what == "IKE rekey":
        sa.rekey(peers.now)
    elif what == "child delete":
        sa.delete_child(spi, peers.now)
    else:
        sa.create_child("net", peers.now)
    peers.run(drop=_drop_first_from("right"))  # type: ignore[arg-type]
    assert peers.left.events == []  # nothing happened on our side yet
    peers.advance(2.0)  # retransmission
    peers.run()
    if what == "child rekey":
        assert len(peers.right.of(ChildSaRekeyed)) == len(peers.left.of(ChildSaRekeyed)) == 1
        assert len(peers.right.sa.children) == len(peers.left.sa.children) == 1
    elif what == "IKE rekey":
        assert len(peers.right.of(IkeSaRekeyed)) == len(peers.left.of(IkeSaRekeyed)) == 1
        assert [s.state for s in peers.right.sas].count(IkeSaState.ESTABLISHED) == 1
    elif what == "child delete":
        assert len(peers.right.of(ChildSaDeleted)) == len(peers.left.of(ChildSaDeleted)) == 1
    else:
        assert len(peers.right.of(ChildSaEstablished)) == 1
        assert len(peers.right.sa.children) == len(peers.left.sa.children) == 2
    assert peers.right.sa.dropped == 0


def test_new_child_request_lost_twice_then_delivered() -> None:
    peers = established()
    peers.left.sa.create_child("net", peers.now)
    peers.outgoing(peers.left)
    peers.advance(2.0)
    peers.outgoing(peers.left)
    peers.advance(4.0)
    peers.run()
    assert len(peers.left.of(ChildSaEstablished)) == 1
    assert peers.left.sa.get_timer() is None


def test_rekey_request_that_arrives_after_our_rekey_finished_is_refused() -> None:
    """Both rekey; left's exchange completes (and left deletes the old SA) before right's
    request reaches it: left answers TEMPORARY_FAILURE (section 2.25), and the peers
    still end with one shared child."""
    peers = established()
    old_left = next(iter(peers.left.sa.children))
    old_right = next(iter(peers.right.sa.children))
    peers.left.sa.rekey_child(old_left, peers.now)
    peers.right.sa.rekey_child(old_right, peers.now)
    (from_left,) = peers.outgoing(peers.left)
    (from_right,) = peers.outgoing(peers.right)
    peers.deliver(peers.right, from_left)  # right answers (collision noted on its side)
    (answer,) = peers.outgoing(peers.right)
    peers.deliver(peers.left, answer)  # left is done, queues the delete of the old SA
    peers.deliver(peers.left, from_right)  # too late: TEMPORARY_FAILURE
    peers.run()
    (failed,) = peers.right.of(ChildSaFailed)
    assert failed.notify == NotifyType.TEMPORARY_FAILURE
    (left_child,) = peers.left.sa.children.values()
    (right_child,) = peers.right.sa.children.values()
    assert (left_child.spi_in, left_child.spi_out) == (right_child.spi_out, right_child.spi_in)


def test_queued_child_exchange_follows_its_child_to_the_new_ike_sa() -> None:
    """Section 2.18: a child rekey queued behind an IKE SA rekey runs on the new SA."""
    peers = established()
    old = peers.left.sa
    spi = next(iter(old.children))
    old.rekey(peers.now)
    old.rekey_child(spi, peers.now)  # queued: window 1 (section 2.3)
    peers.run()
    (rekeyed,) = peers.left.of(IkeSaRekeyed)
    new_sa = rekeyed.new_sa
    (child_rekeyed,) = peers.left.of(ChildSaRekeyed)
    assert child_rekeyed.old_spi_in == spi
    assert list(new_sa.children) == [child_rekeyed.new.spi_in]
    assert new_sa.tasks.next_message_id == 2  # the child rekey and its delete, on the new SA
    assert old.state is IkeSaState.DELETED
