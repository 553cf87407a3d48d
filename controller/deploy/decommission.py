"""``vpnfleet decommission HOST``: retire a host so that its former peers refuse it.

In this order, so that a host that cannot be reached is refused all the same:

1. over SSH (the host's Ansible connection variables, as bootstrap uses them), read the
   certificates in its agent's state directory: those issued before the controller kept
   its ledger of issued certificates are revoked too;
2. revoke every unexpired certificate of the host (pki.revoke_host) and retire its name:
   from now on the planner leaves it out of every plan, and the CRL the fleet CA issues
   goes into every plan;
3. push the new plans to the remaining hosts (operations.push_plans, as ``apply``): each
   drops its tunnel to the host and receives the CRL, which its IKE and its gRPC server
   check from then on;
4. on the host, if reachable: stop and disable the agent and delete its unit
   (service.remove_agent_service), lift the kill switch and remove the agent's rules
   and routes (``vpnfleet-agent cleanup``, which needs the agent stopped), then its
   config, state directory and PREFIX. A host that cannot be reached is reported; the
   revocation holds without it;
5. record the run in the audit log.

With ``check`` nothing is revoked, pushed or removed: it says what would be revoked, asks
the remaining agents what their plans without the host would change (the CRL is not
issued, so it is not among those changes), and what is on the host to remove.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..fleet import operations
from ..fleet.rollout import RolloutOptions
from ..inventory import load_inventory
from ..inventory.vault import Vault
from ..reports.results import EXIT_FAILED, AggregateResult, ChangeLine, HostResult, Outcome
from ..statedir import pki
from ..statedir.audit import AuditEntry, AuditLog
from ..statedir.state import StateDir
from .connection import ConnectionVarError, UnreachableError
from .enrol import AGENT_STATE_DIR, parse_files, read_script
from .hostkeys import HostKeyPolicy
from .install import AgentLayout
from .run import DEFAULT_TIMEOUT, HostPlan, host_plans
from .service import ServiceError, remove_agent_service
from .session import HostSession, open_session
from .sshlib import asyncssh

_CERTIFICATES = {"tls.pem": pki.CertKind.TLS, "ike.pem": pki.CertKind.IKE}


class DecommissionError(Exception):
    """Nothing can be decommissioned as asked (the message says why); nothing changed."""


class RemovalError(Exception):
    """A step on the host failed (the message names it)."""


@dataclass(frozen=True, slots=True)
class DecommissionOptions:
    policy: HostKeyPolicy
    layout: AgentLayout = field(default_factory=AgentLayout)
    check: bool = False
    rollout: RolloutOptions = field(default_factory=RolloutOptions)
    timeout: float = operations.DEFAULT_TIMEOUT
    """Seconds per agent call."""
    ssh_timeout: float = DEFAULT_TIMEOUT
    """Seconds to connect and log in to the host."""


@dataclass(slots=True)
class DecommissionRun:
    host: str
    check: bool
    revoked: tuple[pki.IssuedCertificate, ...] = ()
    """Revoked by this run (with ``check``: that it would revoke)."""
    retired_before: bool = False
    pushed: bool = False
    """Whether the remaining hosts were given new plans (only with an inventory)."""
    plans: AggregateResult = field(default_factory=AggregateResult)
    """The remaining hosts' new plans."""
    removal: HostResult | None = None
    """What happened on the host itself."""

    @property
    def exit_code(self) -> int:
        """``apply``'s codes for the remaining hosts; the host itself only fails the run
        when something was left on it (unreachable is reported, not fatal)."""
        if self.removal is not None and self.removal.failed:
            return EXIT_FAILED
        return self.plans.exit_code

    def revoked_lines(self) -> list[str]:
        verb = "would revoke" if self.check else "revoked"
        return [
            f"{verb} {e.kind.value} certificate serial {e.serial:x} (CA {e.issuer[:16]})"
            for e in self.revoked
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "check": self.check,
            "retired_before": self.retired_before,
            "revoked": [e.to_json() for e in self.revoked],
            "plans": self.plans.to_json() if self.pushed else None,
            "host_removal": None if self.removal is None else self.removal.to_json(),
            "exit_code": self.exit_code,
        }


async def read_certificates(
    session: HostSession, state_dir: PurePosixPath = AGENT_STATE_DIR
) -> tuple[tuple[pki.CertKind, bytes], ...]:
    """The agent certificates in the host's state directory (never a key)."""
    read = await session.run(read_script(state_dir), privileged=True)
    if not read.ok:
        raise RemovalError(
            f"cannot read the agent's certificates in {state_dir}: {read.error_line()}"
        )
    files = parse_files(read.stdout)
    return tuple((kind, files[name]) for name, kind in _CERTIFICATES.items() if files.get(name))


