"""IKE_AUTH with a pre-shared key (RFC 7296 sections 1.2, 2.15) and the first child SA
(section 2.17 keys, section 2.9 traffic selector narrowing)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from ..config import Identity
from ..constants import AuthMethod, ExchangeType, NotifyType, enum_name
from ..errors import ProtocolError
from ..events import ChildSaEstablished, ChildSaFailed
from ..keys import auth_octets, derive_child_sa_keys, psk_auth
from ..message import Message
from ..payloads import (
    AuthPayload,
    EapPayload,
    IdPayload,
    IdrPayload,
    NotifyPayload,
    Payload,
    TsPayload,
    TsrPayload,
)
from ..proposals import EspProposal, NoProposalChosen, accept_esp, select_esp
from ..sa_payload import SaPayload
from ..task_manager import Outcome
from ..traffic_selectors import TsUnacceptable, check_subset, narrow
from ..transforms import random_bytes
from .ike_init import error_notifies, first

if TYPE_CHECKING:
    from ..ike_sa import IkeSa

# Notifies that refuse only the child SA, not the IKE SA (section 1.2).
CHILD_ERRORS = {
    NotifyType.NO_PROPOSAL_CHOSEN,
    NotifyType.TS_UNACCEPTABLE,
    NotifyType.SINGLE_PAIR_REQUIRED,
    NotifyType.INTERNAL_ADDRESS_FAILURE,
    NotifyType.FAILED_CP_REQUIRED,
    NotifyType.NO_ADDITIONAL_SAS,
    NotifyType.INVALID_SELECTORS,
}


def _psk_auth(sa: IkeSa, *, ours: bool, id_body: bytes) -> bytes:
    """Section 2.15 for either side: each signs its own IKE_SA_INIT message plus the
    other side's nonce and prf(SK_p of the signer, its ID)."""
    assert sa.keys is not None and sa.proposal is not None
    initiator_signs = (sa.is_initiator and ours) or (not sa.is_initiator and not ours)
    message = sa.init_request if initiator_signs else sa.init_response
    nonce = sa.nr if initiator_signs else sa.ni
    sk_p = sa.keys.sk_pi if initiator_signs else sa.keys.sk_pr
    octets = auth_octets(message, nonce, sa.proposal.prf, sk_p, id_body)
    return psk_auth(sa.proposal.prf, sa.config.psk, octets)


def _verify_peer(sa: IkeSa, id_payload: IdPayload, auth: AuthPayload) -> None:
    peer = Identity.from_payload(id_payload)
    if peer != sa.config.remote_id:
        raise ProtocolError(
            f"AUTHENTICATION_FAILED: peer identity {peer}, expected {sa.config.remote_id}",
            notify=NotifyType.AUTHENTICATION_FAILED,
        )
    if auth.method != AuthMethod.SHARED_KEY_MIC:
        raise ProtocolError(
            f"AUTHENTICATION_FAILED: peer used {enum_name(AuthMethod, auth.method)}, "
            "we expect a pre-shared key",
            notify=NotifyType.AUTHENTICATION_FAILED,
        )
    expected = _psk_auth(sa, ours=False, id_body=id_payload.serialize_body())
    if not hmac.compare_digest(expected, auth.data):
        raise ProtocolError(
            f"AUTHENTICATION_FAILED: AUTH payload of {peer} does not verify "
            "with the pre-shared key",
            notify=NotifyType.AUTHENTICATION_FAILED,
        )


