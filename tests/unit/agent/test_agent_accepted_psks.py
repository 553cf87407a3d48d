"""Accepted PSKs in a plan (a staged key change): validation with clear errors, the
plan differ naming keys by reference only, and the IKE configuration they make."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine import translate
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import PlanRejected
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash
from vpnfleet.protos.plan_diff import Section, plan_changes

NEW_KEY = b"the next epoch's pair key ......."


def plan_msg(edit: Callable[[plan_pb2.Credential], None] | None = None) -> plan_pb2.NodePlan:
    msg = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")])
    if edit is not None:
        edit(msg.peers[0].auth)
    msg.content_hash = plan_content_hash(msg)
    return msg


def accept_new(auth: plan_pb2.Credential) -> None:
    auth.accepted_psks.append(NEW_KEY)
    auth.accepted_psk_references.append("psk:a1/b1/epoch-2")


def reasons(edit: Callable[[plan_pb2.Credential], None]) -> list[str]:
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(plan_msg(edit))
    return info.value.reasons


def test_accepted_psks_convert_and_stay_out_of_repr() -> None:
    plan = plan_from_proto(plan_msg(accept_new))
    auth = plan.peers[0].auth
    assert auth.accepted_psks == (NEW_KEY,)
    assert auth.accepted_psk_references == ("psk:a1/b1/epoch-2",)
    assert NEW_KEY.decode() not in repr(plan)


def test_hash_covers_accepted_psks() -> None:
    assert plan_msg().content_hash != plan_msg(accept_new).content_hash
    other = plan_msg(lambda a: a.accepted_psks.append(b"yet another key ................"))
    assert other.content_hash != plan_msg(accept_new).content_hash


def _pubkey_with_accepted(auth: plan_pb2.Credential) -> None:
    auth.method = plan_pb2.AUTH_METHOD_PUBKEY
    auth.psk = b""
    auth.accepted_psks.append(NEW_KEY)


def _empty(auth: plan_pb2.Credential) -> None:
    auth.accepted_psks.append(b"")
    auth.accepted_psk_references.append("psk:a1/b1/epoch-2")


def _repeats_psk(auth: plan_pb2.Credential) -> None:
    auth.accepted_psks.append(auth.psk)


def _repeats_accepted(auth: plan_pb2.Credential) -> None:
    auth.accepted_psks.extend([NEW_KEY, NEW_KEY])


def _too_many_references(auth: plan_pb2.Credential) -> None:
    auth.accepted_psks.append(NEW_KEY)
    auth.accepted_psk_references.extend(["psk:x/epoch-2", "psk:x/epoch-3"])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            _pubkey_with_accepted,
            "peer 'b1' auth: accepted_psks given for PUBKEY authentication (only for PSK)",
        ),
        (_empty, "peer 'b1' auth: accepted_psks[0] (psk:a1/b1/epoch-2) is empty"),
        (_repeats_psk, "peer 'b1' auth: accepted_psks[0] repeats the PSK or an accepted key"),
        (
            _repeats_accepted,
            "peer 'b1' auth: accepted_psks[1] repeats the PSK or an accepted key",
        ),
        (
            _too_many_references,
            "peer 'b1' auth: accepted_psk_references names 2 keys but accepted_psks holds 1",
        ),
    ],
)
def test_each_bad_accepted_psk_is_refused_by_name(
    edit: Callable[[plan_pb2.Credential], None], expected: str
) -> None:
    found = reasons(edit)
    assert any(r.startswith(expected) for r in found), found
    assert all(NEW_KEY.hex() not in r and NEW_KEY.decode() not in r for r in found)


def test_diff_names_accepted_keys_by_reference() -> None:
    before, during = plan_msg(), plan_msg(accept_new)
    ((change),) = [c for c in plan_changes(before, during) if c.section is Section.PEER]
    assert change.details == ("auth psk:a1/b1/epoch-1 also accepts psk:a1/b1/epoch-2",)
    (back,) = [c for c in plan_changes(during, before) if c.section is Section.PEER]
    assert back.details == ("auth psk:a1/b1/epoch-1 accepts no other key",)
    assert NEW_KEY.hex() not in repr(change) and NEW_KEY.decode() not in repr(change)


def test_ike_config_carries_the_accepted_keys() -> None:
    plan = plan_from_proto(plan_msg(accept_new))
    config = translate.ike_config(plan, plan.peers[0])
    assert config.psk == plan.peers[0].auth.psk
    assert config.accepted_psks == (NEW_KEY,)
    assert config.peer_psks == (plan.peers[0].auth.psk, NEW_KEY)
