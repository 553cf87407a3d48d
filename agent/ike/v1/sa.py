"""The IKEv1 SA: the sans-I/O core of an ISAKMP SA and its Quick mode children.

The same shape as the IKEv2 ``IkeSa`` (agent/ike/ike_sa.py), so one driver can run
either: commands (``initiate``, ``delete``, ``delete_child``, ``rekey_child``,
``start_quick_mode``, ``check_liveness``; each takes ``now``),
``receive_datagram(data, addr, now)``, ``handle_timer(now)``;
outputs ``datagrams_to_send(now)``, ``get_timer()``, ``next_event()``. Events are the
IKEv2 core's (agent/ike/events.py): IkeSaEstablished carries the cookies as SPIs,
ChildSaEstablished the IKEv2 transform numbers the data plane installs.

- Phase 1 (RFC 2409 section 5): Main mode with a pre-shared key (5.4): SA / SA,
  KE Ni [CERTREQ] [NAT-D NAT-D] / KE Nr [CERTREQ] [NAT-D NAT-D], then encrypted
  IDii HASH_I / IDir HASH_R; or with RSA (PKCS#1 v1.5 over the bare hash) or ECDSA
  (RFC 4754) signatures and certificates (5.1, auth.py): ID CERT SIG. Aggressive
  mode with a pre-shared key (5.4): SA KE Ni IDii / SA KE Nr IDir HASH_R [NAT-D
  NAT-D] / encrypted HASH_I [NAT-D NAT-D]; with signatures (5.1) CERTREQ follows IDii
  and SIG_R, and CERT SIG stand for the HASH.
  NAT traversal per RFC 3947 (vendor ID, NAT-D, float to UDP 4500 with the first
  encrypted message), DPD per RFC 3706 (vendor ID, R-U-THERE / R-U-THERE-ACK).
- Pre-shared key rotation: SKEYID hangs on the key (section 5), so the end that cannot
  choose it tries ours and then each of ``config.accepted_psks``: a Main mode responder
  keeps the key under which message 5 decrypts and HASH_I verifies, an Aggressive mode
  initiator the one under which HASH_R verifies (the Aggressive mode responder proves
  itself first, with its own key; a Main mode initiator always uses its own).
- Reauthentication keeping phase 2: an initiator made with ``quick_mode=False`` starts
  no Quick mode once phase 1 is up; its driver moves the Quick mode SAs of the ISAKMP SA
  it replaces over (``adopt_children``) and deletes that one, which is then a phase 1
  Delete only. A peer's phase 1 Delete leaves the Quick mode SAs in ``children`` (RFC
  2408 section 3.15: an IPsec SA is deleted by its own SPI) for the driver to adopt
  elsewhere or let go (``release_children``).
- Quick mode (RFC 2409 section 5.5) lives in quick.py; informational exchanges
  (RFC 2409 section 5.7: notifies and deletes under HASH(1)) here.
- Lifetimes: phase 1 lives for our LIFE_DURATION or the peer's when shorter; a
  responder that keeps it shorter than proposed sends RESPONDER-LIFETIME (RFC 2407
  section 4.6.3.1) once the peer is heard from after phase 1, and a peer's lowers
  ours. ``expires_at`` deletes the SA (children first), ``rekey_due`` tells the
  driver when to start its replacement. Quick mode negotiates seconds and kilobytes
  the same way; they, and in UDP-encapsulated transport mode the peer's NAT-OA
  (RFC 3947 section 5.2), are kept per child (``child_lifetime``,
  ``child_original_address``): ChildSaEstablished has no fields for them.
- Retransmission: the initiator of an exchange resends on a doubling timeout. IKEv1
  has no message-ID rule for phase 1, so a responder recognises a retransmitted
  request by the digest of the last datagram it took and sends its last reply again
  (per message ID in phase 2). Where nothing else tells a responder its last message
  arrived (Aggressive mode message 2, Quick mode message 2) it retransmits too.
- Encryption (RFC 2409 Appendix B, cipher.py): AES-CBC; the phase 1 IV chains from
  hash(g^xi | g^xr) through each message's last cipher block; each phase 2 and
  informational exchange starts from hash(last phase 1 block | M-ID) and chains on.
  A chain moves past a received message only once it is accepted.

Nothing the peer sends raises out of ``receive_datagram``, and no datagram ends an SA
by failing: one that does not parse, decrypt or verify is counted in ``dropped`` and
ignored. A phase 1 message 5 or 6 (Aggressive: 2 or 3) that does not verify is what a
wrong pre-shared key looks like, but also what a forgery looks like: its reason is
kept, the responder says AUTHENTICATION_FAILED in the clear (as strongSwan does), and
the retransmission or half-open timer ends the SA with that reason. An error notify
in the clear during phase 1 is kept the same way, as the likely reason.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import NoReturn, TypeVar

from ..config import Identity
from ..errors import CommandRefused, LocalError, ProtocolError
from ..events import (
    Address,
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    IkeEvent,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
    LivenessAnswered,
    PeerErrorNotify,
)
from ..nat import NAT_T_PORT, NatResult
from ..payloads import IpAddress
from ..states import Role
from ..transforms import Encr, KeyExchange, Prf, random_bytes
from . import auth, proposals
from .attributes import Attribute, encode_attributes, parse_attributes
from .cipher import Decrypted, IkeV1Cipher
from .config import ExchangeMode, IkeV1Config, Phase1Proposal
from .constants import (
    DOI_IPSEC,
    ISAKMP_HEADER_LENGTH,
    VID_DPD,
    VID_NAT_T_RFC3947,
    ExchangeType,
    Flag,
    LifeType,
    NotifyType,
    P1Attr,
    P2Attr,
    PayloadType,
    ProtocolId,
)
from .keys import (
    Phase1Keys,
    auth_prf,
    derive_phase1,
    hash_for,
    hash_i,
    hash_r,
    info_hash,
    prf_for_hash,
)
from .message import IsakmpHeader
from .payloads import (
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    RawPayload,
    SaPayload,
    SigPayload,
    VendorIdPayload,
    encode_payloads,
    parse_payload,
    payload_name,
    split_payloads,
)
from .quick import QuickMode

NONCE_LENGTH = 32
REKEY_MARGIN = 0.1
"""Share of the phase 1 lifetime before expiry at which ``rekey_due`` falls (strongSwan
keeps a margin of 10% of the rekey time, its ``over_time`` default)."""
_KEPT_EXCHANGES = 32
"""Finished Quick mode exchanges kept to answer retransmissions of their last message."""


_P = TypeVar("_P")


class V1State(Enum):
    """Phase 1 as the exchange goes (RFC 2409 section 5)."""

    CREATED = "created"
    SA_EXCHANGE = "sa-exchange"
    """Initiator: message 1 sent. Main mode responder: message 2 sent."""
    KE_EXCHANGE = "ke-exchange"
    """Main mode initiator: message 3 sent. Responder: message 4 (Aggressive mode:
    message 2) sent."""
    AUTH_SENT = "auth-sent"
    """Main mode initiator: message 5 sent."""
    ESTABLISHED = "established"
    DELETED = "deleted"
    FAILED = "failed"


class V1Input(Enum):
    INITIATE = "initiate"
    SA_DONE = "sa-done"
    KE_DONE = "ke-done"
    AUTH_SENT = "auth-sent"
    AUTH_DONE = "auth-done"
    DELETED = "deleted"
    FAILURE = "failure"


_I, _R = Role.INITIATOR, Role.RESPONDER
_S, _E = V1State, V1Input
TRANSITIONS: dict[tuple[Role, V1State, V1Input], V1State] = {
    (_I, _S.CREATED, _E.INITIATE): _S.SA_EXCHANGE,
    (_I, _S.SA_EXCHANGE, _E.SA_DONE): _S.KE_EXCHANGE,
    (_I, _S.KE_EXCHANGE, _E.AUTH_SENT): _S.AUTH_SENT,
    (_I, _S.AUTH_SENT, _E.AUTH_DONE): _S.ESTABLISHED,
    (_I, _S.SA_EXCHANGE, _E.AUTH_DONE): _S.ESTABLISHED,  # Aggressive mode message 2
    (_R, _S.CREATED, _E.KE_DONE): _S.KE_EXCHANGE,  # Aggressive mode message 1
    (_R, _S.CREATED, _E.SA_DONE): _S.SA_EXCHANGE,
    (_R, _S.SA_EXCHANGE, _E.KE_DONE): _S.KE_EXCHANGE,
    (_R, _S.KE_EXCHANGE, _E.AUTH_DONE): _S.ESTABLISHED,
    **{
        (role, state, _E.FAILURE): _S.FAILED
        for role in Role
        for state in V1State
        if state not in (_S.ESTABLISHED, _S.DELETED, _S.FAILED)
    },
    **{(role, _S.ESTABLISHED, _E.DELETED): _S.DELETED for role in Role},
}
"""Every phase 1 transition (h11 style); anything else is our own misuse."""


def next_state(role: Role, state: V1State, event: V1Input) -> V1State:
    try:
        return TRANSITIONS[(role, state, event)]
    except KeyError:
        raise LocalError(
            f"IKEv1 SA ({role.value}) in state {state.value} cannot take {event.value}"
        ) from None


@dataclass
class Flight:
    """A request we retransmit until it is answered (or give up on)."""

    datagram: bytes
    what: str
    """The message, for the failure text (``Main mode message 3``)."""
    deadline: float
    tries: int = 0


@dataclass(frozen=True)
class ChildSa:
    """An installed Quick mode SA pair, by the inbound SPI we chose."""

    established: ChildSaEstablished
    lifetime: proposals.Lifetimes = field(default_factory=proposals.Lifetimes)
    peer_original: IpAddress | None = None
    """UDP-encapsulated transport mode: the peer's NAT-OA (RFC 3947 section 5.2)."""

    @property
    def spi_in(self) -> bytes:
        return self.established.spi_in

    @property
    def protocol(self) -> ProtocolId:
        """PROTO_IPSEC_ESP or PROTO_IPSEC_AH (RFC 2407 section 4.4.1), what its Delete
        names (RFC 2408 section 3.15); the event's IKEv2 number is the same."""
        return ProtocolId(int(self.established.protocol))

    @property
    def spi_out(self) -> bytes:
        return self.established.spi_out