def _child_established(
    sa: IkeSa,
    esp: EspProposal,
    spi_in: bytes,
    spi_out: bytes,
    local_ts: list,
    remote_ts: list,
    mode: str,
) -> ChildSaEstablished:
    assert sa.keys is not None and sa.proposal is not None
    integ_len = esp.integ.key_length if esp.integ else 0
    keys = derive_child_sa_keys(
        sa.proposal.prf, sa.keys.sk_d, sa.ni, sa.nr, esp.encr.key_length, integ_len
    )
    # Section 2.17: the first keys protect initiator-to-responder traffic.
    if sa.is_initiator:
        out_e, out_a, in_e, in_a = keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r
    else:
        out_e, out_a, in_e, in_a = keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i
    child = sa.config.child
    return ChildSaEstablished(
        name=child.name,
        spi_in=spi_in,
        spi_out=spi_out,
        encr_id=esp.encr.id,
        encr_key_bits=esp.encr.key_bits,
        integ_id=esp.integ.id if esp.integ else None,
        esn=esp.esn,
        encr_key_in=in_e,
        integ_key_in=in_a,
        encr_key_out=out_e,
        integ_key_out=out_a,
        local_ts=tuple(local_ts),
        remote_ts=tuple(remote_ts),
        mode=mode,
        proposal=str(esp),
        encap=sa.nat is not None and sa.nat.any,
    )


def _wants_transport(payloads: list[Payload]) -> bool:
    return any(
        isinstance(p, NotifyPayload) and p.notify_type == NotifyType.USE_TRANSPORT_MODE
        for p in payloads
    )


class IkeAuth:
    """Initiator side of IKE_AUTH."""

    exchange = ExchangeType.IKE_AUTH

    def __init__(self, sa: IkeSa) -> None:
        self.sa = sa
        self.child_spi = random_bytes(4)

    def build_request(self) -> list[Payload]:
        config = self.sa.config
        id_payload = IdPayload(config.local_id.id_type, config.local_id.data)
        auth = _psk_auth(self.sa, ours=True, id_body=id_payload.serialize_body())
        payloads: list[Payload] = [id_payload, AuthPayload(AuthMethod.SHARED_KEY_MIC, auth)]
        if config.child.mode == "transport":
            payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
        proposals = [
            p.to_proposal(i + 1, self.child_spi) for i, p in enumerate(config.child.esp_proposals)
        ]
        payloads += [
            SaPayload(proposals),
            TsPayload(list(config.child.local_ts)),
            TsrPayload(list(config.child.remote_ts)),
        ]
        return payloads

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        errors = error_notifies(payloads)
        ike_errors = [e for e in errors if e.notify_type not in CHILD_ERRORS]
        if ike_errors:
            notify = int(ike_errors[0].notify_type)
            self.sa.fail(f"{enum_name(NotifyType, notify)}: refused by peer", notify)
            return Outcome.FAILED
        id_payload, auth = first(payloads, IdrPayload), first(payloads, AuthPayload)
        if not isinstance(id_payload, IdrPayload) or not isinstance(auth, AuthPayload):
            self.sa.fail("INVALID_SYNTAX: IKE_AUTH response lacks IDr or AUTH")
            return Outcome.FAILED
        try:
            _verify_peer(self.sa, id_payload, auth)
        except ProtocolError as exc:
            self.sa.fail(str(exc), exc.notify)
            return Outcome.FAILED
        self.sa.established(Identity.from_payload(id_payload))
        self._child(payloads, errors)
        return Outcome.DONE

    def _child(self, payloads: list[Payload], errors: list[NotifyPayload]) -> None:
        child = self.sa.config.child
        if errors:
            notify = int(errors[0].notify_type)
            self.sa.emit(
                ChildSaFailed(
                    child.name, f"{enum_name(NotifyType, notify)}: refused by peer", notify
                )
            )
            return
        sa_payload, tsi, tsr = (
            first(payloads, SaPayload),
            first(payloads, TsPayload),
            first(payloads, TsrPayload),
        )
        try:
            if not (
                isinstance(sa_payload, SaPayload)
                and isinstance(tsi, TsPayload)
                and isinstance(tsr, TsrPayload)
            ):
                raise ProtocolError("INVALID_SYNTAX: IKE_AUTH response lacks SA, TSi or TSr")
            chosen, esp = accept_esp(child.esp_proposals, sa_payload.proposals)
            check_subset(child.local_ts, tsi.selectors)
            check_subset(child.remote_ts, tsr.selectors)
            mode = "transport" if _wants_transport(payloads) else "tunnel"
            if mode != child.mode:
                raise ProtocolError(
                    f"NO_PROPOSAL_CHOSEN: peer chose {mode} mode, ours is {child.mode}"
                )
        except ProtocolError as exc:
            self.sa.emit(ChildSaFailed(child.name, str(exc), exc.notify))
            return
        self.sa.emit(
            _child_established(
                self.sa, esp, self.child_spi, chosen.spi, tsi.selectors, tsr.selectors, mode
            )
        )