def _removed_paths(layout: AgentLayout) -> tuple[PurePosixPath, ...]:
    return (layout.config, AGENT_STATE_DIR, layout.prefix)


def removal_script(layout: AgentLayout, check: bool) -> str:
    """Shell (run as root, once the service is gone) that lifts the agent's kill switch,
    rules and routes and removes its config, state directory and PREFIX; prints
    ``present PATH`` for each that was there. With ``check``: only the listing."""
    paths = " ".join(shlex.quote(str(p)) for p in (layout.unit_path, *_removed_paths(layout)))
    removed = " ".join(shlex.quote(str(p)) for p in _removed_paths(layout))
    agent = shlex.quote(str(layout.agent))
    config = shlex.quote(str(layout.config))
    config_dir = shlex.quote(str(layout.config.parent))
    # An empty directory counts as gone (a mount point stays once emptied).
    lines = [
        f"for p in {paths}; do",
        '  if [ -d "$p" ]; then [ -n "$(ls -A "$p")" ] && echo "present $p"',
        '  elif [ -e "$p" ]; then echo "present $p"; fi',
        "done",
    ]
    if not check:
        lines += [
            f"if [ -x {agent} ]; then",
            f"  if [ -e {config} ]; then {agent} cleanup --config {config} >&2 || exit 3",
            f"  else {agent} cleanup >&2 || exit 3; fi",
            "fi",
            # A directory is emptied, then removed (it stays when it is a mount point).
            f"for p in {removed}; do",
            '  if [ -d "$p" ] && [ ! -L "$p" ]; then',
            '    find "$p" -mindepth 1 -delete || exit 4; rmdir "$p" 2>/dev/null',
            '  elif [ -e "$p" ] || [ -L "$p" ]; then rm -f -- "$p" || exit 4; fi',
            "done",
            # The config's directory goes too when nothing else is in it.
            f"rmdir {config_dir} 2>/dev/null",
        ]
    return "\n".join(lines) + "\ntrue\n"


async def remove_from_host(
    session: HostSession, layout: AgentLayout, check: bool
) -> tuple[ChangeLine, ...]:
    """Stop the agent, disable and delete its unit, lift its rules, remove its files
    (with ``check``: say what is there). Raises :class:`RemovalError` naming the step."""
    host = session.settings.host
    changes: list[ChangeLine] = []
    if not check:
        try:
            if await remove_agent_service(session, layout):
                changes.append(
                    ChangeLine(
                        "agent",
                        host,
                        "removed",
                        (f"stopped, disabled, removed {layout.unit_path}",),
                    )
                )
        except ServiceError as exc:
            raise RemovalError(f"stopping and removing {layout.unit} failed: {exc}") from None
    res = await session.run(removal_script(layout, check), privileged=True)
    if not res.ok:
        step = {3: "vpnfleet-agent cleanup", 4: "removing the agent's files"}.get(
            res.exit_status, "the removal"
        )
        raise RemovalError(f"{step} failed: {res.error_line('vpnfleet-agent')}")
    present = [
        line.removeprefix("present ")
        for line in res.stdout.splitlines()
        if line.startswith("present ")
    ]
    verb = "would remove" if check else "removed"
    changes += [ChangeLine("agent", host, "removed", (f"{verb} {p}",)) for p in present]
    return tuple(changes)


async def _on_host(
    plan: HostPlan, options: DecommissionOptions, work: Callable[[HostSession], Any]
) -> Any:
    async with open_session(plan.settings, options.policy, options.ssh_timeout) as session:
        return await work(session)


def _host_result(host: str, outcome: Outcome, started: float, error: str) -> HostResult:
    return HostResult(host, outcome, error=error, seconds=time.monotonic() - started)


