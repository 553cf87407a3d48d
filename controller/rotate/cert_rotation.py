"""``vpnfleet rotate certs`` and ``vpnfleet rotate ca``: new certificates, no tunnel lost.

Private keys never leave a host: for each agent the controller asks for new key pairs
(PrepareEnrollment, which returns CSRs), signs the CSRs, and sends the certificates back
(InstallCredentials). The agent checks them against its staged keys, stores them and
puts them in use: new TLS handshakes present the new certificate, and each of its
certificate (``auth: pubkey``) peers is re-established with the new IKE certificate,
make-before-break (the old IKE SA and its child carry traffic until the new ones are
up). The controller waits until every certificate peer of that agent has an IKE SA
newer than the one before the install (with its child installed): that, and the
fingerprints the agent reports, are its acknowledgement.

``rotate certs`` does that for every agent with the current fleet CA. A fleet whose
tunnels use PSKs gets new TLS and IKE certificates all the same; no tunnel depends on
them, so nothing is re-established.

``rotate ca`` replaces the fleet CA itself, in three phases; every agent finishes a
phase before any starts the next:

1. trust: a next CA is made (STATE/pki/ca-next.*); every agent gets plans whose trust
   anchors hold the current and the next CA (its pubkey peers accept both, updated in
   place, no new SA) and the TLS trust bundle old+new. The controller trusts both for
   the agents' server certificates from now on.
2. reissue: the controller's own client certificate is re-issued by the next CA (every
   agent trusts it now); then each agent gets TLS and IKE certificates from the next
   CA, as in ``rotate certs``, with the bundle old+new.
3. retire: the next CA becomes the current one (the old kept as ca-previous until the
   end); every agent gets plans with the new anchor only and the bundle of the new CA
   only. Then the old CA is dropped: nothing it signed is accepted any more.

Each acknowledged agent is recorded in ``STATE/rotation/certs.json`` or ``ca.json``
after its step, so a run stopped by Ctrl-C or by a failed agent resumes where it
stopped. A failed agent stops the run at the end of its phase with the host and what
failed named.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..delivery.health import AgentAccess, Clock, FleetAccess
from ..fleet import operations
from ..fleet.operations import CompiledFleet
from ..fleet.rollout import RolloutOptions, run_rollout
from ..planner.model import AuthMethod
from ..reports.results import ChangeLine, HostResult, Outcome
from ..statedir import pki
from ..statedir.state import StateDir
from ..transport.client import AgentClient, AgentError, AgentUnreachable, InstalledCredentials
from .rotation import (
    JOURNAL_VERSION,
    Report,
    RotationError,
    RotationKind,
    RotationResult,
    ike_times,
    journal_path,
    load_journal,
    save_journal,
    wait_reestablished,
)


class Phase(enum.StrEnum):
    """A phase of a certificate or CA rotation (its value is what the journal records)."""

    TRUST = "trust"
    REISSUE = "reissue"
    RETIRE = "retire"


PHASES: Mapping[RotationKind, tuple[Phase, ...]] = {
    RotationKind.CERTS: (Phase.REISSUE,),
    RotationKind.CA: (Phase.TRUST, Phase.REISSUE, Phase.RETIRE),
}
PHASE_TITLES: Mapping[Phase, str] = {
    Phase.TRUST: "trust the old and the new CA",
    Phase.REISSUE: "re-issue TLS and IKE certificates",
    Phase.RETIRE: "retire the old CA",
}


@dataclass(slots=True)
class CertJournal:
    """What a certificate or CA rotation has done (``STATE/rotation/{certs,ca}.json``)."""

    kind: RotationKind
    hosts: list[str]
    phase: Phase
    done: dict[str, list[str]] = field(default_factory=dict)  # phase -> acknowledged hosts
    old_ca: str = ""  # fingerprint of the CA in force when the rotation started
    next_ca: str = ""  # fingerprint of the CA a CA rotation rolls in
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    version: int = JOURNAL_VERSION

    @classmethod
    def load(cls, state: StateDir, kind: RotationKind) -> CertJournal | None:
        journal = load_journal(cls, journal_path(state, kind))
        if journal is None:
            return None
        # The journal's JSON holds the kind and phase as text: read back as members.
        if journal.kind != kind or journal.phase not in PHASES[kind]:
            raise RotationError(
                f"{journal_path(state, kind)}: journal of kind {journal.kind!r} in phase "
                f"{journal.phase!r}, not a {kind} rotation"
            )
        journal.kind, journal.phase = kind, Phase(journal.phase)
        return journal

    def save(self, state: StateDir) -> None:
        save_journal(self, journal_path(state, self.kind))

    @property
    def finished(self) -> bool:
        return self.finished_at > 0

    def acknowledged(self, phase: Phase) -> list[str]:
        return self.done.setdefault(phase, [])


class CredentialAccess(FleetAccess, Protocol):
    """How this module reaches agents: plans and status, plus the enrolment calls."""

    async def prepare_enrollment(self, host: str, endpoint: str) -> tuple[bytes, bytes]: ...

    async def install_credentials(
        self,
        host: str,
        endpoint: str,
        *,
        tls_cert: bytes = b"",
        ike_cert: bytes = b"",
        ca_bundle: bytes = b"",
    ) -> InstalledCredentials: ...


@dataclass(slots=True)
class AgentCredentialAccess(AgentAccess):
    """:class:`CredentialAccess` over gRPC with the controller's credentials of the
    moment (operations.client_credentials: during a CA rotation they change)."""

    async def prepare_enrollment(self, host: str, endpoint: str) -> tuple[bytes, bytes]:
        creds = operations.client_credentials(self.state)
        async with AgentClient(host, endpoint, creds, timeout=self.timeout) as client:
            return await client.prepare_enrollment(tls=True, ike=True)

    async def install_credentials(
        self,
        host: str,
        endpoint: str,
        *,
        tls_cert: bytes = b"",
        ike_cert: bytes = b"",
        ca_bundle: bytes = b"",
    ) -> InstalledCredentials:
        creds = operations.client_credentials(self.state)
        async with AgentClient(host, endpoint, creds, timeout=self.timeout) as client:
            return await client.install_credentials(
                tls_cert=tls_cert, ike_cert=ike_cert, ca_bundle=ca_bundle
            )


def certificate_peers(fleet: CompiledFleet, host: str) -> list[str]:
    """The managed peers of ``host`` that authenticate with certificates."""
    return [
        p.name
        for p in fleet.plans[host].peers
        if p.managed and p.auth is not None and p.auth.method is AuthMethod.PUBKEY
    ]


def reissue_waves(fleet: CompiledFleet, hosts: list[str], forks: int) -> list[list[str]]:
    """Hosts in waves of at most ``forks`` where no two share a certificate tunnel.

    An agent given a new IKE certificate re-establishes each of its certificate peers;
    were both ends of a tunnel given theirs at once, both would start a new IKE SA for
    it at the same moment, and the duplicate one's teardown can cost the tunnel packets.
    One end at a time, the other end only answers. (Greedy colouring: a full mesh goes
    one host at a time, a hub and spoke fleet in two waves of spokes and hubs.)
    """
    waves: list[tuple[list[str], set[str]]] = []  # hosts, and the peers of those hosts
    for host in hosts:
        peers = set(certificate_peers(fleet, host))
        for members, touched in waves:
            if len(members) < forks and host not in touched and not peers & set(members):
                members.append(host)
                touched.update(peers)
                break
        else:
            waves.append(([host], peers))
    return [members for members, _ in waves]


def _ike_address(fleet: CompiledFleet, host: str) -> str | None:
    """The address the IKE certificate names beside the host name (as at enrolment)."""
    for address in fleet.plans[host].addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue
        return str(address)
    return None


def prepare_cert_rotation(
    kind: RotationKind, state: StateDir, fleet: CompiledFleet
) -> tuple[CertJournal, bool]:
    """Find the unfinished journal of ``kind`` or start one; whether it is resumed.

    Refused while the other kind of certificate rotation is unfinished (both re-issue
    the same certificates), and when hosts were added or removed since an unfinished
    rotation began (every agent must pass every phase).
    """
    if kind not in PHASES:
        raise RotationError(f"unknown rotation {kind!r}: choose certs or ca")
    other = RotationKind.CA if kind is RotationKind.CERTS else RotationKind.CERTS
    theirs = CertJournal.load(state, other)
    if theirs is not None and not theirs.finished:
        raise RotationError(
            f"an unfinished `rotate {other}` is in {journal_path(state, other)}: "
            f"run `vpnfleet rotate {other}` to the end first"
        )
    journal = CertJournal.load(state, kind)
    if journal is not None and not journal.finished:
        added = sorted(set(fleet.selected) - set(journal.hosts))
        gone = sorted(set(journal.hosts) - set(fleet.selected))
        if added or gone:
            what = "; ".join(
                f"{label}: {', '.join(names)}"
                for label, names in (("added", added), ("removed", gone))
                if names
            )
            raise RotationError(
                f"the inventory's hosts changed since the unfinished {kind} rotation of "
                f"{journal_path(state, kind)} began ({what}): restore them and run it to "
                "the end, then change the inventory"
            )
        if kind is RotationKind.CA:
            _check_ca_files(journal, state)
        return journal, True
    old = pki.fingerprint(pki.load_ca(state.root)[2])
    journal = CertJournal(kind, list(fleet.selected), PHASES[kind][0], old_ca=old)
    journal.save(state)
    return journal, False


def _check_ca_files(journal: CertJournal, state: StateDir) -> None:
    """On resume: the CA files must be those the journal speaks of."""
    following = pki.next_ca_pem(state.root)
    current = pki.fingerprint(pki.load_ca(state.root)[2])
    rolling = journal.phase in (Phase.TRUST, Phase.REISSUE) and journal.next_ca
    if rolling and (following is None or pki.fingerprint(following) != journal.next_ca):
        raise RotationError(
            f"the next CA {journal.next_ca[:16]}… of the unfinished CA rotation is not "
            f"{state.pki / pki.CA_NEXT_CERT} any more: restore it from backup (agents "
            "trust it already)"
        )
    if journal.phase is Phase.RETIRE and following is None and current != journal.next_ca:
        raise RotationError(
            f"the CA rotation is retiring {journal.old_ca[:16]}… but the current CA is "
            f"{current[:16]}…, not the one it rolled in ({journal.next_ca[:16]}…)"
        )


@dataclass(slots=True)
class _Run:
    """One run of a certificate or CA rotation; per-host steps share its settings."""

    journal: CertJournal
    state: StateDir
    access: CredentialAccess
    options: RolloutOptions
    timeout: float
    clock: Clock
    report: Report | None

    def say(self, line: str) -> None:
        if self.report:
            self.report(line)

    def acknowledge(self, phase: Phase, host: str) -> None:
        done = self.journal.acknowledged(phase)
        if host not in done:
            done.append(host)
        self.journal.save(self.state)

    async def each(
        self,
        phase: Phase,
        step: Callable[[str], Awaitable[HostResult]],
        fleet: CompiledFleet | None = None,
    ) -> list[HostResult]:
        """Run ``step`` on each host of the phase not acknowledged yet, ``forks`` at a
        time (with ``fleet``: in :func:`reissue_waves`); each success is journaled at
        once, and a wave with a failure is the last."""
        todo = [h for h in self.journal.hosts if h not in self.journal.acknowledged(phase)]
        forks = self.options.forks
        waves = reissue_waves(fleet, todo, forks) if fleet is not None else [todo]

        async def one(host: str) -> HostResult:
            started = self.clock.now()
            try:
                result = await step(host)
            except AgentUnreachable as exc:
                result = HostResult(host, Outcome.UNREACHABLE, error=_agent_error(exc))
            except AgentError as exc:
                result = HostResult(host, Outcome.FAILED, error=_agent_error(exc))
            except (pki.PkiError, RotationError) as exc:
                result = HostResult(host, Outcome.FAILED, error=str(exc))
            result = dataclasses.replace(result, seconds=self.clock.now() - started)
            if not (result.failed or result.unreachable):
                self.acknowledge(phase, host)
            return result

        acked = len(self.journal.hosts) - len(todo)

        def progress(result: HostResult) -> None:
            nonlocal acked
            if result.failed or result.unreachable:
                self.say(f"  {result.host}: {result.outcome.value}: {result.error}")
            else:
                acked += 1
                note = "; ".join(str(c) for c in result.changes)
                self.say(f"  {result.host}: ok ({acked}/{len(self.journal.hosts)}) {note}")

        results: list[HostResult] = []
        for wave in waves:
            results += await run_rollout(wave, one, RolloutOptions(forks=forks), progress)
            if _failures(results):
                break
        return results

    # -- steps ---------------------------------------------------------------------

    async def reissue(self, fleet: CompiledFleet, host: str, ca: str, bundle: bytes) -> HostResult:
        """New TLS and IKE certificates for ``host`` from the ``ca`` CA; wait for its
        certificate peers to come back with them."""
        endpoint = fleet.endpoints[host]
        part = fleet.subset([host])
        tls_csr, ike_csr = await self.access.prepare_enrollment(host, endpoint)
        if not tls_csr or not ike_csr:
            raise RotationError("PrepareEnrollment returned no TLS or no IKE CSR")
        try:
            tls, ike, _ca = pki.sign_agent_csrs(
                self.state.root, host, tls_csr, ike_csr, _ike_address(fleet, host), ca=ca
            )
        except pki.PkiError as exc:
            raise RotationError(f"its new CSRs were refused: {exc}") from None
        peers = certificate_peers(fleet, host)
        before = ike_times(await self.access.observe(part)) if peers else {}
        tunnels = {(host, p): before[(host, p)] for p in peers if (host, p) in before}
        installed = await self.access.install_credentials(
            host, endpoint, tls_cert=tls, ike_cert=ike, ca_bundle=bundle
        )
        for what, pem, got in (
            ("TLS", tls, installed.tls_fingerprint),
            ("IKE", ike, installed.ike_fingerprint),
        ):
            if got != pki.fingerprint(pem):
                raise RotationError(
                    f"InstallCredentials answered with {what} certificate "
                    f"{got[:16] or 'none'}…, not the one just issued "
                    f"({pki.fingerprint(pem)[:16]}…)"
                )
        _check_bundle(installed, bundle)
        why = await wait_reestablished(self.access, part, tunnels, self.timeout, self.clock)
        if why:
            raise RotationError(f"certificate peers {why}")
        detail = (
            f"{len(tunnels)} certificate peer(s) re-established"
            if peers
            else "no certificate peers: nothing re-established (its tunnels use PSKs)"
        )
        return HostResult(
            host,
            Outcome.CHANGED,
            changes=(ChangeLine("credentials", "tls+ike", "changed", (detail,)),),
        )

    async def trust(self, fleet: CompiledFleet, host: str, bundle: bytes) -> HostResult:
        """Only the TLS trust bundle of ``host`` changes."""
        installed = await self.access.install_credentials(
            host, fleet.endpoints[host], ca_bundle=bundle
        )
        _check_bundle(installed, bundle)
        shown = ", ".join(f[:16] for f in installed.ca_fingerprints)
        return HostResult(
            host,
            Outcome.CHANGED,
            changes=(ChangeLine("credentials", "ca_bundle", "changed", (shown,)),),
        )

    async def push_plans(self, fleet: CompiledFleet, phase: Phase) -> list[HostResult]:
        """The phase's plans to every host not acknowledged in it; the hosts that did
        not take them."""
        todo = [h for h in self.journal.hosts if h not in self.journal.acknowledged(phase)]
        if not todo:
            return []
        pushed = await self.access.push(fleet.subset(todo))
        return [
            dataclasses.replace(
                r, error=f"plan not acknowledged: {r.error.removeprefix(r.host + ': ')}"
            )
            for r in pushed
            if r.failed or r.unreachable
        ]


def _check_bundle(installed: InstalledCredentials, bundle: bytes) -> None:
    wanted = pki.bundle_fingerprints(bundle)
    if sorted(installed.ca_fingerprints) != sorted(wanted):
        got = ", ".join(f[:16] for f in installed.ca_fingerprints) or "none"
        raise RotationError(
            f"InstallCredentials reports trusting {got}, not the bundle sent "
            f"({', '.join(f[:16] for f in wanted)})"
        )


def _agent_error(exc: AgentError) -> str:
    """The agent's answer without the host (results name it already)."""
    return f"{exc.details} ({exc.code})"


