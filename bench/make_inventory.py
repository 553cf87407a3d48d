"""Write a synthetic inventory of any size: a full mesh or hub-and-spoke.

    python bench/make_inventory.py --hosts 1000 --topology mesh OUTDIR
    python bench/make_inventory.py --hosts 10000 --topology hub-spoke --hubs 20 OUTDIR

Hosts get underlay addresses from 172.16.0.0/12 and one /24 each from 10.0.0.0/8 (so
up to 65,536 hosts). The mesh puts every host in group ``mesh``; hub-and-spoke puts the
first ``--hubs`` hosts in ``hubs`` and the rest in ``spokes``. The files are ordinary
inventory files (hosts.yaml, group_vars/all.yaml, topology.yaml) that the loader reads.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

UNDERLAY = ipaddress.IPv4Network("172.16.0.0/12")
MAX_HOSTS = 65536

ALL_VARS = """\
# Synthetic fleet: every host offers the same proposals.
ike_proposals:
  - aes256gcm16-prfsha384-x25519
  - aes256-sha256-modp2048
esp_proposals:
  - aes256gcm16
ike_lifetime: 4h
child_lifetime: 1h
dpd_delay: 30s
"""


def host_lines(name: str, index: int) -> list[str]:
    address = UNDERLAY.network_address + index + 1
    subnet = f"10.{index >> 8}.{index & 255}.0/24"
    return [f"        {name}:", f"          address: {address}", f"          subnets: [{subnet}]"]


def write_inventory(out: Path, hosts: int, topology: str, hubs: int = 2) -> None:
    """Write the inventory directory ``out`` (created if missing)."""
    if not 2 <= hosts <= MAX_HOSTS:
        raise ValueError(f"--hosts must be 2..{MAX_HOSTS}, got {hosts}")
    width = len(str(hosts))
    lines = ["all:", "  children:"]
    if topology == "mesh":
        lines += ["    mesh:", "      hosts:"]
        for i in range(hosts):
            lines += host_lines(f"h{i:0{width}d}", i)
        topo = "meshes:\n  - name: fleet\n    group: mesh\n"
    elif topology == "hub-spoke":
        if not 1 <= hubs < hosts:
            raise ValueError(f"--hubs must be 1..{hosts - 1}, got {hubs}")
        lines += ["    hubs:", "      hosts:"]
        for i in range(hubs):
            lines += host_lines(f"hub{i:0{width}d}", i)
        lines += ["    spokes:", "      hosts:"]
        for i in range(hubs, hosts):
            lines += host_lines(f"spoke{i:0{width}d}", i)
        topo = "hub_spoke:\n  - name: fleet\n    hubs: hubs\n    spokes: spokes\n"
    else:
        raise ValueError(f"--topology must be mesh or hub-spoke, got {topology!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "group_vars").mkdir(exist_ok=True)
    (out / "hosts.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "group_vars" / "all.yaml").write_text(ALL_VARS, encoding="utf-8")
    (out / "topology.yaml").write_text(topo, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--topology", choices=("mesh", "hub-spoke"), required=True)
    parser.add_argument("--hubs", type=int, default=2)
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args()
    try:
        write_inventory(args.outdir, args.hosts, args.topology, args.hubs)
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
