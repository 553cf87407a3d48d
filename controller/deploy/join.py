"""Join tokens: how a host the controller cannot reach gets its certificates.

``vpnfleet token create --host a1`` makes a single-use token that expires (protos/
join_token.py: an id, a secret and the fleet CA's hash). The controller keeps only the
SHA-256 of the secret, with the host name, the expiry and whether it was used or
revoked, in STATE/join-tokens.json (0600). On the host, ``vpnfleet-agent join`` pins
the CA by the token's hash, makes its key pairs and sends its CSRs with the token to
the join service (controller/deploy/join_server.py), which asks :class:`JoinAuthority`:

1. the source address is within its request rate (:class:`SourceRateLimit`);
2. the token is known and the secret is its own;
3. it is not revoked, not used, not expired, and was made for the host name asked;
4. the CSRs are signed by their keys and name that host (controller/statedir/pki.py), and only
   then are certificates issued, for the token's host alone;
5. the token is marked used in the same locked update that checked it, so two
   requests racing with one token cannot both get certificates.

Every request, granted or refused, is a row of the audit log (kind ``join``), with the
refusal's own code (:class:`Refusal`).
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import fcntl
import hashlib
import hmac
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from vpnfleet.protos.files import write_atomically
from vpnfleet.protos.join_token import JoinToken, well_formed

from ..statedir import pki
from ..statedir.audit import AuditEntry, AuditLog
from ..statedir.state import StateDir

TOKENS_FILE = "join-tokens.json"
TOKENS_LOCK = "join-tokens.lock"
DEFAULT_TTL = 3600.0
MAX_TTL = 7 * 86400.0
_TTL_RE = re.compile(r"^(\d+)([smhd])$")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_HOST_NAME = 253

Clock = Callable[[], float]


class JoinError(Exception):
    """A token operation cannot be done (unknown token, bad TTL …); the message says why."""


class AuditKind(enum.StrEnum):
    TOKEN_CREATE = "token-create"
    TOKEN_REVOKE = "token-revoke"
    JOIN = "join"


class TokenState(enum.StrEnum):
    VALID = "valid"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Refusal(enum.StrEnum):
    """Why a join was refused: one code each, in the audit log and the answer."""

    RATE_LIMITED = "rate-limited"
    MALFORMED = "malformed-token"
    UNKNOWN = "unknown-token"
    WRONG_SECRET = "wrong-secret"
    REVOKED = "revoked"
    USED = "used"
    EXPIRED = "expired"
    WRONG_HOST = "wrong-host"
    BAD_CSR = "bad-csr"


class JoinRefused(Exception):
    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.message = message


def parse_ttl(text: str) -> float:
    """Seconds of ``30s``, ``15m``, ``1h``, ``2d`` (at most 7 days)."""
    match = _TTL_RE.match(text.strip())
    if match is None:
        raise JoinError(f"TTL {text!r} is not a number with a unit: e.g. 30m, 1h, 2d")
    seconds = float(int(match.group(1)) * _TTL_UNITS[match.group(2)])
    if not 0 < seconds <= MAX_TTL:
        raise JoinError(f"TTL {text!r} must be more than 0 and at most 7d")
    return seconds


def _secret_hash(secret: str) -> str:
    # The secret has 192 random bits: a plain hash cannot be searched back.
    return hashlib.sha256(secret.encode()).hexdigest()


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the controller keeps of a token: never the secret."""

    token_id: str
    host: str
    secret_sha256: str
    created_at: float
    expires_at: float
    address: str = ""
    """Underlay address to put in the IKE certificate (as `ca sign --address`)."""
    used_at: float | None = None
    used_by: str = ""
    """The source address the token was used from."""
    revoked_at: float | None = None

    def state(self, now: float) -> TokenState:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.used_at is not None:
            return TokenState.USED
        if now >= self.expires_at:
            return TokenState.EXPIRED
        return TokenState.VALID

    def to_json(self, now: float) -> dict[str, Any]:
        out = asdict(self)
        del out["secret_sha256"]
        out["state"] = self.state(now).value
        return out


