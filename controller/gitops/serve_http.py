"""The HTTP endpoints of ``vpnfleet serve``: ``/status``, ``/audit``, ``/metrics``, ``/webhook``.

The process behind them holds the fleet CA key, so what a client may cost it is bounded
and every check runs before any work is done for the client:

- one request per connection, and a whole-request deadline: the request line, the
  headers and the body must arrive within ``request_timeout`` seconds in total, however
  slowly they trickle in (a client that sends a byte every second is cut off all the
  same, with 408);
- at most ``max_connections`` connections are being served at once, each by a worker
  of a fixed pool; one more is answered 503 at once and closed, never queued;
- at most ``MAX_HEAD`` bytes of request line and headers (431 beyond); a body is read
  only after its ``Content-Length`` was found to be one plain decimal number no larger
  than ``MAX_BODY`` (missing: 411; negative, signed or not a number: 400; too large:
  413); chunked bodies are refused (411);
- every request names an allowed host in ``Host`` (421 otherwise), which defeats DNS
  rebinding: a browser tricked into calling the loopback address still sends the
  attacker's name;
- ``POST /webhook`` needs a shared secret: GitHub's ``X-Hub-Signature-256`` (HMAC-SHA256
  of the body) or GitLab's ``X-Gitlab-Token``; without a configured secret the webhook
  is refused (403). The read endpoints need ``Authorization: Bearer TOKEN`` when an API
  token is configured.

The stdlib server (``http.server``) is kept, for a measured reason: the same endpoints
served by aiohttp (its low-level ``web.Server``, checks in the handler, the connection
bound in the protocol factory) failed 8 of the 21 cases of
tests/integration/test_serve_http_loopback.py. Its parser answers 400 itself, before any
handler runs, to a Content-Length too long to be a number (413 here) and to
Transfer-Encoding beside Content-Length (411 here); its field limits are per line, so a
head over ``MAX_HEAD`` in total was served (431 here); its keep-alive timeout closes a
slow client without the 408; the 413 or 411 given before the body and the 408 for a body
cut short did not reach the client within 10 s; and the 503 of a full pool arrived as a
connection reset (``shutdown_request`` below lingers so that the answer is read). Each
would need code against aiohttp's internals. The agent's metrics endpoint, which has
none of these duties, is served by aiohttp (agent/metrics.py). The endpoints read only
what the serve loop publishes; ``/metrics`` is prometheus_client's exposition of the
loop's registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from vpnfleet.protos.files import PrivateFileError, read_private

from ..fleet.rails import split_endpoint

MAX_HEAD = 64 * 1024  # request line and headers together
# A webhook's body. A larger push event gets 413; the next poll still finds the commit.
MAX_BODY = 1 << 20
DEFAULT_REQUEST_TIMEOUT = 10.0
LINGER_SECONDS = 1.0  # after our answer, how long what the client still sends is read
LINGER_BYTES = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 16
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_DIGITS = re.compile(r"[0-9]{1,18}")
_SIGNATURE_PREFIX = "sha256="

Log = Callable[[str], None]


class SecretFileError(ValueError):
    """A secret or token file that cannot be used; the message says how to fix it."""


def read_secret_file(path: Path, what: str) -> bytes:
    """The secret in ``path``, surrounding whitespace removed; a file its group or others
    may access is refused (:func:`read_private`)."""
    try:
        secret = read_private(path, what).strip()
    except PrivateFileError as exc:
        raise SecretFileError(str(exc)) from None
    if not secret:
        raise SecretFileError(f"{what} {path} is empty")
    return secret


def normalize_host(name: str) -> str:
    """A host name or address as ``Host`` headers are compared: lower case, no brackets
    around an IPv6 address, no trailing dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name[:-1] if name.endswith(".") else name


