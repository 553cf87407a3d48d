"""One child SA negotiation in both roles (RFC 7296 sections 1.2, 1.3.1, 1.3.3, 2.9,
2.17), used by the two exchanges that carry one: IKE_AUTH (the first child, keyed from
the IKE_SA_INIT nonces, without PFS) and CREATE_CHILD_SA (a new child, or a rekey named
by a REKEY_SA notify, with its own nonces and optional PFS). Also the simultaneous-rekey
rule of section 2.8.1: the exchange with the lowest of the four nonces made the
redundant SA, which its initiator deletes; the other initiator deletes the old one.

A request whose child SA payloads are missing is malformed as a whole and answered
with INVALID_SYNTAX in either exchange (see ``REQUIRED``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..child_sa import ChildSa, ChildSaInput, ChildSaState, child_established, new_child
from ..config import ChildConfig, Mode
from ..constants import ExchangeType, NotifyType, ProtocolId, enum_name
from ..errors import CryptoError, ProtocolError
from ..events import ChildSaEstablished, ChildSaFailed, ChildSaRekeyed
from ..message import Message
from ..payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    TrafficSelector,
    TsPayload,
    TsrPayload,
)
from ..proposals import AhProposal, ChildProposal, accept_child, dh_name, select_child
from ..sa_payload import SaPayload
from ..states import IkeSaState
from ..task_manager import Outcome, TaskKind
from ..traffic_selectors import check_subset, narrow
from ..transforms import KeyExchange, random_bytes
from .ike_init import NONCE_LENGTH, error_notifies, first, requested_group
from .informational import ChildDelete

if TYPE_CHECKING:
    from ..ike_sa import IkeSa

MAX_KE_RETRIES = 2

REQUIRED: dict[ExchangeType, tuple[type[Payload], ...]] = {
    ExchangeType.IKE_AUTH: (SaPayload, TsPayload, TsrPayload),
    ExchangeType.CREATE_CHILD_SA: (SaPayload, NoncePayload, TsPayload, TsrPayload),
}
"""The child SA payloads each exchange must carry, request and response (sections 1.2
and 1.3: SAi2/SAr2 and TSi/TSr in IKE_AUTH; SA, Ni/Nr and TSi/TSr in CREATE_CHILD_SA;
the SA payload is section 3.3, traffic selectors 3.13). Without one of them the message
is malformed rather than an offer we decline: NO_PROPOSAL_CHOSEN and TS_UNACCEPTABLE
answer proposals and selectors that were offered (sections 2.7 and 2.9), and section
3.10.1 makes INVALID_SYNTAX the answer to any error no other type covers. In IKE_AUTH
such a request is refused in its entirety, before authentication (section 2.21.2), so
the IKE SA is not created; after it, the IKE SA stays up (section 2.21.3)."""


@dataclass(frozen=True)
class ChildPayloads:
    """The child SA part of one message, found in its payloads."""

    sa: SaPayload
    tsi: TsPayload
    tsr: TsrPayload
    nonce: NoncePayload | None
    """CREATE_CHILD_SA only: IKE_AUTH keys its child from the IKE_SA_INIT nonces."""
    ke: KePayload | None
    mode: Mode

    @classmethod
    def find(cls, payloads: list[Payload], exchange: ExchangeType) -> ChildPayloads | None:
        """None when one of the payloads the exchange requires is missing (REQUIRED)."""
        sa, tsi, tsr = (
            first(payloads, SaPayload),
            first(payloads, TsPayload),
            first(payloads, TsrPayload),
        )
        nonce, ke = first(payloads, NoncePayload), first(payloads, KePayload)
        if not (
            isinstance(sa, SaPayload) and isinstance(tsi, TsPayload) and isinstance(tsr, TsrPayload)
        ):
            return None
        if NoncePayload in REQUIRED[exchange] and not isinstance(nonce, NoncePayload):
            return None
        return cls(
            sa,
            tsi,
            tsr,
            nonce if isinstance(nonce, NoncePayload) else None,
            ke if isinstance(ke, KePayload) else None,
            _requested_mode(payloads),
        )

    @staticmethod
    def lacking(exchange: ExchangeType, message: str) -> str:
        """Why ``find`` found nothing in a ``message`` ("request" or "response")."""
        *names, last = (_PAYLOAD_NAMES[cls] for cls in REQUIRED[exchange])
        name = enum_name(ExchangeType, exchange)
        return f"INVALID_SYNTAX: {name} {message} lacks {', '.join(names)} or {last}"


_PAYLOAD_NAMES: dict[type[Payload], str] = {
    SaPayload: "SA",
    NoncePayload: "Nonce",
    TsPayload: "TSi",
    TsrPayload: "TSr",
}


def rekey_notify(payloads: list[Payload]) -> NotifyPayload | None:
    for p in payloads:
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.REKEY_SA:
            return p
    return None


# -- the mode (section 1.3.1): USE_TRANSPORT_MODE asks for transport, tunnel is the default.


def _requested_mode(payloads: list[Payload]) -> Mode:
    transport = any(
        isinstance(p, NotifyPayload) and p.notify_type == NotifyType.USE_TRANSPORT_MODE
        for p in payloads
    )
    return Mode.TRANSPORT if transport else Mode.TUNNEL


def _mode_notifies(mode: Mode) -> list[Payload]:
    return [NotifyPayload(NotifyType.USE_TRANSPORT_MODE)] if mode is Mode.TRANSPORT else []


def _check_mode(config: ChildConfig, mode: Mode) -> None:
    """Section 3.10.1: an unacceptable USE_TRANSPORT_MODE is NO_PROPOSAL_CHOSEN."""
    if mode is not config.mode:
        raise ProtocolError(
            f"NO_PROPOSAL_CHOSEN: peer wants {mode} mode, ours is {config.mode}",
            notify=NotifyType.NO_PROPOSAL_CHOSEN,
        )


def lowest_nonce_loses(mine: tuple[bytes, bytes], theirs: tuple[bytes, bytes]) -> bool:
    """Sections 2.8.1 / 2.8.2: True when our exchange holds the lowest of the four
    nonces, which makes the SA it created the redundant one."""
    return min(mine) < min(theirs)


def _key_exchange(
    esp: ChildProposal, ke: KePayload | None, ours: KeyExchange | None
) -> bytes | None:
    """g^ir of a PFS exchange, None without PFS."""
    if esp.dh is None:
        return None
    if ke is None or ours is None or ke.group != esp.dh or ours.group != esp.dh:
        raise ProtocolError(
            f"INVALID_KE_PAYLOAD: PFS group {dh_name(esp.dh)} was chosen, KE is "
            f"{'missing' if ke is None else f'group {dh_name(ke.group)}'}",
            notify=NotifyType.INVALID_KE_PAYLOAD,
        )
    return ours.shared_secret(ke.data)


def _refuse(notify: int, data: bytes = b"") -> list[Payload]:
    return [NotifyPayload(notify, data)]


AH_NAT = "AH cannot cross NAT: "
"""How a child refused for AH across a NAT is reported (the agent's status shows it)."""


def _ah_across_nat(sa: IkeSa, what: str) -> ProtocolError:
    """AH authenticates the IP addresses a NAT rewrites (RFC 4302 section 3.3.3.1) and
    has no UDP encapsulation (RFC 3948 is ESP's), so with a NAT detected (or faked to
    force encapsulation, RFC 7296 section 2.23) AH is never negotiated."""
    return ProtocolError(
        f"{AH_NAT}NAT detection found a NAT between us and the peer (section 2.23), and {what}",
        notify=NotifyType.NO_PROPOSAL_CHOSEN,
    )


def _without_ah(proposals: tuple[ChildProposal, ...]) -> tuple[ChildProposal, ...]:
    return tuple(p for p in proposals if not isinstance(p, AhProposal))


class ChildCreate:
    """One child SA negotiation (strongSwan's child_create), in either role.

    As initiator it is a task of its own in CREATE_CHILD_SA (a new child, or the rekey
    of ``rekey``) and the child half of IkeAuth's request in IKE_AUTH; as responder
    ``ChildCreate.respond`` answers the child half of either exchange's request.
    """

    kind = TaskKind.CHILD_CREATE

    def __init__(
        self,
        sa: IkeSa,
        config: ChildConfig,
        rekey: ChildSa | None = None,
        *,
        exchange: ExchangeType = ExchangeType.CREATE_CHILD_SA,
        initiator: bool = True,
    ) -> None:
        self.sa = sa
        self.initiator = initiator
        """Our role in the exchange (not in the IKE SA: either end may create a child)."""
        self.config = config
        self.rekey = rekey
        self.exchange = exchange
        self.proposals = (
            config.initial_proposals if exchange == ExchangeType.IKE_AUTH else config.proposals
        )
        """IKE_AUTH has no KE payload, so its child is offered without PFS (section 1.2).
        AH first, then ESP (ChildConfig.proposals); with a NAT found, ESP only."""
        if sa.encap and _without_ah(self.proposals):
            self.proposals = _without_ah(self.proposals)
        self.spi_in = b""
        """The SPI we receive on (section 3.3.1)."""
        self.nonce: bytes | None = None
        """Our nonce of a CREATE_CHILD_SA exchange."""
        self.ke: KeyExchange | None = None
        """Our PFS key exchange (section 1.3.1), when a proposal names a group."""
        self.ke_retries = 0
        if initiator:
            self.spi_in = random_bytes(4)
            if exchange == ExchangeType.CREATE_CHILD_SA:
                self.nonce = random_bytes(NONCE_LENGTH)
            group = next((p.dh for p in self.proposals if p.dh is not None), None)
            self.ke = KeyExchange(group) if group is not None else None

    @property
    def name(self) -> str:
        return self.config.name

    # -- initiator -------------------------------------------------------------------

    def build_request(self) -> list[Payload] | None:
        """CREATE_CHILD_SA request: [N(REKEY_SA),] and the offer (section 1.3)."""
        if self.sa.state is not IkeSaState.ESTABLISHED:
            return None
        payloads: list[Payload] = []
        if self.rekey is not None:
            if self.rekey.state not in (ChildSaState.INSTALLED, ChildSaState.REKEYING):
                return None  # deleted or rekeyed by the peer meanwhile
            if self.rekey.state is ChildSaState.INSTALLED:
                self.rekey.transition(ChildSaInput.REKEY)
            # Section 1.3.3: the SPI we receive on identifies the SA being rekeyed, and the
            # notify's protocol ID is the SA's (ESP 3 or AH 2, section 3.10).
            payloads.append(
                NotifyPayload(
                    NotifyType.REKEY_SA, protocol=self.rekey.protocol, spi=self.rekey.spi_in
                )
            )
        elif self.sa.encap and not _without_ah(self.proposals):
            # Only AH to offer, across a NAT: the child fails here, nothing is sent.
            self._give_up(str(_ah_across_nat(self.sa, "this child offers AH only")), None)
            return None
        return payloads + self.offer()

    def offer(self) -> list[Payload]:
        """[N(USE_TRANSPORT_MODE),] SA, [Ni, [KEi,]] TSi, TSr (sections 1.2 and 1.3)."""
        local_ts, remote_ts = self.config.local_ts, self.config.remote_ts
        if self.rekey is not None:
            local_ts, remote_ts = self.rekey.local_ts, self.rekey.remote_ts
        proposals = [p.to_proposal(i + 1, self.spi_in) for i, p in enumerate(self.proposals)]
        payloads = [*_mode_notifies(self.config.mode), SaPayload(proposals)]
        if self.nonce is not None:
            payloads.append(NoncePayload(self.nonce))
        if self.ke is not None:
            payloads.append(KePayload(self.ke.group, self.ke.public_key))
        return [*payloads, TsPayload(list(local_ts)), TsrPayload(list(remote_ts))]

    def _give_up(self, reason: str, notify: int | None) -> Outcome:
        if self.rekey is not None and self.rekey.state is ChildSaState.REKEYING:
            self.rekey.transition(ChildSaInput.REKEY_ABORTED)
        self.sa.emit(ChildSaFailed(self.name, reason, notify))
        return Outcome.DONE

    def _refused_by_peer(self, notify: int) -> str:
        if self.sa.encap and not _without_ah(self.proposals):
            # We could offer AH only, across a NAT; the peer (ours too) refuses it.
            refused = f"the peer refused it ({enum_name(NotifyType, notify)})"
            return str(_ah_across_nat(self.sa, f"this child offers AH only; {refused}"))
        if self.exchange == ExchangeType.IKE_AUTH:
            return f"{enum_name(NotifyType, notify)}: refused by peer"
        what = "rekey" if self.rekey is not None else "new child SA"
        return f"{enum_name(NotifyType, notify)}: peer refused the {what}"

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        """The child half of the response; in IKE_AUTH its error notifies are only those
        that refuse the child alone (section 2.21.2)."""
        errors = error_notifies(payloads)
        if errors:
            notify = int(errors[0].notify_type)
            if notify == NotifyType.INVALID_KE_PAYLOAD and self._retry_group(errors[0]):
                return Outcome.RETRY
            return self._give_up(self._refused_by_peer(notify), notify)
        found = ChildPayloads.find(payloads, self.exchange)
        if found is None:
            return self._give_up(ChildPayloads.lacking(self.exchange, "response"), None)
        try:
            chosen, esp = accept_child(self.proposals, found.sa.proposals)
            if isinstance(esp, AhProposal) and self.sa.encap:
                # IKE_AUTH offered AH only (its SA payload cannot be empty); a responder
                # that took it across the NAT gets nothing installed here.
                raise _ah_across_nat(self.sa, "the peer chose AH")
            g_ir = _key_exchange(esp, found.ke, self.ke)
            check_subset(self.config.local_ts, found.tsi.selectors)
            check_subset(self.config.remote_ts, found.tsr.selectors)
            _check_mode(self.config, found.mode)
        except ProtocolError as exc:
            return self._give_up(str(exc), exc.notify)
        # Keys come from this exchange's IKE SA; the child lives where its siblings
        # moved if that SA was rekeyed meanwhile (section 2.18).
        child, event = self._install(
            esp,
            chosen.spi,
            found.tsi.selectors,
            found.tsr.selectors,
            found.mode,
            their_nonce=found.nonce.data if found.nonce is not None else b"",
            g_ir=g_ir,
        )
        if self.rekey is None:
            self.sa.emit(event)
        else:
            assert found.nonce is not None
            self._finish_rekey(self.rekey, child, event, found.nonce.data)
        return Outcome.DONE

    def _retry_group(self, notify: NotifyPayload) -> bool:
        group = requested_group(notify)
        groups = {p.dh for p in self.proposals if p.dh is not None}
        if group not in groups or self.ke_retries >= MAX_KE_RETRIES:
            return False
        self.ke = KeyExchange(group)
        self.ke_retries += 1
        return True

    def _finish_rekey(
        self, old: ChildSa, new: ChildSa, event: ChildSaEstablished, nr: bytes
    ) -> None:
        assert self.nonce is not None
        collided = old.peer_rekey
        lost = collided is not None and lowest_nonce_loses((self.nonce, nr), collided[:2])
        # Make-before-break: the new SA's keys go out before the old SA is deleted.
        self.sa.emit(ChildSaRekeyed(old.spi_in, old.spi_out, event, redundant=lost))
        if old.state is ChildSaState.REKEYING:
            old.transition(ChildSaInput.REKEY_DONE)
        home = self.sa.home
        redundant = "redundant after simultaneous rekey"
        if lost:
            # Our SA is the redundant one; the peer deletes the old SA (section 2.8.1).
            victim, reason = new, redundant
        else:
            victim, reason = old, "rekeyed"
            if collided is not None:
                # The peer should delete its redundant SA; should it never learn of it
                # (its answer lost), we do once its retransmissions are over.
                home.defer(
                    ChildDelete(home, collided[2], redundant),
                    self.sa.tasks.now + self.sa.retransmit_window(),
                )
        if victim.state is not ChildSaState.DELETED:
            home.tasks.queue_task(ChildDelete(home, victim, reason), first=True)
            if home is not self.sa:
                home.tasks.initiate(self.sa.tasks.now)

    # -- both roles --------------------------------------------------------------------

    def _install(
        self,
        esp: ChildProposal,
        spi_out: bytes,
        tsi: Sequence[TrafficSelector],
        tsr: Sequence[TrafficSelector],
        mode: Mode,
        *,
        their_nonce: bytes,
        g_ir: bytes | None,
    ) -> tuple[ChildSa, ChildSaEstablished]:
        """Record the negotiated child and derive its keys (section 2.17): from the
        IKE_SA_INIT nonces in IKE_AUTH, from this exchange's in CREATE_CHILD_SA. TSi is
        the initiator's side of the traffic (section 2.9)."""
        sa, initiator = self.sa, self.initiator
        local_ts, remote_ts = (tsi, tsr) if initiator else (tsr, tsi)
        child = new_child(self.config, esp, self.spi_in, spi_out, local_ts, remote_ts, mode)
        sa.home.children[child.spi_in] = child
        if self.exchange == ExchangeType.IKE_AUTH:
            ni, nr = sa.ni, sa.nr
        else:
            assert self.nonce is not None
            ni, nr = (self.nonce, their_nonce) if initiator else (their_nonce, self.nonce)
        assert sa.proposal is not None and sa.keys is not None
        event = child_established(
            sa.proposal.prf,
            sa.keys.sk_d,
            child,
            ni,
            nr,
            exchange_initiator=initiator,
            encap=sa.encap,
            g_ir=g_ir,
        )
        return child, event

    # -- responder ---------------------------------------------------------------------

    @classmethod
    def respond(cls, sa: IkeSa, payloads: list[Payload], exchange: ExchangeType) -> list[Payload]:
        """The child half of our response to a request of ``exchange``: SA, [Nr, [KEr,]]
        TSi, TSr (sections 1.2 and 1.3), or the notify that refuses the child. Emits the
        new child, its rekey, or ChildSaFailed."""
        old: ChildSa | None = None
        if exchange == ExchangeType.CREATE_CHILD_SA:
            if sa.state is not IkeSaState.ESTABLISHED or sa.tasks.in_flight(TaskKind.IKE_REKEY):
                return _refuse(NotifyType.TEMPORARY_FAILURE)  # being rekeyed or deleted (2.25)
            rekey = rekey_notify(payloads)
            if rekey is not None:
                old = sa.child_by_spi_out(rekey.spi, rekey.protocol)
                if old is None:
                    protocol = rekey.protocol if rekey.protocol == ProtocolId.AH else ProtocolId.ESP
                    return [
                        NotifyPayload(
                            NotifyType.CHILD_SA_NOT_FOUND, protocol=protocol, spi=rekey.spi
                        )
                    ]
                if old.state not in (ChildSaState.INSTALLED, ChildSaState.REKEYING):
                    return _refuse(NotifyType.TEMPORARY_FAILURE)  # section 2.25
        found = ChildPayloads.find(payloads, exchange)
        if found is None:
            sa.note_refusal(ChildPayloads.lacking(exchange, "request"))
            return _refuse(NotifyType.INVALID_SYNTAX)
        if old is not None:
            configs: tuple[ChildConfig, ...] = (old.config,)
        elif exchange == ExchangeType.IKE_AUTH:
            configs = (sa.config.child,)
        else:
            configs = sa.config.children
        failure: ProtocolError | None = None
        for config in configs:
            task = cls(sa, config, old, exchange=exchange, initiator=False)
            try:
                if sa.encap and not _without_ah(task.proposals):
                    raise _ah_across_nat(sa, "this child takes AH only")
                theirs, esp = select_child(task.proposals, found.sa.proposals)
                # TSi are the initiator's side, our remote; TSr are ours.
                narrowed_i = narrow(config.remote_ts, found.tsi.selectors)
                narrowed_r = narrow(config.local_ts, found.tsr.selectors)
                _check_mode(config, found.mode)
            except ProtocolError as exc:
                failure = failure or exc
                continue
            return task._answer(found, theirs.number, theirs.spi, esp, narrowed_i, narrowed_r)
        assert failure is not None
        notify = failure.notify or NotifyType.NO_PROPOSAL_CHOSEN
        sa.emit(ChildSaFailed(configs[0].name, str(failure), notify))
        return _refuse(notify)

    def _answer(
        self,
        found: ChildPayloads,
        number: int,
        spi_out: bytes,
        esp: ChildProposal,
        narrowed_i: list[TrafficSelector],
        narrowed_r: list[TrafficSelector],
    ) -> list[Payload]:
        g_ir: bytes | None = None
        if esp.dh is not None:
            if found.ke is None or found.ke.group != esp.dh:
                # Section 1.3: tell the initiator which group we want.
                return _refuse(NotifyType.INVALID_KE_PAYLOAD, esp.dh.to_bytes(2, "big"))
            self.ke = KeyExchange(esp.dh)
            try:
                g_ir = self.ke.shared_secret(found.ke.data)
            except CryptoError:
                return _refuse(NotifyType.INVALID_SYNTAX)
        self.spi_in = random_bytes(4)
        if self.exchange == ExchangeType.CREATE_CHILD_SA:
            self.nonce = random_bytes(NONCE_LENGTH)
        their_nonce = found.nonce.data if found.nonce is not None else b""
        child, event = self._install(
            esp, spi_out, narrowed_i, narrowed_r, found.mode, their_nonce=their_nonce, g_ir=g_ir
        )
        old = self.rekey
        if old is None:
            self.sa.emit(event)
        else:
            self.sa.emit(ChildSaRekeyed(old.spi_in, old.spi_out, event, initiator=False))
            assert self.nonce is not None  # a rekey is always CREATE_CHILD_SA
            if old.state is ChildSaState.REKEYING:
                old.peer_rekey = (their_nonce, self.nonce, child)  # decided on our answer
            else:
                old.transition(ChildSaInput.REKEY_DONE)  # the peer will delete it
        reply = [*_mode_notifies(found.mode), SaPayload([esp.to_proposal(number, self.spi_in)])]
        if self.nonce is not None:
            reply.append(NoncePayload(self.nonce))
        if self.ke is not None:
            reply.append(KePayload(self.ke.group, self.ke.public_key))
        return [*reply, TsPayload(narrowed_i), TsrPayload(narrowed_r)]
