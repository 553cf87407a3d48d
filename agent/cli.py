"""vpnfleet-agent: the per-host daemon and its setup commands (thin: parse and render)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import click

from vpnfleet.protos.files import PUBLIC, write_atomically
from vpnfleet.protos.host_setup import UNIT_NAME
from vpnfleet.protos.identity import CONTROLLER_NAME
from vpnfleet.protos.versions import installed_version

from . import convert
from .cert_expiry import CertificateExpiry, certificate_expiries
from .config import (
    CONTROL_SOCKET,
    DEFAULT_LISTEN,
    DEFAULT_STATE_DIR,
    AgentConfig,
    ConfigError,
    load_config,
)
from .configure_cli import configure_cmd
from .control import ControlError, control_socket
from .ctl_cli import COMMANDS as CONTROL_COMMANDS
from .engine.host import (
    AgentRunning,
    DataPlaneChoice,
    HostEngine,
    data_plane_choice,
    decommission,
)
from .engine.keylog import KeyLog, KeyLogError
from .engine.translate import CredentialError, IkeCredentials
from .enroll import (
    CA_CERT,
    IKE_CERT,
    IKE_KEY,
    KEY_TYPES,
    TLS_CERT,
    CredentialFiles,
    EnrollError,
    init_agent,
    install_certs,
    recover_credentials,
)
from .hollow import HollowError, listening_line, start_hollow, stop_hollow
from .ike.admission import ResponderLimits
from .io.notify import Notifier
from .join import JoinError, join
from .metrics import MetricsError
from .plan import AgentPlan, IkeVersion, PlanRejected
from .server import ServerError, ServerTls, start_server, wait_for_signal
from .service import AgentService, WrongHost
from .sink import EventHub, PlanOnlySink, PlanSink, SaEventReport
from .store import PlanStore, StoreError
from .unit import DEFAULT_CONFIG, DEFAULT_VENV, AgentUnit, UnitError

log = logging.getLogger("vpnfleet.agent")

EXIT_BAD_PLAN = 2

data_plane_option = click.option(
    "--data-plane/--no-data-plane",
    "data_plane",
    default=None,
    help="Run the IKE/ESP engine (TUN device, UDP 500/4500, routes, kill switch); wins over "
    "data_plane in the config. Default: as the config says, else on where a TUN device can "
    "be opened inside a named network namespace.",
)
tun_option = click.option(
    "--tun",
    "tun_name",
    default="vpnfleet0",
    show_default=True,
    help="Name of the TUN device the data plane creates.",
)
keylog_option = click.option(
    "--keylog",
    "keylog_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="DEBUGGING ONLY: append the keys of every IKE and child SA to this file (created "
    "0600) as Wireshark UAT lines, like SSLKEYLOGFILE. Anyone who reads it can decrypt "
    "the tunnels. Off by default.",
)


metrics_option = click.option(
    "--metrics-listen",
    "metrics_listen",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port; "
    "overrides metrics_listen in the config). Default: off.",
)


def _ike_credentials(
    cert: Path | None, key: Path | None, state_dir: Path | None
) -> IkeCredentials | None:
    """The agent's IKE certificate and key: the files given, else ike.pem and ike.key in
    the state dir. None when there are none: PSK peers need none, and certificate peers
    then report what is missing."""
    if (cert is None) != (key is None):
        raise CredentialError("--ike-cert and --ike-key go together")
    if cert is None or key is None:
        if state_dir is None:
            return None
        cert, key = state_dir / IKE_CERT, state_dir / IKE_KEY
        if not cert.exists() or not key.exists():
            log.info("no IKE certificate in %s: certificate peers cannot come up", state_dir)
            return None
    try:
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    except OSError as exc:
        raise CredentialError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return IkeCredentials.from_pem(cert_pem, key_pem, f"{cert}, {key}")


def _credential_files(config: AgentConfig) -> CredentialFiles:
    """The agent's credential files, after finishing or dropping an install a crash
    interrupted (so that what is loaded next is one whole set)."""
    files = CredentialFiles.in_state_dir(
        config.state_dir, config.tls.cert, config.tls.key, config.tls.ca
    )
    if config.state_dir.is_dir():
        for line in recover_credentials(files):
            log.warning("%s: %s", config.name, line)
    return files


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    installed_version(), prog_name="vpnfleet-agent", message="%(prog)s %(version)s"
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Logging detail on stderr (secrets are never logged).",
)
def main(log_level: str) -> None:
    """The vpnfleet agent: serves the controller over mTLS and keeps the last good plan.

    \b
    First setup of a host:
      vpnfleet-agent init --name a1 --state-dir /var/lib/vpnfleet-agent
      (on the controller) vpnfleet ca sign a1 --tls-csr tls.csr --ike-csr ike.csr
      vpnfleet-agent install-certs --state-dir ... --tls-cert tls.pem --ike-cert ike.pem --ca ca.pem
      vpnfleet-agent serve --config /etc/vpnfleet/agent.yaml

    \b
    On the host, as root (the agent's control socket):
      vpnfleet-agent sas | initiate PEER | terminate PEER | log --follow
    """
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="The agent's config, for its firewall_mark and routing_table (default: theirs).",
)
@tun_option
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Where the agent recorded the forwarding sysctls it changed (default: the "
    "config's state_dir).",
)
def cleanup(config_path: Path | None, tun_name: str, state_dir: Path | None) -> None:
    """Decommission the data plane in this network namespace: remove the agent's policy
    rules, its routing table and its nftables table (the kill switch, which stays
    while the agent is stopped so that protected traffic never leaves in the clear),
    and put back the forwarding sysctls it turned on.
    Refuses while an agent runs. Exits 1 when something could not be removed."""
    try:
        config = load_config(config_path) if config_path else AgentConfig.defaults()
    except ConfigError as exc:
        _fail(str(exc))
        return
    state = state_dir or config.state_dir
    try:
        left = asyncio.run(
            decommission(tun_name, config.firewall_mark, config.routing_table, state)
        )
    except AgentRunning as exc:
        _fail(str(exc))
        return
    except OSError as exc:
        _fail(f"cannot read this host's rules and routes: {exc}")
        return
    for line in left:
        click.echo(f"not removed: {line}", err=True)
    if left:
        sys.exit(1)
    click.echo("removed the agent's rules, routes and nftables table")


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="YAML: name, listen, state_dir, tls {cert,key,ca}, controller_identity.",
)
@data_plane_option
@tun_option
@keylog_option
@metrics_option
def serve(
    config_path: Path,
    data_plane: bool | None,
    tun_name: str,
    keylog_path: Path | None,
    metrics_listen: str | None,
) -> None:
    """Serve the Agent API with the persisted plan in force, until SIGTERM or SIGINT.

    \b
    Config (YAML; relative paths are relative to the file):
      name: a1                        # plans for other host names are refused
      listen: 0.0.0.0:50051
      state_dir: /var/lib/vpnfleet-agent
      tls: {cert: tls.pem, key: tls.key, ca: ca.pem}   # default: these, in state_dir
      controller_identity: vpnfleet-controller
      keylog: keys.log                # debugging only, as --keylog (the option wins)
      ike_limits: {half_open_per_source: 16, half_open_per_peer: 128,
                   half_open_total: 256, preauth_message_bytes: 10000,
                   preauth_fragment_bytes: 1048576}   # the defaults

    Prints "vpnfleet-agent NAME listening on HOST:PORT" once serving.
    """
    try:
        config = load_config(config_path)
        files = _credential_files(config)
        tls = ServerTls.from_files(config.tls.cert, config.tls.key, config.tls.ca)
    except (ConfigError, ServerError, OSError) as exc:
        _fail(str(exc))
        return
    choice = _choice(data_plane, config, config_path)
    if choice.wanted and not choice.enabled:
        _fail(choice.reason)
    log.info("%s: %s", config.name, choice.reason)
    try:
        credentials = _ike_credentials(None, None, config.state_dir) if choice.enabled else None
    except CredentialError as exc:
        _fail(str(exc))
        return

    async def go() -> None:
        keylog = keylog_path or config.keylog
        async with _sink(
            choice, tun_name, keylog, credentials, config.ike_limits, config, config.state_dir
        ) as (sink, events):
            service = AgentService(
                config.name, PlanStore(config.state_dir), sink, events, credentials=files
            )
            await service.restore()
            listen = metrics_listen or config.metrics_listen
            certs = functools.partial(certificate_expiries, files)
            async with (
                _metrics(listen, service.host, sink, events, lambda: service.plan, certs),
                control_socket(config.control_socket, sink, events),
            ):
                await _serve(service, config.listen, tls, config.controller_identity)

    try:
        asyncio.run(go())
    except (ServerError, OSError, KeyLogError, MetricsError, ControlError) as exc:
        _fail(str(exc))


def _choice(flag: bool | None, config: AgentConfig | None, path: Path | None) -> DataPlaneChoice:
    """The data plane as the flag asks, else as the config's ``data_plane`` does, else
    by the default rule (:func:`data_plane_choice`)."""
    if flag is not None or config is None or config.data_plane is None:
        return data_plane_choice(flag)
    setting = f"data_plane: {str(config.data_plane).lower()} in {path}"
    return data_plane_choice(config.data_plane, setting)


@contextlib.asynccontextmanager
async def _sink(
    choice: DataPlaneChoice,
    tun_name: str,
    keylog_path: Path | None = None,
    credentials: IkeCredentials | None = None,
    limits: ResponderLimits | None = None,
    config: AgentConfig | None = None,
    state_dir: Path | None = None,
) -> AsyncIterator[tuple[PlanSink, EventHub]]:
    """The engine when the data plane is on, else the plan-only sink."""
    events = EventHub()
    if not choice.enabled:
        if keylog_path is not None:
            log.warning("key log %s not opened: no data plane, no keys", keylog_path)
        yield PlanOnlySink(reason=choice.reason), events
        return
    keylog = KeyLog.open(keylog_path) if keylog_path is not None else None
    try:
        settings = config or AgentConfig.defaults()
        async with HostEngine(
            events,
            tun_name=tun_name,
            keylog=keylog,
            ike_credentials=credentials,
            limits=limits,
            listen=settings.ike_listen,
            own_mark=settings.firewall_mark,
            tunnel_table=settings.routing_table,
            state_dir=state_dir,
        ) as engine:
            yield engine, events
    finally:
        if keylog is not None:
            keylog.close()


@contextlib.asynccontextmanager
async def _metrics(
    listen: str,
    host: str,
    sink: PlanSink,
    events: EventHub,
    plan: Callable[[], AgentPlan | None],
    certificates: Callable[[], Sequence[CertificateExpiry]] | None = None,
) -> AsyncIterator[None]:
    if not listen:
        yield
        return
    from .metrics_http import agent_metrics  # aiohttp: about 0.2 s, paid only when serving

    async with agent_metrics(listen, host, sink, events, plan, certificates) as endpoint:
        if endpoint is not None:
            click.echo(f"vpnfleet-agent {host} metrics on {endpoint.url}")
            sys.stdout.flush()
        yield


async def _serve(service: AgentService, listen: str, tls: ServerTls, identity: str) -> None:
    running = await start_server(service, listen, tls, identity)
    host = listen.rpartition(":")[0]
    serving = f"vpnfleet-agent {service.host} listening on {host}:{running.port}"
    click.echo(serving)
    sys.stdout.flush()
    # Type=notify: systemd counts the unit started (and `systemctl start` returns) only
    # now that gRPC accepts connections.
    notifier = Notifier()
    notifier.ready(serving)
    sig = await wait_for_signal()
    log.info("signal %d: stopping", sig)
    notifier.stopping(f"vpnfleet-agent {service.host} stopping (signal {sig})")
    await running.stop()


def _summary(plan: AgentPlan) -> list[str]:
    lines = [
        f"plan for {plan.host}: generation {plan.generation}, hash {plan.content_hash[:16]}, "
        f"from {plan.source_revision or 'unknown revision'}",
        f"  identity {plan.identity}; addresses {', '.join(map(str, plan.addresses)) or '-'}; "
        f"subnets {', '.join(map(str, plan.subnets)) or '-'}",
        f"  {len(plan.peers)} peers, {len(plan.spd)} SPD entries",
    ]
    for p in plan.peers:
        # IKEv2 goes without saying; an IKEv1 peer (and its mode) is named.
        version = "IKEv1 " if p.ike_version is IkeVersion.V1 else ""
        version += "aggressive " if p.ike_aggressive else ""
        lines.append(
            f"  peer {p.name}: {', '.join(map(str, p.remote_addresses)) or 'any'} {version}"
            f"{p.mode.name.lower()} {p.start_action.name.lower()} auth {p.auth.reference} "
            f"ike [{', '.join(x.text for x in p.ike_proposals)}] "
            f"esp [{', '.join(x.text for x in p.esp_proposals)}]"
        )
    for e in plan.spd:
        via = f" via {e.peer}" if e.peer else ""
        lines.append(f"  spd {e.name}: {e.action.name.lower()} {e.selector}{via}")
    return lines


@main.command()
@click.option(
    "--plan",
    "plan_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A .plan file written by `vpnfleet plan --emit`.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Persist the plan here as the last good plan (default: do not persist).",
)
@click.option(
    "--serve",
    "serve_config",
    metavar="CONFIG",
    type=click.Path(path_type=Path),
    help="After applying, serve the Agent API with this agent config (its state_dir wins).",
)
@click.option(
    "--ike-cert",
    type=click.Path(path_type=Path, dir_okay=False),
    help="This agent's IKE certificate (PEM) for certificate peers (default: ike.pem in "
    "the state dir).",
)
@click.option(
    "--ike-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The private key of --ike-cert (default: ike.key in the state dir).",
)
@data_plane_option
@tun_option
@keylog_option
@metrics_option
@click.option(
    "--status-interval",
    default=5.0,
    show_default=True,
    help="With the data plane and without --serve: seconds between status lines.",
)
@click.option(
    "--control-socket",
    "control_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Serve the control socket (`vpnfleet-agent sas` …) here. Default: the --serve "
    f"config's, else {CONTROL_SOCKET} in --state-dir, else none.",
)
def run(
    plan_path: Path,
    state_dir: Path | None,
    serve_config: Path | None,
    ike_cert: Path | None,
    ike_key: Path | None,
    data_plane: bool | None,
    tun_name: str,
    keylog_path: Path | None,
    metrics_listen: str | None,
    status_interval: float,
    control_path: Path | None,
) -> None:
    """Validate and run a plan file with no controller (like a swanctl.conf).

    Prints what the plan brings up. Exits 2 when the file is corrupt, truncated or
    refused (every reason is listed). With the data plane (see --data-plane) the
    tunnels are brought up and run until SIGTERM or SIGINT, printing SA events and a
    status line per peer; without it, exits 0 after the summary unless --serve is given.
    """
    try:
        data = plan_path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {plan_path}: {exc.strerror}", EXIT_BAD_PLAN)
        return
    try:
        msg = convert.parse_plan_message(data)
        plan = convert.plan_from_proto(msg, now=datetime.datetime.now(datetime.UTC))
    except PlanRejected as exc:
        click.echo(f"error: {plan_path} refused:", err=True)
        for reason in exc.reasons:
            click.echo(f"  - {reason}", err=True)
        sys.exit(EXIT_BAD_PLAN)
    for line in _summary(plan):
        click.echo(line)
    config = None
    files = None
    if serve_config is not None:
        try:
            config = load_config(serve_config)
            files = _credential_files(config)
            tls = ServerTls.from_files(config.tls.cert, config.tls.key, config.tls.ca)
        except (ConfigError, ServerError, OSError) as exc:
            _fail(str(exc))
            return
        if config.name != plan.host:
            _fail(f"{plan_path} is a plan for {plan.host!r}; {serve_config} names {config.name!r}")
        state_dir = config.state_dir
    choice = _choice(data_plane, config, serve_config)
    if choice.wanted and not choice.enabled:
        _fail(choice.reason)
    if state_dir is None and not choice.enabled:
        click.echo(f"validated (not persisted: no --state-dir; {choice.reason})")
        return
    try:
        credentials = _ike_credentials(ike_cert, ike_key, state_dir) if choice.enabled else None
    except CredentialError as exc:
        _fail(str(exc))
        return

    limits = config.ike_limits if config is not None else None
    if control_path is None and config is not None:
        control_path = config.control_socket
    elif control_path is None and state_dir is not None:
        control_path = state_dir / CONTROL_SOCKET

    async def apply_and_run() -> None:
        async with _sink(choice, tun_name, keylog_path, credentials, limits, config, state_dir) as (
            sink,
            events,
        ):
            service = None
            serving = config is not None and state_dir is not None
            # Subscribe before the plan goes in force: a tunnel may come up (a held
            # IKE_SA_INIT answered at once) before the metrics and control sockets open.
            queue = events.subscribe() if choice.enabled and not serving else None
            if state_dir is None:
                report = await sink.put_in_force(plan)
                click.echo(f"in force (not persisted: no --state-dir); {choice.reason}")
                if not report.complete:
                    click.echo(f"not all of it: {report.summary()}", err=True)
            else:
                service = AgentService(
                    plan.host, PlanStore(state_dir), sink, events, credentials=files
                )
                await service.restore()
                response = await service.apply(msg, dry_run=False)
                state = "persisted" if response.changed else "already in force"
                click.echo(f"{state} in {state_dir}; {choice.reason}")
            sys.stdout.flush()
            listen = metrics_listen or (config.metrics_listen if config else "")
            in_force = (lambda: service.plan) if service is not None else (lambda: plan)
            certs = functools.partial(certificate_expiries, files)
            async with (
                _metrics(listen, plan.host, sink, events, in_force, certs),
                control_socket(control_path, sink, events),
            ):
                if config is not None and service is not None:
                    await _serve(service, config.listen, tls, config.controller_identity)
                elif queue is not None:
                    await _watch(sink, events, queue, status_interval)

    try:
        asyncio.run(apply_and_run())
    except (
        WrongHost,
        StoreError,
        ServerError,
        OSError,
        KeyLogError,
        MetricsError,
        ControlError,
    ) as exc:
        _fail(str(exc))


async def _watch(
    sink: PlanSink, events: EventHub, queue: asyncio.Queue[SaEventReport], interval: float
) -> None:
    """Print SA events as they come (``queue``, subscribed to ``events`` before the plan
    went in force) and a status line per peer every ``interval`` seconds, until SIGTERM
    or SIGINT."""

    async def printer() -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time()
        while True:
            try:
                timeout = max(0.0, next_status - loop.time())
                event = await asyncio.wait_for(queue.get(), timeout)
                click.echo(f"event {event.kind} {event.peer or '-'}: {event.detail}")
            except TimeoutError:
                for line in status_lines(sink):
                    click.echo(line)
                next_status = loop.time() + interval
            sys.stdout.flush()

    task = asyncio.create_task(printer())
    try:
        sig = await wait_for_signal()
        log.info("signal %d: stopping", sig)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        events.unsubscribe(queue)


def status_lines(sink: PlanSink) -> list[str]:
    lines = [f"status: {sink.peers_up()} peers up"]
    admission = sink.admission()
    if admission is not None:
        refused = " ".join(f"{a.name}={a.refused}" for a in admission.limits)
        lines.append(
            f"  admission: half_open={admission.half_open} "
            f"preauth_fragment_bytes={admission.preauth_fragment_bytes} "
            f"cookies_sent={admission.cookies_sent} refused: {refused}"
        )
    for problem in sink.problems():
        lines.append(f"  problem {problem.kind.value} {problem.subject}: {problem.message}")
    for sa in sink.ike_sas():
        line = (
            f"  sa {sa.peer}: {sa.state} ike {sa.spi_i:016x}_i {sa.spi_r:016x}_r "
            f"{sa.proposal or '-'} remote {sa.remote_address or '-'}"
        )
        if sa.last_error:
            line += f" error {sa.last_error!r}"
        lines.append(line)
        for c in sa.children:
            lines.append(
                f"    child {c.name}: {c.state} in {c.spi_in:08x} out {c.spi_out:08x} "
                f"packets_in={c.packets_in} packets_out={c.packets_out} "
                f"bytes_in={c.bytes_in} bytes_out={c.bytes_out} "
                f"integrity_failures={c.integrity_failures} replay_drops={c.replay_drops}"
            )
    return lines


@main.command()
@click.option("--name", required=True, help="This host's name, as in the inventory.")
@click.option("--state-dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--ike-key-type",
    type=click.Choice(KEY_TYPES),
    default="ecdsa-p256",
    show_default=True,
    help="Key type for IKE authentication (TLS always uses ECDSA P-256).",
)
@click.option("--force", is_flag=True, help="Replace existing keys.")
def init(name: str, state_dir: Path, ike_key_type: str, force: bool) -> None:
    """Make this host's key pairs (0600) and certificate requests; keys never leave it."""
    try:
        files = init_agent(state_dir, name, ike_key_type, force)
    except EnrollError as exc:
        _fail(str(exc))
        return
    except OSError as exc:
        _fail(f"cannot write keys in {state_dir}: {exc.strerror or exc}")
        return
    click.echo(f"keys: {files.tls_key}, {files.ike_key} (mode 0600, stay on this host)")
    click.echo(f"requests: {files.tls_csr}, {files.ike_csr}")
    click.echo(
        f"next: copy the requests to the controller, run `vpnfleet ca sign {name} "
        "--tls-csr tls.csr --ike-csr ike.csr`, copy tls.pem, ike.pem and ca.pem back and "
        "run `vpnfleet-agent install-certs`"
    )


@main.command("install-certs")
@click.option("--state-dir", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--tls-cert", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--ike-cert", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--ca", "ca_cert", required=True, type=click.Path(path_type=Path, dir_okay=False))
def install_certs_cmd(state_dir: Path, tls_cert: Path, ike_cert: Path, ca_cert: Path) -> None:
    """Check the signed certificates against this host's keys and the CA, then install."""
    try:
        pems = [path.read_bytes() for path in (tls_cert, ike_cert, ca_cert)]
    except OSError as exc:
        _fail(f"cannot read {exc.filename}: {exc.strerror}")
        return
    try:
        install_certs(state_dir, *pems)
    except OSError as exc:
        _fail(f"cannot install the certificates in {state_dir}: {exc.strerror or exc}")
    except EnrollError as exc:
        _fail(str(exc))
    click.echo(f"installed {TLS_CERT}, {IKE_CERT} and {CA_CERT} in {state_dir}")


@main.command("join")
@click.option(
    "--controller",
    required=True,
    metavar="HOST:PORT",
    help="The controller's join service (`vpnfleet join-server --listen`).",
)
@click.option(
    "--token",
    required=True,
    envvar="VPNFLEET_JOIN_TOKEN",
    help="The token of `vpnfleet token create` (or $VPNFLEET_JOIN_TOKEN, kept out of ps).",
)
@click.option(
    "--name",
    default=socket.gethostname,
    show_default="this machine's host name",
    help="This host's name, as in the inventory and the token.",
)
@click.option(
    "--state-dir",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
)
@click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the agent configuration.",
)
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where the agent will serve the controller (written into the configuration).",
)
@click.option(
    "--ike-key-type",
    type=click.Choice(KEY_TYPES),
    default="ecdsa-p256",
    show_default=True,
)
@click.option(
    "--unit-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help=f"Also write {UNIT_NAME} here (e.g. /etc/systemd/system), running the "
    "vpnfleet-agent of this installation.",
)
@click.option("--force", is_flag=True, help="Replace keys and configuration already there.")
def join_cmd(
    controller: str,
    token: str,
    name: str,
    state_dir: Path,
    config_path: Path,
    listen: str,
    ike_key_type: str,
    unit_dir: Path | None,
    force: bool,
) -> None:
    """Join the fleet with a join token: make this host's keys, get its certificates
    from the controller over TLS pinned to the CA the token names, write the config.

    Private keys never leave the host. A refused join changes nothing here.
    """
    try:
        joined = join(controller, token, name, state_dir, config_path, listen, ike_key_type, force)
    except JoinError as exc:
        _fail(str(exc))
        return
    except OSError as exc:
        _fail(f"cannot write {exc.filename or state_dir}: {exc.strerror or exc}")
        return
    click.echo(f"joined as {joined.host}: keys and certificates in {joined.state_dir}")
    click.echo(f"configuration: {joined.config}")
    if unit_dir is None:
        click.echo(
            f"next: vpnfleet-agent unit --config {joined.config} --write /etc/systemd/system "
            f"&& systemctl enable --now {UNIT_NAME}"
        )
        return
    _write_unit(Path(sys.prefix), joined.config, unit_dir)


