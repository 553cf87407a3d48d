"""Quick mode (RFC 2409 section 5.5): one exchange, either role, under an IKEv1 SA.

    Initiator                         Responder
    HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr] -->
                 <-- HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, N(RESPONDER-LIFETIME)]
    HDR*, HASH(3) -->

The initiator retransmits message 1 until message 2 comes; the responder retransmits
message 2 until message 3 comes (nothing else tells it message 2 arrived), and each
side answers a retransmitted message it already took with its last message again.
KEYMAT (RFC 2409 section 5.5) is made per direction with the SPI of the receiving
end: inbound with the SPI we chose, outbound with the peer's.

The commit bit (RFC 2408 section 3.1, Flag.COMMIT) is refused politely: a request
carrying it is answered as any other, without the bit and without the CONNECTED
notify it would ask for, so a committing initiator simply proceeds (strongSwan never
sets it and ignores it the same way).
"""

from __future__ import annotations

import hmac
import ipaddress
from enum import Enum
from typing import TYPE_CHECKING

from ..config import ChildConfig
from ..constants import ProtocolId as IkeProtocolId
from ..errors import LocalError, ProtocolError
from ..events import ChildSaEstablished, ChildSaFailed
from ..payloads import IpAddress, TrafficSelector
from ..proposals import AhProposal, ChildProposal, child_label
from ..traffic_selectors import contains, format_selectors
from ..transforms import KeyExchange, random_bytes
from . import proposals
from .attributes import Attribute, encode_attributes, parse_attributes
from .constants import (
    DOI_IPSEC,
    Encapsulation,
    ExchangeType,
    LifeType,
    NotifyType,
    P2Attr,
    ProtocolId,
)
from .keys import keymat, qm_hash1, qm_hash2, qm_hash3
from .payloads import (
    HashPayload,
    IdPayload,
    KePayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    encode_payloads,
)
from .selectors import id_for_selector, selector_for_id

if TYPE_CHECKING:
    from .sa import IkeV1Sa, Received

NONCE_LENGTH = 32


class QuickState(Enum):
    SENT_1 = "sent-1"
    """Initiator: message 1 in flight."""
    WAIT_1 = "wait-1"
    """Responder: nothing taken yet."""
    SENT_2 = "sent-2"
    """Responder: message 2 sent, waiting for message 3."""
    DONE = "done"
    FAILED = "failed"


