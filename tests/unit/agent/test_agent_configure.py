"""`vpnfleet-agent configure`: the agent's configuration and unit written only where they
differ, each reported (added / changed / unchanged) with a unified diff; --check and bad
settings write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vpnfleet.agent.cli import main
from vpnfleet.agent.config import ConfigError, load_config
from vpnfleet.agent.configure import configure
from vpnfleet.agent.unit import AgentUnit
from vpnfleet.protos.host_setup import FileRole, FileState, parse_report

VENV = Path("/opt/vpnfleet/venv")


def run(tmp_path: Path, *extra: str, name: str = "a1", listen: str = "198.18.0.5:50051"):
    return CliRunner().invoke(
        main,
        [
            "configure",
            "--name", name,
            "--listen", listen,
            "--config", str(tmp_path / "etc" / "agent.yaml"),
            "--unit-dir", str(tmp_path / "units"),
            "--venv", str(VENV),
            "--json",
            *extra,
        ],
    )  # fmt: skip


def test_first_run_adds_both_files_with_diffs_then_nothing_changes(tmp_path: Path) -> None:
    first = run(tmp_path)
    assert first.exit_code == 0, first.output
    report = parse_report(first.output)
    assert [(f.role, f.state) for f in report] == [
        (FileRole.CONFIG, FileState.ADDED),
        (FileRole.UNIT, FileState.ADDED),
    ]
    config_path = tmp_path / "etc" / "agent.yaml"
    config = load_config(config_path)
    assert (config.name, config.listen, config.data_plane) == ("a1", "198.18.0.5:50051", True)
    assert str(config.state_dir) == "/var/lib/vpnfleet-agent"
    assert config.controller_identity == "vpnfleet-controller"
    unit = (tmp_path / "units" / "vpnfleet-agent.service").read_text()
    assert unit == AgentUnit(VENV, config_path, config).render()
    assert report[0].diff.startswith(f"--- /dev/null\n+++ {config_path}\n@@ -0,0 +1,5 @@\n")
    assert "+listen: 198.18.0.5:50051\n" in report[0].diff
    assert f"+ExecStart={VENV}/bin/vpnfleet-agent serve --config {config_path}\n" in (
        report[1].diff
    )
    unit_path = tmp_path / "units" / "vpnfleet-agent.service"
    written = {p: p.stat().st_mtime_ns for p in (config_path, unit_path)}
    again = parse_report(run(tmp_path).output)
    assert [(f.state, f.diff) for f in again] == [(FileState.UNCHANGED, "")] * 2
    assert {p: p.stat().st_mtime_ns for p in written} == written  # not even rewritten


def test_a_changed_setting_is_a_changed_file_and_check_writes_nothing(tmp_path: Path) -> None:
    assert run(tmp_path).exit_code == 0
    config_path = tmp_path / "etc" / "agent.yaml"
    before = config_path.read_text()
    check = run(tmp_path, "--check", listen="198.18.0.6:50051")
    assert check.exit_code == 0, check.output
    config, unit = parse_report(check.output)
    assert config.state is FileState.CHANGED and unit.state is FileState.UNCHANGED
    assert config.diff.splitlines()[2:] == [
        "@@ -1,5 +1,5 @@",
        " name: a1",
        "-listen: 198.18.0.5:50051",
        "+listen: 198.18.0.6:50051",
        " state_dir: /var/lib/vpnfleet-agent",
        " controller_identity: vpnfleet-controller",
        " data_plane: true",
    ]
    assert config_path.read_text() == before
    done = parse_report(run(tmp_path, listen="198.18.0.6:50051").output)
    assert [f.state for f in done] == [FileState.CHANGED, FileState.UNCHANGED]
    assert "listen: 198.18.0.6:50051" in config_path.read_text()


def test_a_state_dir_elsewhere_is_writable_in_the_unit(tmp_path: Path) -> None:
    files = configure(
        "a1",
        "198.18.0.5:50051",
        Path("/srv/agent"),
        tmp_path / "agent.yaml",
        tmp_path,
        VENV,
    )
    assert all(f.state is FileState.ADDED for f in files)
    assert (
        "ReadWritePaths=/srv/agent /proc/sys/net\n"
        in (tmp_path / "vpnfleet-agent.service").read_text()
    )


def test_bad_settings_write_nothing(tmp_path: Path) -> None:
    bad = run(tmp_path, name="a 1")
    assert bad.exit_code == 1
    assert "name 'a 1' must be a host name without blanks" in bad.output
    assert not (tmp_path / "etc").exists() and not (tmp_path / "units").exists()
    port = run(tmp_path, listen="198.18.0.5")
    assert port.exit_code == 1 and "must be host:port" in port.output
    with pytest.raises(ConfigError):
        configure("a1", "x", Path("/var/lib/x"), tmp_path / "c.yaml", tmp_path, VENV)
    assert list(tmp_path.iterdir()) == []


def test_the_text_report_names_each_file(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        ["configure", "--name", "a1", "--listen", "198.18.0.5:50051",
         "--config", str(tmp_path / "agent.yaml"), "--unit-dir", str(tmp_path), "--check"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"{tmp_path / 'agent.yaml'}: would be added",
        f"{tmp_path / 'vpnfleet-agent.service'}: would be added",
    ]
    assert list(tmp_path.iterdir()) == []
    assert json.loads(run(tmp_path, "--check").output)["files"][0]["state"] == "added"