async def decommission(
    host: str,
    inventory_path: Path | None,
    state: StateDir,
    options: DecommissionOptions,
    *,
    vault: Vault | None = None,
    progress: Callable[[HostResult], None] | None = None,
) -> DecommissionRun:
    """Revoke, re-plan and push, remove from the host, audit (see the module's doc)."""
    pki.check_agent_name(host)
    inventory = None if inventory_path is None else load_inventory(inventory_path, vault=vault)
    listed = inventory is not None and host in inventory.hosts
    retired = state.retired_hosts()
    issued = pki.issued_certificates(state.root, host)
    if not listed and not issued and host not in retired:
        where = "the inventory" if inventory_path is None else str(inventory_path)
        raise DecommissionError(
            f"no host named {host!r} in {where}, and the fleet CA issued it no certificate: "
            "nothing to decommission (check the name)"
        )
    if inventory_path is not None:
        # The fleet must plan without the host before anything is revoked: a topology
        # that needs it (a hub named by host) stops here, with nothing changed.
        operations.compile_fleet(inventory_path, state, vault=vault, retire=(host,))
    run = DecommissionRun(host, options.check, retired_before=host in retired)
    started = time.monotonic()

    # 1. What the host holds, while it is still there to ask.
    plan: HostPlan | None = None
    found: tuple[tuple[pki.CertKind, bytes], ...] = ()
    if inventory is not None and listed:
        try:
            (plan,) = host_plans(inventory, [host])
            found = await _on_host(plan, options, read_certificates)
        except (ConnectionVarError, RemovalError) as exc:
            run.removal = _host_result(host, Outcome.FAILED, started, str(exc))
        except UnreachableError as exc:
            run.removal = _host_result(host, Outcome.UNREACHABLE, started, str(exc))
        except (asyncssh.Error, OSError) as exc:
            reason = f"connection lost: {exc}"
            run.removal = _host_result(host, Outcome.UNREACHABLE, started, reason)
    else:
        reason = (
            "not in the inventory: no connection variables to reach it; stop and remove "
            "the agent there by hand (`vpnfleet-agent cleanup`)"
        )
        run.removal = _host_result(host, Outcome.UNREACHABLE, started, reason)

    # 2. Revoke and retire.
    if options.check:
        run.revoked = tuple(pki.pending_revocations(state.root, host, found))
    else:
        run.revoked = tuple(pki.revoke_host(state.root, host, found))

    # 3. The remaining hosts' plans, with the CRL, pushed as `apply` does.
    fleet = None
    if inventory_path is not None:
        fleet = operations.compile_fleet(
            inventory_path, state, vault=vault, retire=(host,) if options.check else ()
        )
        run.pushed = True
        run.plans = await operations.push_plans(
            fleet,
            state,
            dry_run=options.check,
            options=options.rollout,
            progress=progress,
            timeout=options.timeout,
        )

    # 4. The host itself, unless step 1 found it out of reach.
    if plan is not None and run.removal is None:
        layout = options.layout
        try:
            changes = await _on_host(
                plan, options, lambda s: remove_from_host(s, layout, options.check)
            )
        except RemovalError as exc:
            run.removal = _host_result(host, Outcome.FAILED, started, str(exc))
        except UnreachableError as exc:
            run.removal = _host_result(host, Outcome.UNREACHABLE, started, str(exc))
        except (asyncssh.Error, OSError) as exc:
            reason = f"connection lost: {exc}"
            run.removal = _host_result(host, Outcome.UNREACHABLE, started, reason)
        else:
            run.removal = HostResult(
                host,
                Outcome.CHANGED if changes and not options.check else Outcome.OK,
                changes=changes,
                seconds=time.monotonic() - started,
            )

    # 5. Audit.
    if not options.check:
        _audit(state, run, fleet, started)
    return run


def _audit(
    state: StateDir, run: DecommissionRun, fleet: operations.CompiledFleet | None, started: float
) -> None:
    changes: dict[str, list[str]] = {run.host: run.revoked_lines()}
    if run.removal is not None:
        changes[run.host] += [str(c) for c in run.removal.changes]
    for r in run.plans:
        if r.changes:
            changes[r.host] = [str(c) for c in r.changes]
    errors = [f"{r.host}: {r.error}" for r in run.plans if r.error]
    if run.removal is not None and run.removal.error:
        errors.append(f"{run.host}: {run.removal.error}")
    if run.exit_code == EXIT_FAILED:
        outcome = Outcome.FAILED
    elif run.plans.exit_code or (
        run.removal is not None and run.removal.outcome is Outcome.UNREACHABLE
    ):
        outcome = Outcome.UNREACHABLE
    else:
        outcome = Outcome.CHANGED
    plans = {} if fleet is None else fleet.plans
    revision = next((p.source_revision for p in plans.values()), "worktree")
    finished = time.time()
    AuditLog.in_state(state.root).record(
        AuditEntry(
            kind="decommission",
            revision=revision,
            started_at=finished - (time.monotonic() - started),
            finished_at=finished,
            outcome=outcome.value,
            hosts=(run.host, *plans),
            changes=changes,
            errors=tuple(errors),
            subject=f"decommission {run.host}",
        )
    )