class QuickMode:
    def __init__(self, sa: IkeV1Sa, message_id: int, child: ChildConfig, state: QuickState) -> None:
        self.sa = sa
        self.message_id = message_id
        self.child = child
        self.state = state
        self.initiator = state is QuickState.SENT_1
        self.spi_in = random_bytes(4)
        self.lifetime = sa.config.child_lifetime
        """Seconds the SA lives: ours, or less when the peer says so."""
        self.kilobytes = sa.config.child_lifetime_kb
        """Kilobytes the SA may carry (None: no limit), likewise."""
        self.peer_original: IpAddress | None = None
        """UDP-encapsulated transport mode: the peer's address before any NAT, from
        its NAT-OA (RFC 3947 section 5.2), for the data plane's checksum fix-up."""
        self.replaces: bytes | None = None
        """Our inbound SPI of the SA this exchange rekeys (IKEv1 has no rekey exchange:
        a new Quick mode for the same policy replaces the old SA, RFC 2409 section
        5.5). The responder finds it by name and selectors when the SA is made."""
        self._ni = b""
        self._nr = b""
        self._ke: KeyExchange | None = None
        self._g_qm: bytes | None = None
        self._choice: proposals.ChildChoice | None = None
        self._local_ts: TrafficSelector | None = None
        self._remote_ts: TrafficSelector | None = None
        self._last_digest = b""
        self._taken: set[bytes] = set()
        """Digests of the peer's messages of this exchange we accepted."""
        self._reply: bytes | None = None
        self._flight_data: bytes | None = None
        self._deadline: float | None = None
        self._tries = 0

    @property
    def finished(self) -> bool:
        return self.state in (QuickState.DONE, QuickState.FAILED)

    @property
    def _encap(self) -> Encapsulation:
        return proposals.encapsulation(self.child.mode, self.sa.encap)

    def _offered(self) -> tuple[ChildProposal, ...]:
        """Our proposals, AH then ESP; across a NAT (NAT-D, RFC 3947 section 3.2) ESP
        only: AH authenticates the addresses a NAT rewrites and has no UDP
        encapsulation. Raises ProtocolError when that leaves nothing."""
        offered = self.child.proposals
        if not self.sa.encap:
            return offered
        esp = tuple(p for p in offered if not isinstance(p, AhProposal))
        if not esp:
            raise ProtocolError(
                f"{AH_NAT}NAT-D found a NAT between us and the peer (RFC 3947 section "
                "3.2), and this child has AH proposals only",
                notify=NotifyType.NO_PROPOSAL_CHOSEN,
            )
        return esp

    # -- initiator -------------------------------------------------------------------

    @classmethod
    def initiate(
        cls, sa: IkeV1Sa, child: ChildConfig, now: float, replaces: bytes | None = None
    ) -> QuickMode:
        """``replaces``: the inbound SPI of the child SA this one rekeys."""
        exchange = cls(sa, sa.new_message_id(), child, QuickState.SENT_1)
        exchange.replaces = replaces
        exchange._send_first(now)
        return exchange

    def _send_first(self, now: float) -> None:
        sa = self.sa
        try:
            offered = self._offered()
        except ProtocolError as exc:
            self._fail(str(exc), None, tell_peer=False)
            return
        group = offered[0].dh
        self._ni = random_bytes(NONCE_LENGTH)
        self._local_ts, self._remote_ts = self.child.local_ts[0], self.child.remote_ts[0]
        after: list[Payload] = [
            proposals.child_sa(
                offered,
                self.spi_in,
                self._encap,
                sa.config.child_lifetime,
                sa.config.child_lifetime_kb,
            ),
            NoncePayload(self._ni),
        ]
        if group is not None:
            self._ke = KeyExchange(group)
            after.append(KePayload(self._ke.public_key))
        after += [id_for_selector(self._local_ts), id_for_selector(self._remote_ts)]
        after += self._nat_oa()
        assert sa.prf is not None and sa.keys is not None
        digest = qm_hash1(sa.prf, sa.keys.skeyid_a, self.message_id, _chain(after))
        self._send([HashPayload(digest), *after], now, retransmit=True)

    def _on_second(self, message: Received, digest: bytes) -> None:
        sa = self.sa
        assert sa.prf is not None and sa.keys is not None
        self._verify(
            message,
            qm_hash2(sa.prf, sa.keys.skeyid_a, self.message_id, self._ni, message.after_first()),
            "HASH(2)",
        )
        sa.confirm(message)
        self._taken.add(digest)
        self._deadline = self._flight_data = None
        sa_payload, nonce, ke, ids = _parts(message, "message 2")
        try:
            choice = proposals.accept_child(self._offered(), sa_payload, self._encap)
            self._nr = nonce
            self._key_exchange(choice.proposal, ke)
            if ids:
                local, remote = (selector_for_id(ids[0], "IDci"), selector_for_id(ids[1], "IDcr"))
                assert self._local_ts is not None and self._remote_ts is not None
                if not (contains(self._local_ts, local) and contains(self._remote_ts, remote)):
                    raise ProtocolError(
                        f"INVALID_ID_INFORMATION: we proposed "
                        f"{format_selectors([self._local_ts, self._remote_ts])}, the responder "
                        f"answered {format_selectors([local, remote])}",
                        notify=NotifyType.INVALID_ID_INFORMATION,
                    )
                self._local_ts, self._remote_ts = local, remote
            self.peer_original = self._peer_original(message, 1)
        except ProtocolError as exc:
            self._fail(str(exc), exc.notify, tell_peer=True, spi=self.spi_in)
            return
        for payload in message.payloads:
            if isinstance(payload, NotifyPayload) and payload.type == NotifyType.RESPONDER_LIFETIME:
                # RFC 2407 section 4.6.3.1: the responder keeps the SA for less.
                life = _lifetimes_of(payload)
                self.lifetime = min(self.lifetime, life.seconds or self.lifetime)
                self.kilobytes = _lower(self.kilobytes, life.kilobytes)
        self._choice = choice
        final = qm_hash3(sa.prf, sa.keys.skeyid_a, self.message_id, self._ni, self._nr)
        self._last_digest = digest
        self._reply = self._send([HashPayload(final)], None, retransmit=False)
        self._install()

    # -- responder -------------------------------------------------------------------

    @classmethod
    def respond(cls, sa: IkeV1Sa, message_id: int, child: ChildConfig) -> QuickMode:
        return cls(sa, message_id, child, QuickState.WAIT_1)

    def _on_first(self, message: Received, digest: bytes, now: float) -> None:
        sa = self.sa
        assert sa.prf is not None and sa.keys is not None
        self._verify(
            message,
            qm_hash1(sa.prf, sa.keys.skeyid_a, self.message_id, message.after_first()),
            "HASH(1)",
        )
        sa.confirm(message)
        self._taken.add(digest)
        self._last_digest = digest
        sa_payload, nonce, ke, ids = _parts(message, "message 1")
        peer_spi = b""
        try:
            ipsec = [
                p
                for p in sa_payload.proposals
                if p.protocol in (ProtocolId.IPSEC_ESP, ProtocolId.IPSEC_AH)
            ]
            peer_spi = ipsec[0].spi if ipsec else b""
            choice = proposals.select_child(self._offered(), sa_payload, self._encap)
            self._ni = nonce
            self._key_exchange(choice.proposal, ke)
            self._narrow(ids)
            self.peer_original = self._peer_original(message, 0)
        except ProtocolError as exc:
            self._fail(str(exc), exc.notify, tell_peer=True, spi=peer_spi)
            return
        self._choice = choice
        self._nr = random_bytes(NONCE_LENGTH)
        after: list[Payload] = [
            proposals.answer_child(sa_payload, choice, self.spi_in),
            NoncePayload(self._nr),
        ]
        if self._ke is not None:
            after.append(KePayload(self._ke.public_key))
        after += ids
        after += self._nat_oa()
        ours_kb = sa.config.child_lifetime_kb
        proposed = choice.lifetime or proposals.DEFAULT_PROPOSED_LIFETIME
        if proposed > sa.config.child_lifetime or (
            ours_kb is not None and (choice.kilobytes is None or choice.kilobytes > ours_kb)
        ):
            # RFC 2407 section 4.6.3.1: we keep the SA for less than proposed.
            after.append(self._responder_lifetime(choice.spi))
        self.lifetime = min(self.lifetime, choice.lifetime or self.lifetime)
        self.kilobytes = _lower(ours_kb, choice.kilobytes)
        reply_hash = qm_hash2(sa.prf, sa.keys.skeyid_a, self.message_id, self._ni, _chain(after))
        self._reply = self._send([HashPayload(reply_hash), *after], now, retransmit=True)
        self.state = QuickState.SENT_2

    def _responder_lifetime(self, spi: bytes) -> NotifyPayload:
        config = self.sa.config
        attributes = [
            Attribute(P2Attr.LIFE_TYPE, LifeType.SECONDS),
            Attribute.variable(P2Attr.LIFE_DURATION, config.child_lifetime),
        ]
        if config.child_lifetime_kb is not None:
            attributes += [
                Attribute(P2Attr.LIFE_TYPE, LifeType.KILOBYTES),
                Attribute.variable(P2Attr.LIFE_DURATION, config.child_lifetime_kb),
            ]
        data = encode_attributes(attributes)
        return NotifyPayload(
            DOI_IPSEC, ProtocolId.IPSEC_ESP, spi, NotifyType.RESPONDER_LIFETIME, data
        )

    def _nat_oa(self) -> list[Payload]:
        """RFC 3947 section 5.2: in UDP-encapsulated transport mode both messages carry
        NAT-OAi, the initiator's address, then NAT-OAr, the responder's, each as the
        sender knows them (its own address is the original one)."""
        sa = self.sa
        if self._encap is not Encapsulation.UDP_TRANSPORT:
            return []
        if sa.local is None or sa.peer is None:
            raise LocalError("NAT-OA needs our own address (IkeV1Sa local=)")
        ours, theirs = ipaddress.ip_address(sa.local[0]), ipaddress.ip_address(sa.peer[0])
        initiator, responder = (ours, theirs) if self.initiator else (theirs, ours)
        return [NatOaPayload(initiator), NatOaPayload(responder)]

    def _peer_original(self, message: Received, index: int) -> IpAddress | None:
        """The peer's original address: NAT-OAi from an initiator (``index`` 0), NAT-OAr
        from a responder (1). A peer that sends none (it is not behind a NAT, or
        speaks an older draft) leaves it unknown."""
        if self._encap is not Encapsulation.UDP_TRANSPORT:
            return None
        found = [p.address for p in message.payloads if isinstance(p, NatOaPayload)]
        if len(found) not in (0, 2):
            raise ProtocolError(
                f"Quick mode carries {len(found)} NAT-OA payloads, not 0 or 2 "
                "(RFC 3947 section 5.2)",
                notify=NotifyType.PAYLOAD_MALFORMED,
            )
        return found[index] if found else None

    def _narrow(self, ids: list[IdPayload]) -> None:
        """IKEv1 cannot narrow (RFC 2409 section 5.5 sends the IDs back as received):
        the initiator's selectors must lie within ours."""
        sa = self.sa
        if ids:
            remote, local = selector_for_id(ids[0], "IDci"), selector_for_id(ids[1], "IDcr")
        else:  # no IDs: the ISAKMP peers' own addresses (RFC 2409 section 5.5)
            assert sa.peer is not None
            if sa.local is None:
                raise ProtocolError(
                    "Quick mode without IDs and no local address known",
                    notify=NotifyType.INVALID_ID_INFORMATION,
                )
            remote, local = _host(sa.peer[0]), _host(sa.local[0])
        if not (
            any(contains(ours, local) for ours in self.child.local_ts)
            and any(contains(ours, remote) for ours in self.child.remote_ts)
        ):
            raise ProtocolError(
                f"INVALID_ID_INFORMATION: ours {format_selectors(self.child.local_ts)} === "
                f"{format_selectors(self.child.remote_ts)}, theirs "
                f"{format_selectors([local])} === {format_selectors([remote])}",
                notify=NotifyType.INVALID_ID_INFORMATION,
            )
        self._local_ts, self._remote_ts = local, remote

    def _on_third(self, message: Received, digest: bytes) -> None:
        sa = self.sa
        assert sa.prf is not None and sa.keys is not None
        self._verify(
            message,
            qm_hash3(sa.prf, sa.keys.skeyid_a, self.message_id, self._ni, self._nr),
            "HASH(3)",
        )
        sa.confirm(message)
        self._taken.add(digest)
        self._deadline = self._flight_data = None
        self._reply = None
        self._install()

    # -- both ------------------------------------------------------------------------

    def receive(self, message: Received, digest: bytes, now: float) -> None:
        if self.state is QuickState.WAIT_1:
            self._on_first(message, digest, now)
        elif self.state is QuickState.SENT_1:
            self._on_second(message, digest)
        elif self.state is QuickState.SENT_2:
            self._on_third(message, digest)
        else:
            raise ProtocolError(f"Quick mode {self.message_id:#x} is {self.state.value}")

    def answer_duplicate(self, digest: bytes) -> bool:
        """A message of this exchange we already took: the answer to the last one goes
        again (the peer lost it); others are ignored. False for a new message."""
        if digest not in self._taken:
            return False
        if self._reply is not None and digest == self._last_digest:
            self.sa.send_to_peer(self._reply)
        return True

    def get_timer(self) -> float | None:
        return None if self.finished else self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or self._flight_data is None or now < self._deadline:
            return
        config = self.sa.config
        if self._tries >= config.retransmit_tries:
            which = "1" if self.state is QuickState.SENT_1 else "2"
            self._fail(
                f"no answer to Quick mode message {which} after {self._tries} retransmissions",
                None,
                tell_peer=False,
            )
            return
        self._tries += 1
        self._deadline = now + config.retransmit_timeout * 2**self._tries
        self.sa.send_to_peer(self._flight_data)

    def refused_by(self, notify: NotifyPayload, reason: str) -> bool:
        """An error notify for this exchange (by our SPI, or the one we are waiting on)."""
        if self.state is not QuickState.SENT_1:
            return False
        if notify.spi and notify.spi != self.spi_in:
            return False
        offered = ", ".join(child_label(p) for p in self.child.proposals)
        self._fail(f"{reason} (we offered [{offered}])", notify.type, tell_peer=False)
        return True

    def _verify(self, message: Received, expected: bytes, what: str) -> None:
        first = message.payloads[0] if message.payloads else None
        if not isinstance(first, HashPayload):
            raise ProtocolError(f"Quick mode message without {what} first")
        if not hmac.compare_digest(first.data, expected):
            raise ProtocolError(f"Quick mode {what} does not verify")

    def _key_exchange(self, proposal: ChildProposal, ke: bytes | None) -> None:
        """PFS (RFC 2409 section 5.5): g(qm)^xy enters KEYMAT."""
        if proposal.dh is None:
            if ke is not None:
                raise ProtocolError(
                    "KE payload without a PFS group", notify=NotifyType.INVALID_KEY_INFORMATION
                )
            return
        if ke is None:
            raise ProtocolError(
                f"PFS group {proposal.dh} chosen but no KE payload",
                notify=NotifyType.INVALID_KEY_INFORMATION,
            )
        if self._ke is None:
            self._ke = KeyExchange(proposal.dh)
        self._g_qm = self._ke.shared_secret(ke)

    def _send(self, payloads: list[Payload], now: float | None, *, retransmit: bool) -> bytes:
        sa = self.sa
        data = sa.protect(ExchangeType.QUICK, self.message_id, payloads)
        sa.send_to_peer(data)
        if retransmit and now is not None:
            self._flight_data = data
            self._deadline = now + sa.config.retransmit_timeout
            self._tries = 0
        return data

    def _fail(self, reason: str, notify: int | None, *, tell_peer: bool, spi: bytes = b"") -> None:
        self.state = QuickState.FAILED
        self._deadline = self._flight_data = None
        if tell_peer and notify is not None:
            self.sa.send_informational(
                [NotifyPayload(DOI_IPSEC, ProtocolId.IPSEC_ESP, spi, notify, b"")]
            )
        self.sa.emit(ChildSaFailed(self.child.name, reason, notify))

    def _install(self) -> None:
        sa, choice = self.sa, self._choice
        assert sa.prf is not None and sa.keys is not None and choice is not None
        assert self._local_ts is not None and self._remote_ts is not None
        proposal = choice.proposal
        length = proposals.keymat_length(proposal)
        spi_out = choice.spi
        # RFC 2409 section 5.5: KEYMAT = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b
        # | Nr_b), the protocol being the negotiated one (PROTO_IPSEC_AH or _ESP).
        inbound, outbound = (
            keymat(
                sa.prf,
                sa.keys.skeyid_d,
                choice.protocol,
                spi,
                self._ni,
                self._nr,
                length,
                self._g_qm,
            )
            for spi in (self.spi_in, spi_out)
        )
        cut = proposals.encryption_key_length(proposal)
        self.state = QuickState.DONE
        assert sa.cipher is not None
        sa.cipher.forget(self.message_id)
        sa.add_child(
            self.replaces,
            ChildSaEstablished(
                self.child.name,
                self.spi_in,
                spi_out,
                0 if isinstance(proposal, AhProposal) else int(proposal.encr.id),
                0 if isinstance(proposal, AhProposal) else proposal.encr.key_bits,
                proposals.integ_of(proposal),
                False,
                inbound[:cut],
                inbound[cut:],
                outbound[:cut],
                outbound[cut:],
                (self._local_ts,),
                (self._remote_ts,),
                self.child.mode,
                child_label(proposal),
                sa.encap,
                # PROTO_IPSEC_AH 2, PROTO_IPSEC_ESP 3: IKEv2's numbers too.
                IkeProtocolId(int(choice.protocol)),
            ),
            lifetime=proposals.Lifetimes(self.lifetime, self.kilobytes),
            peer_original=self.peer_original,
        )


