"""The planner's dataclasses mirror protos/plan.proto field for field."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import model
from vpnfleet.controller.planner.model import Peer, TrafficSelector, fast_constructor
from vpnfleet.protos import plan_pb2

MESSAGES = [
    "Identity",
    "TrafficSelector",
    "SpdEntry",
    "Transform",
    "Proposal",
    "Credential",
    "Lifetimes",
    "Dpd",
    "NatTraversal",
    "Peer",
    "NodePlan",
]
ENUMS = ["IdType", "SpdAction", "AuthMethod", "Mode", "StartAction"]


@pytest.mark.parametrize("name", MESSAGES)
def test_dataclass_fields_match_the_message(name: str) -> None:
    cls = getattr(model, name)
    descriptor = getattr(plan_pb2, name).DESCRIPTOR
    assert [f.name for f in dataclasses.fields(cls)] == [f.name for f in descriptor.fields]
    params = cls.__dataclass_params__
    assert params.frozen and "__slots__" in cls.__dict__


@pytest.mark.parametrize("name", ENUMS)
def test_enum_members_are_the_proto_value_tails(name: str) -> None:
    cls: type[enum.Enum] = getattr(model, name)
    values = getattr(plan_pb2, name).DESCRIPTOR.values
    prefix = "ID_" if name == "IdType" else ""
    tails = [v.name for v in values]
    for member in cls:
        assert any(t == prefix + member.name or t.endswith("_" + member.name) for t in tails)
    assert len(list(cls)) == len(tails)


def test_fast_constructor_makes_ordinary_frozen_instances() -> None:
    make = fast_constructor(TrafficSelector)
    fast = make(
        local_prefix="10.0.0.0/8",
        remote_prefix="10.1.0.0/16",
        protocol=6,
        remote_port_start=443,
        remote_port_end=443,
    )
    slow = TrafficSelector("10.0.0.0/8", "10.1.0.0/16", 6, 0, 65535, 443, 443)
    assert type(fast) is TrafficSelector
    assert fast == slow and hash(fast) == hash(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.protocol = 17  # type: ignore[misc]
    assert make("10.0.0.0/8", "10.1.0.0/16", 6, 0, 65535, 443, 443) == slow
    assert make("10.0.0.0/8", "10.1.0.0/16") == TrafficSelector("10.0.0.0/8", "10.1.0.0/16")
    with pytest.raises(TypeError):
        make(local_prefix="10.0.0.0/8")  # fields without a default are required
    assert len(dataclasses.fields(Peer)) == 24


def test_make_inventory_writes_a_loadable_inventory(tmp_path: Path) -> None:
    script = Path(__file__).parents[3] / "bench" / "make_inventory.py"
    for topology, extra in (("mesh", []), ("hub-spoke", ["--hubs", "3"])):
        out = tmp_path / topology
        subprocess.run(
            [
                sys.executable,
                str(script),
                "--hosts",
                "12",
                "--topology",
                topology,
                *extra,
                str(out),
            ],
            check=True,
        )
        inventory = load_inventory(out)
        assert len(inventory.hosts) == 12
        assert inventory.topology is not None
    assert len(load_inventory(tmp_path / "hub-spoke").group_hosts("hubs")) == 3
    bad = subprocess.run(
        [sys.executable, str(script), "--hosts", "1", "--topology", "mesh", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--hosts must be 2..65536, got 1" in bad.stderr
