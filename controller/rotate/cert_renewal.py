"""Agents' certificates renewed before they expire, by ``vpnfleet renew`` (for an
operator or cron) and by ``vpnfleet serve`` after each status poll.

Each agent reports its TLS and IKE certificates with their notBefore and notAfter in
its status. A certificate is *due* once its renewal window is open: from the earlier of
the start of the last ``fraction`` of its lifetime (a third by default) and ``days``
before it expires (30 by default), but never in the first half of its lifetime, so a
certificate just renewed is never due at once. The hosts with a due certificate get new
TLS and IKE certificates through the rotation ``vpnfleet rotate certs`` runs
(:mod:`.cert_rotation`: key pairs made on the host, its CSRs signed by the fleet CA,
certificate peers re-established make-before-break, journaled in
``STATE/rotation/certs.json``), limited to those hosts. An unfinished certificate
rotation is resumed first, whatever its hosts; an unfinished CA rotation stops the
renewal with its name (finish ``vpnfleet rotate ca`` first).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..delivery.health import Clock
from ..fleet.operations import CompiledFleet
from ..fleet.rollout import RolloutOptions
from ..reports.results import EXIT_FAILED, EXIT_UNREACHABLE
from ..reports.status import FleetStatus
from ..statedir.state import StateDir
from .cert_rotation import (
    CertJournal,
    CredentialAccess,
    prepare_cert_rotation,
    run_cert_rotation,
)
from .rotation import Report, RotationError, RotationKind, RotationResult

DAY = 86400.0
DEFAULT_FRACTION = 1 / 3
DEFAULT_DAYS = 30.0


@dataclass(frozen=True, slots=True)
class RenewalWindow:
    """When a certificate is due for renewal (see the module's docstring)."""

    fraction: float = DEFAULT_FRACTION
    """The last part of its lifetime in which it is due."""
    days: float = DEFAULT_DAYS
    """Due this many days before it expires, if that comes first."""

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ValueError(
                f"the renewal fraction must be above 0 and below 1 (a third: 0.333), "
                f"not {self.fraction}"
            )
        if self.days < 0:
            raise ValueError(f"renewal days must be 0 or more, not {self.days}")

    def opens_at(self, not_before: float, not_after: float) -> float:
        """Unix seconds from which a certificate valid from ``not_before`` to
        ``not_after`` is due (``not_before`` 0: unknown, then by ``days`` only)."""
        by_days = not_after - self.days * DAY
        if not 0 < not_before < not_after:
            return by_days
        lifetime = not_after - not_before
        opens = min(not_after - lifetime * self.fraction, by_days)
        return max(opens, not_before + lifetime / 2)

    def __str__(self) -> str:
        return f"the last {self.fraction:.0%} of a certificate's lifetime or {self.days:g} days"


@dataclass(frozen=True, slots=True)
class DueCertificate:
    host: str
    kind: str
    """tls or ike."""
    not_after: float
    opens_at: float

    def __str__(self) -> str:
        return (
            f"{self.host}: {self.kind.upper()} certificate expires {_when(self.not_after)}, "
            f"due since {_when(self.opens_at)}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "kind": self.kind,
            "not_after": self.not_after,
            "due_since": self.opens_at,
        }


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def due_certificates(
    status: FleetStatus, window: RenewalWindow, now: float
) -> list[DueCertificate]:
    """The certificates in ``status`` whose renewal window is open at ``now``."""
    due = []
    for host in status.hosts:
        if host.observed is None:
            continue
        for cert in host.observed.certificates:
            opens = window.opens_at(cert.not_before, cert.not_after)
            if now >= opens:
                due.append(DueCertificate(host.host, cert.kind.value, cert.not_after, opens))
    return due


@dataclass(slots=True)
class RenewalResult:
    window: RenewalWindow
    due: list[DueCertificate] = field(default_factory=list)
    unobserved: dict[str, str] = field(default_factory=dict)
    """Hosts whose certificates could not be read, and why."""
    rotation: RotationResult | None = None
    """The rotation run for the due hosts; None when none was needed."""
    error: str = ""

    @property
    def exit_code(self) -> int:
        if self.error:
            return EXIT_FAILED
        if self.rotation is not None and self.rotation.exit_code:
            return self.rotation.exit_code
        return EXIT_UNREACHABLE if self.unobserved else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {"fraction": self.window.fraction, "days": self.window.days},
            "due": [d.to_json() for d in self.due],
            "unobserved": self.unobserved,
            "rotation": self.rotation.to_json() if self.rotation is not None else None,
            "error": self.error,
            "exit_code": self.exit_code,
        }


async def renew_due_certificates(
    state: StateDir,
    compile_fleet: Callable[[], CompiledFleet],
    access: CredentialAccess,
    window: RenewalWindow,
    *,
    now: Callable[[], float] = time.time,
    check: bool = False,
    options: RolloutOptions | None = None,
    timeout: float = 60.0,
    clock: Clock | None = None,
    report: Report | None = None,
) -> RenewalResult:
    """Renew the certificates of the hosts of ``compile_fleet()`` that are due at
    ``now()`` (``check``: only find them), resuming an unfinished certificate rotation
    first; ``timeout`` bounds the wait for an agent's certificate peers."""
    say = report or (lambda _line: None)
    out = RenewalResult(window)
    fleet = compile_fleet()
    try:
        journal = CertJournal.load(state, RotationKind.CERTS)
    except RotationError as exc:
        out.error = str(exc)
        return out
    if journal is not None and not journal.finished:
        hosts = list(journal.hosts)
        say(f"an unfinished certificate rotation of {len(hosts)} host(s) is resumed first")
    else:
        status = await access.observe(fleet)
        out.unobserved = {h.host: h.error for h in status.hosts if h.observed is None}
        out.due = due_certificates(status, window, now())
        hosts = sorted({d.host for d in out.due})
        for due in out.due:
            say(str(due))
        for host, why in out.unobserved.items():
            say(f"{host}: certificates not read: {why}")
        if not hosts:
            return out
    if check:
        return out
    missing = [h for h in hosts if h not in fleet.plans]
    if missing:
        out.error = f"hosts to renew are not in the inventory: {', '.join(missing)}"
        return out
    try:
        journal, resumed = prepare_cert_rotation(RotationKind.CERTS, state, fleet.subset(hosts))
    except RotationError as exc:
        out.error = str(exc)
        return out
    say(f"renewing the TLS and IKE certificates of {', '.join(hosts)}")
    out.rotation = await run_cert_rotation(
        journal,
        state,
        compile_fleet,
        access,
        resumed=resumed,
        options=options,
        timeout=timeout,
        clock=clock,
        report=report,
    )
    return out
