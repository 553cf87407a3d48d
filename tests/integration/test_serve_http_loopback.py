"""The HTTP side of `vpnfleet serve` on a real loopback socket, spoken to byte by byte.

Webhook authentication (GitHub signature, GitLab token, none configured), the body
length checked before the body is read, the whole-request deadline against a slow
client, the connection bound, the Host check and the bearer token on the read
endpoints. The serve loop behind the endpoints is a stand-in that counts wake-ups.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from vpnfleet.controller.gitops.serve_http import (
    MAX_BODY,
    HttpOptions,
    HttpServer,
    allowed_hosts,
)

SECRET = b"0123456789abcdef-webhook"
TOKEN = b"api-token-for-prometheus"
BODY = b'{"ref": "refs/heads/main", "after": "4b825dc642cb6eb9a060e54bf8d69288fbee4904"}'


@dataclass
class StandInLoop:
    wakes: int = 0
    audit_limits: list[int] = field(default_factory=list)

    def snapshot_json(self) -> dict[str, Any]:
        return {"head": "4b825dc642cb"}

    def audit_json(self, limit: int) -> dict[str, Any]:
        self.audit_limits.append(limit)
        return {"rollouts": []}

    def metrics_text(self) -> bytes:
        return b"vpnfleet_polls_total 1.0\n"

    def wake(self) -> None:
        self.wakes += 1


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status, headers, body)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Running:
    server: HttpServer
    loop: StandInLoop

    @property
    def port(self) -> int:
        return int(self.server.server.server_address[1])

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def exchange(self, raw: bytes, timeout: float = 10.0) -> Response:
        """Send ``raw`` as it is (no body beyond it) and read the answer."""
        with self.connect() as sock:
            sock.sendall(raw)
            return parse_response(read_until_closed(sock, timeout))

    def request(
        self,
        method: str,
        path: str,
        *,
        host: str | None = "127.0.0.1",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1"]
        if host is not None:
            lines.append(f"Host: {host}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        return self.exchange(raw)

    def webhook(self, headers: dict[str, str], body: bytes = BODY) -> Response:
        return self.request("POST", "/webhook", headers=headers, body=body)


@contextlib.contextmanager
def running(
    *,
    secret: bytes | None = SECRET,
    token: bytes | None = None,
    extra_hosts: tuple[str, ...] = (),
    request_timeout: float = 10.0,
    max_connections: int = 8,
) -> Iterator[Running]:
    options = HttpOptions(
        allowed_hosts=allowed_hosts("127.0.0.1", extra_hosts),
        webhook_secret=secret,
        api_token=token,
        request_timeout=request_timeout,
        max_connections=max_connections,
    )
    loop = StandInLoop()
    server = HttpServer(loop, "127.0.0.1", 0, options)
    server.start()
    try:
        yield Running(server, loop)
    finally:
        server.close()


def github(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push"}


# ---------------------------------------------------------------- webhook authentication


def test_webhook_needs_a_valid_github_signature() -> None:
    with running() as srv:
        unsigned = srv.webhook({})
        assert unsigned.status == 401, unsigned
        assert "X-Hub-Signature-256" in unsigned.json()["error"]

        other_body = srv.webhook(github(b'{"ref": "refs/heads/evil"}'))
        assert other_body.status == 403, other_body
        assert other_body.json()["error"] == "X-Hub-Signature-256 does not match the body"

        other_secret = srv.webhook(github(BODY, secret=b"not the secret"))
        assert other_secret.status == 403, other_secret
        garbage = srv.webhook({"X-Hub-Signature-256": "sha256=zz"})
        assert garbage.status == 403, garbage
        assert srv.loop.wakes == 0

        signed = srv.webhook(github(BODY))
        assert signed.status == 202 and signed.json() == {"poll": "scheduled"}
        assert srv.loop.wakes == 1


def test_webhook_accepts_the_gitlab_token() -> None:
    with running() as srv:
        wrong = srv.webhook({"X-Gitlab-Token": "guess", "X-Gitlab-Event": "Push Hook"})
        assert wrong.status == 403 and srv.loop.wakes == 0
        right = srv.webhook({"X-Gitlab-Token": SECRET.decode(), "X-Gitlab-Event": "Push Hook"})
        assert right.status == 202 and srv.loop.wakes == 1


def test_webhook_is_refused_without_a_configured_secret() -> None:
    with running(secret=None) as srv:
        for headers in ({}, github(BODY), {"X-Gitlab-Token": ""}):
            res = srv.webhook(headers)
            assert res.status == 403, res
            assert "--webhook-secret-file" in res.json()["error"]
        assert srv.loop.wakes == 0


# ---------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("length_headers", "status"),
    [
        ("", 411),
        ("Content-Length: -1\r\n", 400),
        ("Content-Length: +64\r\n", 400),
        ("Content-Length: 64abc\r\n", 400),
        ("Content-Length: 0x40\r\n", 400),
        ("Content-Length: 6_4\r\n", 400),
        ("Content-Length: 64\r\nContent-Length: 64\r\n", 400),
        (f"Content-Length: {MAX_BODY + 1}\r\n", 413),
        ("Content-Length: 99999999999999999999999999\r\n", 413),
        ("Transfer-Encoding: chunked\r\n", 411),
        ("Transfer-Encoding: chunked\r\nContent-Length: 64\r\n", 411),
    ],
)
def test_body_length_is_refused_before_the_body_is_read(length_headers: str, status: int) -> None:
    # Only the head is sent: an answer other than 408 shows that the server did not
    # wait for a body.
    with running(request_timeout=5.0) as srv:
        signature = github(BODY)["X-Hub-Signature-256"]
        head = (
            f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Hub-Signature-256: {signature}\r\n"
            f"{length_headers}\r\n"
        )
        res = srv.exchange(head.encode())
        assert res.status == status, res
        assert srv.loop.wakes == 0


def test_a_body_cut_short_times_out_and_wakes_nothing() -> None:
    with running(request_timeout=1.0) as srv:
        head = "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
        sig = github(b"x" * 100)["X-Hub-Signature-256"]
        raw = f"{head}X-Hub-Signature-256: {sig}\r\n\r\n".encode() + b"x" * 50
        res = srv.exchange(raw)
        assert res.status == 408, res
        assert srv.loop.wakes == 0


def test_a_head_larger_than_its_budget_is_refused() -> None:
    with running() as srv:
        # Each line is within the standard parser's own 64 KiB limit; together they are not.
        padding = "".join(f"X-Pad-{i}: {'a' * 40_000}\r\n" for i in range(2))
        raw = f"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n{padding}\r\n".encode()
        assert srv.exchange(raw).status == 431


# ---------------------------------------------------------------- slow clients, connections


def test_a_slow_client_is_cut_off_at_the_deadline_while_others_are_served() -> None:
    timeout = 1.5
    with running(request_timeout=timeout) as srv:
        started = time.monotonic()
        slow = srv.connect()
        slow.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        try:
            # Served while the slow client holds its connection.
            assert srv.request("GET", "/status").status == 200
            # One byte every 0.2 s: a per-read socket timeout alone would never fire.
            answer = b""
            give_up = started + timeout + 10
            while time.monotonic() < give_up:
                readable, _, _ = select.select([slow], [], [], 0.2)
                if readable:
                    chunk = slow.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                else:
                    try:
                        slow.sendall(b"a")
                    except OSError:
                        break
            else:
                raise AssertionError("the slow client was still connected after 10 s")
            closed_after = time.monotonic() - started
        finally:
            slow.close()
        assert answer.startswith(b"HTTP/1.0 408 "), answer
        assert closed_after >= timeout
        assert srv.request("GET", "/status").status == 200


def test_connections_beyond_the_bound_are_answered_503_at_once() -> None:
    with running(max_connections=2, request_timeout=60.0) as srv:
        held = [srv.connect(), srv.connect()]
        try:
            for sock in held:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            busy = srv.request("GET", "/status")
            assert busy.status == 503, busy
            assert busy.headers["retry-after"] == "1"
            held.pop().close()
            deadline = time.monotonic() + 10
            while (res := srv.request("GET", "/status")).status == 503:
                assert time.monotonic() < deadline, "no slot was freed by a closed connection"
            assert res.status == 200
        finally:
            for sock in held:
                sock.close()


# ---------------------------------------------------------------- Host and bearer token


def test_every_endpoint_checks_the_host_header() -> None:
    with running(extra_hosts=("vpnfleet.example.org",)) as srv:
        for path in ("/status", "/audit", "/metrics"):
            res = srv.request("GET", path, host="rebind.attacker.example")
            assert res.status == 421, (path, res)
            assert "--allowed-host" in res.json()["error"]
        forged = srv.request(
            "POST", "/webhook", host="rebind.attacker.example", headers=github(BODY), body=BODY
        )
        assert forged.status == 421 and srv.loop.wakes == 0
        for host in ("127.0.0.1:8080", "localhost", "LOCALHOST.:1", "vpnfleet.example.org"):
            assert srv.request("GET", "/status", host=host).status == 200, host
        assert srv.request("GET", "/status", host=None).status == 400
        twice = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example\r\n\r\n"
        assert srv.exchange(twice).status == 400


def test_read_endpoints_need_the_bearer_token_when_one_is_configured() -> None:
    with running(token=TOKEN) as srv:
        for path in ("/status", "/audit?limit=5", "/metrics"):
            bare = srv.request("GET", path)
            assert bare.status == 401, (path, bare)
            assert bare.headers["www-authenticate"].startswith("Bearer")
            wrong = srv.request("GET", path, headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401, (path, wrong)
            basic = srv.request("GET", path, headers={"Authorization": f"Basic {TOKEN.decode()}"})
            assert basic.status == 401, (path, basic)
            ok = srv.request("GET", path, headers={"Authorization": f"Bearer {TOKEN.decode()}"})
            assert ok.status == 200, (path, ok)
        assert srv.loop.audit_limits == [5]
        # The webhook keeps its own secret and needs no bearer token.
        assert srv.webhook(github(BODY)).status == 202


def test_read_endpoints_are_open_without_a_token() -> None:
    with running() as srv:
        status = srv.request("GET", "/status")
        assert status.json() == {"head": "4b825dc642cb"}
        assert status.headers["server"] == "vpnfleet"
        assert srv.request("GET", "/metrics").body == b"vpnfleet_polls_total 1.0\n"
        assert srv.request("GET", "/nope").status == 404
        assert srv.request("GET", "/webhook").status == 405
        assert srv.request("POST", "/status", body=b"").status == 405