def _failures(results: list[HostResult]) -> str:
    bad = [r for r in results if r.failed or r.unreachable]
    return "; ".join(f"{r.host}: {r.error}" for r in bad)


def _recorded(out: RotationResult, results: list[HostResult]) -> str:
    """Keep ``results`` in the outcome; the failures among them, "" for none."""
    out.result.extend(results)
    return _failures(results)


async def run_cert_rotation(
    journal: CertJournal,
    state: StateDir,
    compile_fleet: Callable[[], CompiledFleet],
    access: CredentialAccess,
    *,
    resumed: bool = False,
    options: RolloutOptions | None = None,
    timeout: float = 60.0,
    clock: Clock | None = None,
    report: Report | None = None,
) -> RotationResult:
    """Run (or resume) the rotation of ``journal``; ``timeout`` bounds the wait for an
    agent's certificate peers to re-establish."""
    clock = clock or Clock()
    started = clock.now()
    run = _Run(journal, state, access, options or RolloutOptions(), timeout, clock, report)
    out = RotationResult(kind=journal.kind, resumed=resumed)
    out.skipped = [h for h in journal.hosts if h in journal.acknowledged(journal.phase)]
    phases = PHASES[journal.kind]
    if resumed:
        run.say(
            f"resuming the {journal.kind} rotation in phase {journal.phase}: "
            f"{len(out.skipped)} of {len(journal.hosts)} host(s) done in it"
        )
    try:
        first = phases.index(journal.phase)
        for index, phase in enumerate(phases[first:], first + 1):
            if journal.phase is not phase:
                journal.phase = phase
                journal.save(state)
            run.say(f"phase {index}/{len(phases)} {phase}: {PHASE_TITLES[phase]}")
            error = await _PHASE_RUNNERS[(journal.kind, phase)](run, compile_fleet, out)
            if error:
                out.error = f"phase {phase}: {error}"
                break
    finally:
        out.seconds = clock.now() - started
        out.extra = {
            "phase": journal.phase,
            "hosts_total": len(journal.hosts),
            "acknowledged": {p: list(h) for p, h in journal.done.items()},
            "ca": pki.fingerprint(pki.load_ca(state.root)[2]),
        }
    if not out.error:
        if journal.kind is RotationKind.CA:
            pki.drop_previous_ca(state.root)
        journal.finished_at = time.time()
        journal.save(state)
        out.extra["ca"] = pki.fingerprint(pki.load_ca(state.root)[2])
        run.say(f"{journal.kind} rotation done")
    return out


