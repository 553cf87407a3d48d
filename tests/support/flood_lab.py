"""Two real agents in two network namespaces (engine_lab.Lab) with a tunnel up,
and a flood of half-open IKE SAs and fragment storms (ike_flood.py) sent from extra
addresses in a's namespace against b, the responder. b's plan names those addresses as
peer a's (a moved peer's addresses, as a staged change gives them), so every request
reaches peer a's responder gate. Used by test_ike_flood_netns.py and bench/ike_flood.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.engine_lab import UNDERLAY, Lab, sh
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.protos.hashing import plan_content_hash

FLOOD = Path(__file__).with_name("ike_flood.py")
FLOOD_SOURCES = [f"192.0.2.{n}" for n in range(10, 22)]
STATUS_SA = r"sa a: established ike (\w+)_i (\w+)_r"
ADMISSION = r"admission: half_open=(\d+) preauth_fragment_bytes=(\d+) cookies_sent=(\d+)[^\n]*"


@dataclass
class FloodLab(Lab):
    def build(self) -> None:
        super().build()
        a = self.namespaces["a"]
        for address in FLOOD_SOURCES:
            sh(f"ip -n {a} addr add {address}/24 dev vfa{self.tag}")

    def plan_file(self, host: str) -> Path:
        if host == "a":
            return super().plan_file(host)
        msg = sample_plan("b", UNDERLAY["b"], "10.2.0.0/24", [("a", UNDERLAY["a"], "10.1.0.0/24")])
        msg.peers[0].remote_addresses.extend(FLOOD_SOURCES)
        msg.content_hash = plan_content_hash(msg)
        path = self.directory / "b.plan"
        path.write_bytes(msg.SerializeToString(deterministic=True))
        return path

    def rss_kib(self, host: str) -> int:
        pid = self.agents[host].pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for {host} (pid {pid})")

    def flood(self, sas_per_source: int, storms: list[str], timeout: float = 240) -> dict:
        """Run ike_flood.py in a's namespace against b; its JSON summary."""
        command = [
            "ip",
            "netns",
            "exec",
            self.namespaces["a"],
            sys.executable,
            str(FLOOD),
            "--target",
            UNDERLAY["b"],
            "--sources",
            ",".join(FLOOD_SOURCES),
            "--sas-per-source",
            str(sas_per_source),
        ]
        for storm in storms:
            command += ["--storm", storm]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def established_spis(self, after: int = 0) -> tuple[str, str]:
        found = re.search(STATUS_SA, self.wait_for("b", STATUS_SA, after=after))
        assert found is not None
        return found.group(1), found.group(2)
