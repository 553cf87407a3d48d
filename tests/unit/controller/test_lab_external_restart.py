"""The lab's charon: restart_charon refuses what it cannot do before starting anything,
and the strongswan.conf the lab writes deletes charon's replaced IKEv1 children."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vpnfleet.controller.lab.external import restart_charon, strongswan_conf
from vpnfleet.controller.lab.layout import LabError
from vpnfleet.controller.lab.record import LabRecord


def test_a_peer_the_lab_does_not_play_is_refused(tmp_path: Path) -> None:
    record = LabRecord.create(tmp_path / "lab", "t1", tmp_path)
    record.add("charon", name="partner", netns="vf-t1-partner", dir=str(tmp_path), pid=None)
    with pytest.raises(LabError, match="the lab has no external peer 'other' played by charon"):
        restart_charon(record, "other")


def test_a_charon_still_running_is_not_started_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = LabRecord.create(tmp_path / "lab", "t1", tmp_path)
    record.add("charon", name="partner", netns="vf-t1-partner", dir=str(tmp_path), pid=os.getpid())
    # Our own pid stands for a live charon.
    monkeypatch.setattr("vpnfleet.controller.lab.external.is_charon", lambda pid: True)
    with pytest.raises(LabError, match=rf"charon {os.getpid()} still plays partner"):
        restart_charon(record, "partner")
    assert record.resources("charon")[0]["pid"] == os.getpid()


def test_charon_leaves_the_ikev1_children_it_replaced_to_the_managed_end(tmp_path: Path) -> None:
    # strongSwan's delete_rekeyed (IKEv1 only) at "yes" deleted the old Quick mode SA
    # right after the third message, losing what the managed end still sent on it.
    assert "delete_rekeyed" not in strongswan_conf(tmp_path, 500)
