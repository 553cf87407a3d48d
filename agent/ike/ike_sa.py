"""The IKE SA connection object: the sans-I/O core (aioquic's connection shape).

Inputs: commands (``initiate``, ``create_child``, ``rekey_child``, ``delete_child``,
``rekey``, ``delete``, ``check_liveness``; each takes ``now``),
``receive_datagram(data, addr, now, wall)``, ``handle_timer(now)``. ``now`` is the
caller's monotonic clock; ``wall`` the wall-clock time certificates are judged by. Outputs:
``datagrams_to_send(now)``, ``get_timer()``, ``next_event()``. Nothing the peer sends
can raise out of ``receive_datagram``: malformed or unauthenticated datagrams are
counted in ``dropped`` and ignored (every fault of the peer's is a ProtocolError);
our own misuse raises LocalError. An IKE SA rekey hands out the new IkeSa inside
IkeSaRekeyed; new responders come from gate.IkeResponderGate.

The receive path (SPI and message-ID checks, unprotecting, refusals, dispatch to the
exchanges) lives in inbound.py; building what is sent (SK payload, RFC 7383 fragments)
in outbound.py; moving children to the SA an IKE SA rekey made in handover.py.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from . import handover, inbound, outbound
from .child_sa import ChildSa, ChildSaInput, ChildSaState
from .config import Identity, IkeConfig
from .constants import ZERO_SPI
from .crypto import SkKeys
from .errors import CommandRefused, LocalError, ParseError, ProtocolError
from .events import (
    Address,
    ChildSaDeleted,
    IkeEvent,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
)
from .fragments import FragmentInbox
from .keys import IkeSaKeys, derive_ike_sa_keys, rekey_skeyseed, skeyseed
from .message import Message
from .nat import NatResult
from .payloads import Payload
from .proposals import IkeProposal
from .states import IkeSaInput, IkeSaState, Role, next_state
from .task_manager import Task, TaskKind, TaskManager
from .tasks import child_create, ike_auth, ike_init, ike_rekey, informational
from .transforms import random_bytes

if TYPE_CHECKING:
    from .admission import HalfOpenSlot


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
        self.initial_contact = False
        """Initiator: send INITIAL_CONTACT in IKE_AUTH (section 2.4), telling the peer
        we hold no other IKE SA with it. Responder: the peer sent it."""
        self.tasks = TaskManager(self)
        self.dropped = 0
        """Datagrams ignored: malformed, unauthenticated, unexpected or for another SA."""
        self.last_refusal: str | None = None
        """Why the last peer request was refused without failing the SA (INVALID_KE...)."""
        self.current_datagram: bytes | None = None
        self.current_wall: float | None = None
        """Wall-clock time (seconds since the epoch) passed with the datagram being
        processed: the time a peer's certificates must be valid at."""
        self.children: dict[bytes, ChildSa] = {}
        """Our child SAs by the SPI we chose (inbound)."""
        self.peer_ike_rekey: tuple[bytes, bytes, IkeSa] | None = None
        """Ni, Nr and the new SA of the peer's IKE rekey that crossed ours (section 2.8.2)."""
        self.successor: IkeSa | None = None
        """The IKE SA our children moved to in a rekey (section 2.18)."""
        self._deferred: list[tuple[float, Task]] = []
        self.deleted_by_peer = False
        """The peer deleted this SA while our crossing rekey still awaited its answer."""
        self.peer_fragmentation = False
        """Both sides announced IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 section 2.3):
        large encrypted messages go as fragments."""
        self.peer_hash_algorithms: tuple[int, ...] = ()
        """The peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4)."""
        self.half_open_since: float | None = None
        """Responder: when IKE_SA_INIT was answered (the half-open clock, section 2.6)."""
        self.half_open_slot: HalfOpenSlot | None = None
        """Responder, while half open: its place in the agent's half-open table, which
        also budgets the bytes of what it receives before IKE_AUTH (admission.py). Given
        back when the SA leaves the half-open state."""
        self.last_heard: float | None = None
        """When the peer last sent an authenticated message (for liveness, section 1.4)."""
        self._fragments = FragmentInbox(self)
        self._sk_in: SkKeys | None = None
        self._sk_out: SkKeys | None = None
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[IkeEvent] = deque()

    @classmethod
    def from_rekey(
        cls,
        old: IkeSa,
        *,
        initiator: bool,
        spi_i: bytes,
        spi_r: bytes,
        proposal: IkeProposal,
        shared: bytes,
        ni: bytes,
        nr: bytes,
    ) -> IkeSa:
        """The IKE SA a CREATE_CHILD_SA rekey made (section 2.18): the exchange's
        initiator is this SA's original initiator, message IDs restart at 0."""
        assert old.keys is not None and old.proposal is not None
        sa = cls(old.config, Role.INITIATOR if initiator else Role.RESPONDER, old.local)
        sa.spi_i, sa.spi_r = spi_i, spi_r
        sa.peer, sa.nat, sa.remote_identity = old.peer, old.nat, old.remote_identity
        sa.peer_fragmentation = old.peer_fragmentation  # what IKE_SA_INIT settled stays
        # The rekey exchange belongs to the old SA, so its PRF makes SKEYSEED.
        seed = rekey_skeyseed(old.proposal.prf, old.keys.sk_d, shared, ni, nr)
        sa._install_keys(proposal, seed, ni, nr)
        sa._transition(IkeSaInput.REKEY_CREATED)
        sa.last_heard = old.last_heard
        return sa

    @property
    def is_initiator(self) -> bool:
        return self.role is Role.INITIATOR

    @property
    def local_spi(self) -> bytes:
        """The SPI we chose: what a dispatcher routes incoming datagrams by."""
        return self.spi_i if self.is_initiator else self.spi_r

    @property
    def encap(self) -> bool:
        """ESP and IKE go in UDP 4500 (a NAT was detected or faked, section 2.23)."""
        return self.nat is not None and self.nat.any

    @property
    def is_closed(self) -> bool:
        return self.state in (IkeSaState.DELETED, IkeSaState.FAILED)

    # -- commands --------------------------------------------------------------------

    def initiate(self, peer: Address, now: float) -> None:
        self._transition(IkeSaInput.INITIATE)
        self.peer = peer
        self.tasks.queue_task(ike_init.IkeInit(self))
        self.tasks.queue_task(ike_auth.IkeAuth(self))
        self.tasks.initiate(now)

    def create_child(self, name: str, now: float) -> None:
        """Set up another child SA with CREATE_CHILD_SA (section 1.3.1)."""
        self._require_established("create a child SA")
        self._start(child_create.ChildCreate(self, self.config.child_named(name)), now)

    def rekey_child(self, spi_in: bytes, now: float) -> None:
        """Section 1.3.3 (PFS when the child's proposals name a DH group)."""
        child = self._child(spi_in, "rekey")
        self._start(child_create.ChildCreate(self, child.config, rekey=child), now)

    def delete_child(self, spi_in: bytes, now: float) -> None:
        """Section 1.4.1."""
        child = self._child(spi_in, "delete")
        self._start(informational.ChildDelete(self, child, "deleted by us"), now)

    def rekey(self, now: float) -> None:
        """Rekey this IKE SA (section 1.3.2); the new SA comes out in IkeSaRekeyed."""
        self._require_established("rekey")
        if self.tasks.pending(TaskKind.IKE_REKEY):
            raise CommandRefused("an IKE SA rekey is already under way")
        self._start(ike_rekey.IkeRekey(self), now)

    def delete(self, now: float) -> None:
        """Delete the IKE SA and with it every child (section 1.4.1)."""
        if self.state not in (IkeSaState.ESTABLISHED, IkeSaState.REKEYED):
            raise CommandRefused(f"cannot delete an IKE SA in state {self.state.value}")
        self.tasks.abort()  # whatever was queued dies with the SA
        self._start(informational.IkeDelete(self, "deleted by us"), now)

    def check_liveness(self, now: float) -> None:
        """Send an empty INFORMATIONAL request (section 1.4)."""
        self._require_established("check liveness")
        if not self.tasks.pending(TaskKind.LIVENESS):
            self._start(informational.Liveness(self), now)

    def _require_established(self, what: str) -> None:
        if self.state is not IkeSaState.ESTABLISHED:
            raise CommandRefused(f"cannot {what} on an IKE SA in state {self.state.value}")

    def _child(self, spi_in: bytes, what: str) -> ChildSa:
        self._require_established(f"{what} a child SA")
        child = self.children.get(spi_in)
        if child is None or not child.usable:
            state = "unknown" if child is None else child.state.value
            raise CommandRefused(f"cannot {what} child SA {spi_in.hex()}: {state}")
        return child

    def _start(self, task: Task, now: float) -> None:
        self.tasks.queue_task(task)
        self.tasks.initiate(now)

    # -- inputs ----------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, wall: float | None = None
    ) -> None:
        """``wall``: the wall-clock time (seconds since the epoch) beside the monotonic
        ``now``; required with certificate authentication (RFC 5280 section 6.1.3 checks
        each certificate's validity at the current time)."""
        if wall is None and self.config.certificates is not None:
            raise LocalError("certificate authentication needs the wall-clock time (wall=)")
        self.current_wall = wall
        try:
            inbound.receive(self, data, addr, now)
        except ProtocolError:
            # Only the peer's faults are dropped quietly; our own (LocalError) and
            # anything unforeseen raise to the caller.
            self.dropped += 1
        finally:
            self.current_datagram = None
            self.current_wall = None

    def handle_timer(self, now: float) -> None:
        expiry = self._half_open_expiry()
        if expiry is not None and now >= expiry:
            self.fail(
                f"half-open IKE SA expired: no IKE_AUTH request within "
                f"{self.config.half_open_timeout:g} s"
            )
            return
        due_tasks = [task for at, task in self._deferred if at <= now]
        if due_tasks:
            self._deferred = [(at, task) for at, task in self._deferred if at > now]
            for task in due_tasks:
                self.tasks.queue_task(task)
            self.tasks.initiate(now)
        self.tasks.on_timer(now)
        due = self._liveness_due()
        if due is not None and now >= due:
            self._start(informational.Liveness(self), now)

    # -- outputs ---------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        deadlines = [
            t
            for t in (
                self.tasks.get_timer(),
                self._liveness_due(),
                self._half_open_expiry(),
                min((at for at, _ in self._deferred), default=None),
            )
            if t is not None
        ]
        return min(deadlines) if deadlines else None

    def retransmit_window(self) -> float:
        """How long a peer keeps retransmitting one request (section 2.1 back-off)."""
        config = self.config
        return config.retransmit_timeout * 2 ** (config.retransmit_tries + 1)

    def defer(self, task: Task, at: float) -> None:
        """Start ``task`` at time ``at`` (cleanup the peer should have done itself)."""
        self._deferred.append((at, task))

    def _half_open_expiry(self) -> float | None:
        """A responder that answered IKE_SA_INIT gives up on a silent initiator (2.6)."""
        if self.state is not IkeSaState.INIT_DONE or self.half_open_since is None:
            return None
        return self.half_open_since + self.config.half_open_timeout

    def _liveness_due(self) -> float | None:
        """Section 1.4: check a silent peer when nothing else is in flight."""
        delay = self.config.dpd_delay
        if delay is None or self.state is not IkeSaState.ESTABLISHED or not self.tasks.idle:
            return None
        return None if self.last_heard is None else self.last_heard + delay

    def next_event(self) -> IkeEvent | None:
        return self._events.popleft() if self._events else None

    # -- receiving (inbound.py) ------------------------------------------------------

    def _open(self, message: Message, data: bytes) -> list[Payload]:
        """The payloads of a received message, unprotected (inbound.open_payloads)."""
        return inbound.open_payloads(self, message, data)

    def refuse_malformed(
        self, exchange: int, message_id: int, request: bytes, error: ParseError
    ) -> None:
        """Refuse a malformed authenticated request whole (sections 2.5 and 2.21.2)."""
        inbound.refuse_malformed(self, exchange, message_id, request, error)

    # -- used by tasks -----------------------------------------------------------------

    def build_message(
        self, exchange: int, message_id: int, response: bool, payloads: list[Payload]
    ) -> bytes:
        """One message, in an SK payload once keys exist (outbound.py)."""
        return outbound.build_message(self, exchange, message_id, response, payloads)

    def build_datagrams(
        self, exchange: int, message_id: int, response: bool, payloads: list[Payload]
    ) -> tuple[bytes, ...]:
        """The message, or its SKF fragments if it is too large (RFC 7383 section 2.5)."""
        return outbound.build_datagrams(self, exchange, message_id, response, payloads)

    def send(self, *datagrams: bytes) -> None:
        assert self.peer is not None
        self._outbox += [(data, self.peer) for data in datagrams]

    def set_keys(self, proposal: IkeProposal, shared: bytes, ni: bytes, nr: bytes) -> None:
        """Section 2.14, once g^ir and both nonces are known."""
        self._install_keys(proposal, skeyseed(proposal.prf, ni, nr, shared), ni, nr)
        if self.is_initiator:
            self._transition(IkeSaInput.INIT_DONE)

    def _install_keys(self, proposal: IkeProposal, seed: bytes, ni: bytes, nr: bytes) -> None:
        self.proposal, self.ni, self.nr = proposal, ni, nr
        keys = derive_ike_sa_keys(
            proposal.prf, proposal.encr, proposal.integ, seed, ni, nr, self.spi_i, self.spi_r
        )
        self.keys = keys
        sk_i = SkKeys(proposal.encr, keys.sk_ei, proposal.integ, keys.sk_ai)
        sk_r = SkKeys(proposal.encr, keys.sk_er, proposal.integ, keys.sk_ar)
        self._sk_out, self._sk_in = (sk_i, sk_r) if self.is_initiator else (sk_r, sk_i)

    def established(self, remote: Identity) -> None:
        # The configured identity carries the operator's spelling (a DN's text).
        self.remote_identity = self.config.remote_id if remote == self.config.remote_id else remote
        self._transition(IkeSaInput.AUTH_DONE)
        assert self.proposal is not None and self.peer is not None
        self.emit(
            IkeSaEstablished(
                self.spi_i,
                self.spi_r,
                str(self.proposal),
                str(self.config.local_id),
                str(self.remote_identity),
                self.peer,
                # What we faked counts as ours: the peer believes it (keepalives follow).
                (self.nat.local_behind_nat or self.nat.forced) if self.nat else False,
                self.nat.remote_behind_nat if self.nat else False,
                self.initial_contact and self.role is Role.RESPONDER,
            )
        )

    def fail(self, reason: str, notify: int | None = None) -> None:
        if self.state is IkeSaState.FAILED:
            return
        self._transition(IkeSaInput.FAILURE)
        self.tasks.abort()
        self.emit(IkeSaFailed(reason, notify))

    def exchange_timed_out(self, task: Task, reason: str) -> None:
        """Retransmissions ran out (section 2.4): an established SA's peer is dead."""
        if task.kind is TaskKind.LIVENESS:
            reason = (
                "peer dead: no answer to liveness check after "
                f"{self.config.retransmit_tries} retransmissions"
            )
        elif isinstance(task, informational.IkeDelete):
            self.finish_delete(f"{task.reason} (peer did not answer: {reason})")
            return
        elif self.state is IkeSaState.ESTABLISHED:
            reason = f"peer dead: {reason}"
        if self.state in (IkeSaState.ESTABLISHED, IkeSaState.REKEYED, IkeSaState.DELETING):
            self.finish_delete(reason)
        else:
            self.fail(reason)

    def finish_delete(self, reason: str) -> None:
        """The IKE SA is gone, and its children with it (section 1.4.1)."""
        if self.is_closed:
            return
        for child in list(self.children.values()):
            self.remove_child(child, f"IKE SA deleted: {reason}")
        self._transition(IkeSaInput.DELETED)
        self.tasks.abort()
        self.emit(IkeSaDeleted(self.spi_i, self.spi_r, reason))

    @property
    def home(self) -> IkeSa:
        """Where our children live now: this SA, or the one a rekey moved them to."""
        sa = self
        while sa.successor is not None and sa.successor is not sa:
            sa = sa.successor
        return sa

    def remove_child(self, child: ChildSa, reason: str) -> None:
        if child.state is not ChildSaState.DELETED:
            child.transition(ChildSaInput.DELETED)
            self.emit(ChildSaDeleted(child.name, child.spi_in, child.spi_out, reason))
        self.children.pop(child.spi_in, None)
        self.home.children.pop(child.spi_in, None)

    def child_by_spi_out(self, spi: bytes, protocol: int) -> ChildSa | None:
        """The child the peer receives on ``spi`` with ``protocol`` (ESP or AH: SPIs
        are the receiver's per protocol, RFC 4301 section 4.1)."""
        return next(
            (c for c in self.children.values() if c.spi_out == spi and c.protocol == protocol),
            None,
        )

    def hand_over(
        self, new_sa: IkeSa, *, carries_children: bool = True, also_from: IkeSa | None = None
    ) -> None:
        """Announce an IKE SA that a rekey of this one made, moving the children to it
        when it carries them (section 2.18; handover.py)."""
        handover.hand_over(self, new_sa, carries_children=carries_children, also_from=also_from)

    def migrate_child_tasks(self, new_sa: IkeSa) -> None:
        """Queued child exchanges follow their children to the new IKE SA (section 2.18)."""
        handover.migrate_child_tasks(self, new_sa)

    def note_refusal(self, reason: str) -> None:
        self.last_refusal = reason

    def emit(self, event: IkeEvent) -> None:
        self._events.append(event)

    def _transition(self, event: IkeSaInput) -> None:
        self.state = next_state(self.role, self.state, event)
        if self.half_open_slot is not None and self.state is not IkeSaState.INIT_DONE:
            self.half_open_slot.release()

    def transition(self, event: IkeSaInput) -> None:
        """For tasks: one step of the state table."""
        self._transition(event)

    def __repr__(self) -> str:
        return (
            f"IkeSa({self.role.value}, {self.state.value}, "
            f"{self.spi_i.hex()}_i {self.spi_r.hex()}_r)"
        )