@main.command()
@click.option(
    "--venv",
    default=DEFAULT_VENV,
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The virtual environment the agent is installed in (VENV/bin/vpnfleet-agent; "
    "`vpnfleet bootstrap --prefix P` makes P/venv).",
)
@click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The agent configuration the unit serves; read when it exists (its state_dir "
    "and keylog become writable).",
)
@click.option(
    "--write",
    "write_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"Write {UNIT_NAME} into this directory (e.g. /etc/systemd/system) instead of "
    "printing it.",
)
def unit(venv: Path, config_path: Path, write_dir: Path | None) -> None:
    """Print (or --write) the hardened systemd unit that runs this agent."""
    if write_dir is None:
        click.echo(_unit_text(venv, config_path), nl=False)
        return
    _write_unit(venv, config_path, write_dir)


def _unit_text(venv: Path, config_path: Path) -> str:
    try:
        config = load_config(config_path) if config_path.exists() else None
        return AgentUnit(venv, config_path, config).render()
    except (ConfigError, UnitError) as exc:
        _fail(str(exc))
        raise


def _write_unit(venv: Path, config_path: Path, write_dir: Path) -> None:
    text = _unit_text(venv, config_path)
    target = write_dir / UNIT_NAME
    try:
        write_atomically(target, text.encode(), PUBLIC)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror or exc}")
    click.echo(f"wrote {target}")
    click.echo(f"next: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")


