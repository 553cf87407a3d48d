"""Safety rails: SPD entries that would protect or discard the controller's paths."""

from __future__ import annotations

from vpnfleet.controller.fleet.rails import (
    ControlPath,
    PathKind,
    RailError,
    check_fleet,
    check_path,
    check_plan,
    control_paths,
)
from vpnfleet.controller.planner import (
    Identity,
    IdType,
    NodePlan,
    SpdAction,
    SpdEntry,
    TrafficSelector,
)

CONTROLLER = "192.0.2.10"
HOST_ADDRESS = "198.51.100.1"
AGENT_PORT = 50051


def plan(*entries: SpdEntry, host: str = "gw1", address: str = HOST_ADDRESS) -> NodePlan:
    return NodePlan(
        host=host,
        generation=1,
        content_hash="",
        identity=Identity(IdType.FQDN, host),
        addresses=(address,),
        subnets=("10.1.0.0/24",),
        spd=entries,
        peers=(),
        trust_anchors=(),
        source_revision="test",
    )


def entry(
    name: str,
    action: SpdAction,
    local: str = "0.0.0.0/0",
    remote: str = "0.0.0.0/0",
    protocol: int = 0,
    local_ports: tuple[int, int] = (0, 65535),
    remote_ports: tuple[int, int] = (0, 65535),
) -> SpdEntry:
    selector = TrafficSelector(local, remote, protocol, *local_ports, *remote_ports)
    return SpdEntry(name, selector, action, "peer" if action is SpdAction.PROTECT else "")


GRPC = ControlPath(PathKind.GRPC, "gw1", HOST_ADDRESS, AGENT_PORT, CONTROLLER)
SSH = ControlPath(PathKind.SSH, "gw1", HOST_ADDRESS, 22, CONTROLLER)


def test_protect_covering_the_controller_is_refused_for_both_paths() -> None:
    p = plan(entry("policy:all", SpdAction.PROTECT, remote="192.0.2.0/24"))
    found = check_plan(p, [GRPC, SSH])
    assert [(v.path.kind, v.entry, v.action) for v in found] == [
        ("grpc", "policy:all", SpdAction.PROTECT),
        ("ssh", "policy:all", SpdAction.PROTECT),
    ]
    text = str(found[0])
    assert "gw1" in text and "policy:all" in text and "protect" in text
    assert f"{HOST_ADDRESS}:{AGENT_PORT}" in text and CONTROLLER in text


def test_discard_of_ssh_only_is_refused_for_ssh_only() -> None:
    p = plan(entry("policy:no-ssh", SpdAction.DISCARD, protocol=6, local_ports=(22, 22)))
    assert check_path(p, GRPC) is None
    violation = check_path(p, SSH)
    assert violation is not None
    assert violation.action is SpdAction.DISCARD and violation.entry == "policy:no-ssh"
    assert "would discard the SSH path" in str(violation)


def test_discard_of_the_agent_port_is_refused() -> None:
    p = plan(
        entry("policy:lock", SpdAction.DISCARD, protocol=6, local_ports=(50000, 50100)),
    )
    violation = check_path(p, GRPC)
    assert violation is not None and violation.path.kind == "grpc"


def test_bypass_before_makes_it_safe() -> None:
    p = plan(
        entry("policy:mgmt", SpdAction.BYPASS, remote=f"{CONTROLLER}/32"),
        entry("policy:all", SpdAction.DISCARD),
    )
    assert check_plan(p, [GRPC, SSH]) == []


def test_bypass_after_does_not_help() -> None:
    p = plan(
        entry("policy:all", SpdAction.DISCARD),
        entry("policy:mgmt", SpdAction.BYPASS, remote=f"{CONTROLLER}/32"),
    )
    assert [v.entry for v in check_plan(p, [GRPC, SSH])] == ["policy:all", "policy:all"]


def test_bypass_of_some_client_ports_leaves_the_rest_exposed() -> None:
    p = plan(
        entry("policy:part", SpdAction.BYPASS, protocol=6, remote_ports=(1024, 2000)),
        entry("policy:all", SpdAction.DISCARD),
    )
    violation = check_path(p, SSH)
    assert violation is not None and violation.entry == "policy:all"


def test_entries_that_miss_the_path_are_fine() -> None:
    p = plan(
        entry("policy:udp", SpdAction.DISCARD, protocol=17),
        entry("policy:web", SpdAction.DISCARD, protocol=6, local_ports=(80, 80)),
        entry("policy:other-host", SpdAction.DISCARD, local="203.0.113.0/24"),
        entry("policy:v6", SpdAction.DISCARD, local="::/0", remote="::/0"),
        entry("policy:server-side-only", SpdAction.DISCARD, protocol=6, remote_ports=(22, 22)),
        entry("peer", SpdAction.PROTECT, local="10.1.0.0/24", remote="10.2.0.0/24"),
    )
    assert check_plan(p, [GRPC, SSH]) == []


def test_control_paths_from_the_endpoint_and_addresses() -> None:
    p = plan()
    paths = control_paths(p, "127.0.0.1:7000", lambda target: "127.0.0.9")
    assert [(c.kind, c.local_address, c.local_port, c.remote_address) for c in paths] == [
        ("grpc", "127.0.0.1", 7000, "127.0.0.9"),
        ("ssh", HOST_ADDRESS, 22, "127.0.0.9"),
        ("ssh", "127.0.0.1", 22, "127.0.0.9"),
    ]
    v6 = control_paths(p, "[2001:db8::1]:50051", lambda target: "2001:db8::9")
    assert v6[0].local_address == "2001:db8::1" and v6[0].local_port == 50051


def test_check_fleet_names_each_host_and_skips_unselected() -> None:
    bad = entry("policy:all", SpdAction.DISCARD)
    plans = {"gw1": plan(bad), "gw2": plan(bad, host="gw2", address="198.51.100.2")}
    endpoints = {"gw1": f"{HOST_ADDRESS}:{AGENT_PORT}", "gw2": "198.51.100.2:50051"}
    found = check_fleet(plans, endpoints, ["gw2"], source_address=lambda t: CONTROLLER)
    assert {v.host for v in found} == {"gw2"}
    assert {v.path.kind for v in found} == {"grpc", "ssh"}
    message = str(RailError(found))
    assert message.startswith("refused: 2 plan entries would cut the controller off")
    assert "host gw2: SPD entry 'policy:all' would discard" in message


def test_unroutable_target_has_no_path_to_cut() -> None:
    def no_route(target: str) -> str:
        raise OSError(101, "Network is unreachable")

    plans = {"gw1": plan(entry("policy:all", SpdAction.DISCARD))}
    endpoints = {"gw1": f"{HOST_ADDRESS}:{AGENT_PORT}"}
    assert check_fleet(plans, endpoints, source_address=no_route) == []