def respond(sa: IkeSa, message: Message, payloads: list[Payload]) -> tuple[list[Payload], bool]:
    """Responder side: authenticate the initiator, then set up the first child SA."""
    if first(payloads, EapPayload) is not None or first(payloads, AuthPayload) is None:
        # Section 2.16: no AUTH payload means the initiator wants EAP, which we do not offer.
        sa.fail(
            "AUTHENTICATION_FAILED: initiator asks for EAP, only PSK is configured",
            NotifyType.AUTHENTICATION_FAILED,
        )
        return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], True
    id_payload, auth = first(payloads, IdPayload), first(payloads, AuthPayload)
    try:
        if not isinstance(id_payload, IdPayload) or not isinstance(auth, AuthPayload):
            raise ProtocolError(
                "AUTHENTICATION_FAILED: IKE_AUTH request lacks IDi",
                notify=NotifyType.AUTHENTICATION_FAILED,
            )
        _verify_peer(sa, id_payload, auth)
    except ProtocolError as exc:
        sa.fail(str(exc), exc.notify)
        return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], True
    config = sa.config
    idr = IdrPayload(config.local_id.id_type, config.local_id.data)
    response: list[Payload] = [
        idr,
        AuthPayload(
            AuthMethod.SHARED_KEY_MIC, _psk_auth(sa, ours=True, id_body=idr.serialize_body())
        ),
    ]
    sa.established(Identity.from_payload(id_payload))
    return response + _respond_child(sa, payloads), True


def _respond_child(sa: IkeSa, payloads: list[Payload]) -> list[Payload]:
    child = sa.config.child
    sa_payload, tsi, tsr = (
        first(payloads, SaPayload),
        first(payloads, TsPayload),
        first(payloads, TsrPayload),
    )
    try:
        if not (
            isinstance(sa_payload, SaPayload)
            and isinstance(tsi, TsPayload)
            and isinstance(tsr, TsrPayload)
        ):
            raise ProtocolError(
                "NO_PROPOSAL_CHOSEN: IKE_AUTH request lacks SA, TSi or TSr",
                notify=NotifyType.NO_PROPOSAL_CHOSEN,
            )
        theirs, esp = select_esp(child.esp_proposals, sa_payload.proposals)
        # TSi are the initiator's side, our remote; TSr are ours.
        narrowed_i = narrow(child.remote_ts, tsi.selectors)
        narrowed_r = narrow(child.local_ts, tsr.selectors)
        mode = "transport" if _wants_transport(payloads) else "tunnel"
        if mode != child.mode:
            raise ProtocolError(
                f"NO_PROPOSAL_CHOSEN: peer asks for {mode} mode, ours is {child.mode}",
                notify=NotifyType.NO_PROPOSAL_CHOSEN,
            )
    except (NoProposalChosen, TsUnacceptable, ProtocolError) as exc:
        notify = exc.notify or NotifyType.NO_PROPOSAL_CHOSEN
        sa.emit(ChildSaFailed(child.name, str(exc), notify))
        return [NotifyPayload(notify)]
    spi_in = random_bytes(4)
    reply: list[Payload] = []
    if mode == "transport":
        reply.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    reply += [
        SaPayload([esp.to_proposal(theirs.number, spi_in)]),
        TsPayload(narrowed_i),
        TsrPayload(narrowed_r),
    ]
    sa.emit(_child_established(sa, esp, spi_in, theirs.spi, narrowed_r, narrowed_i, mode))
    return reply