async def _certs_reissue(
    run: _Run, compile_fleet: Callable[[], CompiledFleet], out: RotationResult
) -> str:
    fleet = compile_fleet()
    if not any(certificate_peers(fleet, h) for h in run.journal.hosts if h in fleet.plans):
        run.say(
            "  no tunnel authenticates with certificates (PSK fleet): TLS and IKE "
            "certificates are rotated, no IKE SA needs re-establishing"
        )
    bundle = pki.load_ca(run.state.root)[2]

    async def step(host: str) -> HostResult:
        return await run.reissue(fleet, host, pki.CURRENT, bundle)

    return _recorded(out, await run.each(Phase.REISSUE, step, fleet))


async def _ca_trust(
    run: _Run, compile_fleet: Callable[[], CompiledFleet], out: RotationResult
) -> str:
    info = pki.init_next_ca(run.state.root)
    if not run.journal.next_ca:
        run.journal.next_ca = info.fingerprint
        run.journal.save(run.state)
        run.say(f"  next CA {info.fingerprint[:16]}… made ({info.cert_path})")
    fleet = compile_fleet()  # trust anchors: the current and the next CA
    bundle = pki.trust_bundle(run.state.root)
    refused = await run.push_plans(fleet, Phase.TRUST)
    if refused:
        return _recorded(out, refused)

    async def step(host: str) -> HostResult:
        return await run.trust(fleet, host, bundle)

    return _recorded(out, await run.each(Phase.TRUST, step))


