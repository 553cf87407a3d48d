"""IKE_AUTH with a pre-shared key (RFC 7296 sections 1.2, 2.15) or RFC 7427 signatures,
carrying the first child SA's negotiation (child_create.ChildCreate, both roles).
EAP (section 2.16) is refused; authentication failures follow section 2.21.2."""

from __future__ import annotations

import datetime
import hmac
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import chain, signatures
from ..config import Identity
from ..constants import AuthMethod, CertEncoding, ExchangeType, NotifyType, enum_name
from ..errors import ProtocolError
from ..keys import auth_octets, psk_auth
from ..message import Message
from ..payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    EapPayload,
    IdPayload,
    IdrPayload,
    NotifyPayload,
    Payload,
)
from ..task_manager import Outcome, TaskKind
from .child_create import ChildCreate, ChildPayloads
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


def _octets(sa: IkeSa, *, ours: bool, id_body: bytes) -> bytes:
    """Section 2.15 for either side: each signs its own IKE_SA_INIT message plus the
    other side's nonce and prf(SK_p of the signer, its ID)."""
    assert sa.keys is not None and sa.proposal is not None
    initiator_signs = (sa.is_initiator and ours) or (not sa.is_initiator and not ours)
    message = sa.init_request if initiator_signs else sa.init_response
    nonce = sa.nr if initiator_signs else sa.ni
    sk_p = sa.keys.sk_pi if initiator_signs else sa.keys.sk_pr
    return auth_octets(message, nonce, sa.proposal.prf, sk_p, id_body)


def our_auth(sa: IkeSa, id_payload: IdPayload, *, certreq: bool = False) -> list[Payload]:
    """[CERT..., [CERTREQ,]] AUTH for our side (PSK, or RFC 7427 signature)."""
    assert sa.proposal is not None
    octets = _octets(sa, ours=True, id_body=id_payload.serialize_body())
    creds = sa.config.certificates
    if creds is None:
        return [
            AuthPayload(AuthMethod.SHARED_KEY_MIC, psk_auth(sa.proposal.prf, sa.config.psk, octets))
        ]
    payloads: list[Payload] = [
        CertPayload(CertEncoding.X509_SIGNATURE, cert.public_bytes(serialization.Encoding.DER))
        for cert in (creds.certificate, *creds.intermediates)
    ]
    if certreq:
        payloads.append(CertReqPayload(CertEncoding.X509_SIGNATURE, creds.ca_hashes()))
    signature = signatures.sign(creds.private_key, octets, sa.peer_hash_algorithms)
    return [*payloads, AuthPayload(AuthMethod.DIGITAL_SIGNATURE, signature)]


def _auth_failed(reason: str) -> ProtocolError:
    return ProtocolError(
        f"AUTHENTICATION_FAILED: {reason}", notify=NotifyType.AUTHENTICATION_FAILED
    )


def _verify_peer(
    sa: IkeSa, id_payload: IdPayload, auth: AuthPayload, payloads: list[Payload]
) -> None:
    peer = Identity.from_payload(id_payload)
    if peer != sa.config.remote_id:
        raise _auth_failed(f"peer identity {peer}, expected {sa.config.remote_id}")
    creds = sa.config.certificates
    expected_method = AuthMethod.DIGITAL_SIGNATURE if creds else AuthMethod.SHARED_KEY_MIC
    if auth.method != expected_method:
        raise _auth_failed(
            f"peer used {enum_name(AuthMethod, auth.method)}, "
            f"we expect {enum_name(AuthMethod, expected_method)}"
        )
    octets = _octets(sa, ours=False, id_body=id_payload.serialize_body())
    if creds is None:
        assert sa.proposal is not None
        # While both ends move to a new key, the peer may still sign with the old one or
        # already with the new one: any key of the configuration will do. Every key is
        # tried, so the time taken does not tell which one matched.
        matched = False
        for key in sa.config.peer_psks:
            expected = psk_auth(sa.proposal.prf, key, octets)
            matched = hmac.compare_digest(expected, auth.data) or matched
        if not matched:
            keys = "the pre-shared key" if not sa.config.accepted_psks else "any pre-shared key"
            raise _auth_failed(f"AUTH payload of {peer} does not verify with {keys}")
        return
    certs = [
        p for p in payloads if type(p) is CertPayload and p.encoding == CertEncoding.X509_SIGNATURE
    ]
    if not certs:
        raise _auth_failed(f"{peer} sent no X.509 certificate")
    try:
        presented = [x509.load_der_x509_certificate(c.data) for c in certs]
    except ValueError as exc:
        raise _auth_failed(f"certificate of {peer} does not parse: {exc}") from None
    assert sa.current_wall is not None  # receive_datagram requires it with certificates
    now = datetime.datetime.fromtimestamp(sa.current_wall, datetime.UTC)
    try:
        path = chain.validate(presented[0], presented[1:], creds.trust_anchors, now)
    except chain.ChainError as exc:
        raise _auth_failed(
            f"certificate {presented[0].subject.rfc4514_string()} is not trusted: {exc}"
        ) from None
    for cert in path[:-1]:  # the anchor itself is trusted as configured
        if (cert.issuer.public_bytes(), cert.serial_number) in creds.revoked:
            raise _auth_failed(
                f"certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) "
                f"is revoked by the CRL of {cert.issuer.rfc4514_string()}"
            )
    if not signatures.identity_in_certificate(peer.id_type, peer.data, presented[0]):
        raise _auth_failed(
            f"identity {peer} is not in certificate {presented[0].subject.rfc4514_string()}"
        )
    signatures.verify(presented[0], octets, auth.data)


