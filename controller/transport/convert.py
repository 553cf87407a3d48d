"""NodePlan and status ↔ protobuf: the only controller module that touches message classes.

The planner's dataclasses mirror ``protos/plan.proto`` field for field, and the status
views mirror ``protos/agent.proto``; conversion is therefore driven by the field names on
both sides. A field present on one side only is a programming error and raises
:class:`ConversionError` at once rather than dropping data silently.
"""

from __future__ import annotations

import dataclasses
import enum
from functools import cache
from typing import Any, TypeVar

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from vpnfleet.protos import agent_pb2, plan_pb2
from vpnfleet.protos.hashing import plan_content_hash
from vpnfleet.protos.versions import installed_version

from ..planner.model import IkeVersion
from ..reports.results import ChangeLine
from ..reports.status import (
    AgentStatusView,
    ApplyAnswer,
    CertificateKind,
    CertificateView,
    ChildSaView,
    DropCountView,
    DropLayer,
    DropReason,
    IkeSaView,
    LivenessView,
    NatState,
    ProblemKind,
    ProblemView,
    UnmatchedIkeSaInitView,
    UnmatchedSourceView,
)

T = TypeVar("T")


class ConversionError(Exception):
    """The dataclass mirror and the .proto disagree, or bytes are not a plan."""


@cache
def _enum_number(enum_type: EnumDescriptor, member_name: str) -> int:
    # Proto enum values carry their type as prefix (SPD_ACTION_PROTECT); the Python
    # enums use the tail (SpdAction.PROTECT).
    for value in enum_type.values:
        if value.name == member_name or value.name.endswith("_" + member_name):
            return int(value.number)
    raise ConversionError(f"{enum_type.full_name} has no value for {member_name!r}")


def _fill(msg: Message, obj: Any) -> None:
    fields = msg.DESCRIPTOR.fields_by_name
    for f in dataclasses.fields(obj):
        fd = fields.get(f.name)
        if fd is None:
            raise ConversionError(f"{msg.DESCRIPTOR.full_name} has no field {f.name!r}")
        value = getattr(obj, f.name)
        if fd.is_repeated:
            target = getattr(msg, f.name)
            if fd.message_type is not None:
                for item in value:
                    _fill(target.add(), item)
            elif fd.enum_type is not None:
                target.extend(_enum_number(fd.enum_type, v.name) for v in value)
            else:
                target.extend(value)
        elif fd.message_type is not None:
            if value is not None:
                _fill(getattr(msg, f.name), value)
        elif fd.enum_type is not None:
            setattr(msg, f.name, _enum_number(fd.enum_type, value.name))
        else:
            setattr(msg, f.name, value)


