"""Fail closed: two real agents (`vpnfleet-agent run --plan`) in two network namespaces,
each with a default route over the underlay (the way protected traffic would leave in
the clear). tcpdump watches the underlay while ping crosses the tunnel without a pause;
one agent is stopped with SIGTERM (what `systemctl stop` and an upgrade send), its
routing rules are then taken away by hand so that only the kill switch is left, and it
is started again: not one cleartext packet of the protected flow reaches the underlay,
and the tunnel comes back. `vpnfleet-agent cleanup` then leaves the namespace's
ruleset, rules and routes byte-identical to what they were before the first start.
Every namespace, process and file is removed at the end, also on failure.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent_harness import make_fleet
from tests.support.bumped import Venv
from tests.support.engine_lab import AGENT, SITE, UNDERLAY, Lab, built, sh

pytestmark = pytest.mark.netns

WAIT = 30.0
CLEARTEXT = (f"IP {SITE['a'][1]} > {SITE['b'][1]}: ", f"IP {SITE['b'][1]} > {SITE['a'][1]}: ")
"""How tcpdump shows a packet of the protected flow in the clear, either way."""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with built(Lab(tmp_path), "tcpdump", "nft") as lab:
        for host, other in (("a", "b"), ("b", "a")):
            sh(f"ip -n {lab.namespaces[host]} route add default via {UNDERLAY[other]}")
        yield lab


def dad_done(netns: str) -> bool:
    return not sh(f"ip -n {netns} -6 addr show tentative").stdout


def host_state(netns: str) -> str:
    """What the agent may change in ``netns``, as the operator reads it."""
    parts = []
    for command in (
        "nft list ruleset",
        "ip rule",
        "ip -6 rule",
        "ip route show table all",
        "ip -6 route show table all",
    ):
        parts.append(f"$ {command}\n" + sh(f"ip netns exec {netns} {command}").stdout)
    return "\n".join(parts)


def wait_until(what: str, ready: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace")


@contextmanager
def background(name: str, directory: Path, argv: list[str]) -> Iterator[Process]:
    out, err = directory / f"{name}.out", directory / f"{name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(argv, stdout=o, stderr=e, start_new_session=True)
    try:
        yield Process(proc, out, err)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def replies(ping: Process) -> int:
    return len(re.findall(r"bytes from ", ping.text()))


def lines(ping: Process) -> int:
    return ping.text().count("\n") + ping.err.read_text(errors="replace").count("\n")


def cleanup(netns: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *AGENT, "cleanup"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sigterm_restart_and_cleanup_never_leak_the_protected_flow(
    lab: Lab, tmp_path: Path
) -> None:
    a = lab.namespaces["a"]
    for ns in lab.namespaces.values():
        # IPv6 link-local addresses (and their local routes) come once DAD is done.
        wait_until("IPv6 DAD", functools.partial(dad_done, ns))
    before = {host: host_state(ns) for host, ns in lab.namespaces.items()}
    underlay = f"vfa{lab.tag}"
    capture = ["ip", "netns", "exec", a, "tcpdump", "-i", underlay, "-n", "-l", "-U"]
    with background("tcpdump", tmp_path, capture) as dump:
        wait_until("tcpdump", lambda: "listening on" in dump.err.read_text())
        lab.start("b")
        lab.start("a")
        lab.wait_for("a", r"event child_up b")
        source, target = SITE["a"][1], SITE["b"][1]
        pinging = ["ip", "netns", "exec", a, "ping", "-n", "-O", "-i", "0.05", "-I", source, target]
        with background("ping", tmp_path, pinging) as ping:
            wait_until("replies through the tunnel", lambda: replies(ping) >= 10)
            kill_switch = sh(f"ip netns exec {a} nft list table inet vpnfleet_agent").stdout
            assert f"ip daddr {SITE['b'][0]}" in kill_switch and "drop" in kill_switch

            # Stopped as systemd stops it: the rules, fallbacks and kill switch stay.
            assert lab.kill("a", signal.SIGTERM) == 0
            seen = lines(ping)
            wait_until("pings sent while stopped", lambda: lines(ping) >= seen + 40)
            assert sh(f"ip netns exec {a} nft list table inet vpnfleet_agent").stdout == (
                kill_switch
            )
            # Routing alone no longer holds the traffic in: only the kill switch does.
            rule = f"to {SITE['b'][0]} lookup 4500"
            assert rule in sh(f"ip -n {a} rule").stdout
            sh(f"ip -n {a} rule del {rule}")
            route = sh(f"ip -n {a} route get {target} from {source}").stdout
            assert f"via {UNDERLAY['b']} dev {underlay}" in route, route
            seen = lines(ping)
            wait_until("pings sent without the rule", lambda: lines(ping) >= seen + 40)
            dropped = sh(f"ip netns exec {a} nft list chain inet vpnfleet_agent protected_out")
            assert re.search(r"counter packets [1-9]\d* .* drop", dropped.stdout), dropped.stdout

            # Started again (as after an upgrade): the tunnel comes back.
            mark = len(lab.output("a"))
            got = replies(ping)
            lab.start("a")
            lab.wait_for("a", r"event child_up b", after=mark)
            wait_until("replies after the restart", lambda: replies(ping) >= got + 10)
            assert rule in sh(f"ip -n {a} rule").stdout
        assert lab.kill("a", signal.SIGTERM) == 0
        assert lab.kill("b", signal.SIGTERM) == 0
    captured = dump.text()
    assert re.search(r"ESP\(spi=", captured), captured[-2000:]
    leaked = [line for line in captured.splitlines() if any(c in line for c in CLEARTEXT)]
    assert leaked == [], f"{len(leaked)} cleartext packets on the underlay: {leaked[:5]}"

    # Decommission: exactly what was there before the agents first started.
    for host, ns in lab.namespaces.items():
        assert host_state(ns) != before[host]
        done = cleanup(ns)
        assert done.returncode == 0, done.stdout + done.stderr
        assert host_state(ns) == before[host]
        again = cleanup(ns)
        assert again.returncode == 0, again.stdout + again.stderr
        assert host_state(ns) == before[host]


def test_cleanup_refuses_while_the_agent_runs(lab: Lab) -> None:
    b = lab.namespaces["b"]
    lab.start("b")
    lab.wait_for("b", r"(in force|persisted)")
    ruleset = sh(f"ip netns exec {b} nft list table inet vpnfleet_agent").stdout
    done = cleanup(b)
    assert done.returncode == 1
    assert "an agent is running" in done.stderr and "stop it first" in done.stderr
    assert sh(f"ip netns exec {b} nft list table inet vpnfleet_agent").stdout == ruleset


def agent_refusal(lab: Lab, host: str) -> tuple[int, str]:
    """Start ``host``'s agent and wait for it to give up."""
    lab.start(host)
    code = lab.agents.pop(host).wait(WAIT)
    return code, lab.output(host)


