"""tshark decrypts two real agents' traffic with nothing but their key logs.

Two `vpnfleet-agent run --keylog FILE` processes in two namespaces (the lab of
test_engine_netns.py) bring their tunnel up while dumpcap captures IKE_AUTH and ESP on
the link with full snaplen; ping crosses the tunnel; then tshark reads the capture with
the records one agent logged (``-o uat:LINE`` per line) and Wireshark's own code must
verify every ESP ICV, find the pings inside, and decrypt the IKE_AUTH exchange. The
same capture read without the keys shows no verdict, so the checks can fail.
"""

from __future__ import annotations

import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine_lab import AGENT, SITE, Lab, built, sh
from tests.support.tshark_lab import EspVerdict, IkeVerdict, _wait_for, esp_verdicts, ike_verdicts
from vpnfleet.agent.engine.keylog import tshark_options

pytestmark = pytest.mark.netns

IKE_AUTH = 35
PINGS = 5


class KeyLogLab(Lab):
    def keylog(self, host: str) -> Path:
        return self.directory / f"{host}.keys"

    def start(self, host: str) -> None:
        state = self.directory / f"{host}-state"
        with self.log(host).open("ab") as out:
            plan, ns = self.plan_file(host), self.namespaces[host]
            options = (
                f"--plan {plan} --state-dir {state} --status-interval 0.5 "
                f"--keylog {self.keylog(host)}"
            )
            self.agents[host] = subprocess.Popen(
                ["ip", "netns", "exec", ns, *AGENT, "run", *options.split()],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def capture(self, count: int) -> subprocess.Popen[bytes]:
        """dumpcap on b's end of the link, full snaplen (tshark skips truncated packets),
        ending by itself after ``count`` packets: one stopped by a signal loses what it
        has not read from the kernel yet."""
        pcap = self.directory / "tunnel.pcapng"
        command = [
            *("ip", "netns", "exec", self.namespaces["b"], "dumpcap", "-i", f"vfb{self.tag}"),
            # IKE_SA_INIT (exchange type 34, octet 18 of the IKE header) is left out: the
            # initiator may have to repeat it while the responder's socket is still
            # closed, and those extra packets would end the count before the pings do.
            *("-f", "(udp port 500 and udp[26] != 34) or udp port 4500 or ip proto 50"),
            *("-s", "0", "-c", str(count)),
            *("-w", str(pcap)),
        ]
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.dumpcap = proc
        assert proc.stderr is not None
        # dumpcap names its file once the filter is set and the interface is live.
        _wait_for(proc, proc.stderr.fileno(), b"File: ")
        return proc

    def teardown(self) -> None:
        proc = getattr(self, "dumpcap", None)
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()
        super().teardown()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[KeyLogLab]:
    with built(KeyLogLab(tmp_path), "tshark", "dumpcap") as lab:
        yield lab


def test_tshark_decrypts_the_agents_traffic_with_their_key_logs(lab: KeyLogLab) -> None:
    # IKE_AUTH (request and response), then each ping and its reply.
    dumpcap = lab.capture(2 + 2 * PINGS)
    lab.start("b")
    lab.start("a")
    lab.wait_for("a", r"event child_up b")
    lab.wait_for("b", r"event child_up a")
    ping = lab.ping(PINGS)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    try:
        assert dumpcap.wait(10) == 0
    except subprocess.TimeoutExpired:
        dumpcap.send_signal(signal.SIGINT)
        dumpcap.wait(10)
        seen = sh(f"tshark -n -r {lab.directory / 'tunnel.pcapng'}", check=False).stdout
        raise AssertionError(f"dumpcap did not see {2 + 2 * PINGS} packets:\n{seen}") from None
    assert lab.kill("a") == 0 and lab.kill("b") == 0

    for host in ("a", "b"):
        assert stat.S_IMODE(lab.keylog(host).stat().st_mode) == 0o600
        warning = f"WARNING vpnfleet.agent.engine.keylog: key log {lab.keylog(host)} is on"
        assert lab.output(host).count(warning) == 1
    text = lab.keylog("a").read_text()
    assert text.count("\nesp_sa:") == 2 and text.count("\nikev2_decryption_table:") == 1

    pcap = lab.directory / "tunnel.pcapng"
    # Without the keys tshark checks nothing: the verdicts below come from the log.
    blind = [v for v in esp_verdicts_of(pcap, []) if v.icv_good is not None]
    assert blind == []

    esp = esp_verdicts_of(pcap, tshark_options(text))
    assert len(esp) == 2 * PINGS
    assert all(v.icv_good is True and not v.malformed for v in esp), esp
    a_site, b_site = SITE["a"][1], SITE["b"][1]
    assert sum(v.inner_addresses == (a_site, b_site) for v in esp) == PINGS
    assert sum(v.inner_addresses == (b_site, a_site) for v in esp) == PINGS

    auth = [v for v in ike_verdicts_of(pcap, tshark_options(text)) if v.exchange == IKE_AUTH]
    assert len(auth) == 2, auth  # request and response
    assert all(v.decrypted and not v.integrity_failed for v in auth), auth


def esp_verdicts_of(pcap: Path, options: list[str]) -> list[EspVerdict]:
    return esp_verdicts(pcap, [*options, "-Y", "esp"])


def ike_verdicts_of(pcap: Path, options: list[str]) -> list[IkeVerdict]:
    return ike_verdicts(pcap, [*options, "-Y", "isakmp"])


def test_a_key_log_others_can_read_is_refused_before_anything_starts(lab: KeyLogLab) -> None:
    readable = lab.keylog("a")
    readable.write_text("")
    readable.chmod(0o644)
    plan, ns = lab.plan_file("a"), lab.namespaces["a"]
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *AGENT, "run", "--plan", str(plan), "--keylog", str(readable)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error: key log {readable} has mode 0644: others could read the keys" in done.stderr
    assert readable.read_text() == ""
    assert "vpnfleet0" not in sh(f"ip -n {ns} link show").stdout
