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


class Task(Protocol):
    """An exchange we initiate (strongSwan's task): it builds the request and
    processes the response."""

    exchange: ExchangeType

    def build_request(self) -> list[Payload]: ...

    def process_response(self, message: Message, payloads: list[Payload]) -> Outcome: ...


class TaskManager:
    def __init__(self, sa: IkeSa) -> None:
        self.sa = sa
        self.queue: deque[Task] = deque()
        self.active: Task | None = None
        # Our requests.
        self.next_message_id = 0
        self._request: bytes | None = None
        self._tries = 0
        self._deadline: float | None = None
        # The peer's requests.
        self.expected_request_id = 0
        self._last_request: bytes | None = None
        self._last_response: bytes | None = None
        self._last_response_id: int | None = None

    # -- exchanges we initiate -----------------------------------------------------

    def queue_task(self, task: Task) -> None:
        self.queue.append(task)

    def initiate(self, now: float) -> None:
        if self.active is not None or not self.queue:
            return
        self.active = self.queue.popleft()
        self._send_request(now)

    def _send_request(self, now: float) -> None:
        assert self.active is not None
        payloads = self.active.build_request()
        self._request = self.sa.build_message(
            self.active.exchange, self.next_message_id, False, payloads
        )
        self._tries = 0
        self._deadline = now + self.sa.config.retransmit_timeout
        self.sa.send(self._request)

    def on_response(self, message: Message, payloads: list[Payload], now: float) -> None:
        if self.active is None:
            return
        outcome = self.active.process_response(message, payloads)
        if outcome is Outcome.RETRY:
            self._send_request(now)
            return
        self.active = None
        self._deadline = None
        if outcome is Outcome.DONE:
            self.next_message_id += 1
            self.initiate(now)

    def is_expected_response(self, message: Message) -> bool:
        return self.active is not None and message.header.message_id == self.next_message_id

    @property
    def active_exchange(self) -> int | None:
        return None if self.active is None else self.active.exchange

    @property
    def sent_request(self) -> bytes | None:
        """The bytes of the request in flight (AUTH needs its IKE_SA_INIT request)."""
        return self._request

    def on_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self.active is None:
            return
        if self._tries >= self.sa.config.retransmit_tries:
            exchange = enum_name(ExchangeType, self.active.exchange)
            self.abort()
            self.sa.fail(
                f"no response to {exchange} request {self.next_message_id} after "
                f"{self.sa.config.retransmit_tries} retransmissions"
            )
            return
        self._tries += 1
        assert self._request is not None
        self._deadline = now + self.sa.config.retransmit_timeout * (2**self._tries)
        self.sa.send(self._request)

    def get_timer(self) -> float | None:
        return self._deadline

    def abort(self) -> None:
        self.active = None
        self.queue.clear()
        self._deadline = None

    # -- the peer's requests -------------------------------------------------------

    def is_retransmit(self, message: Message, data: bytes) -> bool:
        return message.header.message_id == self._last_response_id and data == self._last_request

    def replay_response(self) -> None:
        if self._last_response is not None:
            self.sa.send(self._last_response)

    def respond(self, message_id: int, request: bytes, response: bytes, *, advance: bool) -> None:
        self._last_request = request
        self._last_response = response
        self._last_response_id = message_id
        if advance:
            self.expected_request_id = message_id + 1
        self.sa.send(response)
