"""IKE SA rekey with CREATE_CHILD_SA (RFC 7296 sections 1.3.2, 2.18 and 2.8.2).

The new SA gets new SPIs (in the proposals' SPI fields), a fresh DH exchange and
SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr); the children move over and the
initiator of the rekey deletes the old SA. When both ends rekey at once, the
exchange holding the lowest of the four nonces made the redundant SA, which its
initiator deletes; the other initiator deletes the old SA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..constants import ExchangeType, NotifyType, ProtocolId, enum_name
from ..errors import CryptoError, ProtocolError
from ..events import IkeSaRekeyFailed, PeerErrorNotify
from ..message import Message
from ..payloads import KePayload, NoncePayload, NotifyPayload, Payload
from ..proposals import NoProposalChosen, accept_ike, dh_name, select_ike
from ..sa_payload import SaPayload
from ..states import IkeSaInput, IkeSaState
from ..task_manager import CHILD_TASKS, Outcome, TaskKind
from ..transforms import KeyExchange, random_bytes
from .child_create import lowest_nonce_loses
from .ike_init import NONCE_LENGTH, error_notifies, first, requested_group
from .informational import IkeDelete

if TYPE_CHECKING:
    from ..ike_sa import IkeSa

MAX_KE_RETRIES = 2


def is_ike_rekey(payloads: list[Payload]) -> bool:
    sa_payload = first(payloads, SaPayload)
    return isinstance(sa_payload, SaPayload) and any(
        p.protocol == ProtocolId.IKE for p in sa_payload.proposals
    )


class IkeRekey:
    """Rekey of this IKE SA, initiator side (section 1.3.2)."""

    kind = TaskKind.IKE_REKEY
    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self, sa: IkeSa) -> None:
        assert sa.proposal is not None
        self.sa = sa
        self.spi = random_bytes(8)
        self.nonce = random_bytes(NONCE_LENGTH)
        self.ke = KeyExchange(sa.proposal.dh)
        self.ke_retries = 0

    def build_request(self) -> list[Payload] | None:
        if self.sa.state is not IkeSaState.ESTABLISHED:
            return None
        # The SA in force first, so an unchanged configuration keeps its algorithms.
        assert self.sa.proposal is not None
        ours = [self.sa.proposal] + [
            p for p in self.sa.config.ike_proposals if p != self.sa.proposal
        ]
        return [
            SaPayload([p.to_proposal(i + 1, self.spi) for i, p in enumerate(ours)]),
            NoncePayload(self.nonce),
            KePayload(self.ke.group, self.ke.public_key),
        ]

    def _peer_rekey_stands(self) -> Outcome:
        """Ours failed; a crossing rekey of the peer's is then the only one (2.8.2)."""
        sa = self.sa
        if sa.peer_ike_rekey is not None:
            sa.hand_over(sa.peer_ike_rekey[2])
            if sa.state is IkeSaState.ESTABLISHED:
                sa.transition(IkeSaInput.REKEYED)
            if sa.deleted_by_peer:
                sa.finish_delete("rekeyed")
        return Outcome.DONE

    def _failed(self, notify: int, reason: str) -> Outcome:
        stands = self.sa.peer_ike_rekey is not None
        self.sa.emit(IkeSaRekeyFailed(notify, reason, peer_rekey_stands=stands))
        return self._peer_rekey_stands()

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        sa = self.sa
        errors = error_notifies(payloads)
        if errors:
            notify = int(errors[0].notify_type)
            if notify == NotifyType.INVALID_KE_PAYLOAD and self.ke_retries < MAX_KE_RETRIES:
                group = requested_group(errors[0])
                if group in {p.dh for p in sa.config.ike_proposals}:
                    self.ke = KeyExchange(group)
                    self.ke_retries += 1
                    return Outcome.RETRY
            reason = f"{enum_name(NotifyType, notify)}: peer refused the IKE SA rekey"
            return self._failed(notify, reason)
        sa_payload, nonce, ke = (
            first(payloads, SaPayload),
            first(payloads, NoncePayload),
            first(payloads, KePayload),
        )
        try:
            if not (
                isinstance(sa_payload, SaPayload)
                and isinstance(nonce, NoncePayload)
                and isinstance(ke, KePayload)
            ):
                raise ProtocolError("INVALID_SYNTAX: IKE rekey response lacks SA, Nonce or KE")
            proposal = accept_ike(sa.config.ike_proposals, sa_payload.proposals)
            spi_r = sa_payload.proposals[0].spi
            if len(spi_r) != 8 or spi_r == bytes(8):
                raise ProtocolError(f"INVALID_SYNTAX: responder's new IKE SPI is {spi_r.hex()}")
            if ke.group != proposal.dh or ke.group != self.ke.group:
                raise ProtocolError(
                    f"INVALID_KE_PAYLOAD: KE group {dh_name(ke.group)}, "
                    f"we sent {dh_name(self.ke.group)}"
                )
            shared = self.ke.shared_secret(ke.data)
        except ProtocolError as exc:
            return self._failed(exc.notify or 0, f"IKE SA rekey failed: {exc}")
        from ..ike_sa import IkeSa  # a cycle at import time only

        new_sa = IkeSa.from_rekey(
            sa,
            initiator=True,
            spi_i=self.spi,
            spi_r=spi_r,
            proposal=proposal,
            shared=shared,
            ni=self.nonce,
            nr=nonce.data,
        )
        collided = sa.peer_ike_rekey
        if sa.state is IkeSaState.ESTABLISHED:
            sa.transition(IkeSaInput.REKEYED)
        if collided is None:
            sa.hand_over(new_sa)
            sa.tasks.queue_task(IkeDelete(sa, "rekeyed"), first=True)
            return Outcome.DONE
        their_ni, their_nr, their_sa = collided
        if lowest_nonce_loses((self.nonce, nonce.data), (their_ni, their_nr)):
            # Ours is redundant: we delete it, the children go to the peer's SA and the
            # peer deletes the old one.
            sa.hand_over(new_sa, carries_children=False)
            new_sa.tasks.queue_task(IkeDelete(new_sa, "redundant after simultaneous rekey"))
            new_sa.tasks.initiate(sa.tasks.now)
            if sa.children:
                sa.hand_over(their_sa)
        else:
            sa.hand_over(new_sa, also_from=their_sa)
            # Its creator should delete it (2.8.2); should its creator never learn of it
            # (its answer lost, the old SA gone), we do, once its retransmissions ended.
            their_sa.defer(
                IkeDelete(their_sa, "redundant after simultaneous rekey"),
                sa.tasks.now + sa.retransmit_window(),
            )
            if not sa.deleted_by_peer:
                sa.tasks.queue_task(IkeDelete(sa, "rekeyed"), first=True)
        if sa.deleted_by_peer:
            sa.finish_delete("rekeyed")
        return Outcome.DONE