def test_a_table_in_use_or_a_taken_ike_port_is_refused_and_changes_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    a = lab.namespaces["a"]
    wait_until("IPv6 DAD", functools.partial(dad_done, a))
    # Someone else's route in the agent's routing table.
    sh(f"ip -n {a} route add 10.9.0.0/24 dev site0 table 4500")
    before = host_state(a)
    code, output = agent_refusal(lab, "a")
    assert code == 1, output
    assert "already uses routing table 4500 or firewall mark 0x1045" in output, output
    assert "route unicast 10.9.0.0/24 dev site0 is in table 4500" in output, output
    assert "set routing_table and firewall_mark in the agent's config" in output
    assert host_state(a) == before
    sh(f"ip -n {a} route del 10.9.0.0/24 dev site0 table 4500")

    # Another IKE daemon holding UDP 500.
    before = host_state(a)
    holder = "import signal, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    holder += "s.bind(('0.0.0.0', 500)); print('bound', flush=True); signal.pause()"
    argv = ["ip", "netns", "exec", a, "python3", "-c", holder]
    with background("holder", tmp_path, argv) as other:
        wait_until("the other daemon", lambda: "bound" in other.text())
        code, output = agent_refusal(lab, "a")
    assert code == 1, output
    assert "cannot bind UDP 0.0.0.0:500: Address already in use" in output, output
    assert "set ike_listen in the agent's config" in output, output
    assert host_state(a) == before


