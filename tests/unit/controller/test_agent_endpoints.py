"""Where the controller reaches agents: at their inventory address (or `agent_address`),
unless its state directory records another endpoint for a host (a lab's management
addresses); a record that cannot be read stops the command with what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpnfleet.controller.operations import compile_fleet
from vpnfleet.controller.state import AGENT_ENDPOINTS, StateDir, StateError

INVENTORY = Path(__file__).resolve().parents[3] / "inventories" / "lab"


def test_recorded_endpoints_win_over_inventory_addresses(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    before = compile_fleet(INVENTORY, state).endpoints
    assert before["a1"] == "10.99.0.11:50051" and before["a3"] == "10.99.0.13:50051"
    state.record_agent_endpoints({"a1": "198.18.4.2:50051", "gone": "198.18.4.9:50051"})
    after = compile_fleet(INVENTORY, state, limit="a1,a3").endpoints
    assert after == {"a1": "198.18.4.2:50051", "a3": "10.99.0.13:50051"}
    path = state.root / AGENT_ENDPOINTS
    assert json.loads(path.read_text()) == {"a1": "198.18.4.2:50051", "gone": "198.18.4.9:50051"}
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("text", ["{not json", '["a1"]', '{"a1": 50051}'])
def test_an_unreadable_record_is_refused_by_name(tmp_path: Path, text: str) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    (state.root / AGENT_ENDPOINTS).write_text(text)
    with pytest.raises(StateError, match=rf"{AGENT_ENDPOINTS}.*restore or delete it"):
        compile_fleet(INVENTORY, state)