@main.command()
@click.option("--count", default=10, show_default=True, help="Number of hollow agents.")
@click.option(
    "--base-port",
    default=0,
    show_default=True,
    help="First port; agent i listens on base+i (0: any free ports, listed on stdout).",
)
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--state-dir",
    default=Path("hollow-state"),
    type=click.Path(path_type=Path, file_okay=False),
    show_default=True,
    help="One directory per hollow agent (keys, certificates, persisted plan).",
)
@click.option(
    "--ca-state",
    type=click.Path(path_type=Path, file_okay=False),
    help="Controller state dir whose fleet CA signs agents that have no certificate yet.",
)
@click.option("--prefix", default="hollow-", show_default=True, help="Agent name prefix.")
@click.option(
    "--controller-identity",
    default=CONTROLLER_NAME,
    show_default=True,
    help="CN/SAN the caller's certificate must carry.",
)
def hollow(
    count: int,
    base_port: int,
    listen_host: str,
    state_dir: Path,
    ca_state: Path | None,
    prefix: str,
    controller_identity: str,
) -> None:
    """Run COUNT real agent endpoints (mTLS, validation, persistence; no data plane) in
    one process, for scale tests. Prints one JSON line when all are listening:
    {"listening": N, "host": ..., "agents": {name: port}}."""

    async def go() -> None:
        agents = await start_hollow(
            count, base_port, state_dir, ca_state, listen_host, prefix, controller_identity
        )
        try:
            click.echo(listening_line(agents, listen_host))
            sys.stdout.flush()
            await wait_for_signal()
        finally:
            await stop_hollow(agents)

    try:
        asyncio.run(go())
    except (HollowError, ServerError, EnrollError) as exc:
        _fail(str(exc))


for _command in CONTROL_COMMANDS:
    main.add_command(_command)
main.add_command(configure_cmd)


if __name__ == "__main__":
    main()
