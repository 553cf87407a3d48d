"""Agent configuration file: defaults, paths, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpnfleet.agent.config import ConfigError, load_config
from vpnfleet.agent.ike.admission import ResponderLimits


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "name: a1\nstate_dir: st\n"))
    assert cfg.name == "a1"
    assert cfg.listen == "0.0.0.0:50051"
    assert cfg.state_dir == tmp_path / "st"
    assert cfg.tls.cert == tmp_path / "st" / "tls.pem"
    assert cfg.tls.ca == tmp_path / "st" / "ca.pem"
    assert cfg.controller_identity == "vpnfleet-controller"


def test_ike_limits(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "name: a1\n")).ike_limits == ResponderLimits()
    text = "name: a1\nike_limits:\n  half_open_per_source: 4\n  preauth_message_bytes: 12000\n"
    limits = load_config(write(tmp_path, text)).ike_limits
    assert limits == ResponderLimits(half_open_per_source=4, preauth_message_bytes=12_000)


def test_explicit_tls(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "name: a1\nstate_dir: /s\ntls: {cert: /x/c.pem, key: k, ca: /x/ca.pem}\n")
    )
    assert cfg.tls.cert == Path("/x/c.pem") and cfg.tls.key == Path("/s/k")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: a1\nlisten_on: x\n", "unknown key 'listen_on' (did you mean 'listen'?)"),
        ("name: a1\ntls: {cret: a}\n", "tls: unknown key 'cret' (did you mean 'cert'?)"),
        ("listen: 1.2.3.4:5\n", "'name' is required"),
        ("name: a1\nlisten: 50051\n", "must be host:port"),
        ("name: a1\nlisten: h:99999\n", "must be host:port"),
        ("name: [a]\n", "'name' must be a non-empty string"),
        ("- a\n", "expected a mapping"),
        ("name: a1\ntls: 3\n", "'tls' must be a mapping"),
        ("name: 'a1\n", "not valid YAML"),
        (
            "name: a1\nike_limits: {half_open_per_sorce: 4}\n",
            "ike_limits: unknown key 'half_open_per_sorce' (did you mean 'half_open_per_source'?)",
        ),
        ("name: a1\nike_limits: 5\n", "'ike_limits' must be a mapping of half_open_per_source"),
        (
            "name: a1\nike_limits: {half_open_total: '5'}\n",
            "ike_limits: half_open_total must be a whole number of at least 1, not '5'",
        ),
    ],
)
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_host_settings_default_clear_of_kube_proxy_marks(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "name: a1\n"))
    assert cfg.data_plane is None and cfg.ike_listen == "0.0.0.0"
    assert cfg.routing_table == 4500
    assert cfg.firewall_mark & 0xC000 == 0  # kube-proxy's masquerade and drop bits
    assert cfg.firewall_mark & 0xFFFF0F00 == 0  # Cilium's nibble; Calico's, Tailscale's bits


def test_host_settings_as_written(tmp_path: Path) -> None:
    text = (
        "name: a1\ndata_plane: false\nike_listen: 192.0.2.10\n"
        "firewall_mark: 0x2a\nrouting_table: 120\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.data_plane is False and cfg.ike_listen == "192.0.2.10"
    assert cfg.firewall_mark == 0x2A and cfg.routing_table == 120
    quoted = load_config(write(tmp_path, "name: a1\ndata_plane: true\nfirewall_mark: '0x1001'\n"))
    assert quoted.data_plane is True and quoted.firewall_mark == 0x1001


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data_plane: yes please", "'data_plane' must be true or false"),
        ("firewall_mark: 0x4500", "carries kube-proxy's masquerade (0x4000)"),
        ("firewall_mark: 0x8001", "drop (0x8000) bit"),
        ("firewall_mark: 0", "firewall_mark must be 0x1..0xffffffff"),
        ("firewall_mark: mark", "'firewall_mark' must be a number"),
        ("routing_table: 254", "not one of the kernel's own (253 default, 254 main"),
        ("routing_table: 0", "routing_table must be 1..4294967295"),
        ("ike_listen: eth0", "ike_listen must be an IP address"),
        ("fire_wall_mark: 1", "did you mean 'firewall_mark'?"),
    ],
)
def test_bad_host_settings(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"name: a1\n{text}\n"))
    assert message in str(caught.value)