class IkeAuth:
    """Initiator side of IKE_AUTH; the first child's negotiation is its ChildCreate."""

    kind = TaskKind.IKE_AUTH
    exchange = ExchangeType.IKE_AUTH

    def __init__(self, sa: IkeSa) -> None:
        self.sa = sa
        self.child = ChildCreate(sa, sa.config.child, exchange=ExchangeType.IKE_AUTH)

    def build_request(self) -> list[Payload]:
        config = self.sa.config
        id_payload = IdPayload(config.local_id.id_type, config.local_id.data)
        payloads: list[Payload] = [id_payload, *our_auth(self.sa, id_payload, certreq=True)]
        if self.sa.initial_contact:
            # Section 2.4: we hold no other IKE SA with this peer (a restart, say).
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        return payloads + self.child.offer()

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
            _verify_peer(self.sa, id_payload, auth, payloads)
        except ProtocolError as exc:
            self.sa.fail(str(exc), exc.notify)
            self._tell_peer_auth_failed(message.header.message_id + 1)
            return Outcome.FAILED
        self.sa.established(Identity.from_payload(id_payload))
        return self.child.process_response(message, payloads)

    def _tell_peer_auth_failed(self, message_id: int) -> None:
        """Section 2.21.2: the responder believes the SA is up, so an initiator that
        refuses its authentication says so in a separate INFORMATIONAL request. It is
        sent once and its answer is not awaited: our side of the SA is already gone."""
        request = self.sa.build_message(
            ExchangeType.INFORMATIONAL,
            message_id,
            False,
            [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)],
        )
        self.sa.send(request)


def respond(sa: IkeSa, message: Message, payloads: list[Payload]) -> tuple[list[Payload], bool]:
    """Responder side: authenticate the initiator, then set up the first child SA."""
    if first(payloads, EapPayload) is not None or first(payloads, AuthPayload) is None:
        # Section 2.16: no AUTH payload means the initiator wants EAP, which we do not offer.
        sa.fail(
            "AUTHENTICATION_FAILED: initiator asks for EAP, which is not offered",
            NotifyType.AUTHENTICATION_FAILED,
        )
        return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], True
    if ChildPayloads.find(payloads, ExchangeType.IKE_AUTH) is None:
        # Section 2.21.2: a malformed request is refused whole, before authentication
        # (child_create.REQUIRED says why this is INVALID_SYNTAX).
        sa.fail(ChildPayloads.lacking(ExchangeType.IKE_AUTH, "request"), NotifyType.INVALID_SYNTAX)
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)], True
    id_payload, auth = first(payloads, IdPayload), first(payloads, AuthPayload)
    try:
        if not isinstance(id_payload, IdPayload) or not isinstance(auth, AuthPayload):
            raise ProtocolError(
                "AUTHENTICATION_FAILED: IKE_AUTH request lacks IDi",
                notify=NotifyType.AUTHENTICATION_FAILED,
            )
        _verify_peer(sa, id_payload, auth, payloads)
    except ProtocolError as exc:
        sa.fail(str(exc), exc.notify)
        return [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], True
    config = sa.config
    idr = IdrPayload(config.local_id.id_type, config.local_id.data)
    response: list[Payload] = [idr, *our_auth(sa, idr)]
    sa.initial_contact = any(
        isinstance(p, NotifyPayload) and p.notify_type == NotifyType.INITIAL_CONTACT
        for p in payloads
    )
    sa.established(Identity.from_payload(id_payload))
    return response + ChildCreate.respond(sa, payloads, ExchangeType.IKE_AUTH), True
