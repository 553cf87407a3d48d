"""The agent's local control socket: what ``vpnfleet-agent sas``, ``initiate``,
``terminate`` and ``log`` ask the running agent, as swanctl asks charon over VICI.

A unix stream socket, created 0600 and served only to root or the agent's own user
(checked with SO_PEERCRED); never on the network. Every message in either direction is
one frame: a 4-byte big-endian length, then that many bytes of UTF-8 JSON, an object.

Request:  {"version": 1, "command": "sas" | "initiate" | "terminate" | "log", "peer": ...,
          "follow": bool}
Answer:   {"version": 1, "ok": true, "result": ...} or {"version": 1, "ok": false,
          "error": "..."}; ``log`` answers with the recent events, and with ``follow``
          then sends one {"version": 1, "ok": true, "event": {...}} frame per event
          until the client closes the connection.

A request the agent cannot read (not JSON, not an object, an unknown version or
command) is answered with an error and the connection stays usable; a frame longer
than :data:`MAX_REQUEST` is answered with an error and the connection closed (the rest
of it is not read). Either way the agent keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sink import (
    ChildSaReport,
    EventHub,
    IkeSaReport,
    PeerControl,
    PeerControlError,
    PlanSink,
    SaEventReport,
)

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024
"""Bytes of one request frame; a longer one is refused and its connection closed."""
MAX_ANSWER = 64 * 1024 * 1024
"""Bytes of one answer frame the client reads (the SAs of a large plan fit)."""
RECENT_EVENTS = 200
"""Events ``log`` shows from before it was asked."""
FRAME_HEADER = struct.Struct("!I")


class ControlCommand(enum.Enum):
    SAS = "sas"
    INITIATE = "initiate"
    TERMINATE = "terminate"
    LOG = "log"


class ControlError(Exception):
    """The control socket cannot be set up or used; the message says what to do."""


class RequestError(Exception):
    """A request the agent cannot act on; answered with the message, connection kept."""


class FrameTooLong(Exception):
    """A frame longer than allowed; answered, then the connection is closed."""


# -- frames ------------------------------------------------------------------------------


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return FRAME_HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The body of the next frame; None at a clean end of stream (before a header)."""
    try:
        header = await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (length,) = FRAME_HEADER.unpack(header)
    if length > limit:
        raise FrameTooLong(f"request of {length} bytes is longer than the {limit} allowed")
    return await reader.readexactly(length)


@dataclass(frozen=True, slots=True)
class Request:
    command: ControlCommand
    peer: str = ""
    follow: bool = False


def parse_request(body: bytes) -> Request:
    try:
        data = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"request is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(f"request must be a JSON object, not {type(data).__name__}")
    if data.get("version") != PROTOCOL_VERSION:
        raise RequestError(
            f"protocol version {data.get('version')!r} not supported; this agent speaks "
            f"version {PROTOCOL_VERSION} (use the vpnfleet-agent of the same release)"
        )
    names = [c.value for c in ControlCommand]
    try:
        command = ControlCommand(data.get("command"))
    except ValueError:
        raise RequestError(
            f"unknown command {data.get('command')!r}; known: {', '.join(names)}"
        ) from None
    peer = data.get("peer", "")
    if not isinstance(peer, str):
        raise RequestError(f"'peer' must be a string, not {peer!r}")
    if command in (ControlCommand.INITIATE, ControlCommand.TERMINATE) and not peer:
        raise RequestError(f"{command.value} needs a 'peer'")
    follow = data.get("follow", False)
    if not isinstance(follow, bool):
        raise RequestError(f"'follow' must be true or false, not {follow!r}")
    return Request(command, peer, follow)


def _answer(result: Any) -> dict[str, Any]:
    return {"version": PROTOCOL_VERSION, "ok": True, "result": result}


def _error(message: str) -> dict[str, Any]:
    return {"version": PROTOCOL_VERSION, "ok": False, "error": message}


# -- what the answers carry ----------------------------------------------------------------

# SPIs as swanctl --list-sas shows them: hex, 16 digits for IKE, 8 for ESP.
_SPI_DIGITS = {"spi_i": 16, "spi_r": 16, "spi_in": 8, "spi_out": 8}


def _report_json(report: IkeSaReport | ChildSaReport) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(report):
        value = getattr(report, f.name)
        if f.name in _SPI_DIGITS:
            out[f.name] = f"{value:0{_SPI_DIGITS[f.name]}x}"
        elif f.name == "children":
            out[f.name] = [_report_json(c) for c in value]
        elif isinstance(value, enum.Enum):
            out[f.name] = value.value
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def sas_json(reports: Sequence[IkeSaReport]) -> list[dict[str, Any]]:
    """The IKE SAs and their child SAs as ``sas -o json`` prints them."""
    return [_report_json(r) for r in reports]


