"""What a lab holds on this machine (controller/lab/owner.py), in a directory of the
test's own: a key and a management subnet no other lab has, recorded whole with the lab
directory that owns them; and the layout built with them."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.lab import LabError, owner, plan_layout

INVENTORIES = Path(__file__).resolve().parents[3] / "inventories"
V4 = ipaddress.IPv4Network


@pytest.fixture(autouse=True)
def owners_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "run"
    monkeypatch.setattr(owner, "OWNERS_DIR", where)
    return where


def _claim(
    name: str, state: Path, *, avoid: tuple[V4, ...] = (), busy: frozenset[str] = frozenset()
) -> owner.LabOwner:
    return owner.claim(
        name,
        state / "labs" / name,
        state,
        version=4,
        hosts=4,
        avoid=avoid,
        in_use=lambda key: key in busy,
    )


def _record(lab: owner.LabOwner) -> None:
    lab.lab_dir.mkdir(parents=True, exist_ok=True)
    (lab.lab_dir / "lab.json").write_text("{}")


def test_two_state_directories_each_get_a_key_and_a_subnet(tmp_path: Path) -> None:
    a = _claim("demo", tmp_path / "a")
    _record(a)
    b = _claim("demo", tmp_path / "b")
    assert (a.key, a.mgmt) == ("demo", "198.18.0.0/24")
    assert (b.key, b.mgmt) == ("demo_2", "198.18.1.0/24")
    assert owner.named("demo") == [a, b]
    assert owner.read_owner("demo_2") == b and b.owns(tmp_path / "b" / "labs" / "demo")
    assert a.down_command == f"vpnfleet --state {tmp_path / 'a'} lab down --name demo"
    assert "whose lab record is gone" in b.describe() and "gone" not in a.describe()
    # The same lab directory claiming again keeps what it holds.
    assert _claim("demo", tmp_path / "a") == a
    assert owner.owner_of(tmp_path / "a" / "labs" / "demo") == a


def test_keys_and_subnets_skip_what_is_in_use(tmp_path: Path) -> None:
    # Namespaces of the name exist (another lab's leftovers), and the first subnets are
    # the lab's own or this machine's routes.
    lab = _claim(
        "longlabname1",
        tmp_path,
        avoid=(V4("198.18.0.0/23"), V4("198.18.2.128/25")),
        busy=frozenset({"longlabname1", "longlabnam_2"}),
    )
    assert lab.key == "longlabnam_3" and len(f"vf-{lab.key}") <= 15
    assert lab.mgmt == "198.18.3.0/24"


def test_a_big_lab_gets_a_wider_subnet_and_the_pool_can_run_out(tmp_path: Path) -> None:
    assert owner.mgmt_prefixlen(4, 253) == 24
    assert owner.mgmt_prefixlen(4, 254) == 23
    assert owner.mgmt_prefixlen(6, 5000) == 64
    pool = owner.MGMT_POOL[4]
    with pytest.raises(LabError, match=r"no free management subnet left in 198\.18\.0\.0/15"):
        owner.free_mgmt(4, 4, [pool])


def test_a_lab_whose_record_and_namespaces_are_gone_is_forgotten(tmp_path: Path) -> None:
    dead = _claim("ux", tmp_path / "a")  # never recorded, nothing on the machine
    fresh = _claim("ux", tmp_path / "b")
    assert fresh.key == "ux" and fresh.mgmt == dead.mgmt
    assert owner.named("ux") == [fresh]


def test_the_record_is_whole_and_names_the_state_directory(
    tmp_path: Path, owners_dir: Path
) -> None:
    state = tmp_path / "state with space"
    lab = _claim("ux", state)
    data = json.loads((owners_dir / "ux.json").read_text())
    assert data == {
        "name": "ux",
        "key": "ux",
        "lab_dir": str(state / "labs" / "ux"),
        "state_dir": str(state),
        "mgmt": "198.18.0.0/24",
    }
    assert f"--state '{state}' lab down" in lab.down_command
    assert sorted(p.name for p in owners_dir.iterdir()) == [".lock", "ux.json"]


def test_release_and_an_unreadable_record(owners_dir: Path, tmp_path: Path) -> None:
    mine = _claim("ux", tmp_path)
    owner.release("ux", tmp_path / "other" / "labs" / "ux")
    assert owner.read_owner("ux") == mine
    owner.release_of(mine.lab_dir)
    owner.release("ux", mine.lab_dir)
    assert owner.read_owner("ux") is None
    _claim("ux", tmp_path)
    owner.release("ux", None)
    assert owner.read_owner("ux") is None
    # A record nobody can read keeps its key from being given out again.
    (owners_dir / "ux.json").write_text("{not json")
    assert owner.read_owner("ux") is None and owner.owners() == []
    assert _claim("ux", tmp_path / "b").key == "ux_2"


def test_the_layout_puts_the_controller_and_agents_on_the_management_subnet() -> None:
    inv = load_inventory(INVENTORIES / "nat")
    layout = plan_layout("ux", inv, key="ux_2", mgmt=V4("198.18.7.0/24"))
    assert (layout.key, layout.root_link, layout.bridge_netns) == (
        "ux_2",
        "vf-ux_2",
        "vf-ux_2-br",
    )
    assert layout.mgmt_address == "198.18.7.1"
    mgmt = {h.host: h.mgmt_address for h in layout.hosts.values()}
    assert mgmt == {"n1": "198.18.7.2", "n2": "198.18.7.3", "n3": "198.18.7.4"}
    n3 = layout.hosts["n3"]
    assert n3.netns == "vf-ux_2-n3" and n3.router is not None
    # Behind its NAT router too: the router forwards the agent port from it.
    assert n3.endpoint == "198.18.7.4:50051" and n3.address == "10.99.3.3"
    data = layout.to_json()
    assert data["mgmt_network"] == "198.18.7.0/24" and data["key"] == "ux_2"
    assert data["hosts"]["n1"]["endpoint"] == "198.18.7.2:50051"
    assert ipaddress.ip_network(layout.underlay) in layout.networks()


@pytest.mark.parametrize(
    ("mgmt", "error"),
    [
        ("10.99.3.0/24", r"overlaps the lab's network 10\.99\.3\.0/24"),
        ("198.18.0.0/30", r"too small for 3 agents"),
        ("2001:2::/64", r"not in the underlay's IP version"),
    ],
)
def test_a_management_subnet_the_lab_cannot_use_is_refused(mgmt: str, error: str) -> None:
    inv = load_inventory(INVENTORIES / "nat")
    with pytest.raises(LabError, match=error):
        plan_layout("ux", inv, mgmt=ipaddress.ip_network(mgmt))
