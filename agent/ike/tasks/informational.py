"""INFORMATIONAL exchanges (RFC 7296 section 1.4): deleting child SAs and the IKE SA,
liveness checks, and error notifies from the peer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..child_sa import ChildSa, ChildSaInput, ChildSaState
from ..constants import ExchangeType, NotifyType, ProtocolId, enum_name
from ..events import LivenessAnswered, PeerErrorNotify
from ..message import Message
from ..payloads import DeletePayload, NotifyPayload, Payload
from ..states import IkeSaInput, IkeSaState
from ..task_manager import Outcome, TaskKind
from .ike_init import error_notifies

if TYPE_CHECKING:
    from ..ike_sa import IkeSa


def report_errors(sa: IkeSa, payloads: list[Payload], context: str) -> None:
    """Section 3.10.1: error notifies we do not act on otherwise become events."""
    for notify in error_notifies(payloads):
        kind = int(notify.notify_type)
        detail = f" (SPI {notify.spi.hex()})" if notify.spi else ""
        sa.emit(PeerErrorNotify(kind, f"{enum_name(NotifyType, kind)}{detail}: {context}"))


class ChildDelete:
    """Delete one of our child SAs; the peer answers with its half (section 1.4.1)."""

    kind = TaskKind.CHILD_DELETE
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, sa: IkeSa, child: ChildSa, reason: str) -> None:
        self.sa = sa
        self.child = child
        self.reason = reason

    def build_request(self) -> list[Payload] | None:
        if self.child.state is ChildSaState.DELETED or self.child.spi_in not in self.sa.children:
            return None  # the peer deleted it first
        if self.child.state is not ChildSaState.DELETING:
            self.child.transition(ChildSaInput.DELETE)
        # Section 3.11: the protocol of the child (ESP 3 or AH 2) and the SPI we receive on.
        return [DeletePayload(self.child.protocol, [self.child.spi_in])]

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        report_errors(self.sa, payloads, f"in answer to deleting child SA {self.child.name}")
        # With or without the peer's Delete payload (both are valid after a crossing
        # delete, section 1.4.1), both halves are gone now.
        self.sa.remove_child(self.child, self.reason)
        return Outcome.DONE


class IkeDelete:
    """Delete the IKE SA (section 1.4.1); an unanswered delete still deletes it."""

    kind = TaskKind.IKE_DELETE
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, sa: IkeSa, reason: str) -> None:
        self.sa = sa
        self.reason = reason

    def build_request(self) -> list[Payload] | None:
        if self.sa.state in (IkeSaState.DELETED, IkeSaState.FAILED):
            return None
        if self.sa.state is not IkeSaState.DELETING:
            self.sa.transition(IkeSaInput.DELETE)
        return [DeletePayload(ProtocolId.IKE)]

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        self.sa.finish_delete(self.reason)
        return Outcome.DONE


class Liveness:
    """An empty INFORMATIONAL request; any authenticated answer proves the peer alive
    (section 1.4)."""

    kind = TaskKind.LIVENESS
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, sa: IkeSa) -> None:
        self.sa = sa

    def build_request(self) -> list[Payload] | None:
        return [] if self.sa.state is IkeSaState.ESTABLISHED else None

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        report_errors(self.sa, payloads, "in answer to a liveness check")
        self.sa.emit(LivenessAnswered())
        return Outcome.DONE


def respond(sa: IkeSa, payloads: list[Payload]) -> list[Payload]:
    """Responder side of any INFORMATIONAL request."""
    if sa.state is IkeSaState.ESTABLISHED and any(
        isinstance(p, NotifyPayload) and p.notify_type == NotifyType.AUTHENTICATION_FAILED
        for p in payloads
    ):
        # Section 2.21.2: the initiator refused our authentication after we answered its
        # IKE_AUTH; it has dropped the SA, so ours and its children go too.
        sa.finish_delete("AUTHENTICATION_FAILED: the peer refused our authentication")
        return []
    report_errors(sa, payloads, "reported by peer")
    deletes = [p for p in payloads if isinstance(p, DeletePayload)]
    if any(d.protocol == ProtocolId.IKE for d in deletes):
        if sa.peer_ike_rekey is not None:
            # Section 2.8.2: the peer's rekey crossed ours and the peer deletes this SA,
            # so its new SA stands: the children go there.
            if sa.children:
                sa.hand_over(sa.peer_ike_rekey[2])
            if sa.state is IkeSaState.ESTABLISHED:
                sa.transition(IkeSaInput.REKEYED)
            if sa.tasks.in_flight(TaskKind.IKE_REKEY):
                # Our own rekey's answer is still awaited, to delete our redundant SA.
                sa.deleted_by_peer = True
                return []
        reason = "rekeyed" if sa.state is IkeSaState.REKEYED else "deleted by peer"
        sa.finish_delete(reason)
        return []  # section 1.4.1: the response to an IKE SA delete is empty
    ours: dict[ProtocolId, list[bytes]] = {}
    for delete in deletes:
        if delete.protocol not in (ProtocolId.ESP, ProtocolId.AH):
            continue  # nothing of ours can match
        protocol = ProtocolId(delete.protocol)
        for spi in delete.spis:
            child = sa.child_by_spi_out(spi, protocol)
            if child is None:
                continue  # already gone: nothing to answer for it (section 1.4.1)
            if child.state is ChildSaState.DELETING:
                # Crossing deletes: our own request's answer completes it; this
                # response must not name it (section 1.4.1).
                sa.remove_child(child, "deleted by both peers")
                continue
            reason = "rekeyed" if child.state is ChildSaState.REKEYED else "deleted by peer"
            ours.setdefault(protocol, []).append(child.spi_in)
            sa.remove_child(child, reason)
    # Section 1.4.1: our half of each, one Delete payload per protocol (section 3.11).
    return [DeletePayload(protocol, spis) for protocol, spis in ours.items()]
