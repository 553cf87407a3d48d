"""CREATE_CHILD_SA for child SAs (RFC 7296 sections 1.3.1 and 1.3.3): a new child,
or a rekey (REKEY_SA notify) with optional PFS, and the simultaneous-rekey rule of
section 2.8.1 (the exchange with the lowest of the four nonces made the redundant SA,
which its initiator deletes; the other initiator deletes the old one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..child_sa import ChildSa, ChildSaInput, ChildSaState, child_established, new_child
from ..config import ChildConfig, Mode
from ..constants import ExchangeType, NotifyType, ProtocolId, enum_name
from ..errors import CryptoError, ProtocolError
from ..events import ChildSaEstablished, ChildSaFailed, ChildSaRekeyed
from ..message import Message
from ..payloads import KePayload, NoncePayload, NotifyPayload, Payload, TsPayload, TsrPayload
from ..proposals import EspProposal, NoProposalChosen, accept_esp, dh_name, select_esp
from ..sa_payload import SaPayload
from ..states import IkeSaState
from ..task_manager import Outcome
from ..traffic_selectors import TsUnacceptable, check_subset, narrow
from ..transforms import KeyExchange, random_bytes
from .ike_init import NONCE_LENGTH, error_notifies, first
from .informational import ChildDelete

if TYPE_CHECKING:
    from ..ike_sa import IkeSa

MAX_KE_RETRIES = 2


def rekey_notify(payloads: list[Payload]) -> NotifyPayload | None:
    for p in payloads:
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.REKEY_SA:
            return p
    return None


def _wants_transport(payloads: list[Payload]) -> bool:
    return any(
        isinstance(p, NotifyPayload) and p.notify_type == NotifyType.USE_TRANSPORT_MODE
        for p in payloads
    )


def lowest_nonce_loses(mine: tuple[bytes, bytes], theirs: tuple[bytes, bytes]) -> bool:
    """Sections 2.8.1 / 2.8.2: True when our exchange holds the lowest of the four
    nonces, which makes the SA it created the redundant one."""
    return min(mine) < min(theirs)


def _key_exchange(esp: EspProposal, ke: KePayload | None, ours: KeyExchange | None) -> bytes | None:
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


class ChildCreate:
    """Initiator side: a new child SA, or the rekey of ``rekey``."""

    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self, sa: IkeSa, config: ChildConfig, rekey: ChildSa | None = None) -> None:
        self.sa = sa
        self.config = config
        self.rekey = rekey
        self.spi_in = random_bytes(4)
        self.nonce = random_bytes(NONCE_LENGTH)
        group = next((p.dh for p in config.esp_proposals if p.dh is not None), None)
        self.ke = KeyExchange(group) if group is not None else None
        self.ke_retries = 0

    @property
    def name(self) -> str:
        return self.config.name

    def build_request(self) -> list[Payload] | None:
        if self.sa.state is not IkeSaState.ESTABLISHED:
            return None
        payloads: list[Payload] = []
        local_ts, remote_ts = self.config.local_ts, self.config.remote_ts
        if self.rekey is not None:
            if self.rekey.state not in (ChildSaState.INSTALLED, ChildSaState.REKEYING):
                return None  # deleted or rekeyed by the peer meanwhile
            if self.rekey.state is ChildSaState.INSTALLED:
                self.rekey.transition(ChildSaInput.REKEY)
            # Section 1.3.3: the SPI we receive on identifies the SA being rekeyed.
            payloads.append(
                NotifyPayload(NotifyType.REKEY_SA, protocol=ProtocolId.ESP, spi=self.rekey.spi_in)
            )
            local_ts, remote_ts = self.rekey.local_ts, self.rekey.remote_ts
        if self.config.mode is Mode.TRANSPORT:
            payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        proposals = [
            p.to_proposal(i + 1, self.spi_in) for i, p in enumerate(self.config.esp_proposals)
        ]
        payloads += [SaPayload(proposals), NoncePayload(self.nonce)]
        if self.ke is not None:
            payloads.append(KePayload(self.ke.group, self.ke.public_key))
        payloads += [TsPayload(list(local_ts)), TsrPayload(list(remote_ts))]
        return payloads

    def _give_up(self, reason: str, notify: int | None) -> Outcome:
        if self.rekey is not None and self.rekey.state is ChildSaState.REKEYING:
            self.rekey.transition(ChildSaInput.REKEY_ABORTED)
        self.sa.emit(ChildSaFailed(self.name, reason, notify))
        return Outcome.DONE

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        errors = error_notifies(payloads)
        if errors:
            notify = int(errors[0].notify_type)
            if notify == NotifyType.INVALID_KE_PAYLOAD and self._retry_group(errors[0]):
                return Outcome.RETRY
            what = "rekey" if self.rekey is not None else "new child SA"
            return self._give_up(
                f"{enum_name(NotifyType, notify)}: peer refused the {what}", notify
            )
        sa_payload, nonce = first(payloads, SaPayload), first(payloads, NoncePayload)
        tsi, tsr, ke = (
            first(payloads, TsPayload),
            first(payloads, TsrPayload),
            first(payloads, KePayload),
        )
        try:
            if not (
                isinstance(sa_payload, SaPayload)
                and isinstance(nonce, NoncePayload)
                and isinstance(tsi, TsPayload)
                and isinstance(tsr, TsrPayload)
            ):
                raise ProtocolError(
                    "INVALID_SYNTAX: CREATE_CHILD_SA response lacks SA, Nonce or TS"
                )
            chosen, esp = accept_esp(self.config.esp_proposals, sa_payload.proposals)
            g_ir = _key_exchange(esp, ke if isinstance(ke, KePayload) else None, self.ke)
            check_subset(self.config.local_ts, tsi.selectors)
            check_subset(self.config.remote_ts, tsr.selectors)
            mode = Mode.TRANSPORT if _wants_transport(payloads) else Mode.TUNNEL
            if mode != self.config.mode:
                raise ProtocolError(
                    f"NO_PROPOSAL_CHOSEN: peer chose {mode} mode, ours is {self.config.mode}"
                )
        except (ProtocolError, CryptoError) as exc:
            return self._give_up(str(exc), exc.notify)
        child = new_child(
            self.config, esp, self.spi_in, chosen.spi, tsi.selectors, tsr.selectors, mode
        )
        # Keys come from this exchange's IKE SA; the child lives where its siblings
        # moved if that SA was rekeyed meanwhile (section 2.18).
        self.sa.home.children[child.spi_in] = child
        assert self.sa.proposal is not None and self.sa.keys is not None
        event = child_established(
            self.sa.proposal.prf,
            self.sa.keys.sk_d,
            child,
            self.nonce,
            nonce.data,
            exchange_initiator=True,
            encap=self.sa.encap,
            g_ir=g_ir,
        )
        if self.rekey is None:
            self.sa.emit(event)
            return Outcome.DONE
        self._finish_rekey(self.rekey, child, event, nonce.data)
        return Outcome.DONE

    def _retry_group(self, notify: NotifyPayload) -> bool:
        group = int.from_bytes(notify.data[:2], "big") if len(notify.data) >= 2 else 0
        groups = {p.dh for p in self.config.esp_proposals if p.dh is not None}
        if group not in groups or self.ke_retries >= MAX_KE_RETRIES:
            return False
        self.ke = KeyExchange(group)
        self.ke_retries += 1
        return True

    def _finish_rekey(
        self, old: ChildSa, new: ChildSa, event: ChildSaEstablished, nr: bytes
    ) -> None:
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


def _refuse(notify: int, data: bytes = b"") -> list[Payload]:
    return [NotifyPayload(notify, data)]


def respond(sa: IkeSa, payloads: list[Payload]) -> list[Payload]:
    """Responder side of a child CREATE_CHILD_SA request."""
    rekey = rekey_notify(payloads)
    old: ChildSa | None = None
    if sa.state is not IkeSaState.ESTABLISHED or sa.tasks.pending_active("IkeRekey"):
        return _refuse(NotifyType.TEMPORARY_FAILURE)  # being rekeyed or deleted (2.25)
    if rekey is not None:
        old = sa.child_by_spi_out(rekey.spi)
        if old is None:
            return [
                NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, protocol=ProtocolId.ESP, spi=rekey.spi)
            ]
        if old.state not in (ChildSaState.INSTALLED, ChildSaState.REKEYING):
            return _refuse(NotifyType.TEMPORARY_FAILURE)  # section 2.25
    sa_payload, nonce = first(payloads, SaPayload), first(payloads, NoncePayload)
    tsi, tsr, ke = (
        first(payloads, TsPayload),
        first(payloads, TsrPayload),
        first(payloads, KePayload),
    )
    if not (
        isinstance(sa_payload, SaPayload)
        and isinstance(nonce, NoncePayload)
        and isinstance(tsi, TsPayload)
        and isinstance(tsr, TsrPayload)
    ):
        return _refuse(NotifyType.INVALID_SYNTAX)
    mode = Mode.TRANSPORT if _wants_transport(payloads) else Mode.TUNNEL
    configs = (old.config,) if old is not None else sa.config.children
    failure: ProtocolError | None = None
    for config in configs:
        try:
            theirs, esp = select_esp(config.esp_proposals, sa_payload.proposals)
            narrowed_i = narrow(config.remote_ts, tsi.selectors)
            narrowed_r = narrow(config.local_ts, tsr.selectors)
            if mode != config.mode:
                raise ProtocolError(
                    f"NO_PROPOSAL_CHOSEN: peer asks for {mode} mode, ours is {config.mode}",
                    notify=NotifyType.NO_PROPOSAL_CHOSEN,
                )
        except (NoProposalChosen, TsUnacceptable, ProtocolError) as exc:
            failure = failure or exc
            continue
        break
    else:
        assert failure is not None
        notify = failure.notify or NotifyType.NO_PROPOSAL_CHOSEN
        sa.emit(ChildSaFailed(configs[0].name, str(failure), notify))
        return _refuse(notify)
    ours: KeyExchange | None = None
    g_ir: bytes | None = None
    if esp.dh is not None:
        if not isinstance(ke, KePayload) or ke.group != esp.dh:
            # Section 1.3: tell the initiator which group we want.
            return _refuse(NotifyType.INVALID_KE_PAYLOAD, esp.dh.to_bytes(2, "big"))
        ours = KeyExchange(esp.dh)
        try:
            g_ir = ours.shared_secret(ke.data)
        except CryptoError:
            return _refuse(NotifyType.INVALID_SYNTAX)
    spi_in, nr = random_bytes(4), random_bytes(NONCE_LENGTH)
    child = new_child(config, esp, spi_in, theirs.spi, narrowed_r, narrowed_i, mode)
    sa.children[spi_in] = child
    assert sa.proposal is not None and sa.keys is not None
    event = child_established(
        sa.proposal.prf,
        sa.keys.sk_d,
        child,
        nonce.data,
        nr,
        exchange_initiator=False,
        encap=sa.encap,
        g_ir=g_ir,
    )
    if old is None:
        sa.emit(event)
    else:
        sa.emit(ChildSaRekeyed(old.spi_in, old.spi_out, event, initiator=False))
        if old.state is ChildSaState.REKEYING:
            old.peer_rekey = (nonce.data, nr, child)  # a collision: decided on our answer
        else:
            old.transition(ChildSaInput.REKEY_DONE)  # the peer will delete it
    reply: list[Payload] = []
    if mode is Mode.TRANSPORT:
        reply.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    reply += [SaPayload([esp.to_proposal(theirs.number, spi_in)]), NoncePayload(nr)]
    if ours is not None:
        reply.append(KePayload(ours.group, ours.public_key))
    return [*reply, TsPayload(narrowed_i), TsrPayload(narrowed_r)]
