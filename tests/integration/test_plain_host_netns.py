"""The agent on a plain host, as its unit runs it (`vpnfleet-agent serve --config ...`,
data plane on, root with only the unit's three capabilities), in a network namespace of
the test's own playing the host: the host's routing rules, routes, nftables ruleset and
forwarding sysctls before it starts, while it runs a plan that gateways for a site's LAN
with its tunnel up, after SIGTERM (what `systemctl stop` sends: the kill switch, rules
and fallbacks stay, and so does forwarding), and after `vpnfleet-agent cleanup`:
byte-identical to before at the end.

Run with ``-s`` to see the four captures (printed whole, for the operator's notes).
Every namespace, process and file is removed at the end, also on failure.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.agent_harness import make_fleet
from tests.support.engine_lab import AGENT, SITE, UNDERLAY, Lab, built, sh
from vpnfleet.agent.unit import CAPABILITIES

pytestmark = pytest.mark.netns

WAIT = 30.0
FORWARDING = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
HOST_COMMANDS = (
    "ip rule",
    "ip -6 rule",
    "ip route show table all",
    "ip -6 route show table all",
    "nft list ruleset",
    "sysctl " + " ".join(FORWARDING),
)
"""What an agent may change on its host, as the operator reads it."""
HOST_FIREWALL = """table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept
		udp dport { 500, 4500 } accept
		meta l4proto esp accept
	}
}
"""
"""The host's own firewall, as a typical host has one: it lets IKE and ESP in."""
SSH_ONLY = """table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		tcp dport 22 accept
	}
}
"""
"""A host firewall that would drop IKE."""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with built(Lab(tmp_path), "nft", "sysctl") as lab:
        yield lab


def host_state(netns: str) -> str:
    parts = []
    for command in HOST_COMMANDS:
        parts.append(f"$ {command}\n" + sh(f"ip netns exec {netns} {command}").stdout)
    return "\n".join(parts)


def sysctls(netns: str) -> dict[str, str]:
    out = sh(f"ip netns exec {netns} sysctl {' '.join(FORWARDING)}").stdout
    return dict(line.split(" = ") for line in out.splitlines())


def wait_until(what: str, ready: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def dad_done(netns: str) -> bool:
    return not sh(f"ip -n {netns} -6 addr show tentative").stdout


def load_ruleset(netns: str, ruleset: str, directory: Path) -> None:
    path = directory / "host-firewall.nft"
    path.write_text(ruleset)
    sh(f"ip netns exec {netns} nft -f {path}")


CAPABILITY_NUMBERS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
"""linux/capability.h"""
UNIT_CAPABILITIES = (
    "setpriv",
    "--bounding-set=-all," + ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in CAPABILITIES),
    "--inh-caps=-all",
)
CAP_MASK = sum(1 << CAPABILITY_NUMBERS[c] for c in CAPABILITIES)


def effective_capabilities(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)


def agent(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *AGENT, *args], capture_output=True, text=True, timeout=60
    )


def agent_config(directory: Path) -> tuple[Path, Path]:
    agent_dir = make_fleet(directory / "fleet").enroll("a")
    config = agent_dir / "agent.yaml"
    config.write_text(
        "name: a\nlisten: 127.0.0.1:0\nstate_dir: .\ndata_plane: true\n"
        f"ike_listen: {UNDERLAY['a']}\n"
    )
    return config, agent_dir


def test_a_host_is_left_as_it_was_found_after_stop_and_cleanup(lab: Lab, tmp_path: Path) -> None:
    a = lab.namespaces["a"]
    wait_until("IPv6 DAD", functools.partial(dad_done, a))
    load_ruleset(a, HOST_FIREWALL, tmp_path)
    config, agent_dir = agent_config(tmp_path)
    # The plan the controller would have applied, persisted in the agent's state dir.
    persisted = agent(
        a, "run", "--plan", str(lab.plan_file("a")), "--state-dir", str(agent_dir),
        "--no-data-plane",
    )  # fmt: skip
    assert persisted.returncode == 0, persisted.stdout + persisted.stderr
    before = host_state(a)
    assert sysctls(a) == dict.fromkeys(FORWARDING, "0")
    lab.start("b")

    log = (tmp_path / "serve.log").open("wb")
    # As the unit runs it: root, with only the unit's capabilities (CapabilityBoundingSet=).
    serve = subprocess.Popen(
        ["ip", "netns", "exec", a, *UNIT_CAPABILITIES, *AGENT, "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until("a ping through the tunnel", lambda: lab.ping(1).returncode == 0)
        assert effective_capabilities(serve.pid) == CAP_MASK
        during = host_state(a)
        # The plan gateways for 10.1.0.0/24 (IPv4 only): ip_forward on, IPv6 left alone.
        assert sysctls(a) == {FORWARDING[0]: "1", FORWARDING[1]: "0"}
        record = (agent_dir / "forwarding.json").read_text()
        assert record == '{"net.ipv4.ip_forward": "0"}\n'
        assert "table inet vpnfleet_agent" in during and f"to {SITE['b'][0]} lookup 4500" in during

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(WAIT) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)
        log.close()
    output = (tmp_path / "serve.log").read_text(errors="replace")
    assert "net.ipv4.ip_forward=1 (was 0): the plan protects 10.1.0.0/24" in output, output
    stopped = host_state(a)
    assert sysctls(a)[FORWARDING[0]] == "1"  # kept with the kill switch until cleanup
    assert "table inet vpnfleet_agent" in stopped

    done = agent(a, "cleanup", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    cleaned = host_state(a)
    assert not (agent_dir / "forwarding.json").exists()
    for title, text in (
        ("before the agent starts", before),
        ("while it runs, tunnel up", during),
        ("after SIGTERM (systemctl stop)", stopped),
        ("after vpnfleet-agent cleanup", cleaned),
    ):
        print(f"\n===== host a {title} =====\n{text}")
    assert cleaned == before


def test_the_agent_refuses_to_start_where_the_host_firewall_drops_ike(
    lab: Lab, tmp_path: Path
) -> None:
    a = lab.namespaces["a"]
    wait_until("IPv6 DAD", functools.partial(dad_done, a))
    load_ruleset(a, SSH_ONLY, tmp_path)
    config, _ = agent_config(tmp_path)
    before = host_state(a)
    done = agent(a, "serve", "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "the host's firewall would drop IKE, so no tunnel could come up: chain inet filter "
        "input (input hook) ends in policy drop drops IKE received on UDP 500 and 4500 "
        "(IPv4); add `udp dport { 500, 4500 } accept` to it (`nft add rule inet filter "
        "input udp dport { 500, 4500 } accept`" in done.stderr
    ), done.stderr
    assert host_state(a) == before