def _read(cls: type[T], msg: Message) -> T:
    """Build a dataclass from a message by field name (for the status views)."""
    kwargs: dict[str, Any] = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in hints:
        fd: FieldDescriptor | None = msg.DESCRIPTOR.fields_by_name.get(name)
        if fd is None:
            raise ConversionError(f"{msg.DESCRIPTOR.full_name} has no field {name!r}")
        value = getattr(msg, name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            kwargs[name] = dict(value)
        elif fd.is_repeated:
            if fd.message_type is not None:
                item_cls = _NESTED[fd.message_type.full_name]
                kwargs[name] = tuple(_read(item_cls, v) for v in value)
            else:
                kwargs[name] = tuple(value)
        elif fd.message_type is not None:
            kwargs[name] = _read(_NESTED[fd.message_type.full_name], value)
        elif fd.enum_type is not None:
            kwargs[name] = _enum_member(fd.enum_type, value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _enum_member(enum_type: EnumDescriptor, number: int) -> enum.Enum:
    """The view's enum member for a proto enum value; UNSPECIFIED for a value this
    controller does not know (an agent newer than it)."""
    cls = _ENUMS[enum_type.full_name]
    value = enum_type.values_by_number.get(number)
    name = value.name if value is not None else "UNSPECIFIED"
    if name not in cls.__members__:
        name = name.rsplit("_", 1)[-1]  # NAT_UNSPECIFIED, KIND_UNSPECIFIED ...
    return cls[name]


_NESTED: dict[str, type] = {
    "vpnfleet.v1.IkeSaStatus": IkeSaView,
    "vpnfleet.v1.ChildSaStatus": ChildSaView,
    "vpnfleet.v1.AgentStatus": AgentStatusView,
    "vpnfleet.v1.UnmatchedIkeSaInit": UnmatchedIkeSaInitView,
    "vpnfleet.v1.UnmatchedSource": UnmatchedSourceView,
    "vpnfleet.v1.Problem": ProblemView,
    "vpnfleet.v1.DropCount": DropCountView,
    "vpnfleet.v1.CertificateExpiry": CertificateView,
}

_ENUMS: dict[str, type[enum.Enum]] = {
    "vpnfleet.v1.IkeSaStatus.Nat": NatState,
    "vpnfleet.v1.IkeVersion": IkeVersion,
    "vpnfleet.v1.Problem.Kind": ProblemKind,
    "vpnfleet.v1.DropCount.Layer": DropLayer,
    "vpnfleet.v1.DropCount.Reason": DropReason,
    "vpnfleet.v1.CertificateExpiry.Kind": CertificateKind,
}


def plan_to_proto(plan: Any) -> plan_pb2.NodePlan:
    """A planner NodePlan as a message, with its content hash set."""
    msg = plan_pb2.NodePlan()
    _fill(msg, plan)
    msg.content_hash = plan_content_hash(msg)
    return msg


def plan_bytes(plan: Any) -> bytes:
    """The plan file form (``vpnfleet plan --emit``): the deterministic serialisation."""
    return plan_to_proto(plan).SerializeToString(deterministic=True)


def plan_from_bytes(data: bytes) -> plan_pb2.NodePlan:
    msg = plan_pb2.NodePlan()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ConversionError(f"not a vpnfleet plan: {exc}") from None
    if msg.content_hash != plan_content_hash(msg):
        raise ConversionError("content hash mismatch: the plan is corrupt or truncated")
    return msg


def apply_request(plan_msg: plan_pb2.NodePlan, dry_run: bool) -> agent_pb2.ApplyPlanRequest:
    return agent_pb2.ApplyPlanRequest(
        plan=plan_msg, dry_run=dry_run, controller_version=installed_version()
    )


_CHANGE_KIND = {
    agent_pb2.Change.ADDED: "added",
    agent_pb2.Change.REMOVED: "removed",
    agent_pb2.Change.CHANGED: "changed",
}


def apply_answer(resp: agent_pb2.ApplyPlanResponse) -> ApplyAnswer:
    return ApplyAnswer(
        changed=resp.changed,
        changes=changes_from_proto(resp),
        generation=int(resp.generation),
        content_hash=str(resp.content_hash),
        problems=tuple(_read(ProblemView, p) for p in resp.problems),
    )


def changes_from_proto(resp: agent_pb2.ApplyPlanResponse) -> tuple[ChangeLine, ...]:
    return tuple(
        ChangeLine(c.section, c.name, _CHANGE_KIND.get(c.kind, "changed"), tuple(c.details))
        for c in resp.changes
    )


def status_from_proto(msg: agent_pb2.AgentStatus) -> AgentStatusView:
    return _read(AgentStatusView, msg)


def rekey_request(target: str, peer_pattern: str) -> agent_pb2.RekeyRequest:
    targets = {
        "both": agent_pb2.RekeyRequest.TARGET_UNSPECIFIED,
        "ike": agent_pb2.RekeyRequest.IKE,
        "child": agent_pb2.RekeyRequest.CHILD,
    }
    return agent_pb2.RekeyRequest(target=targets[target], peer_pattern=peer_pattern)


def rekey_results(resp: agent_pb2.RekeyResponse) -> list[tuple[str, bool, str]]:
    return [(r.peer, r.ok, r.detail) for r in resp.results]


def liveness_request(peer_pattern: str, wait: float) -> agent_pb2.CheckLivenessRequest:
    return agent_pb2.CheckLivenessRequest(peer_pattern=peer_pattern, wait_seconds=wait)


def liveness_from_proto(resp: agent_pb2.CheckLivenessResponse) -> tuple[LivenessView, ...]:
    return tuple(_read(LivenessView, r) for r in resp.results)


def enum_member(cls: type[enum.Enum], proto_value_name: str) -> enum.Enum:
    """The planner enum member for a proto enum value name (used by tests)."""
    for member in cls:
        if proto_value_name == member.name or proto_value_name.endswith("_" + member.name):
            return member
    raise ConversionError(f"{cls.__name__} has no member for {proto_value_name!r}")
