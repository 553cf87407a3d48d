"""``vpnfleet-agent sas``, ``initiate``, ``terminate`` and ``log``: ask the agent running
on this host over its control socket (see :mod:`.control`), as swanctl asks charon."""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .config import CONTROL_SOCKET, DEFAULT_STATE_DIR, ConfigError, load_config
from .control import (
    FRAME_HEADER,
    MAX_ANSWER,
    PROTOCOL_VERSION,
    ControlCommand,
    encode_frame,
    unix_address,
)
from .plan import IkeVersion

SOCKET_ENV = "VPNFLEET_AGENT_SOCKET"
ANSWER_TIMEOUT = 30.0
"""Seconds a command waits for the agent's answer (``log --follow`` waits for events
as long as it runs)."""
DEFAULT_CONTROL_SOCKET = DEFAULT_STATE_DIR / CONTROL_SOCKET
"""Where an agent with the default state dir serves its control socket."""


class ClientError(Exception):
    """The agent cannot be asked, or refused; the message says what to do."""


class ControlClient:
    """One connection to the control socket (blocking: one command, then exit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(ANSWER_TIMEOUT)
        try:
            with unix_address(path) as address:
                self._sock.connect(address)
        except PermissionError:
            self._sock.close()
            raise ClientError(
                f"is vpnfleet-agent running? socket {path}: permission denied — run as root"
            ) from None
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            what = "no such socket" if isinstance(exc, FileNotFoundError) else "nobody serves it"
            raise ClientError(
                f"is vpnfleet-agent running? socket {path}: {what} (give the agent's socket "
                f"with --socket, --config or {SOCKET_ENV})"
            ) from None
        except OSError as exc:
            self._sock.close()
            raise ClientError(f"is vpnfleet-agent running? socket {path}: {exc.strerror}") from None

    def close(self) -> None:
        self._sock.close()

    def send(self, command: ControlCommand, **fields: Any) -> None:
        request = {"version": PROTOCOL_VERSION, "command": command.value, **fields}
        try:
            self._sock.sendall(encode_frame(request))
        except OSError as exc:
            raise ClientError(f"cannot ask the agent on {self.path}: {exc}") from None

    def stream(self) -> None:
        """Wait for frames as long as it takes (``log --follow``)."""
        self._sock.settimeout(None)

    def receive(self) -> dict[str, Any]:
        (length,) = FRAME_HEADER.unpack(self._read(FRAME_HEADER.size))
        if length > MAX_ANSWER:
            raise ClientError(f"the agent's answer of {length} bytes is too long")
        try:
            message = json.loads(self._read(length))
        except ValueError as exc:
            raise ClientError(f"the agent's answer is not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ClientError("the agent's answer is not a JSON object")
        if not message.get("ok"):
            raise ClientError(f"the agent refused: {message.get('error', 'no reason given')}")
        return message

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            try:
                chunk = self._sock.recv(size - len(data))
            except TimeoutError:
                raise ClientError(
                    f"the agent did not answer within {ANSWER_TIMEOUT:g} s on {self.path}"
                ) from None
            except OSError as exc:
                raise ClientError(f"reading from the agent on {self.path}: {exc}") from None
            if not chunk:
                raise ClientError(f"the agent closed the control socket {self.path}")
            data += chunk
        return data

    def ask(self, command: ControlCommand, **fields: Any) -> Any:
        self.send(command, **fields)
        return self.receive()["result"]


def socket_path(socket_option: Path | None, config_path: Path | None) -> Path:
    """The control socket: --socket, else the agent config's, else $VPNFLEET_AGENT_SOCKET,
    else the default."""
    if socket_option is not None:
        return socket_option
    if config_path is not None:
        try:
            return load_config(config_path).control_socket
        except ConfigError as exc:
            raise ClientError(str(exc)) from None
    env = os.environ.get(SOCKET_ENV)
    return Path(env) if env else DEFAULT_CONTROL_SOCKET


def _ask(
    socket_option: Path | None, config_path: Path | None, command: ControlCommand, **fields: Any
) -> Any:
    client = ControlClient(socket_path(socket_option, config_path))
    try:
        return client.ask(command, **fields)
    finally:
        client.close()


# -- rendering -----------------------------------------------------------------------------


def _ago(now: float, when: float) -> str:
    return _span(now - when) + " ago" if when else "-"


def _in(now: float, when: float) -> str:
    return "in " + _span(when - now) if when > now else "-"


def _span(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def sas_lines(answer: dict[str, Any]) -> Iterator[str]:
    """swanctl --list-sas's layout: an IKE SA, then its child SAs indented."""
    now = float(answer["now"])
    for ike in answer["ike_sas"]:
        ours_i = "*" if ike["initiator"] else ""
        ours_r = "" if ike["initiator"] else "*"
        version = "IKEv1" if ike.get("ike_version") == IkeVersion.V1.value else "IKEv2"
        head = f"{ike['peer']}: {ike['state'].upper()}, {version}"
        if int(ike["spi_i"], 16):
            head += f", {ike['spi_i']}_i{ours_i} {ike['spi_r']}_r{ours_r}"
        yield head
        yield f"  local  {ike['local_address'] or '-'}"
        nat = f" (NAT: {ike['nat']})" if ike["nat"] not in ("-", "none") else ""
        yield f"  remote {ike['remote_address'] or '-'}{nat}"
        if ike["proposal"]:
            yield f"  {ike['proposal']}"
        if ike["established_at"]:
            yield (
                f"  established {_ago(now, ike['established_at'])}, "
                f"rekeying {_in(now, ike['next_rekey_at'])}"
            )
        if ike["last_error"]:
            yield f"  last error: {ike['last_error']}"
        for child in ike["children"]:
            yield (
                f"  {child['name']}: {child['state'].upper()}, {child['mode'].upper()}, "
                f"SPIs: {child['spi_in']}_i {child['spi_out']}_o"
            )
            yield f"    {child['proposal']}"
            yield (
                f"    in  {child['spi_in']}, {child['bytes_in']} bytes, "
                f"{child['packets_in']} packets"
            )
            yield (
                f"    out {child['spi_out']}, {child['bytes_out']} bytes, "
                f"{child['packets_out']} packets"
            )
            yield (
                f"    established {_ago(now, child['established_at'])}, "
                f"rekeying {_in(now, child['next_rekey_at'])}"
            )
            yield (
                f"    drops: replay {child['replay_drops']}, integrity "
                f"{child['integrity_failures']}, policy {child['policy_drops']}"
            )
            yield f"    local  {' '.join(child['local_ts'])}"
            yield f"    remote {' '.join(child['remote_ts'])}"