def host_of(header: str) -> str:
    """The name in a ``Host`` header, without its port."""
    header = header.strip()
    if header.startswith("["):
        return normalize_host(header.partition("]")[0][1:])
    name, _, _port = header.partition(":")
    return normalize_host(name)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (port 0: any free port)."""
    try:
        host, port = split_endpoint(listen)
    except ValueError:
        raise ValueError(f"--listen takes HOST:PORT, not {listen!r}") from None
    if not host or not 0 <= port <= 65535:
        raise ValueError(f"--listen takes HOST:PORT with a port 0..65535, not {listen!r}")
    return host, port


def allowed_hosts(listen_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a request may give in ``Host``: the listen address (unless it is a
    wildcard), the localhost names and the operator's ``--allowed-host`` values."""
    names = set(LOCAL_NAMES)
    listen = normalize_host(listen_host)
    if listen not in _WILDCARDS:
        names.add(listen)
    for value in extra:
        name = normalize_host(value)
        if not name or any(c.isspace() or c in "/@?#" for c in name):
            raise ValueError(f"--allowed-host takes a host name or address, not {value!r}")
        if ":" in name:
            try:
                ipaddress.IPv6Address(name)
            except ValueError:
                raise ValueError(
                    f"--allowed-host takes a name without a port, not {value!r}"
                ) from None
        names.add(name)
    return frozenset(names)