class TokenStore:
    """The token records in STATE/join-tokens.json; every change is made under an
    exclusive lock on STATE/join-tokens.lock, so ``token create`` and a running join
    service can share the file."""

    def __init__(self, state_root: Path, clock: Clock = time.time) -> None:
        self.state = StateDir(state_root)
        self.clock = clock
        self.path = state_root / TOKENS_FILE
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, TokenRecord]]:
        """The records, locked; what the block leaves in the dict is written back."""
        self.state.ensure()
        with self._thread_lock:
            fd = os.open(
                self.state.root / TOKENS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                records = self._read()
                before = dict(records)
                yield records
                if records != before:
                    self._write(records)
            finally:
                os.close(fd)

    def _read(self) -> dict[str, TokenRecord]:
        try:
            data = json.loads(self.path.read_text())
            return {r["token_id"]: TokenRecord(**r) for r in data["tokens"]}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JoinError(
                f"{self.path} cannot be read ({exc}): restore it, or delete it to forget "
                "every token"
            ) from None

    def _write(self, records: dict[str, TokenRecord]) -> None:
        data = {"tokens": [asdict(r) for r in records.values()]}
        write_atomically(self.path, (json.dumps(data, indent=1) + "\n").encode())

    def create(self, host: str, ttl: float, ca_sha256: str, address: str = "") -> JoinToken:
        pki.check_agent_name(host)
        if address:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise JoinError(f"--address {address!r} is not an IP address") from None
        if not 0 < ttl <= MAX_TTL:
            raise JoinError(f"a token lives more than 0 seconds and at most {MAX_TTL:g}")
        token = JoinToken.new(ca_sha256)
        now = self.clock()
        record = TokenRecord(
            token.token_id, host, _secret_hash(token.secret), now, now + ttl, address
        )
        with self._locked() as records:
            records[token.token_id] = record
        return token

    def list(self) -> list[TokenRecord]:
        with self._locked() as records:
            return sorted(records.values(), key=lambda r: r.created_at)

    def revoke(self, token_id: str) -> TokenRecord:
        with self._locked() as records:
            record = records.get(token_id)
            if record is None:
                raise JoinError(f"no token {token_id!r}: see `vpnfleet token list`")
            if record.revoked_at is None:
                record = records[token_id] = replace(record, revoked_at=self.clock())
            return record

    def redeem(
        self, token_id: str, secret: str, host: str, source: str, sign: Callable[[TokenRecord], Any]
    ) -> tuple[TokenRecord, Any]:
        """Check the token for ``host``, call ``sign`` with its record and mark it used
        (by ``source``), all under the lock; :class:`JoinRefused` names what is wrong."""
        with self._locked() as records:
            record = records.get(token_id)
            if record is None:
                raise JoinRefused(Refusal.UNKNOWN, f"no token {token_id} on this controller")
            if not hmac.compare_digest(record.secret_sha256, _secret_hash(secret)):
                raise JoinRefused(Refusal.WRONG_SECRET, f"wrong secret for token {token_id}")
            now = self.clock()
            state = record.state(now)
            if state is TokenState.REVOKED:
                raise JoinRefused(
                    Refusal.REVOKED, f"token {token_id} was revoked at {_when(record.revoked_at)}"
                )
            if state is TokenState.USED:
                raise JoinRefused(
                    Refusal.USED,
                    f"token {token_id} was already used at {_when(record.used_at)} from "
                    f"{record.used_by}; tokens are single-use: ask for a new one",
                )
            if state is TokenState.EXPIRED:
                raise JoinRefused(
                    Refusal.EXPIRED,
                    f"token {token_id} expired at {_when(record.expires_at)}: ask for a new one",
                )
            if host != record.host:
                raise JoinRefused(
                    Refusal.WRONG_HOST,
                    f"token {token_id} is for host {record.host!r}, not {host!r}",
                )
            try:
                result = sign(record)
            except pki.PkiError as exc:
                raise JoinRefused(Refusal.BAD_CSR, str(exc)) from None
            record = records[token_id] = replace(record, used_at=now, used_by=source)
            return record, result


def rate_key(source: str) -> str:
    """What requests are counted by: the IPv4 address, or the IPv6 /64 (one host is
    commonly given a whole /64 to choose addresses from)."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class SourceRateLimit:
    """A token bucket per source address: ``burst`` requests at once, then one every
    ``interval`` seconds. Buckets that have refilled are forgotten, so memory follows
    the sources active in the last ``burst * interval`` seconds."""

    def __init__(self, burst: int = 5, interval: float = 12.0, clock: Clock = time.monotonic):
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, source: str) -> bool:
        source = rate_key(source)
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) / self.interval)
            for other, (t, a) in list(self._buckets.items()):
                if t + (now - a) / self.interval >= self.burst:
                    del self._buckets[other]
            if tokens < 1.0:
                self._buckets[source] = (tokens, now)
                return False
            self._buckets[source] = (tokens - 1.0, now)
            return True


@dataclass(frozen=True, slots=True)
class JoinGrant:
    host: str
    token_id: str
    tls_cert: bytes
    ike_cert: bytes
    ca_cert: bytes


class JoinAuthority:
    """Decides join requests (see the module's docstring) and audits each one."""

    def __init__(
        self,
        state_root: Path,
        clock: Clock = time.time,
        limit: SourceRateLimit | None = None,
    ) -> None:
        self.state_root = state_root
        self.clock = clock
        self.tokens = TokenStore(state_root, clock)
        self.limit = limit or SourceRateLimit()
        self.audit = AuditLog.in_state(state_root)

    def join(
        self, source: str, token_id: str, secret: str, host: str, tls_csr: bytes, ike_csr: bytes
    ) -> JoinGrant:
        started = self.clock()
        # What the audit log keeps of the request is bounded: the id only when it has
        # a token id's form, the host name cut at the longest a DNS name can be.
        token_id = token_id if well_formed(token_id, secret) else ""
        if len(host) > MAX_HOST_NAME:
            host = host[:MAX_HOST_NAME] + "…"
        try:
            grant = self._decide(source, token_id, secret, host, tls_csr, ike_csr)
        except JoinRefused as refused:
            self._record(started, source, token_id, host, "refused", refused)
            raise
        self._record(started, source, token_id, host, "changed", None)
        return grant

    def _decide(
        self, source: str, token_id: str, secret: str, host: str, tls_csr: bytes, ike_csr: bytes
    ) -> JoinGrant:
        if not self.limit.allow(source):
            raise JoinRefused(
                Refusal.RATE_LIMITED,
                f"too many join requests from {source}: wait {self.limit.interval:g}s",
            )
        if not well_formed(token_id, secret):
            raise JoinRefused(Refusal.MALFORMED, "the token id or secret is malformed")

        def sign(record: TokenRecord) -> tuple[bytes, bytes, bytes]:
            return pki.sign_agent_csrs(
                self.state_root, record.host, tls_csr, ike_csr, address=record.address or None
            )

        record, (tls_pem, ike_pem, ca_pem) = self.tokens.redeem(
            token_id, secret, host, source, sign
        )
        return JoinGrant(record.host, token_id, tls_pem, ike_pem, ca_pem)

    def _record(
        self,
        started: float,
        source: str,
        token_id: str,
        host: str,
        outcome: str,
        refused: JoinRefused | None,
    ) -> None:
        errors = () if refused is None else (f"{refused.refusal.value}: {refused.message}",)
        self.audit.record(
            AuditEntry(
                kind=AuditKind.JOIN.value,
                revision=token_id,
                started_at=started,
                finished_at=self.clock(),
                outcome=outcome,
                hosts=(host,),
                errors=errors,
                subject=f"join of {host!r} from {source}",
            )
        )


def audit_token(state_root: Path, kind: AuditKind, record: TokenRecord, now: float) -> None:
    """Record a token's creation or revocation in the audit log."""
    AuditLog.in_state(state_root).record(
        AuditEntry(
            kind=kind.value,
            revision=record.token_id,
            started_at=now,
            finished_at=now,
            outcome="changed",
            hosts=(record.host,),
            subject=f"{kind.value} {record.token_id} for {record.host!r}, expires "
            f"{_when(record.expires_at)}",
        )
    )
