"""One exchange in flight at a time, retransmission, and the responder's replay cache.

RFC 7296 section 2.1 (retransmission: only the initiator of an exchange resends;
the responder answers a retransmitted request with its cached response) and 2.3
(window size 1: message IDs are used in order, one outstanding request).
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from .constants import ExchangeType, enum_name
from .message import Message
from .payloads import Payload

if TYPE_CHECKING:
    from .ike_sa import IkeSa


class Outcome(Enum):
    DONE = "done"
    RETRY = "retry"
    """Send the request again, rebuilt, under the same message ID (INVALID_KE, COOKIE)."""
    FAILED = "failed"


class TaskKind(Enum):
    """What a task does: how the IKE SA and the tasks ask after one another (is an IKE
    SA rekey in flight? which queued exchanges follow the children?)."""

    IKE_INIT = "ike-init"
    IKE_AUTH = "ike-auth"
    CHILD_CREATE = "child-create"
    """A new child SA or the rekey of one (sections 1.3.1 and 1.3.3)."""
    CHILD_DELETE = "child-delete"
    IKE_REKEY = "ike-rekey"
    IKE_DELETE = "ike-delete"
    LIVENESS = "liveness"


CHILD_TASKS = frozenset({TaskKind.CHILD_CREATE, TaskKind.CHILD_DELETE})
"""Exchanges about one child SA: they follow it to the IKE SA a rekey made (2.18)."""


class Task(Protocol):
    """An exchange we initiate (strongSwan's task): it builds the request and
    processes the response."""

    kind: TaskKind
    exchange: ExchangeType
    sa: IkeSa

    def build_request(self) -> list[Payload] | None:
        """The request payloads, or None when the task has become moot (its child SA
        went away meanwhile) and is dropped unsent."""
        ...

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome: ...


class TaskManager:
    def __init__(self, sa: IkeSa) -> None:
        self.sa = sa
        self.queue: deque[Task] = deque()
        self.active: Task | None = None
        # Our requests.
        self.next_message_id = 0
        self.now = 0.0
        """The time of the input being handled, for tasks that start work elsewhere."""
        self._request: tuple[bytes, ...] = ()
        """The request in flight: one datagram, or all its fragments (RFC 7383)."""
        self._tries = 0
        self._deadline: float | None = None
        # The peer's requests.
        self.expected_request_id = 0
        self._last_request: bytes | None = None
        self._last_response: tuple[bytes, ...] = ()
        self._last_response_id: int | None = None

    # -- exchanges we initiate -----------------------------------------------------

    def queue_task(self, task: Task, *, first: bool = False) -> None:
        if first:
            self.queue.appendleft(task)
        else:
            self.queue.append(task)

    @property
    def idle(self) -> bool:
        return self.active is None and not self.queue

    def pending(self, kind: TaskKind) -> bool:
        """A task of this kind is in flight or queued."""
        return self.in_flight(kind) or any(t.kind is kind for t in self.queue)

    def in_flight(self, kind: TaskKind) -> bool:
        """The exchange in flight is a task of this kind."""
        return self.active is not None and self.active.kind is kind

    def initiate(self, now: float) -> None:
        self.now = now
        while self.active is None and self.queue:
            self.active = self.queue.popleft()
            if not self._send_request(now):
                self.active = None

    def _send_request(self, now: float) -> bool:
        assert self.active is not None
        payloads = self.active.build_request()
        if payloads is None:
            return False
        self._request = self.sa.build_datagrams(
            self.active.exchange, self.next_message_id, False, payloads
        )
        self._tries = 0
        self._deadline = now + self.sa.config.retransmit_timeout
        self.sa.send(*self._request)
        return True

    def on_response(self, message: Message, payloads: list[Payload], now: float) -> None:
        if self.active is None:
            return
        self.now = now
        outcome = self.active.process_response(message, payloads)
        if outcome is Outcome.RETRY:
            # IKE_SA_INIT is retried under ID 0 (section 2.6); any later exchange got its
            # answer, so the retry is a new request with the next ID (section 1.3).
            if self.active.exchange != ExchangeType.IKE_SA_INIT:
                self.next_message_id += 1
            if self._send_request(now):
                return
        elif outcome is Outcome.DONE:
            self.next_message_id += 1
        self.active = None
        self._deadline = None
        if outcome is not Outcome.FAILED:
            self.initiate(now)

    def is_expected_response(self, message: Message) -> bool:
        return self.active is not None and message.header.message_id == self.next_message_id

    @property
    def active_exchange(self) -> int | None:
        return None if self.active is None else self.active.exchange

    @property
    def sent_request(self) -> bytes | None:
        """The bytes of the request in flight (AUTH needs its IKE_SA_INIT request, which
        is never fragmented)."""
        return self._request[0] if self._request else None

    def on_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self.active is None:
            return
        if self._tries >= self.sa.config.retransmit_tries:
            task = self.active
            exchange = enum_name(ExchangeType, task.exchange)
            self.abort()
            self.sa.exchange_timed_out(
                task,
                f"no response to {exchange} request {self.next_message_id} after "
                f"{self.sa.config.retransmit_tries} retransmissions",
            )
            return
        self._tries += 1
        self._deadline = now + self.sa.config.retransmit_timeout * (2**self._tries)
        # RFC 7383 section 2.6.1: a fragmented request is resent whole, every fragment.
        self.sa.send(*self._request)

    def get_timer(self) -> float | None:
        return self._deadline

    def abort(self) -> None:
        self.active = None
        self.queue.clear()
        self._deadline = None

    # -- the peer's requests -------------------------------------------------------

    def is_retransmit(self, message: Message, data: bytes) -> bool:
        return message.header.message_id == self._last_response_id and data == self._last_request

    def is_replayed_id(self, message_id: int) -> bool:
        """A (fragment of a) request we have already answered (section 2.1)."""
        return self._last_response_id is not None and message_id == self._last_response_id

    def replay_response(self) -> None:
        self.sa.send(*self._last_response)

    def respond(
        self, message_id: int, request: bytes, response: tuple[bytes, ...], *, advance: bool
    ) -> None:
        self._last_request = request
        self._last_response = response
        self._last_response_id = message_id
        if advance:
            self.expected_request_id = message_id + 1
        self.sa.send(*response)