def github_signature(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return _SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookAuth(Enum):
    ACCEPTED = "accepted"
    MISSING = "no X-Hub-Signature-256 or X-Gitlab-Token header"
    BAD_SIGNATURE = "X-Hub-Signature-256 does not match the body"
    BAD_TOKEN = "X-Gitlab-Token does not match"


def check_webhook(
    secret: bytes, signature: str | None, gitlab_token: str | None, body: bytes
) -> WebhookAuth:
    """GitHub's signature when one is given, else GitLab's token; constant-time compares."""
    if signature is not None:
        expected = github_signature(secret, body).encode()
        given = signature.strip().encode("latin-1", "replace")
        ok = hmac.compare_digest(expected, given)
        return WebhookAuth.ACCEPTED if ok else WebhookAuth.BAD_SIGNATURE
    if gitlab_token is not None:
        ok = hmac.compare_digest(secret, gitlab_token.strip().encode("latin-1", "replace"))
        return WebhookAuth.ACCEPTED if ok else WebhookAuth.BAD_TOKEN
    return WebhookAuth.MISSING


@dataclass(frozen=True, slots=True)
class HttpOptions:
    allowed_hosts: frozenset[str]
    webhook_secret: bytes | None = None  # None: POST /webhook is refused
    api_token: bytes | None = None  # None: the read endpoints are open
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def exposure_warnings(listen_host: str, options: HttpOptions) -> list[str]:
    """What an operator listening beyond this host should hear at start."""
    host = normalize_host(listen_host)
    if host == "localhost" or _is_loopback(host):
        return []
    warnings = []
    if options.api_token is None:
        warnings.append(
            f"/status, /audit and /metrics on {listen_host} are open to anyone who can reach "
            "it; give --api-token-file to require a bearer token"
        )
    if host in _WILDCARDS and options.allowed_hosts <= LOCAL_NAMES:
        warnings.append(
            f"listening on {listen_host or 'all addresses'} but only requests naming localhost "
            "in Host are served; give --allowed-host with the name clients use"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Endpoints(Protocol):
    """What the serve loop offers to HTTP; every call is cheap and thread-safe."""

    def snapshot_json(self) -> dict[str, Any]: ...

    def audit_json(self, limit: int) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...

    def wake(self) -> None: ...


# ---------------------------------------------------------------- reading with limits


class RequestTimeout(Exception):
    """The whole-request deadline passed before the request was read."""


class RequestTooLarge(Exception):
    """More than a request may hold was sent on the connection."""


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline and one byte budget.

    A per-read socket timeout alone lets a client that sends a byte just before each
    timeout hold the connection forever; here every read gets only what is left.
    """

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._budget = budget

    def allow(self, more: int) -> None:
        """Let ``more`` bytes beyond the budget be read (a body whose length was checked)."""
        self._budget += more

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout
        if self._budget <= 0:
            raise RequestTooLarge
        view = memoryview(buffer)[: self._budget]
        self._sock.settimeout(remaining)
        try:
            n = self._sock.recv_into(view)
        except TimeoutError:
            raise RequestTimeout from None
        self._budget -= n
        return n


def _plain_response(status: HTTPStatus, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


def _send_plain(sock: socket.socket, status: HTTPStatus, message: str, extra: str = "") -> None:
    with contextlib.suppress(OSError):  # the client is gone or not reading
        sock.settimeout(1.0)
        sock.sendall(_plain_response(status, message, extra))


class _Refusal(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# ---------------------------------------------------------------- the handler


def _handler(endpoints: Endpoints, options: HttpOptions, log: Log) -> type[BaseHTTPRequestHandler]:
    read_paths = {"/status", "/audit", "/metrics"}

    class Handler(BaseHTTPRequestHandler):
        server_version = "vpnfleet"
        sys_version = ""  # no Python version in the Server header
        # HTTP/1.0 responses: one request per connection, so the deadline and the byte
        # budget cover exactly one request.
        protocol_version = "HTTP/1.0"

        def setup(self) -> None:
            super().setup()
            self.rfile.close()  # replaced by a reader that keeps the deadline and budget
            deadline = time.monotonic() + options.request_timeout
            self.raw_reader = _DeadlineReader(self.connection, deadline, MAX_HEAD)
            self.rfile = io.BufferedReader(self.raw_reader)

        def handle(self) -> None:
            try:
                self.handle_one_request()
            except RequestTimeout:
                _send_plain(
                    self.connection,
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"the request was not complete within {options.request_timeout:g}s",
                )
            except RequestTooLarge:
                _send_plain(
                    self.connection,
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"the request head is larger than {MAX_HEAD} bytes",
                )

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the serve loop logs what matters; access logs would drown it

        def _send(
            self,
            code: int,
            body: bytes,
            content_type: str,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.connection.settimeout(options.request_timeout)
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: Any, headers: dict[str, str] | None = None) -> None:
            self._send(code, json.dumps(data).encode(), "application/json", headers)

        def _dispatch(self, method: str) -> None:
            try:
                self._check_host()
                path, _, query = self.path.partition("?")
                if path in read_paths:
                    if method != "GET":
                        raise _Refusal(
                            HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET", {"Allow": "GET"}
                        )
                    self._check_bearer()
                    self._read(path, query)
                elif path == "/webhook":
                    if method != "POST":
                        raise _Refusal(
                            HTTPStatus.METHOD_NOT_ALLOWED, "/webhook takes POST", {"Allow": "POST"}
                        )
                    self._webhook()
                else:
                    raise _Refusal(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
            except _Refusal as refusal:
                self._json(refusal.status, {"error": refusal.message}, refusal.headers)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        # ------------------------------------------------------------ checks

        def _check_host(self) -> None:
            values = self.headers.get_all("Host") or []
            if len(values) != 1:
                raise _Refusal(HTTPStatus.BAD_REQUEST, "a request needs exactly one Host header")
            name = host_of(values[0])
            if name not in options.allowed_hosts:
                raise _Refusal(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    f"host {name!r} is not served here; the operator can allow it with "
                    "--allowed-host",
                )

        def _check_bearer(self) -> None:
            if options.api_token is None:
                return
            scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
            challenge = {"WWW-Authenticate": 'Bearer realm="vpnfleet"'}
            if scheme.lower() != "bearer" or not token.strip():
                raise _Refusal(
                    HTTPStatus.UNAUTHORIZED, "this endpoint needs Authorization: Bearer TOKEN",
                    challenge,
                )  # fmt: skip
            given = token.strip().encode("latin-1", "replace")
            if not hmac.compare_digest(options.api_token, given):
                raise _Refusal(
                    HTTPStatus.UNAUTHORIZED, "the bearer token is not valid",
                    {"WWW-Authenticate": 'Bearer realm="vpnfleet", error="invalid_token"'},
                )  # fmt: skip

        def _body(self) -> bytes:
            """The request body, checked before a byte of it is read."""
            if self.headers.get("Transfer-Encoding") is not None:
                raise _Refusal(
                    HTTPStatus.LENGTH_REQUIRED,
                    "chunked request bodies are not accepted: send a Content-Length",
                )
            values = self.headers.get_all("Content-Length") or []
            if not values:
                raise _Refusal(HTTPStatus.LENGTH_REQUIRED, "a request body needs Content-Length")
            if len(values) > 1:
                raise _Refusal(HTTPStatus.BAD_REQUEST, "more than one Content-Length header")
            value = values[0].strip()
            if not value.isascii() or not value.isdigit():
                raise _Refusal(
                    HTTPStatus.BAD_REQUEST,
                    f"Content-Length must be a decimal number of bytes, not {value[:40]!r}",
                )
            if not _DIGITS.fullmatch(value) or int(value) > MAX_BODY:
                raise _Refusal(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"a request body may hold at most {MAX_BODY} bytes",
                )
            length = int(value)
            self.raw_reader.allow(length)
            body = self.rfile.read(length)
            if len(body) != length:
                raise _Refusal(HTTPStatus.BAD_REQUEST, "the body is shorter than Content-Length")
            return body

        # ------------------------------------------------------------ endpoints

        def _read(self, path: str, query: str) -> None:
            if path == "/status":
                self._json(HTTPStatus.OK, endpoints.snapshot_json())
            elif path == "/audit":
                limit = 50
                for part in query.split("&"):
                    key, _, value = part.partition("=")
                    if key == "limit" and _DIGITS.fullmatch(value):
                        limit = max(1, min(int(value), 1000))
                self._json(HTTPStatus.OK, endpoints.audit_json(limit))
            else:
                self._send(HTTPStatus.OK, endpoints.metrics_text(), CONTENT_TYPE_LATEST)

        def _webhook(self) -> None:
            secret = options.webhook_secret
            if secret is None:
                raise _Refusal(
                    HTTPStatus.FORBIDDEN,
                    "the webhook is disabled: start vpnfleet serve with --webhook-secret-file",
                )
            signature = self.headers.get("X-Hub-Signature-256")
            token = self.headers.get("X-Gitlab-Token")
            if signature is None and token is None:
                raise _Refusal(HTTPStatus.UNAUTHORIZED, WebhookAuth.MISSING.value)
            body = self._body()
            verdict = check_webhook(secret, signature, token, body)
            if verdict is not WebhookAuth.ACCEPTED:
                log(f"webhook from {self.client_address[0]} refused: {verdict.value}")
                raise _Refusal(HTTPStatus.FORBIDDEN, verdict.value)
            endpoints.wake()
            self._json(HTTPStatus.ACCEPTED, {"poll": "scheduled"})

    return Handler


# ---------------------------------------------------------------- the server


class _BoundedServer(HTTPServer):
    """Connections served by a fixed pool; one beyond ``max_connections`` gets 503."""

    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        family: int,
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
    ) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pool = ThreadPoolExecutor(max_connections, thread_name_prefix="http")
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        with self._open_lock:
            self._open.add(request)
        try:
            self._pool.submit(self._serve_one, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._release(request)
            self.close_request(request)

    def shutdown_request(self, request: Any) -> None:
        # A close with unread bytes in the receive queue sends a reset, which can destroy
        # the answer still in flight (a 413 or 408 never seen). So: send our FIN, then read
        # and drop what the client still sends, bounded in bytes and time, then close.
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                chunk = request.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        self.close_request(request)

    def _refuse_busy(self, request: socket.socket) -> None:
        # In the accept thread: drop only what has already arrived, never wait.
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.recv(MAX_HEAD)
        _send_plain(
            request,
            HTTPStatus.SERVICE_UNAVAILABLE,
            "too many connections at once; try again shortly",
            "Retry-After: 1\r\n",
        )
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
        self.close_request(request)

    def _serve_one(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(request)
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that vanished mid-request; nothing for the operator to do

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)
        self._pool.shutdown(wait=True)


class HttpServer:
    """The HTTP endpoints in a daemon thread; :meth:`close` stops and joins it."""

    def __init__(
        self,
        endpoints: Endpoints,
        host: str,
        port: int,
        options: HttpOptions,
        log: Log | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        handler = _handler(endpoints, options, log or (lambda _m: None))
        self.server = _BoundedServer((host, port), family, handler, options.max_connections)
        self.thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        host = str(host)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
