"""Where the controller reaches agents: at their inventory address (or `agent_address`)
on `agent_port`, unless its state directory records another address for a host (a lab's
management addresses); a record that cannot be read stops the command with what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vpnfleet.controller.fleet.operations import compile_fleet
from vpnfleet.controller.statedir.state import AGENT_ADDRESSES, StateDir, StateError

INVENTORY = Path(__file__).resolve().parents[3] / "inventories" / "lab"


def test_recorded_addresses_win_over_inventory_addresses(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    shutil.copytree(INVENTORY, inventory)
    (inventory / "host_vars").mkdir(exist_ok=True)
    (inventory / "host_vars" / "a3.yaml").write_text("agent_port: 9\nagent_address: 10.9.9.9\n")
    state = StateDir(tmp_path / "state")
    before = compile_fleet(inventory, state).endpoints
    assert before["a1"] == "10.99.0.11:50051" and before["a3"] == "10.9.9.9:9"
    state.record_agent_addresses({"a1": "198.18.4.2", "a3": "198.18.4.4", "gone": "198.18.4.9"})
    after = compile_fleet(inventory, state, limit="a1,a2,a3").endpoints
    # The port stays the inventory's: where the agent was told to listen.
    assert after == {"a1": "198.18.4.2:50051", "a2": "10.99.0.12:50051", "a3": "198.18.4.4:9"}
    path = state.root / AGENT_ADDRESSES
    assert json.loads(path.read_text())["a3"] == "198.18.4.4"
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("text", ["{not json", '["a1"]', '{"a1": 50051}'])
def test_an_unreadable_record_is_refused_by_name(tmp_path: Path, text: str) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    (state.root / AGENT_ADDRESSES).write_text(text)
    with pytest.raises(StateError, match=rf"{AGENT_ADDRESSES}.*restore or delete it"):
        compile_fleet(INVENTORY, state)