def respond(sa: IkeSa, payloads: list[Payload]) -> list[Payload]:
    busy = any(sa.tasks.in_flight(kind) for kind in CHILD_TASKS)
    if sa.state is not IkeSaState.ESTABLISHED or busy:
        # Section 2.25: not while this SA is going away or one of our child exchanges on
        # it is unfinished (its answer would arrive on an SA about to be deleted).
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
    sa_payload, nonce, ke = (
        first(payloads, SaPayload),
        first(payloads, NoncePayload),
        first(payloads, KePayload),
    )
    if not (
        isinstance(sa_payload, SaPayload)
        and isinstance(nonce, NoncePayload)
        and isinstance(ke, KePayload)
    ):
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    try:
        number, proposal = select_ike(sa.config.ike_proposals, sa_payload.proposals)
    except NoProposalChosen as exc:
        sa.emit(PeerErrorNotify(NotifyType.NO_PROPOSAL_CHOSEN, f"IKE SA rekey refused: {exc}"))
        return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
    theirs = next(p for p in sa_payload.proposals if p.number == number)
    if len(theirs.spi) != 8 or theirs.spi == bytes(8):
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    if ke.group != proposal.dh:
        return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, proposal.dh.to_bytes(2, "big"))]
    ours = KeyExchange(proposal.dh)
    try:
        shared = ours.shared_secret(ke.data)
    except CryptoError:
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    from ..ike_sa import IkeSa  # a cycle at import time only

    spi_r, nr = random_bytes(8), random_bytes(NONCE_LENGTH)
    new_sa = IkeSa.from_rekey(
        sa,
        initiator=False,
        spi_i=theirs.spi,
        spi_r=spi_r,
        proposal=proposal,
        shared=shared,
        ni=nonce.data,
        nr=nr,
    )
    if sa.tasks.in_flight(TaskKind.IKE_REKEY):
        # Our own rekey is in flight: decided when its answer comes (section 2.8.2);
        # until then the children stay here.
        sa.peer_ike_rekey = (nonce.data, nr, new_sa)
        sa.hand_over(new_sa, carries_children=False)
    else:
        sa.hand_over(new_sa)
        sa.transition(IkeSaInput.REKEYED)  # the peer deletes the old SA
    return [
        SaPayload([proposal.to_proposal(number, spi_r)]),
        NoncePayload(nr),
        KePayload(proposal.dh, ours.public_key),
    ]
