"""The example inventories switched to IKEv1 (RFC 2409): every host and external peer
gets ``ike_version: 1`` and an IKE proposal phase 1 can carry (a CBC cipher with a hash,
no AEAD)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

IKE_V1_PROPOSAL = "aes256-sha256-modp2048"


def ikev1_inventory(source: Path, copy: Path) -> Path:
    """A copy of ``source`` with IKEv1 for all hosts (group_vars/all.yaml, or a new
    group_vars/all.yaml where there is none) and for its external peers."""
    shutil.copytree(source, copy)
    all_vars = copy / "group_vars" / "all.yaml"
    data = yaml.safe_load(all_vars.read_text()) if all_vars.exists() else {}
    data = data or {}
    data["ike_version"] = 1
    data["ike_proposals"] = [IKE_V1_PROPOSAL]
    all_vars.parent.mkdir(exist_ok=True)
    all_vars.write_text(yaml.safe_dump(data))
    for group_file in (copy / "group_vars").glob("*.yaml"):
        if group_file.name == "all.yaml":
            continue
        group = yaml.safe_load(group_file.read_text()) or {}
        if "ike_proposals" in group:
            group["ike_proposals"] = [IKE_V1_PROPOSAL]
            group_file.write_text(yaml.safe_dump(group))
    topology_file = copy / "topology.yaml"
    topology = yaml.safe_load(topology_file.read_text()) or {}
    for ext in topology.get("external_peers", []):
        ext["ike_version"] = 1
        ext["ike_proposals"] = [IKE_V1_PROPOSAL]
    topology_file.write_text(yaml.safe_dump(topology))
    return copy