def event_json(event: SaEventReport) -> dict[str, Any]:
    return {"time": event.time, "kind": event.kind, "peer": event.peer, "detail": event.detail}


# -- the socket ------------------------------------------------------------------------------


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An AF_UNIX address for ``path``: the path itself, or, when it is longer than
    sun_path holds (108 bytes), the same file reached through a descriptor of its
    directory (/proc/self/fd/N/name), valid while the block runs."""
    text = str(path)
    if len(os.fsencode(text)) < 108:
        yield text
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def prepare_path(path: Path) -> None:
    """Make ``path`` free for a new socket: create its directory (0700) if missing,
    remove a stale socket left by an agent that died; refuse a symlink, a file that is
    not a socket, and a socket another agent still serves."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ControlError(f"control socket {path} is a symlink; refusing to follow it")
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"control socket {path} exists and is not a socket; remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(path) as address:
            probe.connect(address)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale control socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise ControlError(f"control socket {path} is served by another running agent")


class ControlServer:
    """Answers the control socket's requests from the sink and the event hub."""

    def __init__(
        self,
        sink: PlanSink,
        events: EventHub,
        clock: Callable[[], float] = time.time,
        allowed_uids: frozenset[int] | None = None,
    ) -> None:
        self.sink = sink
        self.events = events
        self._clock = clock
        self.allowed_uids = (
            allowed_uids if allowed_uids is not None else frozenset({0, os.geteuid()})
        )
        self._history = events.subscribe()
        self._recent: collections.deque[SaEventReport] = collections.deque(maxlen=RECENT_EVENTS)
        self._writers: set[asyncio.StreamWriter] = set()

    def close(self) -> None:
        self.events.unsubscribe(self._history)
        for writer in list(self._writers):
            writer.close()

    def recent_events(self) -> list[SaEventReport]:
        while not self._history.empty():
            self._recent.append(self._history.get_nowait())
        return list(self._recent)

    def answer(self, request: Request) -> dict[str, Any]:
        """The answer to a request that is not a stream."""
        if request.command is ControlCommand.SAS:
            return _answer({"now": self._clock(), "ike_sas": sas_json(self.sink.ike_sas())})
        if request.command is ControlCommand.LOG:
            return _answer({"events": [event_json(e) for e in self.recent_events()]})
        if not isinstance(self.sink, PeerControl):
            return _error(
                "this agent runs no data plane: there are no SAs to initiate or terminate"
            )
        try:
            if request.command is ControlCommand.INITIATE:
                return _answer(self.sink.initiate_peer(request.peer))
            return _answer(self.sink.terminate_peer(request.peer))
        except PeerControlError as exc:
            return _error(str(exc))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            uid = _peer_uid(writer)
            if uid is not None and uid not in self.allowed_uids:
                writer.write(encode_frame(_error("permission denied: run as root")))
                await writer.drain()
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                body = await read_frame(reader, MAX_REQUEST)
            except FrameTooLong as exc:
                writer.write(encode_frame(_error(str(exc))))
                await writer.drain()
                return
            if body is None:
                return
            try:
                request = parse_request(body)
            except RequestError as exc:
                writer.write(encode_frame(_error(str(exc))))
                await writer.drain()
                continue
            if request.command is ControlCommand.LOG and request.follow:
                await self._follow(reader, writer)
                return
            writer.write(encode_frame(self.answer(request)))
            await writer.drain()

    async def _follow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The recent events, then each new one, until the client closes."""
        recent = self.recent_events()
        queue = self.events.subscribe()  # no await since the snapshot: nothing is missed
        gone = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(encode_frame(_answer({"events": [event_json(e) for e in recent]})))
            await writer.drain()
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    getter.cancel()
                    return
                event = getter.result()
                frame = {"version": PROTOCOL_VERSION, "ok": True, "event": event_json(event)}
                writer.write(encode_frame(frame))
                await writer.drain()
        finally:
            gone.cancel()
            self.events.unsubscribe(queue)


@contextlib.asynccontextmanager
async def control_socket(
    path: Path | None, sink: PlanSink, events: EventHub
) -> AsyncIterator[ControlServer | None]:
    """Serve the control socket at ``path`` while the block runs (None: no socket)."""
    if path is None:
        yield None
        return
    prepare_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_address(path) as address:
            sock.bind(address)
        # 0600 before listen(): nobody else can connect in between.
        os.chmod(path, 0o600)
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot serve the control socket {path}: {exc.strerror}") from None
    inode = path.lstat().st_ino
    server = ControlServer(sink, events)
    unix = await asyncio.start_unix_server(server.handle, sock=sock)
    log.info("control socket on %s", path)
    try:
        yield server
    finally:
        unix.close()
        server.close()
        await unix.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_ino == inode:
                path.unlink()