@dataclass(frozen=True)
class Received:
    """One message in the clear: its header, payloads and raw payload chain."""

    header: IsakmpHeader
    raw: list[RawPayload]
    payloads: list[Payload]
    plain: bytes
    """The cleartext after the header (padding included)."""
    decrypted: Decrypted | None
    """What the cipher gave, to ``confirm`` once the message is accepted."""

    def raw_body(self, kind: int) -> bytes:
        """The body (after the generic header) of the first payload of ``kind``, as
        received: SAi_b and IDii_b are hashed so (RFC 2409 section 5)."""
        for raw in self.raw:
            if raw.payload_type == kind:
                return raw.body
        raise ProtocolError(f"no {payload_name(kind)} payload")

    def after_first(self) -> bytes:
        """The chain after the first payload, generic headers included: what HASH(1)
        and HASH(2) cover (RFC 2409 sections 5.5 and 5.7)."""
        if not self.raw:
            return b""
        first, last = self.raw[0], self.raw[-1]
        start = first.offset - ISAKMP_HEADER_LENGTH + len(first.body)
        return self.plain[start : last.offset - ISAKMP_HEADER_LENGTH + len(last.body)]

    def first(self, kind: type[_P]) -> _P | None:
        return next((p for p in self.payloads if isinstance(p, kind)), None)