AH_NAT = "AH cannot cross NAT: "
"""How a child refused for AH across a NAT is reported (as the IKEv2 core does)."""


def _chain(payloads: list[Payload]) -> bytes:
    return encode_payloads(payloads)[1]


def _parts(message: Received, which: str) -> tuple[SaPayload, bytes, bytes | None, list[IdPayload]]:
    sa = next((p for p in message.payloads if isinstance(p, SaPayload)), None)
    nonce = next((p for p in message.payloads if isinstance(p, NoncePayload)), None)
    ke = next((p for p in message.payloads if isinstance(p, KePayload)), None)
    ids = [p for p in message.payloads if isinstance(p, IdPayload)]
    if sa is None or nonce is None:
        raise ProtocolError(
            f"Quick mode {which} needs SA and Nonce payloads", notify=NotifyType.PAYLOAD_MALFORMED
        )
    if len(ids) not in (0, 2):
        raise ProtocolError(
            f"Quick mode {which} carries {len(ids)} ID payloads, not 0 or 2",
            notify=NotifyType.INVALID_ID_INFORMATION,
        )
    return sa, nonce.data, ke.data if ke is not None else None, ids


def _host(address: str) -> TrafficSelector:
    ip = ipaddress.ip_address(address)
    return TrafficSelector(ip, ip)


def _lifetimes_of(notify: NotifyPayload) -> proposals.Lifetimes:
    """The Life Type/Life Duration pairs of RESPONDER-LIFETIME (RFC 2407 section
    4.6.3.1); none when they do not parse (the SA still stands on our own values)."""
    try:
        attributes = parse_attributes(notify.data, 0, payload="RESPONDER-LIFETIME")
        return proposals.lifetimes(attributes, P2Attr.LIFE_TYPE, P2Attr.LIFE_DURATION)
    except ProtocolError:
        return proposals.Lifetimes()


def _lower(ours: int | None, theirs: int | None) -> int | None:
    """The shorter of two lifetimes, None standing for no limit."""
    if ours is None or theirs is None:
        return theirs if ours is None else ours
    return min(ours, theirs)
