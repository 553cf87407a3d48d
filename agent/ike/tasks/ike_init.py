"""IKE_SA_INIT (RFC 7296 section 1.2): proposal selection, key exchange, nonces.

Also INVALID_KE_PAYLOAD (section 1.3: retry with the group the responder asks
for) and COOKIE (section 2.6: retry with the cookie first) on the initiator side.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..constants import CertEncoding, ExchangeType, HashAlgorithm, NotifyType, enum_name
from ..errors import CryptoError, ProtocolError
from ..message import Message
from ..nat import NAT_T_PORT, detect, nat_notifies
from ..payloads import CertReqPayload, KePayload, NoncePayload, NotifyPayload, Payload
from ..proposals import NoProposalChosen, accept_ike, dh_name, select_ike
from ..sa_payload import SaPayload
from ..task_manager import Outcome, TaskKind
from ..transforms import KeyExchange, random_bytes

if TYPE_CHECKING:
    from ..ike_sa import IkeSa

NONCE_LENGTH = 32
MAX_INIT_RETRIES = 3
# RFC 7427 section 4: the hashes we can verify and produce signatures with
# (identity is RFC 8420's for Ed25519).
SIGNATURE_HASHES = (
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
)


def capability_notifies() -> list[Payload]:
    """IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 section 2.3) and
    SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4)."""
    hashes = b"".join(int(h).to_bytes(2, "big") for h in SIGNATURE_HASHES)
    return [
        NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
        NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, hashes),
    ]


def note_capabilities(sa: IkeSa, payloads: list[Payload]) -> None:
    """Remember what the peer announced in its IKE_SA_INIT message."""
    for p in payloads:
        if not isinstance(p, NotifyPayload):
            continue
        if p.notify_type == NotifyType.IKEV2_FRAGMENTATION_SUPPORTED:
            sa.peer_fragmentation = sa.config.fragmentation
        elif p.notify_type == NotifyType.SIGNATURE_HASH_ALGORITHMS:
            data = p.data[: len(p.data) - len(p.data) % 2]
            sa.peer_hash_algorithms = tuple(
                int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)
            )


def first(payloads: list[Payload], cls: type) -> Payload | None:
    return next((p for p in payloads if type(p) is cls), None)


def error_notifies(payloads: list[Payload]) -> list[NotifyPayload]:
    return [
        p
        for p in payloads
        if isinstance(p, NotifyPayload) and int(p.notify_type) < 16384  # section 3.10.1
    ]


def requested_group(notify: NotifyPayload) -> int:
    """The Diffie-Hellman group an INVALID_KE_PAYLOAD asks for (section 1.3: two octets
    of Notification Data), 0 when it names none."""
    return int.from_bytes(notify.data[:2], "big") if len(notify.data) >= 2 else 0


class IkeInit:
    """Initiator side of IKE_SA_INIT."""

    kind = TaskKind.IKE_INIT
    exchange = ExchangeType.IKE_SA_INIT

    def __init__(self, sa: IkeSa) -> None:
        self.sa = sa
        self.ke = KeyExchange(sa.config.ike_proposals[0].dh)
        self.nonce = random_bytes(NONCE_LENGTH)
        self.cookie: bytes | None = None
        self.retries = 0

    def build_request(self) -> list[Payload]:
        proposals = [p.to_proposal(i + 1) for i, p in enumerate(self.sa.config.ike_proposals)]
        payloads: list[Payload] = []
        if self.cookie is not None:
            payloads.append(NotifyPayload(NotifyType.COOKIE, self.cookie))
        payloads += [
            SaPayload(proposals),
            KePayload(self.ke.group, self.ke.public_key),
            NoncePayload(self.nonce),
        ]
        if self.sa.local is not None and self.sa.peer is not None:
            payloads += nat_notifies(
                self.sa.spi_i,
                bytes(8),
                self.sa.local,
                self.sa.peer,
                fake_source=self.sa.config.force_encap,
            )
        fragmentation, hashes = capability_notifies()
        return [*payloads, *([fragmentation] if self.sa.config.fragmentation else []), hashes]

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome:
        ours = self.sa.config.ike_proposals
        for notify in payloads:
            if not isinstance(notify, NotifyPayload):
                continue
            if notify.notify_type == NotifyType.COOKIE and self.retries < MAX_INIT_RETRIES:
                self.cookie = notify.data
                self.retries += 1
                return Outcome.RETRY
            if notify.notify_type == NotifyType.INVALID_KE_PAYLOAD:
                group = requested_group(notify)
                acceptable = group in {p.dh for p in ours} and group != self.ke.group
                if acceptable and self.retries < MAX_INIT_RETRIES:
                    self.ke = KeyExchange(group)
                    self.retries += 1
                    return Outcome.RETRY
                self.sa.fail(
                    f"INVALID_KE_PAYLOAD: peer asks for group {dh_name(group)}, "
                    f"ours [{', '.join(str(p) for p in ours)}]",
                    NotifyType.INVALID_KE_PAYLOAD,
                )
                return Outcome.FAILED
        errors = error_notifies(payloads)
        if errors:
            name = enum_name(NotifyType, int(errors[0].notify_type))
            detail = (
                f"peer accepted none of ours [{', '.join(str(p) for p in ours)}]"
                if errors[0].notify_type == NotifyType.NO_PROPOSAL_CHOSEN
                else "refused by peer"
            )
            self.sa.fail(f"{name}: {detail}", int(errors[0].notify_type))
            return Outcome.FAILED
        sa_payload, ke, nonce = (
            first(payloads, SaPayload),
            first(payloads, KePayload),
            first(payloads, NoncePayload),
        )
        if not (
            isinstance(sa_payload, SaPayload)
            and isinstance(ke, KePayload)
            and isinstance(nonce, NoncePayload)
        ):
            self.sa.fail("INVALID_SYNTAX: IKE_SA_INIT response lacks SA, KE or Nonce")
            return Outcome.FAILED
        if message.header.spi_r == bytes(8):
            self.sa.fail("INVALID_SYNTAX: IKE_SA_INIT response with a zero responder SPI")
            return Outcome.FAILED
        try:
            proposal = accept_ike(ours, sa_payload.proposals)
            if ke.group != proposal.dh or ke.group != self.ke.group:
                raise ProtocolError(
                    f"INVALID_KE_PAYLOAD: responder's KE is group {dh_name(ke.group)}, "
                    f"we sent {dh_name(self.ke.group)} and it chose {proposal}"
                )
            shared = self.ke.shared_secret(ke.data)
        except ProtocolError as exc:
            self.sa.fail(str(exc), exc.notify)
            return Outcome.FAILED
        self.sa.spi_r = message.header.spi_r
        note_capabilities(self.sa, payloads)
        if self.sa.local is not None and self.sa.peer is not None:
            self.sa.nat = detect(
                payloads, self.sa.spi_i, self.sa.spi_r, self.sa.local, self.sa.peer
            )
            if self.sa.nat is not None and self.sa.config.force_encap:
                self.sa.nat = dataclasses.replace(self.sa.nat, forced=True)
            if self.sa.nat is not None and self.sa.nat.any:
                # Section 2.23: from IKE_AUTH on, talk on port 4500 (with the non-ESP marker).
                self.sa.peer = (self.sa.peer[0], NAT_T_PORT)
        self.sa.init_request = self.sa.tasks.sent_request or b""
        self.sa.init_response = self.sa.current_datagram or b""
        self.sa.set_keys(proposal, shared, self.nonce, nonce.data)
        return Outcome.DONE


def respond(sa: IkeSa, message: Message, payloads: list[Payload]) -> tuple[list[Payload], bool]:
    """Responder side: returns the response payloads and whether the SA now exists."""
    sa_payload, ke, nonce = (
        first(payloads, SaPayload),
        first(payloads, KePayload),
        first(payloads, NoncePayload),
    )
    if not (
        isinstance(sa_payload, SaPayload)
        and isinstance(ke, KePayload)
        and isinstance(nonce, NoncePayload)
    ):
        sa.note_refusal("INVALID_SYNTAX: IKE_SA_INIT request lacks SA, KE or Nonce")
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)], False
    try:
        number, proposal = select_ike(sa.config.ike_proposals, sa_payload.proposals)
    except NoProposalChosen as exc:
        sa.fail(str(exc), NotifyType.NO_PROPOSAL_CHOSEN)
        return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], False
    if ke.group != proposal.dh:
        # Section 1.3: no state is kept; the initiator retries with this group.
        sa.note_refusal(
            f"INVALID_KE_PAYLOAD: peer sent group {dh_name(ke.group)}, we chose {proposal}"
        )
        return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, proposal.dh.to_bytes(2, "big"))], False
    ours = KeyExchange(proposal.dh)
    try:
        shared = ours.shared_secret(ke.data)
    except CryptoError as exc:
        sa.note_refusal(f"INVALID_SYNTAX: {exc}")
        return [NotifyPayload(NotifyType.INVALID_SYNTAX)], False
    nr = random_bytes(NONCE_LENGTH)
    sa.spi_r = random_bytes(8)
    sa.set_keys(proposal, shared, nonce.data, nr)
    response: list[Payload] = [
        SaPayload([proposal.to_proposal(number)]),
        KePayload(proposal.dh, ours.public_key),
        NoncePayload(nr),
    ]
    if sa.local is not None and sa.peer is not None:
        # The request's hashes use its header's SPIs, where SPIr is still zero.
        sa.nat = detect(payloads, sa.spi_i, bytes(8), sa.local, sa.peer)
        if sa.nat is not None:  # answer NAT detection only when asked (section 2.23)
            response += nat_notifies(
                sa.spi_i, sa.spi_r, sa.local, sa.peer, fake_source=sa.config.force_encap
            )
            if sa.config.force_encap:
                sa.nat = dataclasses.replace(sa.nat, forced=True)
    note_capabilities(sa, payloads)
    if sa.config.certificates is not None:
        # Section 3.7: ask for a certificate from our trust anchors.
        response.append(
            CertReqPayload(CertEncoding.X509_SIGNATURE, sa.config.certificates.ca_hashes())
        )
    # Answer each capability only when the initiator announced it (RFC 7383 2.3, RFC 7427 4).
    fragmentation, hashes = capability_notifies()
    if sa.peer_fragmentation:
        response.append(fragmentation)
    if sa.peer_hash_algorithms:
        response.append(hashes)
    return response, True