def test_the_configured_table_and_mark_are_the_ones_used_and_cleaned_up(
    lab: Lab, tmp_path: Path
) -> None:
    a = lab.namespaces["a"]
    wait_until("IPv6 DAD", functools.partial(dad_done, a))
    before = host_state(a)
    agent_dir = make_fleet(tmp_path / "fleet").enroll("a")
    config = agent_dir / "agent.yaml"
    config.write_text(
        "name: a\nlisten: 127.0.0.1:0\nstate_dir: .\ndata_plane: true\n"
        f"ike_listen: {UNDERLAY['a']}\nfirewall_mark: 0x2a\nrouting_table: 120\n"
    )
    lab.start("b")
    argv = ["ip", "netns", "exec", a, *AGENT, "run", "--plan", str(lab.plan_file("a"))]
    with background("agent-a", tmp_path, [*argv, "--serve", str(config)]) as agent:
        wait_until("the agent serving", lambda: " listening on " in agent.text())
        wait_until("a ping through the tunnel", lambda: lab.ping(1).returncode == 0)
        rules = sh(f"ip -n {a} rule").stdout
        assert "fwmark 0x2a lookup main" in rules and f"to {SITE['b'][0]} lookup 120" in rules
        assert "lookup 4500" not in rules and "0x1045" not in rules, rules
        assert f"{SITE['b'][0]} dev vpnfleet0" in sh(f"ip -n {a} route show table 120").stdout
        ruleset = sh(f"ip netns exec {a} nft list table inet vpnfleet_agent").stdout
        assert "meta mark 0x0000002a accept" in ruleset, ruleset
        sockets = sh(f"ip netns exec {a} ss -uln").stdout
        assert f"{UNDERLAY['a']}:500 " in sockets and "0.0.0.0:500 " not in sockets, sockets
        os.killpg(agent.proc.pid, signal.SIGTERM)
        assert agent.proc.wait(WAIT) == 0
    assert "lookup 120" in sh(f"ip -n {a} rule").stdout  # kept while stopped
    done = subprocess.run(
        ["ip", "netns", "exec", a, *AGENT, "cleanup", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert host_state(a) == before


def test_restart_into_a_new_version_never_leaks_the_protected_flow(
    lab: Lab, tmp_path: Path, other_version: Callable[..., Venv]
) -> None:
    """An upgrade as `vpnfleet upgrade` does it: the agent is stopped with SIGTERM and
    started again from the new version (0.2.0, another venv) on the same state; the
    protected flow never reaches the underlay in the clear in between."""
    newer = other_version("0.2.0")
    a = lab.namespaces["a"]
    underlay = f"vfa{lab.tag}"
    capture = ["ip", "netns", "exec", a, "tcpdump", "-i", underlay, "-n", "-l", "-U"]
    with background("tcpdump", tmp_path, capture) as dump:
        wait_until("tcpdump", lambda: "listening on" in dump.err.read_text())
        lab.start("b")
        lab.start("a")
        lab.wait_for("a", r"event child_up b")
        source, target = SITE["a"][1], SITE["b"][1]
        pinging = ["ip", "netns", "exec", a, "ping", "-n", "-O", "-i", "0.05", "-I", source, target]
        with background("ping", tmp_path, pinging) as ping:
            wait_until("replies through the tunnel", lambda: replies(ping) >= 10)
            assert lab.kill("a", signal.SIGTERM) == 0
            seen = lines(ping)
            wait_until("pings sent while stopped", lambda: lines(ping) >= seen + 40)

            mark, got = len(lab.output("a")), replies(ping)
            lab.start("a", newer.agent())
            lab.wait_for("a", r"event child_up b", after=mark)
            # The tunnel is up again from the new version's process (ip netns exec has
            # become it by now).
            cmdline = Path(f"/proc/{lab.agents['a'].pid}/cmdline").read_bytes()
            assert str(newer.python).encode() in cmdline
            wait_until("replies after the upgrade", lambda: replies(ping) >= got + 10)
        assert lab.kill("a", signal.SIGTERM) == 0
        assert lab.kill("b", signal.SIGTERM) == 0
    captured = dump.text()
    assert re.search(r"ESP\(spi=", captured), captured[-2000:]
    leaked = [line for line in captured.splitlines() if any(c in line for c in CLEARTEXT)]
    assert leaked == [], f"{len(leaked)} cleartext packets on the underlay: {leaked[:5]}"
    for ns in lab.namespaces.values():
        done = cleanup(ns)
        assert done.returncode == 0, done.stdout + done.stderr
