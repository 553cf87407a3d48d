"""tshark decrypts OUR IKEv1 with nothing but an agent's key log.

Two agents of inventories/lab (a1 and a2 only), planned with ``ike_version: 1``, run
with ``lab up --keylog``. dumpcap captures the lab bridge (full snaplen) while a1
replaces its ISAKMP SA with a2 (``vpnfleet rekey --ike``: a new Main mode; the Quick
mode SAs stay, moved to it), then its child SA (``rekey --child``: a new Quick mode
under the new ISAKMP SA), and pings cross. tshark then reads the capture with a1's key log:
the ``ikev1_decryption_table`` record opens Main mode messages 5 and 6 (ID and HASH,
RFC 2409 section 5) and the Quick mode (HASH(1..3), SA, Nonce and both IDs, section
5.5), and the ``esp_sa`` records verify every ESP ICV and show the pings inside. The
same capture read without the key log opens nothing, so the checks can fail. The lab is
removed in a finally (also on failure) and checked gone. Run under
``flock /tmp/vpnfleet-lab.lock``.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.lab import (
    INVENTORIES,
    LabRun,
    controller,
    fleet_status,
    ike_sas,
    lab_up,
    removed_after,
    require_root,
)
from tests.support.lab_ikev1 import ikev1_inventory
from tests.support.tshark_lab import _wait_for, esp_verdicts
from vpnfleet.agent.engine.keylog import tshark_options
from vpnfleet.agent.ike.v1.constants import ExchangeType, PayloadType

pytestmark = pytest.mark.netns

PINGS = 4
A1_SITE, A2_SITE = "10.1.1.1", "10.1.2.1"
FIELDS = (
    "isakmp.ispi",
    "isakmp.exchangetype",
    "isakmp.flags",
    "isakmp.typepayload",
    "isakmp.id.data.fqdn",
    "isakmp.hash",
)


def two_host_lab(root: Path) -> LabRun:
    """inventories/lab with a1 and a2 only, in IKEv1."""
    source = root / "source"
    shutil.copytree(INVENTORIES / "lab", source)
    hosts_file = source / "hosts.yaml"
    hosts = yaml.safe_load(hosts_file.read_text())
    mesh = hosts["all"]["children"]["mesh"]["hosts"]
    for name in ("a3", "a4"):
        del mesh[name]
    hosts_file.write_text(yaml.safe_dump(hosts))
    copy = ikev1_inventory(source, root / "inventory")
    return LabRun(root / "state", "t" + secrets.token_hex(4), copy)


def dissect(pcap: Path, options: list[str]) -> list[dict[str, list[str]]]:
    """One dict per ISAKMP message: field -> its values (tshark's ``-T fields``)."""
    argv = ["tshark", "-n", "-r", str(pcap), *options, "-Y", "isakmp", "-T", "fields"]
    for field in FIELDS:
        argv += ["-e", field]
    argv += ["-E", "occurrence=a", "-E", "aggregator=;"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = []
    for line in done.stdout.splitlines():
        values = line.split("\t")
        rows.append(
            {f: [x for x in v.split(";") if x] for f, v in zip(FIELDS, values, strict=True)}
        )
    return rows


def types(row: dict[str, list[str]]) -> list[int]:
    """Payload types in order, without an SA payload's Proposals and Transforms."""
    nested = (PayloadType.PROPOSAL, PayloadType.TRANSFORM)
    return [int(t) for t in row["isakmp.typepayload"] if int(t) not in nested]


def exchange(rows: list[dict[str, list[str]]], kind: ExchangeType) -> list[dict[str, list[str]]]:
    return [r for r in rows if int(r["isakmp.exchangetype"][0]) == kind]


def test_tshark_opens_our_main_mode_quick_mode_and_esp_with_the_key_log(
    tmp_path: Path,
) -> None:
    require_root()
    for tool in ("tshark", "dumpcap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    lab = two_host_lab(tmp_path)
    with removed_after(lab):
        up = lab_up(lab, "--keylog")
        keylog = Path(up["keylogs"]["a1"])
        layout: dict[str, Any] = up["layout"]
        a1, a2 = (layout["hosts"][h]["address"] for h in ("a1", "a2"))
        pcap = tmp_path / "bridge.pcapng"
        dumpcap = subprocess.Popen(
            ["ip", "netns", "exec", layout["bridge_netns"], "dumpcap", "-i", "br0", "-s", "0",
             "-f", f"host {a1} and host {a2} and (udp port 500 or udp port 4500 or ip proto 50)",
             "-w", str(pcap)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert dumpcap.stderr is not None
            # dumpcap names its file once the filter is set and the interface is live.
            _wait_for(dumpcap, dumpcap.stderr.fileno(), b"File: ")
            for what in ("--ike", "--child"):
                res = controller(lab, "rekey", "-i", str(lab.inventory), "--limit", "a1", what)
                assert res.returncode == 0, res.stdout + res.stderr
            ping = lab.exec("a1", "ping", "-n", f"-c{PINGS}", "-i0.2", "-I", A1_SITE, A2_SITE)
            assert ping.returncode == 0, ping.stdout
            time.sleep(3)  # the replaced SAs' Deletes, and dumpcap reading what it has
        finally:
            if dumpcap.poll() is None:
                dumpcap.send_signal(signal.SIGINT)
            try:
                dumpcap.wait(10)
            except subprocess.TimeoutExpired:
                dumpcap.kill()
                dumpcap.wait()
            if dumpcap.stderr is not None:
                dumpcap.stderr.close()
        [sa] = [sa for h, sa in ike_sas(fleet_status(lab)) if h == "a1" and sa["peer"] == "a2"]
        assert sa["ike_version"] == "V1" and sa["initiator"] is True, sa
        text = keylog.read_text()
        assert f"ikev1_decryption_table:{sa['spi_i']}," in text, text
        options = tshark_options(text)

        blind = [r for r in dissect(pcap, []) if r["isakmp.ispi"] == [sa["spi_i"]]]
        rows = [r for r in dissect(pcap, options) if r["isakmp.ispi"] == [sa["spi_i"]]]
        esp = esp_verdicts(pcap, [*options, "-Y", "esp"])
        blind_esp = esp_verdicts(pcap, ["-Y", "esp"])

    main = exchange(rows, ExchangeType.IDENTITY_PROTECTION)
    quick = exchange(rows, ExchangeType.QUICK)
    assert len(main) == 6 and len(quick) == 3, rows
    five, six = main[4], main[5]
    # RFC 2409 section 5: ID then HASH_I / HASH_R, readable only once decrypted.
    assert types(five)[:2] == [PayloadType.ID, PayloadType.HASH], five
    assert types(six)[:2] == [PayloadType.ID, PayloadType.HASH], six
    assert five["isakmp.id.data.fqdn"] == ["a1"] and six["isakmp.id.data.fqdn"] == ["a2"]
    assert len(five["isakmp.hash"]) == 1 and len(six["isakmp.hash"]) == 1
    # Section 5.5: HASH(1) SA Ni [KE] IDci IDcr; HASH(2) the same; HASH(3) alone.
    for row in quick[:2]:
        assert types(row)[:3] == [PayloadType.HASH, PayloadType.SA, PayloadType.NONCE], row
        assert types(row).count(PayloadType.ID) == 2, row
    assert types(quick[2]) == [PayloadType.HASH], quick[2]
    assert all(len(row["isakmp.hash"]) == 1 for row in quick), quick
    # Without the key log the same messages show no payload inside.
    blind_main = exchange(blind, ExchangeType.IDENTITY_PROTECTION)
    assert len(blind_main) == 6 and blind_main[4]["isakmp.id.data.fqdn"] == []
    assert all(r["isakmp.hash"] == [] for r in exchange(blind, ExchangeType.QUICK))

    assert [v for v in blind_esp if v.icv_good is not None] == []
    pings = [v for v in esp if v.inner_addresses in ((A1_SITE, A2_SITE), (A2_SITE, A1_SITE))]
    assert all(v.icv_good is True and not v.malformed for v in esp), esp
    assert sum(v.inner_addresses == (A1_SITE, A2_SITE) for v in pings) >= PINGS, esp
    assert sum(v.inner_addresses == (A2_SITE, A1_SITE) for v in pings) >= PINGS, esp