def event_line(event: dict[str, Any]) -> str:
    when = datetime.datetime.fromtimestamp(float(event["time"]), datetime.UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return f"{stamp} {event['kind']} {event['peer'] or '-'}: {event['detail']}"


# -- commands ---------------------------------------------------------------------------------

socket_option = click.option(
    "--socket",
    "socket_option",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"The agent's control socket (default: the config's control_socket, else "
    f"${SOCKET_ENV}, else {DEFAULT_CONTROL_SOCKET}).",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The agent's config file, to find its control socket.",
)
output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.command()
@socket_option
@config_option
@output_option
def sas(socket_option: Path | None, config_path: Path | None, output: str) -> None:
    """List the IKE SAs and child SAs of the running agent (as swanctl --list-sas): SPIs
    in hex, algorithms, counters, rekey times."""
    try:
        answer = _ask(socket_option, config_path, ControlCommand.SAS)
    except ClientError as exc:
        _fail(exc)
        return
    if output == "json":
        click.echo(json.dumps(answer["ike_sas"], indent=2))
        return
    for line in sas_lines(answer):
        click.echo(line)


@click.command()
@click.argument("peer")
@socket_option
@config_option
def initiate(peer: str, socket_option: Path | None, config_path: Path | None) -> None:
    """Bring PEER's IKE SA and child SA up now (as swanctl --initiate); lifts a terminate."""
    try:
        click.echo(_ask(socket_option, config_path, ControlCommand.INITIATE, peer=peer))
    except ClientError as exc:
        _fail(exc)


@click.command()
@click.argument("peer")
@socket_option
@config_option
def terminate(peer: str, socket_option: Path | None, config_path: Path | None) -> None:
    """Delete PEER's IKE SA and child SA now (as swanctl --terminate); the agent does not
    start them again until `initiate PEER` (the peer may, if it is the initiator)."""
    try:
        click.echo(_ask(socket_option, config_path, ControlCommand.TERMINATE, peer=peer))
    except ClientError as exc:
        _fail(exc)


@click.command("log")
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they come.")
@socket_option
@config_option
@output_option
def log_cmd(
    follow: bool, socket_option: Path | None, config_path: Path | None, output: str
) -> None:
    """Print the agent's recent events (SAs up, down, rekeyed, plans applied); with
    --follow, keep printing them until interrupted."""

    def show(event: dict[str, Any]) -> None:
        click.echo(json.dumps(event) if output == "json" else event_line(event))
        sys.stdout.flush()

    try:
        client = ControlClient(socket_path(socket_option, config_path))
        try:
            client.send(ControlCommand.LOG, follow=follow)
            for event in client.receive()["result"]["events"]:
                show(event)
            client.stream()
            while follow:
                show(client.receive()["event"])
        finally:
            client.close()
    except ClientError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass


COMMANDS = (sas, initiate, terminate, log_cmd)
"""Registered on the vpnfleet-agent group."""
