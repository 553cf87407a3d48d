"""The agent's control socket (agent/control.py) and the commands that use it
(agent/ctl_cli.py): the framed JSON protocol, its errors, and the socket's safety."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vpnfleet.agent.cli import main
from vpnfleet.agent.control import (
    MAX_REQUEST,
    ControlError,
    ControlServer,
    control_socket,
    encode_frame,
)
from vpnfleet.agent.sink import (
    ChildSaReport,
    EventHub,
    IkeSaReport,
    NatState,
    PeerControlError,
    PlanOnlySink,
    SaEventReport,
)

SA = IkeSaReport(
    peer="b",
    state="established",
    spi_i=0x00A1B2C3D4E5F607,
    spi_r=0x1122334455667788,
    proposal="aes256gcm16-prfsha384-x25519",
    local_address="192.0.2.1",
    remote_address="192.0.2.2:500",
    initiator=True,
    nat=NatState.NONE,
    established_at=1000.0,
    next_rekey_at=5000.0,
    children=(
        ChildSaReport(
            name="b",
            state="installed",
            spi_in=0x0000C0DE,
            spi_out=0xC1234567,
            proposal="aes256gcm16",
            mode="tunnel",
            local_ts=("10.1.0.0/24",),
            remote_ts=("10.2.0.0/24",),
            established_at=1000.0,
            next_rekey_at=4000.0,
            bytes_in=840,
            bytes_out=420,
            packets_in=10,
            packets_out=5,
        ),
    ),
)


@dataclass(slots=True)
class EngineLike(PlanOnlySink):
    """A sink with SAs that takes initiate and terminate, as the engine does."""

    calls: list[str] = field(default_factory=list)

    def ike_sas(self) -> Sequence[IkeSaReport]:
        return (SA,)

    def initiate_peer(self, name: str) -> str:
        if name != "b":
            raise PeerControlError(f"no peer {name!r} in the plan in force (peers: b)")
        self.calls.append(f"initiate {name}")
        return f"{name}: initiating"

    def terminate_peer(self, name: str) -> str:
        self.calls.append(f"terminate {name}")
        return f"{name}: deleting 1 IKE SA(s); not started again until initiate"


async def _ask(path: Path, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(raw)
    await writer.drain()
    return reader, writer


async def _frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    answer = json.loads(await reader.readexactly(length))
    assert isinstance(answer, dict)
    return answer


def _raw(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


SAS = encode_frame({"version": 1, "command": "sas"})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, EngineLike, EventHub]]:
    sink, events = EngineLike(), EventHub()
    path = tmp_path / "run" / "agent.sock"
    async with control_socket(path, sink, events):
        yield path, sink, events
    assert not path.exists()  # removed when the agent stops


async def test_sas_carries_spis_as_hex_and_the_counters(
    served: tuple[Path, EngineLike, EventHub],
) -> None:
    path, _, _ = served
    reader, writer = await _ask(path, SAS)
    answer = await _frame(reader)
    writer.close()
    assert answer["version"] == 1 and answer["ok"] is True
    (ike,) = answer["result"]["ike_sas"]
    assert (ike["spi_i"], ike["spi_r"]) == ("00a1b2c3d4e5f607", "1122334455667788")
    (child,) = ike["children"]
    assert (child["spi_in"], child["spi_out"]) == ("0000c0de", "c1234567")
    assert (child["bytes_in"], child["packets_out"], child["next_rekey_at"]) == (840, 5, 4000.0)
    assert child["local_ts"] == ["10.1.0.0/24"] and ike["nat"] == "none"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "request is not JSON"),
        (b"\xff\xfe", "request is not JSON"),
        (b"[1, 2]", "request must be a JSON object, not list"),
        (b'{"version": 2, "command": "sas"}', "protocol version 2 not supported"),
        (b'{"command": "sas"}', "protocol version None not supported"),
        (
            b'{"version": 1, "command": "list-sas"}',
            "unknown command 'list-sas'; known: sas, initiate, terminate, log",
        ),
        (b'{"version": 1, "command": "initiate"}', "initiate needs a 'peer'"),
        (b'{"version": 1, "command": "terminate", "peer": 7}', "'peer' must be a string"),
        (b'{"version": 1, "command": "log", "follow": "yes"}', "'follow' must be true or false"),
    ],
)
async def test_a_bad_request_gets_a_clear_error_and_the_connection_serves_on(
    served: tuple[Path, EngineLike, EventHub], body: bytes, error: str
) -> None:
    path, sink, _ = served
    reader, writer = await _ask(path, _raw(body))
    answer = await _frame(reader)
    assert answer["ok"] is False and answer["error"].startswith(error), answer
    writer.write(SAS)  # the same connection still answers
    assert (await _frame(reader))["ok"] is True
    writer.close()
    assert sink.calls == []


async def test_an_oversized_request_is_refused_and_the_agent_serves_on(
    served: tuple[Path, EngineLike, EventHub],
) -> None:
    path, _, _ = served
    reader, writer = await _ask(path, struct.pack("!I", MAX_REQUEST + 1) + b"{")
    answer = await _frame(reader)
    assert answer["error"] == (
        f"request of {MAX_REQUEST + 1} bytes is longer than the {MAX_REQUEST} allowed"
    )
    assert await reader.read() == b""  # that connection is closed: its rest is never read
    writer.close()
    reader, writer = await _ask(path, SAS)  # a new one is served
    assert (await _frame(reader))["ok"] is True
    writer.close()


async def test_a_request_cut_short_leaves_the_agent_serving(
    served: tuple[Path, EngineLike, EventHub],
) -> None:
    path, _, _ = served
    _, writer = await _ask(path, struct.pack("!I", 100) + b'{"version"')
    writer.close()
    await writer.wait_closed()
    reader, writer = await _ask(path, SAS)
    assert (await _frame(reader))["ok"] is True
    writer.close()


async def test_initiate_and_terminate_reach_the_engine(
    served: tuple[Path, EngineLike, EventHub],
) -> None:
    path, sink, _ = served
    runner = CliRunner()
    out = await asyncio.to_thread(runner.invoke, main, ["terminate", "b", "--socket", str(path)])
    assert (out.exit_code, out.output) == (
        0,
        "b: deleting 1 IKE SA(s); not started again until initiate\n",
    )
    out = await asyncio.to_thread(runner.invoke, main, ["initiate", "b", "--socket", str(path)])
    assert (out.exit_code, out.output) == (0, "b: initiating\n")
    out = await asyncio.to_thread(runner.invoke, main, ["initiate", "c", "--socket", str(path)])
    assert out.exit_code == 1
    assert "the agent refused: no peer 'c' in the plan in force (peers: b)" in out.output
    assert sink.calls == ["terminate b", "initiate b"]


async def test_a_plan_only_agent_says_it_has_no_sas_to_control(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    async with control_socket(path, PlanOnlySink(), EventHub()):
        reader, writer = await _ask(
            path, encode_frame({"version": 1, "command": "initiate", "peer": "b"})
        )
        answer = await _frame(reader)
        writer.close()
    assert answer["error"] == (
        "this agent runs no data plane: there are no SAs to initiate or terminate"
    )


async def test_sas_text_and_json(served: tuple[Path, EngineLike, EventHub]) -> None:
    path, _, _ = served
    runner = CliRunner()
    out = await asyncio.to_thread(runner.invoke, main, ["sas", "--socket", str(path)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "b: ESTABLISHED, IKEv2, 00a1b2c3d4e5f607_i* 1122334455667788_r"
    assert "  aes256gcm16-prfsha384-x25519" in lines
    assert "  b: INSTALLED, TUNNEL, SPIs: 0000c0de_i c1234567_o" in lines
    assert "    in  0000c0de, 840 bytes, 10 packets" in lines
    assert "    remote 10.2.0.0/24" in lines
    out = await asyncio.to_thread(runner.invoke, main, ["sas", "-o", "json", "--socket", str(path)])
    (ike,) = json.loads(out.output)
    assert ike["children"][0]["spi_out"] == "c1234567"


async def test_log_follow_streams_the_events(served: tuple[Path, EngineLike, EventHub]) -> None:
    path, _, events = served
    events.publish(SaEventReport("ike_up", "b", "before the request", 1.0))
    request = encode_frame({"version": 1, "command": "log", "follow": True})
    reader, writer = await _ask(path, request)
    recent = await _frame(reader)
    assert [e["detail"] for e in recent["result"]["events"]] == ["before the request"]
    events.publish(SaEventReport("ike_down", "b", "deleted by us", 2.0))
    answer = await _frame(reader)
    assert answer["event"] == {
        "time": 2.0,
        "kind": "ike_down",
        "peer": "b",
        "detail": "deleted by us",
    }
    writer.close()
    await writer.wait_closed()
    for _ in range(100):  # the stream ends with its client: its queue goes
        if events.watchers == 1:
            break
        await asyncio.sleep(0.01)
    assert events.watchers == 1  # the server's own history only


def test_the_client_says_when_no_agent_serves_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    out = CliRunner().invoke(main, ["sas", "--socket", str(path)])
    assert out.exit_code == 1
    assert out.output.startswith(f"error: is vpnfleet-agent running? socket {path}: no such socket")


async def test_a_caller_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    server = ControlServer(PlanOnlySink(), EventHub(), allowed_uids=frozenset({4242}))
    unix = await asyncio.start_unix_server(server.handle, path=str(path))
    try:
        reader, writer = await _ask(path, SAS)
        assert (await _frame(reader))["error"] == "permission denied: run as root"
        writer.close()
    finally:
        unix.close()
        server.close()


async def test_the_socket_is_0600_and_a_long_path_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = deep / "agent.sock"
    assert len(str(path)) > 108
    async with control_socket(path, EngineLike(), EventHub()):
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert stat.S_IMODE(deep.stat().st_mode) == 0o700
        out = await asyncio.to_thread(CliRunner().invoke, main, ["sas", "--socket", str(path)])
        assert out.exit_code == 0 and out.output.startswith("b: ESTABLISHED"), out.output


async def test_a_symlink_or_another_file_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep")
    link = tmp_path / "link.sock"
    link.symlink_to(target)
    with pytest.raises(ControlError, match="is a symlink; refusing to follow it"):
        async with control_socket(link, PlanOnlySink(), EventHub()):
            pass
    with pytest.raises(ControlError, match="exists and is not a socket; remove it"):
        async with control_socket(target, PlanOnlySink(), EventHub()):
            pass
    assert target.read_text() == "keep" and link.is_symlink()


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # what an agent killed with SIGKILL leaves
    async with control_socket(path, EngineLike(), EventHub()):
        reader, writer = await _ask(path, SAS)
        assert (await _frame(reader))["ok"] is True
        writer.close()
        with pytest.raises(ControlError, match="is served by another running agent"):
            async with control_socket(path, PlanOnlySink(), EventHub()):
                pass
        assert path.exists()
    assert not os.path.lexists(path)


async def test_the_commands_find_the_socket_in_the_agent_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("name: a1\nstate_dir: state\ncontrol_socket: ctl/a1.sock\n")
    async with control_socket(tmp_path / "ctl" / "a1.sock", EngineLike(), EventHub()):
        out = await asyncio.to_thread(
            CliRunner().invoke, main, ["terminate", "b", "--config", str(config)]
        )
    assert (out.exit_code, out.output) == (
        0,
        "b: deleting 1 IKE SA(s); not started again until initiate\n",
    )


async def test_an_answer_that_is_not_json_is_told(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(_raw(b"<html>"))
        await writer.drain()
        writer.close()

    unix = await asyncio.start_unix_server(garbled, path=str(path))
    try:
        out = await asyncio.to_thread(CliRunner().invoke, main, ["sas", "--socket", str(path)])
    finally:
        unix.close()
    assert out.exit_code == 1
    assert out.output.startswith("error: the agent's answer is not JSON: ")
