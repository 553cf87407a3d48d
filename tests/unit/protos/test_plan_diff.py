"""plan_changes(): the one plan differ, on NodePlan messages, never showing a secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from vpnfleet.agent.hollow import sample_plan
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.plan_diff import ChangeKind, PlanChange, Section, plan_changes

PEERS = [("b1", "10.0.0.2", "10.2.0.0/24"), ("c1", "10.0.0.3", "10.3.0.0/24")]
BOOKKEEPING = {"generation", "content_hash", "source_revision"}


def msg(peers: list[tuple[str, str, str]] = PEERS, **kw: int) -> plan_pb2.NodePlan:
    return sample_plan("a1", "10.0.0.1", "10.1.0.0/24", peers, **kw)


def by_key(changes: list[PlanChange]) -> dict[tuple[Section, str], PlanChange]:
    return {(c.section, c.name): c for c in changes}


def test_same_plan_has_no_changes() -> None:
    assert plan_changes(msg(), msg()) == []


def test_generation_hash_and_revision_alone_are_no_change() -> None:
    new = msg(generation=9)
    new.content_hash, new.source_revision = "f" * 64, "4b825dc642cb"
    assert plan_changes(msg(), new) == []


def test_first_plan_is_all_added() -> None:
    changes = by_key(plan_changes(None, msg()))
    assert {c.kind for c in changes.values()} == {ChangeKind.ADDED}
    assert changes[(Section.IDENTITY, "a1")].details == ("fqdn:a1",)
    assert changes[(Section.ADDRESSES, "a1")].details == ("+10.0.0.1",)
    assert changes[(Section.PEER, "b1")].details == (
        "address 10.0.0.2",
        "auth psk:a1/b1/epoch-1",
        "ike aes256gcm16-prfsha384-x25519",
        "esp aes256gcm16",
    )
    assert changes[(Section.SPD, "protect-c1")].details == (
        "protect 10.1.0.0/24[any] -> 10.3.0.0/24[any] proto any via c1",
    )


def test_peer_added_and_removed() -> None:
    new = msg(peers=[PEERS[0], ("d1", "10.0.0.4", "10.4.0.0/24")])
    changes = by_key(plan_changes(msg(), new))
    assert changes[(Section.PEER, "c1")].kind is ChangeKind.REMOVED
    assert changes[(Section.PEER, "c1")].details == ("address 10.0.0.3",)
    assert changes[(Section.PEER, "d1")].kind is ChangeKind.ADDED
    assert changes[(Section.SPD, "protect-c1")].kind is ChangeKind.REMOVED
    assert changes[(Section.SPD, "protect-d1")].kind is ChangeKind.ADDED
    assert (Section.PEER, "b1") not in changes


def test_psk_rotation_shows_the_reference_not_the_secret() -> None:
    old, new = msg(), msg(psk_epoch=2)
    changes = plan_changes(old, new)
    assert by_key(changes)[(Section.PEER, "b1")].details == ("auth psk:a1/b1/epoch-1 -> epoch-2",)
    text = repr(changes)
    for plan in (old, new):
        for peer in plan.peers:
            assert peer.auth.psk.hex() not in text and repr(peer.auth.psk) not in text


def test_secret_changed_under_the_same_reference() -> None:
    new = msg()
    new.peers[0].auth.psk = b"another secret value"
    changes = by_key(plan_changes(msg(), new))
    assert changes[(Section.PEER, "b1")].details == ("auth psk:a1/b1/epoch-1: key changed",)
    assert "another secret" not in repr(changes)


def test_staged_keys_and_cas_are_named_by_reference() -> None:
    accept = msg()
    accept.peers[0].auth.accepted_psks.append(b"the next key")
    accept.peers[0].auth.accepted_psk_references.append("psk:a1/b1/epoch-2")
    changes = by_key(plan_changes(msg(), accept))
    assert changes[(Section.PEER, "b1")].details == (
        "auth psk:a1/b1/epoch-1 also accepts psk:a1/b1/epoch-2",
    )
    assert "the next key" not in repr(changes)
    back = by_key(plan_changes(accept, msg()))
    assert back[(Section.PEER, "b1")].details == ("auth psk:a1/b1/epoch-1 accepts no other key",)
    rotating = msg()
    rotating.peers[0].auth.accepted_ca_fingerprints.append("ab" * 32)
    changes = by_key(plan_changes(msg(), rotating))
    assert changes[(Section.PEER, "b1")].details == (
        "auth psk:a1/b1/epoch-1 also accepts CA abababababababab",
    )


def test_proposals_and_fields_are_named() -> None:
    new = msg()
    peer = new.peers[1]
    del peer.ike_proposals[:]
    peer.ike_proposals.add(text="aes128-sha256-modp2048")
    peer.mode = plan_pb2.MODE_TRANSPORT
    peer.dpd.delay_seconds = 10
    peer.ike_fragment_size = 1400
    peer.remote_id.type = plan_pb2.ID_IPV4_ADDR
    new.subnets.append("10.9.0.0/24")
    changes = by_key(plan_changes(msg(), new))
    assert changes[(Section.PEER, "c1")].details == (
        "remote_id fqdn:c1 -> ipv4_addr:c1",
        "ike aes256gcm16-prfsha384-x25519 -> aes128-sha256-modp2048",
        "mode tunnel -> transport",
        "dpd.delay_seconds 30 -> 10",
        "ike_fragment_size 1280 -> 1400",
    )
    assert changes[(Section.SUBNETS, "a1")].details == ("+10.9.0.0/24",)


def test_spd_entry_changed_and_reordered() -> None:
    new = msg()
    new.spd[0].selector.protocol = 6
    new.spd[0].selector.remote_port_start = new.spd[0].selector.remote_port_end = 443
    changes = by_key(plan_changes(msg(), new))
    assert changes[(Section.SPD, "protect-b1")].details == (
        "protect 10.1.0.0/24[any] -> 10.2.0.0/24[any] proto any via b1 -> "
        "protect 10.1.0.0/24[any] -> 10.2.0.0/24[443] proto tcp via b1",
    )
    swapped = msg()
    first, second = plan_pb2.SpdEntry(), plan_pb2.SpdEntry()
    first.CopyFrom(swapped.spd[0])
    second.CopyFrom(swapped.spd[1])
    swapped.spd[0].CopyFrom(second)
    swapped.spd[1].CopyFrom(first)
    changes = by_key(plan_changes(msg(), swapped))
    assert list(changes) == [(Section.SPD_ORDER, "a1")]
    assert changes[(Section.SPD_ORDER, "a1")].details == ("protect-c1 > protect-b1",)


# -------------------------------------------------------------------- every field counts


def _leaves(desc: Descriptor, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for fd in desc.fields:
        if fd.message_type is not None and not fd.is_repeated:
            yield from _leaves(fd.message_type, (*path, fd.name))
        else:
            yield (*path, fd.name)


def _paths() -> Iterator[tuple[str, ...]]:
    for fd in plan_pb2.NodePlan.DESCRIPTOR.fields:
        if fd.name in BOOKKEEPING or fd.name == "host":
            continue
        if fd.name == "peers":
            for path in _leaves(plan_pb2.Peer.DESCRIPTOR, ("peers",)):
                if path != ("peers", "name"):
                    yield path
        elif fd.name == "spd":
            for path in _leaves(plan_pb2.SpdEntry.DESCRIPTOR, ("spd",)):
                if path != ("spd", "name"):
                    yield path
        else:
            yield from (
                _leaves(fd.message_type, (fd.name,))
                if fd.message_type and (not fd.is_repeated)
                else [(fd.name,)]
            )


def _change(plan: plan_pb2.NodePlan, path: tuple[str, ...]) -> None:
    """Give the field at ``path`` (in the first peer or SPD entry) another value."""
    target: Message = plan
    for name in path[:-1]:
        value = getattr(target, name)
        target = value[0] if name in ("peers", "spd") else value
    fd: FieldDescriptor = target.DESCRIPTOR.fields_by_name[path[-1]]
    value = getattr(target, fd.name)
    if fd.is_repeated:
        if fd.message_type is not None:
            value.add(text="aes128")  # a proposal
        elif fd.type == FieldDescriptor.TYPE_BYTES:
            value.append(b"-----BEGIN X509 CRL-----")
        elif fd.type == FieldDescriptor.TYPE_STRING:
            value.append("10.250.0.0/24")
        else:
            value.append(7)
    elif fd.enum_type is not None:
        setattr(target, fd.name, next(v.number for v in fd.enum_type.values if v.number != value))
    elif fd.type == FieldDescriptor.TYPE_BOOL:
        setattr(target, fd.name, not value)
    elif fd.type == FieldDescriptor.TYPE_STRING:
        setattr(target, fd.name, value + "x")
    elif fd.type == FieldDescriptor.TYPE_BYTES:
        setattr(target, fd.name, value + b"x")
    else:
        setattr(target, fd.name, value + 1400)


@pytest.mark.parametrize("path", list(_paths()), ids=".".join)
def test_every_data_plane_field_shows_as_a_change(path: tuple[str, ...]) -> None:
    new = msg()
    _change(new, path)
    changes = plan_changes(msg(), new)
    assert changes, path
    assert all(c.details for c in changes), changes
