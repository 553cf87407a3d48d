"""The netlink requests :class:`Routing` makes, counted against a recording stand-in for
pyroute2's asyncio client: a route install is one request once the device's index is
known, and a stale index (the device gone, or recreated under a new index) is looked up
anew without the caller seeing it."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import NetlinkError

from vpnfleet.agent.io import routes as routes_module
from vpnfleet.agent.io.routes import RouteError, Routing


class RecordingIpr:
    """Answers like the kernel for the requests :class:`Routing` makes on a device, and
    records each one as (method, command, kwargs)."""

    def __init__(self, links: dict[str, int]) -> None:
        self.links = links
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.routes: set[tuple[str, int]] = set()

    async def setup_endpoint(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _known(self, index: int) -> None:
        if index not in self.links.values():
            raise NetlinkError(errno.ENODEV, "No such device")

    async def link_lookup(self, **kwargs: Any) -> list[int]:
        self.requests.append(("link", "lookup", kwargs))
        name = kwargs["ifname"]
        return [self.links[name]] if name in self.links else []

    async def link(self, command: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.requests.append(("link", command, kwargs))
        self._known(kwargs["index"])
        return [{"index": kwargs["index"], "mtu": 1400}]

    async def addr(self, command: str, **kwargs: Any) -> list[Any]:
        self.requests.append(("addr", command, kwargs))
        self._known(kwargs["index"])
        return []

    async def route(self, command: str, **kwargs: Any) -> list[Any]:
        self.requests.append(("route", command, kwargs))
        key = (kwargs["dst"], kwargs["oif"])
        if command == "add":
            self._known(kwargs["oif"])
            if key in self.routes:
                raise NetlinkError(errno.EEXIST, "File exists")
            self.routes.add(key)
        elif key not in self.routes:
            # As the kernel: a deletion matches routes by device index, known or not.
            raise NetlinkError(errno.ESRCH, "No such process")
        else:
            self.routes.discard(key)
        return []

    def count(self, method: str, command: str) -> int:
        return sum(1 for m, c, _ in self.requests if (m, c) == (method, command))


@pytest.fixture
def ipr(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingIpr]:
    stub = RecordingIpr({"lo": 1, "tun0": 7})
    monkeypatch.setattr(routes_module, "AsyncIPRoute", lambda: stub)
    yield stub


async def test_route_installs_look_the_device_up_once(ipr: RecordingIpr) -> None:
    async with Routing() as routing:
        await routing.link_up("tun0", 1400)
        for i in range(99):
            await routing.add_route(f"10.{i}.0.0/24", "tun0", table=4500)
        for i in range(99):
            await routing.remove_route(f"10.{i}.0.0/24", "tun0", table=4500)
    # One lookup for 1 + 99 + 99 changes on the device, then one request per change.
    assert ipr.count("link", "lookup") == 1
    assert ipr.count("route", "add") == 99
    assert ipr.count("route", "del") == 99
    assert len(ipr.requests) == 1 + 1 + 99 + 99
    assert ipr.routes == set()


async def test_a_recreated_device_is_looked_up_anew(ipr: RecordingIpr) -> None:
    async with Routing() as routing:
        await routing.add_route("10.1.0.0/24", "tun0")
        await routing.add_address("tun0", "10.9.0.1/32")
        # The device is recreated (an agent restart) and gets a new index.
        ipr.links["tun0"] = 12
        await routing.add_route("10.2.0.0/24", "tun0")
        await routing.link_up("tun0")
        assert await routing.link_mtu("tun0") == 1400
        await routing.remove_address("tun0", "10.9.0.1/32")
    assert ipr.routes == {("10.1.0.0/24", 7), ("10.2.0.0/24", 12)}
    assert ipr.count("link", "lookup") == 2
    # The request with the stale index failed once (ENODEV), then went to the new one.
    assert [kw["oif"] for m, c, kw in ipr.requests if (m, c) == ("route", "add")] == [7, 7, 12]
    assert [kw["index"] for m, c, kw in ipr.requests if m != "route" and c != "lookup"] == [
        7,
        12,
        12,
        12,
    ]


async def test_a_route_removed_through_a_stale_index_is_removed(ipr: RecordingIpr) -> None:
    async with Routing() as routing:
        await routing.add_route("10.1.0.0/24", "tun0")
        # Recreated under a new index, and routed again by another client.
        ipr.links["tun0"] = 12
        ipr.routes = {("10.5.0.0/24", 12)}
        await routing.remove_route("10.5.0.0/24", "tun0")
        # Not there at all: still not an error.
        await routing.remove_route("10.6.0.0/24", "tun0")
    assert ipr.routes == set()
    assert [kw["oif"] for m, c, kw in ipr.requests if (m, c) == ("route", "del")] == [7, 12, 12]


async def test_a_device_gone_keeps_its_errors(ipr: RecordingIpr) -> None:
    async with Routing() as routing:
        await routing.add_route("10.1.0.0/24", "tun0")
        del ipr.links["tun0"]
        # Removing a route of a device that is gone is done (the kernel removed it).
        await routing.remove_route("10.1.0.0/24", "tun0")
        for call in (
            routing.add_route("10.2.0.0/24", "tun0"),
            routing.link_up("tun0"),
            routing.add_address("tun0", "10.9.0.1/32"),
        ):
            with pytest.raises(RouteError) as caught:
                await call
            assert caught.value.errno == errno.ENODEV
            assert str(caught.value) == "[Errno 19] no interface named 'tun0' in this namespace"
        # It comes back: the next change finds it.
        ipr.links["tun0"] = 15
        await routing.add_route("10.2.0.0/24", "tun0")
    assert ("10.2.0.0/24", 15) in ipr.routes


async def test_other_failures_are_raised_without_a_new_lookup(
    ipr: RecordingIpr, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(command: str, **kwargs: Any) -> list[Any]:
        raise NetlinkError(errno.EPERM, "Operation not permitted")

    async with Routing() as routing:
        await routing.add_route("10.1.0.0/24", "tun0")
        monkeypatch.setattr(ipr, "route", refuse)
        with pytest.raises(RouteError) as caught:
            await routing.remove_route("10.1.0.0/24", "tun0")
    assert caught.value.errno == errno.EPERM
    assert caught.value.strerror == (
        "remove route 10.1.0.0/24 dev tun0: EPERM Operation not permitted"
    )
    assert ipr.count("link", "lookup") == 1