class IkeV1Sa:
    def __init__(
        self,
        config: IkeV1Config,
        role: Role,
        local: Address | None = None,
        *,
        quick_mode: bool = True,
    ) -> None:
        self.config = config
        self.role = role
        self.local = local
        """Our address as the socket sees it: NAT-D needs it (RFC 3947 section 3.2)."""
        self.quick_mode = quick_mode
        """Initiator: start a Quick mode for the child policy once phase 1 is up. False
        for a reauthentication whose driver moves the Quick mode SAs of the ISAKMP SA
        it replaces over (:meth:`adopt_children`) instead."""
        self.state = V1State.CREATED
        self.icookie = random_bytes(8) if role is Role.INITIATOR else bytes(8)
        self.rcookie = bytes(8)
        self.peer: Address | None = None
        self.proposal: Phase1Proposal | None = None
        self.lifetime: int | None = None
        """Phase 1 lifetime in seconds: ours, or shorter when the peer proposed or
        answered less (RFC 2409 Appendix A LIFE_DURATION, RFC 2407 section 4.6.3.1)."""
        self.established_at: float | None = None
        self._proposed_lifetime: int | None = None
        """Responder: the lifetime the initiator's transform carried."""
        self._lifetime_notice = False
        """Responder: RESPONDER-LIFETIME is due with the next authenticated message."""
        self.keys: Phase1Keys | None = None
        self.prf: Prf | None = None
        self.nat: NatResult | None = None
        self.peer_nat_t = False
        """The peer sent the RFC 3947 vendor ID."""
        self.peer_dpd = False
        """The peer sent the RFC 3706 vendor ID."""
        self.remote_identity: Identity | None = None
        self.initial_contact = False
        """Responder: the peer sent INITIAL-CONTACT with its identity."""
        self.dropped = 0
        """Datagrams ignored: malformed, undecryptable, unverified, unexpected."""
        self.last_drop: str | None = None
        """Why the last datagram was dropped."""
        self.last_heard: float | None = None
        self.children: dict[bytes, ChildSa] = {}
        self.quick: dict[int, QuickMode] = {}
        """Quick mode exchanges by message ID, finished ones kept for retransmissions."""
        self._started: float | None = None
        self._ke: KeyExchange | None = None
        self._ni = b""
        self._nr = b""
        self._g_xi = b""
        self._g_xr = b""
        self._shared = b""
        """g^xy (RFC 2409 section 5), kept to derive SKEYID under each candidate key."""
        self._sa_i_body = b""
        self._peer_id_body = b""
        """Responder in Aggressive mode: IDii_b, which HASH_I covers (message 3)."""
        self.cipher: IkeV1Cipher | None = None
        """Encryption and the IV chains (RFC 2409 Appendix B), once keys exist."""
        self._flight: Flight | None = None
        self._last_request_digest = b""
        self._last_reply: bytes | None = None
        self._auth_failure: str | None = None
        """Why the last message 5 or 6 was refused (a forgery, or a wrong key)."""
        self._peer_said: int | None = None
        """An error the peer sent in the clear during phase 1 (NO_PROPOSAL_CHOSEN ...)."""
        self._responses_taken: set[bytes] = set()
        """Initiator: digests of the Main mode answers taken (duplicates are ignored)."""
        self._dpd_seq = int.from_bytes(random_bytes(4), "big") & 0x7FFFFFFF
        self._dpd_pending: Flight | None = None
        self._dpd_waiting: int | None = None
        self._wall: float | None = None
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[IkeEvent] = deque()

    # -- properties ------------------------------------------------------------------

    @property
    def is_initiator(self) -> bool:
        return self.role is Role.INITIATOR

    @property
    def is_closed(self) -> bool:
        return self.state in (V1State.DELETED, V1State.FAILED)

    @property
    def spi_i(self) -> bytes:
        return self.icookie

    @property
    def spi_r(self) -> bytes:
        return self.rcookie

    @property
    def local_spi(self) -> bytes:
        """The cookie we chose: what a dispatcher routes incoming datagrams by."""
        return self.icookie if self.is_initiator else self.rcookie

    @property
    def encap(self) -> bool:
        """IKE and ESP go in UDP 4500: NAT-T was negotiated and a NAT found or forced."""
        return self.nat is not None and self.nat.any

    @property
    def hash_name(self) -> str:
        assert self.proposal is not None
        return hash_for(self.proposal.hash)

    @property
    def encr(self) -> Encr:
        assert self.proposal is not None
        return self.proposal.encr

    # -- commands --------------------------------------------------------------------

    def initiate(self, peer: Address, now: float) -> None:
        """Phase 1 message 1 (RFC 2409 section 5): our proposals and vendor IDs; in
        Aggressive mode also KE, Ni and IDii, so every proposal takes the first one's
        group (section 5.4: the group cannot be negotiated)."""
        self._transition(V1Input.INITIATE)
        self.peer = peer
        self._started = now
        if self.config.phase1_mode is ExchangeMode.AGGRESSIVE:
            group = self.config.ike_proposals[0].group
            offered = [p for p in self.config.ike_proposals if p.group == group]
            sa = proposals.phase1_sa(offered, self.config.ike_lifetime, self.config.auth)
            self._ke = KeyExchange(group)
            self._ni, self._g_xi = random_bytes(NONCE_LENGTH), self._ke.public_key
            payloads: list[Payload] = [
                sa,
                KePayload(self._g_xi),
                NoncePayload(self._ni),
                self._own_id(),
                *self._cert_requests(),
                *self._vendor_ids(),
            ]
        else:
            sa = proposals.phase1_sa(
                self.config.ike_proposals, self.config.ike_lifetime, self.config.auth
            )
            payloads = [sa, *self._vendor_ids()]
        exchange = self.exchange_type
        self._sa_i_body = self._body_of(payloads, 0)
        self._send_request(self._plain(exchange, 0, payloads), f"{self._mode_name} message 1", now)

    @property
    def exchange_type(self) -> ExchangeType:
        if self.config.phase1_mode is ExchangeMode.AGGRESSIVE:
            return ExchangeType.AGGRESSIVE
        return ExchangeType.IDENTITY_PROTECTION

    @property
    def _mode_name(self) -> str:
        return (
            "Aggressive mode" if self.config.phase1_mode is ExchangeMode.AGGRESSIVE else "Main mode"
        )

    def delete_child(self, spi_in: bytes, now: float) -> None:
        """Tell the peer with a Delete (RFC 2409 section 5.7) and forget the SA."""
        self._require_established("delete a child SA")
        child = self.children.get(spi_in)
        if child is None:
            raise CommandRefused(f"cannot delete child SA {spi_in.hex()}: unknown")
        self.send_informational([DeletePayload(DOI_IPSEC, child.protocol, (spi_in,))])
        self._remove_child(child, "deleted by us")

    def delete(self, now: float) -> None:
        """Delete every child, then the ISAKMP SA (RFC 2408 section 3.15: its SPI is
        the cookie pair)."""
        self._require_established("delete")
        self._delete_all(now, "deleted by us")

    def _delete_all(self, now: float, reason: str) -> None:
        for child in list(self.children.values()):
            self.delete_child(child.spi_in, now)
        self.send_informational(
            [DeletePayload(DOI_IPSEC, ProtocolId.ISAKMP, (self.icookie + self.rcookie,))]
        )
        self._finish_delete(reason)

    @property
    def expires_at(self) -> float | None:
        """When the ISAKMP SA's lifetime ends (on the ``now`` clock); None before it is
        established. At that time ``handle_timer`` deletes it, children and all, unless
        it was deleted first."""
        if self.established_at is None or self.lifetime is None:
            return None
        return self.established_at + self.lifetime

    @property
    def rekey_due(self) -> float | None:
        """When to start a replacement phase 1 (reauthentication: IKEv1 has no rekey
        of the ISAKMP SA in place), ``REKEY_MARGIN`` of the lifetime before expiry."""
        if self.established_at is None or self.lifetime is None:
            return None
        return self.established_at + self.lifetime * (1 - REKEY_MARGIN)

    def child_lifetime(self, spi_in: bytes) -> proposals.Lifetimes:
        """The seconds and kilobytes the child SA ``spi_in`` (our inbound SPI) was
        negotiated for, after any RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1); what
        ChildSaEstablished has no field for."""
        child = self.children.get(spi_in)
        if child is None:
            raise CommandRefused(f"no child SA {spi_in.hex()}")
        return child.lifetime

    def child_original_address(self, spi_in: bytes) -> IpAddress | None:
        """The peer's address before NAT that its NAT-OA gave for the child SA
        ``spi_in`` (RFC 3947 section 5.2; UDP-encapsulated transport mode only, None
        otherwise or when the peer sent none): what transport-mode checksums were
        computed over. ChildSaEstablished has no field for it."""
        child = self.children.get(spi_in)
        if child is None:
            raise CommandRefused(f"no child SA {spi_in.hex()}")
        return child.peer_original

    def check_liveness(self, now: float) -> None:
        """Send R-U-THERE (RFC 3706 section 5.3) unless one is already out."""
        self._require_established("check liveness")
        if not self.peer_dpd:
            raise CommandRefused("the peer did not announce DPD (RFC 3706 vendor ID)")
        if self._dpd_pending is None:
            self._send_dpd(now, tries=0)

    def _require_established(self, what: str) -> None:
        if self.state is not V1State.ESTABLISHED:
            raise CommandRefused(f"cannot {what} on an IKEv1 SA in state {self.state.value}")

    # -- inputs ----------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, wall: float | None = None
    ) -> None:
        """``wall``: the wall-clock time (seconds since the epoch) certificates are
        judged at; required with certificate authentication, unused with a PSK."""
        if wall is None and self.config.certificates is not None:
            raise LocalError("certificate authentication needs the wall-clock time (wall=)")
        self._wall = wall
        try:
            self._receive(data, addr, now)
        except ProtocolError as exc:
            # Only the peer's faults are dropped; our own (LocalError) raise.
            self.dropped += 1
            self.last_drop = str(exc)

    def handle_timer(self, now: float) -> None:
        if self.is_closed:
            return
        expiry = self._half_open_expiry()
        if expiry is not None and now >= expiry:
            waited = f"phase 1 not complete within {self.config.half_open_timeout:g} s"
            if self._auth_failure is not None:
                self.fail(f"{self._auth_failure} ({waited})", NotifyType.AUTHENTICATION_FAILED)
            else:
                self.fail(f"{waited} (state {self.state.value})")
            return
        expires = self.expires_at
        if self.state is V1State.ESTABLISHED and expires is not None and now >= expires:
            self._delete_all(now, f"expired: phase 1 lifetime of {self.lifetime} s is over")
            return
        if self._flight is not None and now >= self._flight.deadline:
            self._retransmit(now)
        for exchange in list(self.quick.values()):
            exchange.handle_timer(now)
        if self._dpd_pending is not None and now >= self._dpd_pending.deadline:
            tries = self._dpd_pending.tries
            if tries >= self.config.retransmit_tries:
                self._finish_delete(
                    f"peer dead: no R-U-THERE-ACK after {tries + 1} R-U-THERE (RFC 3706)"
                )
                return
            self._send_dpd(now, tries=tries + 1)
        due = self._liveness_due()
        if due is not None and now >= due and self._dpd_pending is None:
            self._send_dpd(now, tries=0)

    # -- outputs ---------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        deadlines = [
            self._half_open_expiry(),
            self.expires_at if self.state is V1State.ESTABLISHED else None,
            self._flight.deadline if self._flight else None,
            self._dpd_pending.deadline if self._dpd_pending else None,
            self._liveness_due() if self._dpd_pending is None else None,
            *(q.get_timer() for q in self.quick.values()),
        ]
        live = [d for d in deadlines if d is not None]
        return min(live) if live and not self.is_closed else None

    def next_event(self) -> IkeEvent | None:
        return self._events.popleft() if self._events else None

    def _half_open_expiry(self) -> float | None:
        if (
            self.is_initiator
            or self._started is None
            or self.state in (V1State.ESTABLISHED, V1State.DELETED, V1State.FAILED)
        ):
            return None
        return self._started + self.config.half_open_timeout

    def _liveness_due(self) -> float | None:
        delay = self.config.dpd_delay
        if delay is None or self.state is not V1State.ESTABLISHED or not self.peer_dpd:
            return None
        return None if self.last_heard is None else self.last_heard + delay

    # -- receiving -------------------------------------------------------------------

    def _receive(self, data: bytes, addr: Address, now: float) -> None:
        if self.is_closed:
            raise ProtocolError(f"IKEv1 SA is {self.state.value}")
        header, body = IsakmpHeader.parse(data)
        digest = hashlib.sha256(data).digest()
        if digest == self._last_request_digest and self._last_reply is not None:
            # A request we took again (its responder cookie may still be zero): the
            # peer lost our answer, which goes again unchanged.
            self._send(self._last_reply)
            return
        if digest in self._responses_taken:
            return  # a duplicate of an answer we already took: nothing to do
        self._check_cookies(header)
        if header.exchange in (ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE):
            self._phase1(header, body, addr, now, digest)
        elif header.exchange == ExchangeType.QUICK:
            self._require_phase1(header)
            exchange = self.quick.get(header.message_id)
            if exchange is not None and exchange.answer_duplicate(digest):
                return
            if exchange is None and header.message_id == 0:
                raise ProtocolError(
                    "Quick mode with message ID 0", notify=NotifyType.INVALID_MESSAGE_ID
                )
            message = self.open(header, body)
            if exchange is None:
                exchange = QuickMode.respond(self, header.message_id, self.config.child)
                exchange.receive(message, digest, now)  # raises before it is kept if bogus
                self._keep(exchange)
            else:
                exchange.receive(message, digest, now)
            self._heard(addr, now)
        elif header.exchange == ExchangeType.INFORMATIONAL:
            self._informational(header, body, addr, now)
        else:
            raise ProtocolError(
                f"exchange type {header.exchange} is not spoken here",
                notify=NotifyType.UNSUPPORTED_EXCHANGE_TYPE,
            )

    def _check_cookies(self, header: IsakmpHeader) -> None:
        if header.icookie != self.icookie and not (
            self.role is Role.RESPONDER and self.state is V1State.CREATED
        ):
            raise ProtocolError(
                "initiator cookie is not this SA's", notify=NotifyType.INVALID_COOKIE
            )
        if self.state is V1State.CREATED or (
            self.is_initiator and self.state is V1State.SA_EXCHANGE
        ):
            return  # the responder cookie is still being chosen
        if header.rcookie != self.rcookie:
            raise ProtocolError(
                "responder cookie is not this SA's", notify=NotifyType.INVALID_COOKIE
            )

    def _require_phase1(self, header: IsakmpHeader) -> None:
        if self.state is not V1State.ESTABLISHED:
            raise ProtocolError(f"{ExchangeType(header.exchange).name} before phase 1 is done")
        if not header.encrypted:
            raise ProtocolError(
                "unencrypted message after phase 1", notify=NotifyType.INVALID_FLAGS
            )

    def _heard(self, addr: Address, now: float) -> None:
        """An authenticated message: the peer is alive, and may have moved (RFC 3947
        section 4: the initiator floats to port 4500; a NAT may rebind)."""
        self.last_heard = now
        self.peer = addr
        if self._lifetime_notice and self.state is V1State.ESTABLISHED:
            self._lifetime_notice = False
            self.send_informational(self._responder_lifetime())

    def parse(self, header: IsakmpHeader, plain: bytes, decrypted: Decrypted | None) -> Received:
        raw = split_payloads(header.next_payload, plain, padded=decrypted is not None)
        payloads = [parse_payload(r) for r in raw]
        return Received(header, raw, payloads, plain, decrypted)

    def open(self, header: IsakmpHeader, body: bytes) -> Received:
        """Decrypt and parse; the IV chain moves only at ``confirm``."""
        if not header.encrypted:
            raise ProtocolError(
                "unencrypted message where one must be encrypted", notify=NotifyType.INVALID_FLAGS
            )
        assert self.cipher is not None
        decrypted = self.cipher.decrypt(header.message_id, body)
        return self.parse(header, decrypted.plaintext, decrypted)

    def confirm(self, message: Received) -> None:
        """The message is accepted: its exchange's IV chain moves past it."""
        assert self.cipher is not None and message.decrypted is not None
        self.cipher.confirm(message.decrypted)

    # -- Main mode -------------------------------------------------------------------

    def _phase1(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        if header.exchange != self.exchange_type:
            raise ProtocolError(
                f"{ExchangeType(header.exchange).name} exchange, but we are configured for "
                f"{self._mode_name}",
                notify=NotifyType.INVALID_EXCHANGE_TYPE,
            )
        if header.message_id != 0:
            raise ProtocolError(
                "phase 1 message with a message ID", notify=NotifyType.INVALID_MESSAGE_ID
            )
        handler = _PHASE1.get((self.role, self.state, header.exchange))
        if handler is None:
            raise ProtocolError(f"unexpected {self._mode_name} message in state {self.state.value}")
        handler(self, header, body, addr, now, digest)

    # -- Aggressive mode (RFC 2409 section 5.4) --------------------------------------

    def _on_aggressive_request(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Responder, message 1 -> 2: SA KE Nr IDir HASH_R [NAT-D NAT-D]."""
        message = self._plain_message(header, body)
        sa = message.first(SaPayload)
        id_payload = message.first(IdPayload)
        if sa is None or id_payload is None:
            raise ProtocolError(
                "Aggressive mode message 1 needs SA and ID payloads",
                notify=NotifyType.PAYLOAD_MALFORMED,
            )
        g_xi, ni = self._ke_and_nonce(message, "message 1")
        self.icookie, self.peer, self._started = header.icookie, addr, now
        self._note_vendor_ids(message)
        self.rcookie = random_bytes(8)
        try:
            choice = proposals.select_phase1(self.config.ike_proposals, sa, self.config.auth)
        except ProtocolError as exc:
            self._notify_unprotected(exc.notify or NotifyType.NO_PROPOSAL_CHOSEN)
            self.fail(str(exc), exc.notify)
            return
        identity = Identity(id_payload.id_type, id_payload.data)
        if identity != self.config.remote_id:
            self._notify_unprotected(NotifyType.INVALID_ID_INFORMATION)
            self.fail(
                f"INVALID_ID_INFORMATION: the peer is {identity}, we expect "
                f"{self.config.remote_id}",
                NotifyType.INVALID_ID_INFORMATION,
            )
            return
        self._take_phase1(choice)
        ke = KeyExchange(choice.proposal.group)
        shared = ke.shared_secret(g_xi)
        self._ke, self._g_xi, self._g_xr, self._ni = ke, g_xi, ke.public_key, ni
        self._nr = random_bytes(NONCE_LENGTH)
        self._sa_i_body = message.raw_body(PayloadType.SA)
        self._peer_id_body = message.raw_body(PayloadType.ID)
        self.remote_identity = identity
        # HASH_R goes before any proof of the initiator's: no key can be chosen by it
        # here, our own is used (the initiator tries its accepted ones on HASH_R).
        self._shared = shared
        self._install_keys(shared, self._own_psk)
        assert self.keys is not None and self.prf is not None
        own = self._own_id()
        reply: list[Payload] = [
            proposals.answer_phase1(sa, choice),
            KePayload(self._g_xr),
            NoncePayload(self._nr),
            *self._auth_payloads(own, self._hash_r(self._id_body(own))),
            *self._cert_requests(),
            *self._vendor_ids(),
            *self._nat_d(),
        ]
        self._transition(V1Input.KE_DONE)
        data = self._plain(ExchangeType.AGGRESSIVE, 0, reply)
        self._answer(data, digest)
        # Nothing but message 3 says message 2 arrived: resend it until then.
        self._flight = Flight(
            data, "Aggressive mode message 2", now + self.config.retransmit_timeout
        )

    def _on_aggressive_response(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Initiator, message 2 -> 3: HASH_R checked, then HASH_I [NAT-D NAT-D],
        encrypted (as strongSwan sends and expects it)."""
        assert self._ke is not None
        message = self._plain_message(header, body)
        sa = message.first(SaPayload)
        if sa is None or header.rcookie == bytes(8):
            raise ProtocolError("Aggressive mode message 2 needs an SA payload and a cookie")
        try:
            choice = proposals.accept_phase1(self.config.ike_proposals, sa, self.config.auth)
        except ProtocolError as exc:
            self.fail(str(exc), exc.notify)
            return
        g_xr, nr = self._ke_and_nonce(message, "message 2")
        identity, id_body = self._peer_identity(message, "message 2")
        shared = self._ke.shared_secret(g_xr)
        self.rcookie = header.rcookie
        self._take_phase1(choice)
        self._g_xr, self._nr = g_xr, nr
        self._note_vendor_ids(message)
        self._shared = shared
        # The responder proved itself with its own key before seeing any proof of ours:
        # the key it used is whichever of ours and the accepted ones HASH_R verifies under.
        failure = self._first_verifying(
            lambda: self._verify_auth(message, identity, self._hash_r(id_body), "HASH_R")
        )
        if failure is not None:
            self.keys = self.cipher = None
            self._auth_failed("message 2", failure)
        if identity != self.config.remote_id:
            self.fail(
                f"INVALID_ID_INFORMATION: the peer is {identity}, we expect "
                f"{self.config.remote_id}",
                NotifyType.INVALID_ID_INFORMATION,
            )
            return
        self._detect_nat(message, addr)
        self._took(digest)
        payloads = [*self._proof(self._hash_i(self._id_body(self._own_id()))), *self._nat_d()]
        if self.config.initial_contact:
            payloads.append(self._initial_contact())
        if self.encap and self.peer is not None:
            self.peer = (self.peer[0], NAT_T_PORT)  # RFC 3947 section 4
        # A retransmitted message 2 (our message 3 lost) gets message 3 again.
        self._answer(self._protected_phase1(payloads), digest)
        self._heard(self.peer or addr, now)
        self._established(identity, now)
        if self.quick_mode:
            self._keep(QuickMode.initiate(self, self.config.child, now))

    def _on_aggressive_final(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Responder, message 3: HASH_I; phase 1 is up."""
        assert self.keys is not None and self.prf is not None
        try:
            message = (
                self.open(header, body) if header.encrypted else self.parse(header, body, None)
            )
            assert self.remote_identity is not None
            self._verify_auth(
                message, self.remote_identity, self._hash_i(self._peer_id_body), "HASH_I"
            )
        except ProtocolError as exc:
            self._auth_failed("message 3", exc)
        if message.decrypted is not None:
            self.confirm(message)
        self._detect_nat(message, addr)
        self.initial_contact = any(
            isinstance(p, NotifyPayload) and p.type == NotifyType.INITIAL_CONTACT
            for p in message.payloads
        )
        self._flight = None
        self._last_request_digest, self._last_reply = digest, None
        self._heard(addr, now)
        assert self.remote_identity is not None
        self._established(self.remote_identity, now)

    def _initial_contact(self) -> NotifyPayload:
        """RFC 2407 section 4.6.3.3, with the ISAKMP SA's cookies as its SPI."""
        return NotifyPayload(
            DOI_IPSEC,
            ProtocolId.ISAKMP,
            self.icookie + self.rcookie,
            NotifyType.INITIAL_CONTACT,
            b"",
        )

    # -- Main mode (RFC 2409 section 5) ----------------------------------------------

    def _plain_message(self, header: IsakmpHeader, body: bytes) -> Received:
        if header.encrypted:
            raise ProtocolError(
                "this phase 1 message must not be encrypted", notify=NotifyType.INVALID_FLAGS
            )
        return self.parse(header, body, None)

    def _on_sa_request(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Responder, message 1 -> 2."""
        message = self._plain_message(header, body)
        sa = message.first(SaPayload)
        if not isinstance(sa, SaPayload):
            raise ProtocolError(
                "Main mode message 1 has no SA payload", notify=NotifyType.PAYLOAD_MALFORMED
            )
        self.icookie = header.icookie
        self.peer = addr
        self._started = now
        self._note_vendor_ids(message)
        self.rcookie = random_bytes(8)
        try:
            choice = proposals.select_phase1(self.config.ike_proposals, sa, self.config.auth)
        except ProtocolError as exc:
            self._notify_unprotected(exc.notify or NotifyType.NO_PROPOSAL_CHOSEN)
            self.fail(str(exc), exc.notify)
            return
        self._take_phase1(choice)
        self._sa_i_body = message.raw_body(PayloadType.SA)
        reply = [proposals.answer_phase1(sa, choice), *self._vendor_ids()]
        self._transition(V1Input.SA_DONE)
        self._answer(self._plain(ExchangeType.IDENTITY_PROTECTION, 0, reply), digest)

    def _on_sa_response(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Initiator, message 2 -> 3."""
        message = self._plain_message(header, body)
        sa = message.first(SaPayload)
        if not isinstance(sa, SaPayload):
            raise ProtocolError("Main mode message 2 has no SA payload")
        if header.rcookie == bytes(8):
            raise ProtocolError("responder cookie is zero", notify=NotifyType.INVALID_COOKIE)
        try:
            choice = proposals.accept_phase1(self.config.ike_proposals, sa, self.config.auth)
        except ProtocolError as exc:
            self.fail(str(exc), exc.notify)
            return
        self.rcookie = header.rcookie
        self._take_phase1(choice)
        self._note_vendor_ids(message)
        self._took(digest)
        self._ke = KeyExchange(choice.proposal.group)
        self._ni = random_bytes(NONCE_LENGTH)
        self._g_xi = self._ke.public_key
        payloads: list[Payload] = [
            KePayload(self._g_xi),
            NoncePayload(self._ni),
            *self._cert_requests(),
            *self._nat_d(),
        ]
        self._transition(V1Input.SA_DONE)
        self._send_request(
            self._plain(ExchangeType.IDENTITY_PROTECTION, 0, payloads), "Main mode message 3", now
        )

    def _ke_and_nonce(self, message: Received, which: str) -> tuple[bytes, bytes]:
        ke, nonce = message.first(KePayload), message.first(NoncePayload)
        if not isinstance(ke, KePayload) or not isinstance(nonce, NoncePayload):
            raise ProtocolError(
                f"Main mode {which} needs KE and Nonce payloads",
                notify=NotifyType.PAYLOAD_MALFORMED,
            )
        return ke.data, nonce.data

    def _on_ke_request(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Responder, message 3 -> 4."""
        assert self.proposal is not None
        message = self._plain_message(header, body)
        g_xi, ni = self._ke_and_nonce(message, "message 3")
        ke = KeyExchange(self.proposal.group)
        shared = ke.shared_secret(g_xi)  # a bad value raises CryptoError: dropped
        self._ke, self._g_xi, self._g_xr, self._ni = ke, g_xi, ke.public_key, ni
        self._nr = random_bytes(NONCE_LENGTH)
        self._detect_nat(message, addr)
        self._shared = shared
        self._install_keys(shared, self._own_psk)
        payloads: list[Payload] = [
            KePayload(self._g_xr),
            NoncePayload(self._nr),
            *self._cert_requests(),
            *self._nat_d(),
        ]
        self._transition(V1Input.KE_DONE)
        self._answer(self._plain(ExchangeType.IDENTITY_PROTECTION, 0, payloads), digest)

    def _on_ke_response(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Initiator, message 4 -> 5 (IDii HASH_I [INITIAL-CONTACT], encrypted)."""
        assert self._ke is not None
        message = self._plain_message(header, body)
        g_xr, nr = self._ke_and_nonce(message, "message 4")
        shared = self._ke.shared_secret(g_xr)
        self._g_xr, self._nr = g_xr, nr
        self._detect_nat(message, addr)
        self._shared = shared
        self._install_keys(shared, self._own_psk)  # the initiator always uses its own
        self._took(digest)
        if self.encap and self.peer is not None:
            self.peer = (self.peer[0], NAT_T_PORT)  # RFC 3947 section 4: float with message 5
        id_payload = self._own_id()
        assert self.keys is not None and self.prf is not None
        payloads = self._auth_payloads(id_payload, self._hash_i(self._id_body(id_payload)))
        if self.config.initial_contact:
            payloads.append(self._initial_contact())
        data = self._protected_phase1(payloads)
        self._transition(V1Input.AUTH_SENT)
        self._send_request(data, "Main mode message 5", now)

    def _peer_identity(self, message: Received, which: str) -> tuple[Identity, bytes]:
        id_payload = message.first(IdPayload)
        if id_payload is None:
            raise ProtocolError(f"{self._mode_name} {which} has no ID payload")
        identity = Identity(id_payload.id_type, id_payload.data)
        return identity, message.raw_body(PayloadType.ID)

    def _cert_requests(self) -> list[Payload]:
        """CERTREQ in messages 3 and 4 (RFC 2409 section 5.1) with signatures."""
        creds = self.config.certificates
        return [] if creds is None else auth.certificate_requests(creds)

    def _hash_i(self, idi_body: bytes) -> bytes:
        """HASH_I (RFC 2409 section 5), with the prf the authentication method fixes."""
        assert self.keys is not None and self.prf is not None
        prf = auth_prf(self.config.auth, self.prf)
        return hash_i(
            prf,
            self.keys.skeyid,
            self._g_xi,
            self._g_xr,
            self.icookie,
            self.rcookie,
            self._sa_i_body,
            idi_body,
        )

    def _hash_r(self, idr_body: bytes) -> bytes:
        assert self.keys is not None and self.prf is not None
        prf = auth_prf(self.config.auth, self.prf)
        return hash_r(
            prf,
            self.keys.skeyid,
            self._g_xi,
            self._g_xr,
            self.icookie,
            self.rcookie,
            self._sa_i_body,
            idr_body,
        )

    def _auth_payloads(self, id_payload: IdPayload, digest: bytes) -> list[Payload]:
        """ID and HASH with a pre-shared key; ID, CERT and SIG with signatures (5.1)."""
        return [id_payload, *self._proof(digest)]

    def _proof(self, digest: bytes) -> list[Payload]:
        """HASH_I / HASH_R itself with a pre-shared key (RFC 2409 section 5.4); with
        signatures our certificate path and SIG over it (section 5.1)."""
        creds = self.config.certificates
        if creds is None:
            return [HashPayload(digest)]
        return [*auth.certificate_payloads(creds), SigPayload(auth.sign(creds, digest))]

    def _verify_auth(
        self, message: Received, identity: Identity, expected: bytes, what: str
    ) -> None:
        """The peer's HASH equals ours, or its SIG over ours verifies with a certificate
        that names it and chains to our anchors."""
        creds = self.config.certificates
        if creds is None:
            received = message.first(HashPayload)
            if received is None or not hmac.compare_digest(expected, received.data):
                raise ProtocolError(f"{what} does not verify")
            return
        sig = message.first(SigPayload)
        if sig is None:
            raise ProtocolError(f"no SIG payload where {what} is signed")
        if self._wall is None:
            raise LocalError("certificate authentication needs the wall-clock time (wall=)")
        auth.verify_peer(
            creds, self.config.auth, message.payloads, identity, expected, sig.data, self._wall
        )

    def _on_auth_request(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Responder, message 5 -> 6 (IDir HASH_R, encrypted)."""
        assert self.keys is not None and self.prf is not None
        if not header.encrypted:
            raise ProtocolError(
                "Main mode message 5/6 must be encrypted", notify=NotifyType.INVALID_FLAGS
            )
        opened: list[tuple[Received, Identity]] = []

        def verify() -> None:
            message = self.open(header, body)
            identity, id_body = self._peer_identity(message, "message 5")
            self._verify_auth(message, identity, self._hash_i(id_body), "HASH_I")
            opened.append((message, identity))

        # SKEYID hangs on the key (RFC 2409 section 5): the one the initiator used is the
        # one under which message 5 decrypts and HASH_I verifies, ours or an accepted one.
        failure = self._first_verifying(verify)
        if failure is not None:
            self._install_keys(self._shared, self._own_psk)
            self._auth_failed("message 5", failure)
        message, identity = opened[-1]
        if identity != self.config.remote_id:
            self._notify_unprotected(NotifyType.INVALID_ID_INFORMATION)
            self.fail(
                f"INVALID_ID_INFORMATION: the peer is {identity}, we expect "
                f"{self.config.remote_id}",
                NotifyType.INVALID_ID_INFORMATION,
            )
            return
        self.confirm(message)
        self.initial_contact = any(
            isinstance(p, NotifyPayload) and p.type == NotifyType.INITIAL_CONTACT
            for p in message.payloads
        )
        self._heard(addr, now)
        id_payload = self._own_id()
        auth = self._auth_payloads(id_payload, self._hash_r(self._id_body(id_payload)))
        data = self._protected_phase1(auth)
        self._answer(data, digest)
        self._established(identity, now)

    def _on_auth_response(
        self, header: IsakmpHeader, body: bytes, addr: Address, now: float, digest: bytes
    ) -> None:
        """Initiator, message 6: phase 1 is up; Quick mode for the child follows."""
        assert self.keys is not None and self.prf is not None
        if not header.encrypted:
            raise ProtocolError(
                "Main mode message 5/6 must be encrypted", notify=NotifyType.INVALID_FLAGS
            )
        try:
            message = self.open(header, body)
            identity, id_body = self._peer_identity(message, "message 6")
            self._verify_auth(message, identity, self._hash_r(id_body), "HASH_R")
        except ProtocolError as exc:
            self._auth_failed("message 6", exc)
        if identity != self.config.remote_id:
            self.fail(
                f"INVALID_ID_INFORMATION: the peer is {identity}, we expect "
                f"{self.config.remote_id}",
                NotifyType.INVALID_ID_INFORMATION,
            )
            return
        self.confirm(message)
        self._took(digest)
        self._heard(addr, now)
        self._established(identity, now)
        if self.quick_mode:
            self._keep(QuickMode.initiate(self, self.config.child, now))

    def _auth_failed(self, which: str, exc: ProtocolError) -> NoReturn:
        """Message 5 or 6 did not decrypt to a verified message. With a pre-shared key
        that is what differing keys look like, but also what a forged datagram looks
        like: it is dropped and counted, the reason kept for the failure the
        retransmission or half-open timers bring (no datagram kills the SA). The
        responder tells the peer in the clear, as strongSwan does."""
        if self.config.certificates is None:
            tried = len(self.config.peer_psks)
            keys = f" under any of our {tried} pre-shared keys" if tried > 1 else ""
            self._auth_failure = (
                f"AUTHENTICATION_FAILED: {self._mode_name} {which} did not decrypt and "
                f"verify{keys} ({exc}); are the pre-shared keys the same?"
            )
        else:
            reason = str(exc).removeprefix("AUTHENTICATION_FAILED: ")
            self._auth_failure = f"AUTHENTICATION_FAILED: {self._mode_name} {which}: {reason}"
        if not self.is_initiator:
            self._notify_unprotected(NotifyType.AUTHENTICATION_FAILED)
        raise ProtocolError(self._auth_failure, notify=NotifyType.AUTHENTICATION_FAILED)

    def _take_phase1(self, choice: proposals.Phase1Choice) -> None:
        """The chosen proposal, and the lifetime: ours, or the peer's when shorter (a
        responder keeps its own when the initiator proposed longer, and says so once
        phase 1 is up)."""
        self.proposal = choice.proposal
        self._proposed_lifetime = choice.lifetime
        self.lifetime = min(self.config.ike_lifetime, choice.lifetime or self.config.ike_lifetime)

    def _lower_lifetime(self, notify: NotifyPayload) -> None:
        """RESPONDER-LIFETIME for the ISAKMP SA (RFC 2407 section 4.6.3.1 names it for
        IPsec SAs; for phase 1 its attributes are those of RFC 2409 Appendix A, or the
        IPsec DOI's, which some peers send): the SA ends sooner, never later."""
        seconds: int | None = None
        for kinds in (
            (P1Attr.LIFE_TYPE, P1Attr.LIFE_DURATION),
            (P2Attr.LIFE_TYPE, P2Attr.LIFE_DURATION),
        ):
            try:
                attributes = parse_attributes(notify.data, 0, payload="RESPONDER-LIFETIME")
            except ProtocolError:
                return
            seconds = proposals.lifetimes(attributes, *kinds).seconds
            if seconds is not None:
                break
        if seconds is not None and seconds > 0 and self.lifetime is not None:
            self.lifetime = min(self.lifetime, seconds)

    def _responder_lifetime(self) -> list[Payload]:
        """Responder: RESPONDER-LIFETIME for the ISAKMP SA when the initiator proposed
        longer than we keep it (RFC 2407 section 4.6.3.1; its default is 8 hours)."""
        proposed = self._proposed_lifetime or proposals.DEFAULT_PROPOSED_LIFETIME
        if self.is_initiator or self.lifetime is None or proposed <= self.lifetime:
            return []
        data = encode_attributes(
            [
                Attribute(P1Attr.LIFE_TYPE, LifeType.SECONDS),
                Attribute.variable(P1Attr.LIFE_DURATION, self.lifetime),
            ]
        )
        return [
            NotifyPayload(
                DOI_IPSEC,
                ProtocolId.ISAKMP,
                self.icookie + self.rcookie,
                NotifyType.RESPONDER_LIFETIME,
                data,
            )
        ]

    def _established(self, identity: Identity, now: float) -> None:
        assert self.peer is not None and self.proposal is not None
        self.remote_identity = identity
        self.established_at = now
        self._transition(V1Input.AUTH_DONE)
        nat = self.nat
        self.emit(
            IkeSaEstablished(
                self.icookie,
                self.rcookie,
                str(self.proposal),
                str(self.config.local_id),
                str(identity),
                self.peer,
                (nat.local_behind_nat or nat.forced) if nat else False,
                nat.remote_behind_nat if nat else False,
                self.initial_contact,
            )
        )
        # Told once the peer is heard from again: an informational sent at once may
        # overtake our last phase 1 message in the peer (charon 5.9 drops it then).
        self._lifetime_notice = bool(self._responder_lifetime())

    @property
    def _own_psk(self) -> bytes | None:
        """The key SKEYID is derived with when we choose it (None: signatures)."""
        return self.config.psk if self.config.certificates is None else None

    def _first_verifying(self, verify: Callable[[], None]) -> ProtocolError | None:
        """Derive the keys under each key the peer may have used (ours, then the
        accepted ones: a bounded list) until ``verify`` passes; the keys stay those.
        None when one did, else why it failed under our own key."""
        candidates: tuple[bytes | None, ...] = (
            self.config.peer_psks if self.config.certificates is None else (None,)
        )
        failure: ProtocolError | None = None
        for psk in candidates:
            self._install_keys(self._shared, psk)
            try:
                verify()
            except ProtocolError as exc:
                failure = failure or exc
                continue
            return None
        return failure

    def _install_keys(self, shared: bytes, psk: bytes | None) -> None:
        assert self.proposal is not None
        self.prf = prf_for_hash(self.proposal.hash)
        self.keys = derive_phase1(
            self.prf,
            psk,
            self._ni,
            self._nr,
            shared,
            self.icookie,
            self.rcookie,
            self.encr,
            self._g_xi,
            self._g_xr,
        )
        self.cipher = IkeV1Cipher(self.encr, self.keys.enc_key, self.hash_name, self.keys.iv0)

    def _own_id(self) -> IdPayload:
        local = self.config.local_id
        return IdPayload(local.id_type, 0, 0, local.data)

    @staticmethod
    def _id_body(payload: IdPayload) -> bytes:
        _, chain = encode_payloads([payload])
        return chain[4:]

    # -- NAT traversal (RFC 3947) and vendor IDs ------------------------------------

    def _vendor_ids(self) -> list[Payload]:
        ids = [VendorIdPayload(VID_DPD)]
        if self.config.nat_traversal:
            ids.insert(0, VendorIdPayload(VID_NAT_T_RFC3947))
        return ids  # type: ignore[return-value]

    def _note_vendor_ids(self, message: Received) -> None:
        vids = {p.data for p in message.payloads if isinstance(p, VendorIdPayload)}
        self.peer_nat_t = self.config.nat_traversal and VID_NAT_T_RFC3947 in vids
        self.peer_dpd = VID_DPD in vids

    def _nat_hash(self, address: Address) -> bytes:
        ip, port = address
        data = (
            self.icookie + self.rcookie + ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")
        )
        return hashlib.new(self.hash_name, data).digest()

    def _nat_d(self) -> list[Payload]:
        """RFC 3947 section 3.2: the first NAT-D hashes the peer's address, the next
        ours; ``force_encap`` sends a random one for ours, claiming a NAT."""
        if not self.peer_nat_t or self.local is None or self.peer is None:
            return []
        ours = (
            random_bytes(len(self._nat_hash(self.local)))
            if self.config.force_encap
            else self._nat_hash(self.local)
        )
        return [NatDPayload(self._nat_hash(self.peer)), NatDPayload(ours)]

    def _detect_nat(self, message: Received, addr: Address) -> None:
        hashes = [p.data for p in message.payloads if isinstance(p, NatDPayload)]
        if not self.peer_nat_t or self.local is None or len(hashes) < 2:
            return
        ours, theirs = self._nat_hash(self.local), self._nat_hash(addr)
        self.nat = NatResult(
            local_behind_nat=not hmac.compare_digest(hashes[0], ours),
            remote_behind_nat=not any(hmac.compare_digest(h, theirs) for h in hashes[1:]),
            peer_address=addr,
            forced=self.config.force_encap,
        )

    # -- informational (RFC 2409 section 5.7) ----------------------------------------

    def _informational(self, header: IsakmpHeader, body: bytes, addr: Address, now: float) -> None:
        if not header.encrypted:
            self._unprotected_informational(header, body)
            return
        if self.state is not V1State.ESTABLISHED:
            self._phase1_informational(header, body)
            return
        message = self._verified_informational(header, body)
        self._heard(addr, now)
        for payload in message.payloads[1:]:
            if isinstance(payload, NotifyPayload):
                self._on_notify(payload, now)
            elif isinstance(payload, DeletePayload):
                self._on_delete(payload)
            if self.is_closed:
                return

    def _verified_informational(self, header: IsakmpHeader, body: bytes) -> Received:
        """Decrypted, with its HASH(1) = prf(SKEYID_a, M-ID | N/D) checked (5.7)."""
        message = self.open(header, body)
        hash_payload = message.payloads[0] if message.payloads else None
        if not isinstance(hash_payload, HashPayload):
            raise ProtocolError("informational message without HASH(1) first")
        assert self.prf is not None and self.keys is not None and self.cipher is not None
        expected = info_hash(self.prf, self.keys.skeyid_a, header.message_id, message.after_first())
        if not hmac.compare_digest(expected, hash_payload.data):
            raise ProtocolError("informational HASH(1) does not verify")
        self.cipher.forget(header.message_id)  # one message: its chain is done
        return message

    def _phase1_informational(self, header: IsakmpHeader, body: bytes) -> None:
        """An encrypted notify while our Main mode message 5 waits for its answer: the
        responder refusing it under the keys it derived. One that verifies is the
        peer's authenticated word and ends the SA; one that does not is what a peer
        with another pre-shared key sends (strongSwan: PAYLOAD_MALFORMED under its own
        keys), kept as the likely reason like any unverified message."""
        if self.cipher is None or self.state is not V1State.AUTH_SENT:
            raise ProtocolError(f"encrypted informational message in state {self.state.value}")
        try:
            message = self._verified_informational(header, body)
        except ProtocolError:
            self._auth_failure = (
                "AUTHENTICATION_FAILED: the peer answered Main mode message 5 with an "
                "encrypted notify that does not decrypt and verify; are the pre-shared "
                "keys the same?"
            )
            raise
        for payload in message.payloads[1:]:
            if isinstance(payload, NotifyPayload) and payload.type < 8192:
                name = _notify_name(payload.type)
                self.fail(f"{name}: the peer refused Main mode message 5", payload.type)
                return

    def _unprotected_informational(self, header: IsakmpHeader, body: bytes) -> None:
        """An error notify in the clear, while phase 1 is not up (there is nothing to
        protect it with yet), is kept as the likely reason: anyone who saw our cookie
        could have sent it, so it does not end the SA by itself; when our request
        goes unanswered, the failure names it."""
        if self.state is V1State.ESTABLISHED or self.state is V1State.CREATED:
            raise ProtocolError("unprotected informational message")
        message = self.parse(header, body, None)
        for payload in message.payloads:
            if isinstance(payload, NotifyPayload) and payload.type < 8192:
                self._peer_said = payload.type
                return
        raise ProtocolError("unprotected informational message carries no error")

    def _on_notify(self, notify: NotifyPayload, now: float) -> None:
        if notify.type == NotifyType.R_U_THERE:
            self.send_informational(
                [
                    NotifyPayload(
                        DOI_IPSEC,
                        ProtocolId.ISAKMP,
                        self.icookie + self.rcookie,
                        NotifyType.R_U_THERE_ACK,
                        notify.data,
                    )
                ]
            )
        elif notify.type == NotifyType.R_U_THERE_ACK:
            seq = int.from_bytes(notify.data, "big") if len(notify.data) == 4 else None
            if seq is None or seq != self._dpd_waiting:
                raise ProtocolError(f"R-U-THERE-ACK for sequence {seq}, not ours")
            self._dpd_pending = self._dpd_waiting = None
            self.emit(LivenessAnswered())
        elif notify.type == NotifyType.INITIAL_CONTACT:
            return
        elif notify.type == NotifyType.RESPONDER_LIFETIME and notify.protocol == ProtocolId.ISAKMP:
            self._lower_lifetime(notify)
        elif notify.type < 8192:
            reason = f"{_notify_name(notify.type)}: notify from the peer"
            for exchange in self.quick.values():
                if exchange.refused_by(notify, reason):
                    return
            self.emit(PeerErrorNotify(notify.type, reason))

    def _on_delete(self, delete: DeletePayload) -> None:
        if delete.protocol == ProtocolId.ISAKMP:
            if self.icookie + self.rcookie in delete.spis:
                # A phase 1 Delete deletes no IPsec SA (RFC 2408 section 3.15: each is
                # deleted by its own SPI; the peer may have moved them to a newer
                # ISAKMP SA, as on reauthentication): its Quick mode SAs stay in
                # ``children`` for the driver to adopt or release.
                self._finish_delete("deleted by peer", children_stay=True)
            return
        if delete.protocol not in (ProtocolId.IPSEC_ESP, ProtocolId.IPSEC_AH):
            return
        for spi in delete.spis:
            child = next(
                (
                    c
                    for c in self.children.values()
                    if c.spi_out == spi and c.protocol == delete.protocol
                ),
                None,
            )
            if child is not None:
                rekeyed = any(
                    c is not child
                    and c.established.name == child.established.name
                    and c.established.local_ts == child.established.local_ts
                    and c.established.remote_ts == child.established.remote_ts
                    for c in self.children.values()
                )
                self._remove_child(child, "rekeyed" if rekeyed else "deleted by peer")

    def send_informational(self, payloads: Sequence[Payload]) -> None:
        """HDR*, HASH(1), N/D (RFC 2409 section 5.7), in a new message ID."""
        assert self.prf is not None and self.keys is not None
        mid = self.new_message_id()
        _, rest = encode_payloads(list(payloads))
        digest = info_hash(self.prf, self.keys.skeyid_a, mid, rest)
        self._send(self.protect(ExchangeType.INFORMATIONAL, mid, [HashPayload(digest), *payloads]))
        assert self.cipher is not None
        self.cipher.forget(mid)

    def _send_dpd(self, now: float, *, tries: int) -> None:
        """RFC 3706 section 5.3: each R-U-THERE takes the next sequence number."""
        self._dpd_seq = (self._dpd_seq + 1) & 0xFFFFFFFF
        self._dpd_waiting = self._dpd_seq
        self.send_informational(
            [
                NotifyPayload(
                    DOI_IPSEC,
                    ProtocolId.ISAKMP,
                    self.icookie + self.rcookie,
                    NotifyType.R_U_THERE,
                    self._dpd_seq.to_bytes(4, "big"),
                )
            ]
        )
        timeout = self.config.retransmit_timeout * 2**tries
        self._dpd_pending = Flight(b"", "R-U-THERE", now + timeout, tries)

    def _notify_unprotected(self, notify: int) -> None:
        """An error notify in the clear, for a peer still in phase 1."""
        payload = NotifyPayload(
            DOI_IPSEC, ProtocolId.ISAKMP, self.icookie + self.rcookie, notify, b""
        )
        if self.peer is not None:
            self._send(self._plain(ExchangeType.INFORMATIONAL, self.new_message_id(), [payload]))

    # -- building --------------------------------------------------------------------

    def new_message_id(self) -> int:
        while True:
            mid = int.from_bytes(random_bytes(4), "big")
            if mid and mid not in self.quick:
                return mid

    def _header(self, exchange: int, mid: int, first: int, flags: Flag, length: int) -> bytes:
        return IsakmpHeader(
            self.icookie, self.rcookie, first, exchange, flags, mid, length
        ).encode()

    def _plain(self, exchange: int, mid: int, payloads: list[Payload]) -> bytes:
        first, chain = encode_payloads(payloads)
        return self._header(exchange, mid, first, Flag.NONE, 28 + len(chain)) + chain

    def protect(self, exchange: int, mid: int, payloads: list[Payload]) -> bytes:
        """The message encrypted in its exchange's IV chain (cipher.py pads)."""
        assert self.cipher is not None
        first, chain = encode_payloads(payloads)
        body = self.cipher.encrypt(mid, chain)
        return self._header(exchange, mid, first, Flag.ENCRYPTION, 28 + len(body)) + body

    def _protected_phase1(self, payloads: list[Payload]) -> bytes:
        return self.protect(self.exchange_type, 0, payloads)

    @staticmethod
    def _body_of(payloads: list[Payload], index: int) -> bytes:
        _, chain = encode_payloads([payloads[index]])
        return chain[4:]

    def send_to_peer(self, data: bytes) -> None:
        self._send(data)

    def _send(self, data: bytes) -> None:
        assert self.peer is not None
        self._outbox.append((data, self.peer))

    def _send_request(self, data: bytes, what: str, now: float) -> None:
        self._flight = Flight(data, what, now + self.config.retransmit_timeout)
        self._send(data)

    def _answer(self, data: bytes, request_digest: bytes) -> None:
        self._last_request_digest, self._last_reply = request_digest, data
        self._send(data)

    def _took(self, response_digest: bytes) -> None:
        """Initiator: the answer to our request in flight was taken."""
        self._flight = None
        self._responses_taken.add(response_digest)

    def _retransmit(self, now: float) -> None:
        flight = self._flight
        assert flight is not None
        if flight.tries >= self.config.retransmit_tries:
            unanswered = f"no answer to {flight.what} after {flight.tries} retransmissions"
            if self._peer_said is not None:
                name = _notify_name(self._peer_said)
                hint = _PHASE1_HINTS.get(self._peer_said, "")
                self.fail(
                    f"{name}: the peer refused phase 1 in an unprotected notify{hint}; "
                    f"{unanswered}",
                    self._peer_said,
                )
            elif self._auth_failure is not None:
                self.fail(f"{self._auth_failure}; {unanswered}", NotifyType.AUTHENTICATION_FAILED)
            else:
                hint = " (are the pre-shared keys the same?)" if "message 5" in flight.what else ""
                self.fail(unanswered + hint)
            return
        flight.tries += 1
        flight.deadline = now + self.config.retransmit_timeout * 2**flight.tries
        self._send(flight.datagram)

    def _keep(self, exchange: QuickMode) -> None:
        self.quick[exchange.message_id] = exchange
        done = [mid for mid, q in self.quick.items() if q.finished]
        for mid in done[: max(0, len(done) - _KEPT_EXCHANGES)]:
            del self.quick[mid]

    # -- results ---------------------------------------------------------------------

    def add_child(
        self,
        replaces: bytes | None,
        event: ChildSaEstablished,
        lifetime: proposals.Lifetimes | None = None,
        peer_original: IpAddress | None = None,
    ) -> None:
        """A new Quick mode SA. It rekeys ``replaces`` (ours), or, made by the peer,
        the SA of the same policy and selectors we hold: then ChildSaRekeyed, and the
        initiator of the rekey deletes the old SA (make-before-break)."""
        old = self.children.get(replaces) if replaces is not None else None
        if old is None and replaces is None:
            old = next(
                (
                    c
                    for c in self.children.values()
                    if (c.established.name, c.established.local_ts, c.established.remote_ts)
                    == (event.name, event.local_ts, event.remote_ts)
                ),
                None,
            )
        self.children[event.spi_in] = ChildSa(
            event, lifetime or proposals.Lifetimes(), peer_original
        )
        if old is None:
            self.emit(event)
            return
        initiator = replaces is not None
        self.emit(ChildSaRekeyed(old.spi_in, old.spi_out, event, initiator=initiator))
        if initiator:
            self.send_informational([DeletePayload(DOI_IPSEC, old.protocol, (old.spi_in,))])
            self._remove_child(old, "rekeyed")

    def start_quick_mode(self, now: float) -> bytes:
        """A new Quick mode (RFC 2409 section 5.5) for the child policy, replacing
        nothing: IKEv1 has no rekey exchange, so a driver that times the switch and the
        old SA's delete itself (it may move outbound traffic only once the responder
        holds the new SA, from message 3) starts the replacement with this. Returns the
        inbound SPI offered, by which the caller knows the new child as its own."""
        self._require_established("start a Quick mode")
        exchange = QuickMode.initiate(self, self.config.child, now)
        self._keep(exchange)
        return exchange.spi_in

    def adopt_children(self, old: IkeV1Sa) -> tuple[bytes, ...]:
        """Reauthentication: the Quick mode SAs of ``old`` (an ISAKMP SA with the same
        peer that this one replaces) are this SA's from now on; their delete, their
        replacement and liveness go over this one. Nothing is sent and no event is
        emitted: the SAs themselves do not change. ``old`` forgets them, so its own
        delete is a phase 1 Delete only, which leaves IPsec SAs alone (an IPsec SA is
        deleted by a Delete naming its SPI, RFC 2408 section 3.15; strongSwan moves
        its CHILD_SAs to the new ISAKMP SA on IKEv1 reauthentication likewise).
        Returns the inbound SPIs taken over."""
        self._require_established("adopt Quick mode SAs")
        if old is self or old.remote_identity != self.remote_identity:
            raise CommandRefused("Quick mode SAs are adopted only from another SA with the peer")
        taken = tuple(old.children)
        self.children.update(old.children)
        old.children.clear()
        return taken

    def rekey_child(self, spi_in: bytes, now: float) -> None:
        """A new Quick mode for the child's policy (PFS when its proposals name a
        group); the old SA is deleted once the new one is up."""
        self._require_established("rekey a child SA")
        if spi_in not in self.children:
            raise CommandRefused(f"cannot rekey child SA {spi_in.hex()}: unknown")
        if any(q.replaces == spi_in and not q.finished for q in self.quick.values()):
            raise CommandRefused(f"child SA {spi_in.hex()} is already being rekeyed")
        self._keep(QuickMode.initiate(self, self.config.child, now, replaces=spi_in))

    def _remove_child(self, child: ChildSa, reason: str) -> None:
        if self.children.pop(child.spi_in, None) is not None:
            name = child.established.name
            self.emit(ChildSaDeleted(name, child.spi_in, child.spi_out, reason))

    def release_children(self, reason: str) -> None:
        """Let go of the Quick mode SAs a peer's phase 1 Delete left in ``children``
        (no other ISAKMP SA with the peer to adopt them): ChildSaDeleted for each."""
        for child in list(self.children.values()):
            self._remove_child(child, reason)

    def _finish_delete(self, reason: str, *, children_stay: bool = False) -> None:
        if self.is_closed:
            return
        if not children_stay:
            self.release_children(f"IKE SA deleted: {reason}")
        self._transition(V1Input.DELETED)
        self._flight = self._dpd_pending = None
        self.emit(IkeSaDeleted(self.icookie, self.rcookie, reason))

    def fail(self, reason: str, notify: int | None = None) -> None:
        if self.is_closed:
            return
        if self.state is V1State.ESTABLISHED:
            self._finish_delete(reason)
            return
        self._transition(V1Input.FAILURE)
        self._flight = None
        self.emit(IkeSaFailed(reason, notify))

    def emit(self, event: IkeEvent) -> None:
        self._events.append(event)

    def _transition(self, event: V1Input) -> None:
        self.state = next_state(self.role, self.state, event)

    def __repr__(self) -> str:
        return (
            f"IkeV1Sa({self.role.value}, {self.state.value}, "
            f"{self.icookie.hex()}_i {self.rcookie.hex()}_r)"
        )


_PHASE1_HINTS: dict[int, str] = {
    NotifyType.AUTHENTICATION_FAILED: " (are the pre-shared keys the same?)",
    NotifyType.INVALID_ID_INFORMATION: " (does it expect another identity of ours?)",
    NotifyType.NO_PROPOSAL_CHOSEN: " (it takes none of our proposals)",
}


def _notify_name(notify: int) -> str:
    try:
        return NotifyType(notify).name
    except ValueError:
        return f"NOTIFY_{notify}"


_MM, _AM = ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE
_Handler = Callable[[IkeV1Sa, IsakmpHeader, bytes, Address, float, bytes], None]
_PHASE1: dict[tuple[Role, V1State, int], _Handler] = {
    (Role.RESPONDER, V1State.CREATED, _MM): IkeV1Sa._on_sa_request,
    (Role.INITIATOR, V1State.SA_EXCHANGE, _MM): IkeV1Sa._on_sa_response,
    (Role.RESPONDER, V1State.SA_EXCHANGE, _MM): IkeV1Sa._on_ke_request,
    (Role.INITIATOR, V1State.KE_EXCHANGE, _MM): IkeV1Sa._on_ke_response,
    (Role.RESPONDER, V1State.KE_EXCHANGE, _MM): IkeV1Sa._on_auth_request,
    (Role.INITIATOR, V1State.AUTH_SENT, _MM): IkeV1Sa._on_auth_response,
    (Role.RESPONDER, V1State.CREATED, _AM): IkeV1Sa._on_aggressive_request,
    (Role.INITIATOR, V1State.SA_EXCHANGE, _AM): IkeV1Sa._on_aggressive_response,
    (Role.RESPONDER, V1State.KE_EXCHANGE, _AM): IkeV1Sa._on_aggressive_final,
}
"""Which phase 1 message each role takes in each state (RFC 2409 sections 5, 5.4)."""
