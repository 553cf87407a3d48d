"""The IKE SA connection object: the sans-I/O core (aioquic's connection shape).

Inputs: ``initiate(peer, now)``, ``receive_datagram(data, addr, now)``,
``handle_timer(now)``. Outputs: ``datagrams_to_send(now)``, ``get_timer()``,
``next_event()``. Nothing the peer sends can raise out of ``receive_datagram``:
malformed or unauthenticated datagrams are counted in ``dropped`` and ignored.
"""

from __future__ import annotations

from collections import deque

from .config import Identity, IkeConfig
from .constants import ExchangeType, HeaderFlag
from .crypto import SkKeys, decrypt_message, encrypt_message
from .errors import IkeError
from .events import Address, IkeEvent, IkeSaEstablished, IkeSaFailed
from .keys import IkeSaKeys, derive_ike_sa_keys, skeyseed
from .message import IkeHeader, Message, parse_message, serialize_message
from .nat import NatResult
from .payloads import Payload
from .proposals import IkeProposal
from .states import IkeSaInput, IkeSaState, Role, next_state
from .task_manager import TaskManager
from .tasks import ike_auth, ike_init
from .transforms import random_bytes

ZERO_SPI = bytes(8)


class IkeSa:
    def __init__(self, config: IkeConfig, role: Role, local: Address | None = None) -> None:
        self.config = config
        self.role = role
        self.local = local
        """Our address as the socket sees it; enables NAT detection (section 2.23)."""
        self.nat: NatResult | None = None
        self.state = IkeSaState.CREATED
        self.spi_i = random_bytes(8) if role is Role.INITIATOR else ZERO_SPI
        self.spi_r = ZERO_SPI
        self.peer: Address | None = None
        self.proposal: IkeProposal | None = None
        self.keys: IkeSaKeys | None = None
        self.ni = b""
        self.nr = b""
        self.init_request = b""
        self.init_response = b""
        self.remote_identity: Identity | None = None
        self.tasks = TaskManager(self)
        self.dropped = 0
        """Datagrams ignored: malformed, unauthenticated, unexpected or for another SA."""
        self.last_refusal: str | None = None
        """Why the last peer request was refused without failing the SA (INVALID_KE...)."""
        self.current_datagram: bytes | None = None
        self._sk_in: SkKeys | None = None
        self._sk_out: SkKeys | None = None
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[IkeEvent] = deque()

    @property
    def is_initiator(self) -> bool:
        return self.role is Role.INITIATOR

    # -- commands --------------------------------------------------------------------

    def initiate(self, peer: Address, now: float) -> None:
        self._transition(IkeSaInput.INITIATE)
        self.peer = peer
        self.tasks.queue_task(ike_init.IkeInit(self))
        self.tasks.queue_task(ike_auth.IkeAuth(self))
        self.tasks.initiate(now)

    # -- inputs ----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            self._receive(data, addr, now)
        except IkeError:
            self.dropped += 1
        finally:
            self.current_datagram = None

    def handle_timer(self, now: float) -> None:
        self.tasks.on_timer(now)

    # -- outputs ---------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.tasks.get_timer()

    def next_event(self) -> IkeEvent | None:
        return self._events.popleft() if self._events else None

    # -- receiving -------------------------------------------------------------------

    def _receive(self, data: bytes, addr: Address, now: float) -> None:
        if self.state is IkeSaState.FAILED:
            self.dropped += 1
            return
        message = parse_message(data)
        header = message.header
        # The I flag tells who created the IKE SA (section 3.1); it must be the other side.
        if header.is_initiator == self.is_initiator or not self._spis_match(header):
            self.dropped += 1
            return
        self.current_datagram = data
        if header.is_response:
            self._receive_response(message, data, now)
        else:
            self._receive_request(message, data, addr, now)

    def _spis_match(self, header: IkeHeader) -> bool:
        if self.is_initiator:
            if header.spi_i != self.spi_i:
                return False
            return self.spi_r == ZERO_SPI or header.spi_r == self.spi_r
        if self.state is IkeSaState.CREATED:
            return header.exchange_type == ExchangeType.IKE_SA_INIT and header.spi_r == ZERO_SPI
        return header.spi_i == self.spi_i and header.spi_r == self.spi_r

    def _receive_response(self, message: Message, data: bytes, now: float) -> None:
        if not self.tasks.is_expected_response(message):
            self.dropped += 1
            return
        if message.header.exchange_type != self.tasks.active_exchange:
            self.dropped += 1
            return
        payloads = self._open(message, data)
        self.tasks.on_response(message, payloads, now)

    def _receive_request(self, message: Message, data: bytes, addr: Address, now: float) -> None:
        header = message.header
        if self.tasks.is_retransmit(message, data):
            self.tasks.replay_response()
            return
        if header.message_id != self.tasks.expected_request_id:
            self.dropped += 1
            return
        if self.state is IkeSaState.CREATED:
            self.spi_i = header.spi_i
            self.peer = addr
        payloads = self._open(message, data)
        if self.state is not IkeSaState.CREATED and self.nat is not None and self.nat.any:
            # Section 2.23: behind a NAT, answer where authenticated requests come from.
            self.peer = addr
        if header.exchange_type == ExchangeType.IKE_SA_INIT and self.state is IkeSaState.CREATED:
            response, advance = ike_init.respond(self, message, payloads)
            if advance:
                self.init_request = data
        elif header.exchange_type == ExchangeType.IKE_AUTH and self.state is IkeSaState.INIT_DONE:
            response, advance = ike_auth.respond(self, message, payloads)
        elif (
            header.exchange_type == ExchangeType.INFORMATIONAL
            and self.state is IkeSaState.ESTABLISHED
        ):
            response, advance = [], True  # liveness check (section 2.4); deletes come later
        else:
            self.dropped += 1
            return
        out = self.build_message(header.exchange_type, header.message_id, True, response)
        if header.exchange_type == ExchangeType.IKE_SA_INIT and advance:
            self.init_response = out
            self._transition(IkeSaInput.INIT_DONE)
        self.tasks.respond(header.message_id, data, out, advance=advance)

    def _open(self, message: Message, data: bytes) -> list[Payload]:
        if message.header.exchange_type == ExchangeType.IKE_SA_INIT:
            return list(message.payloads)
        if self._sk_in is None:
            raise IkeError("encrypted message before keys exist")
        return decrypt_message(data, message, self._sk_in)

    # -- used by tasks -----------------------------------------------------------------

    def build_message(
        self, exchange: int, message_id: int, response: bool, payloads: list[Payload]
    ) -> bytes:
        flags = HeaderFlag.INITIATOR if self.is_initiator else HeaderFlag.NONE
        if response:
            flags |= HeaderFlag.RESPONSE
        spi_r = self.spi_r if self.keys is not None else ZERO_SPI
        header = IkeHeader(self.spi_i, spi_r, 0, exchange, flags, message_id)
        if exchange == ExchangeType.IKE_SA_INIT:
            return serialize_message(header, payloads)
        assert self._sk_out is not None
        return encrypt_message(header, payloads, self._sk_out)

    def send(self, data: bytes) -> None:
        assert self.peer is not None
        self._outbox.append((data, self.peer))

    def set_keys(self, proposal: IkeProposal, shared: bytes, ni: bytes, nr: bytes) -> None:
        """Section 2.14, once g^ir and both nonces are known."""
        self.proposal, self.ni, self.nr = proposal, ni, nr
        seed = skeyseed(proposal.prf, ni, nr, shared)
        keys = derive_ike_sa_keys(
            proposal.prf, proposal.encr, proposal.integ, seed, ni, nr, self.spi_i, self.spi_r
        )
        self.keys = keys
        sk_i = SkKeys(proposal.encr, keys.sk_ei, proposal.integ, keys.sk_ai)
        sk_r = SkKeys(proposal.encr, keys.sk_er, proposal.integ, keys.sk_ar)
        self._sk_out, self._sk_in = (sk_i, sk_r) if self.is_initiator else (sk_r, sk_i)
        if self.is_initiator:
            self._transition(IkeSaInput.INIT_DONE)

    def established(self, remote: Identity) -> None:
        self.remote_identity = remote
        self._transition(IkeSaInput.AUTH_DONE)
        assert self.proposal is not None and self.peer is not None
        self.emit(
            IkeSaEstablished(
                self.spi_i,
                self.spi_r,
                str(self.proposal),
                str(self.config.local_id),
                str(remote),
                self.peer,
                self.nat.local_behind_nat if self.nat else False,
                self.nat.remote_behind_nat if self.nat else False,
            )
        )

    def fail(self, reason: str, notify: int | None = None) -> None:
        if self.state is IkeSaState.FAILED:
            return
        self._transition(IkeSaInput.FAILURE)
        self.tasks.abort()
        self.emit(IkeSaFailed(reason, notify))

    def note_refusal(self, reason: str) -> None:
        self.last_refusal = reason

    def emit(self, event: IkeEvent) -> None:
        self._events.append(event)

    def _transition(self, event: IkeSaInput) -> None:
        self.state = next_state(self.role, self.state, event)

    def __repr__(self) -> str:
        return (
            f"IkeSa({self.role.value}, {self.state.value}, "
            f"{self.spi_i.hex()}_i {self.spi_r.hex()}_r)"
        )