async def _ca_reissue(
    run: _Run, compile_fleet: Callable[[], CompiledFleet], out: RotationResult
) -> str:
    if pki.controller_issuer(run.state.root) != run.journal.next_ca:
        # Every agent trusts the next CA since phase 1: the controller moves first.
        pki.reissue_controller_cert(run.state.root, pki.NEXT)
        run.say("  controller certificate re-issued by the next CA")
    fleet = compile_fleet()
    bundle = pki.trust_bundle(run.state.root)

    async def step(host: str) -> HostResult:
        return await run.reissue(fleet, host, pki.NEXT, bundle)

    return _recorded(out, await run.each(Phase.REISSUE, step, fleet))


async def _ca_retire(
    run: _Run, compile_fleet: Callable[[], CompiledFleet], out: RotationResult
) -> str:
    if pki.next_ca_pem(run.state.root) is not None:  # else promoted by an earlier run
        info = pki.promote_next_ca(run.state.root)
        run.say(f"  CA {info.fingerprint[:16]}… is the fleet CA now")
    fleet = compile_fleet()  # trust anchors: the new CA only
    bundle = pki.load_ca(run.state.root)[2]
    refused = await run.push_plans(fleet, Phase.RETIRE)
    if refused:
        return _recorded(out, refused)

    async def step(host: str) -> HostResult:
        return await run.trust(fleet, host, bundle)

    return _recorded(out, await run.each(Phase.RETIRE, step))


PhaseRunner = Callable[[_Run, Callable[[], CompiledFleet], RotationResult], Awaitable[str]]
_PHASE_RUNNERS: Mapping[tuple[RotationKind, Phase], PhaseRunner] = {
    (RotationKind.CERTS, Phase.REISSUE): _certs_reissue,
    (RotationKind.CA, Phase.TRUST): _ca_trust,
    (RotationKind.CA, Phase.REISSUE): _ca_reissue,
    (RotationKind.CA, Phase.RETIRE): _ca_retire,
}
