"""The in-memory UDP network: framing, demultiplexing, counters and the fault hooks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vpnfleet.agent.io.keepalive import KeepaliveScheduler
from vpnfleet.agent.io.memory import Datagram, MemoryEndpoint, MemoryNetwork, nat_translate
from vpnfleet.agent.io.udp import NAT_KEEPALIVE, NON_ESP_MARKER, DatagramEndpoint, UdpError

IKE_MESSAGE = bytes(range(1, 9)) + bytes(8) + bytes.fromhex("212022080000000000000024") + bytes(8)
ESP_PACKET = bytes.fromhex("0000123400000001") + b"\x55" * 32


class Peer:
    def __init__(self, network: MemoryNetwork, host: str) -> None:
        self.ike: list[tuple[bytes, tuple[str, int], int]] = []
        self.esp: list[tuple[bytes, tuple[str, int]]] = []
        self.endpoint = MemoryEndpoint(network, self.on_ike, self.on_esp, host=host)

    def on_ike(self, data: bytes, addr: tuple[str, int], port: int) -> None:
        self.ike.append((data, addr, port))

    def on_esp(self, data: bytes, addr: tuple[str, int]) -> None:
        self.esp.append((data, addr))


@pytest.fixture
def net() -> MemoryNetwork:
    return MemoryNetwork()


def test_memory_endpoint_is_a_datagram_endpoint(net: MemoryNetwork) -> None:
    # Checked by mypy: the fake and the real endpoint share one interface.
    endpoint: DatagramEndpoint = MemoryEndpoint(
        net, lambda *_: None, lambda *_: None, host="10.0.0.1"
    )
    endpoint.start()
    endpoint.close()
    assert net.in_flight == 0


def test_nothing_moves_until_pump(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    a.endpoint.send_esp(ESP_PACKET, ("10.0.0.2", 4500))
    assert b.esp == [] and net.in_flight == 1
    assert net.pump() == 1
    assert b.esp == [(ESP_PACKET, ("10.0.0.1", 4500))]


def test_ike_both_ports_and_esp_keepalive(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    a.endpoint.send_ike(IKE_MESSAGE, ("10.0.0.2", 500), via_4500=False)
    a.endpoint.send_ike(IKE_MESSAGE, ("10.0.0.2", 4500), via_4500=True)
    a.endpoint.send_esp(ESP_PACKET, ("10.0.0.2", 4500))
    a.endpoint.send_keepalive(("10.0.0.2", 4500))
    assert net.pump() == 4
    assert b.ike == [
        (IKE_MESSAGE, ("10.0.0.1", 500), 500),
        (IKE_MESSAGE, ("10.0.0.1", 4500), 4500),
    ]
    assert b.esp == [(ESP_PACKET, ("10.0.0.1", 4500))]
    c = b.endpoint.counters
    assert (c.rx_ike, c.rx_esp, c.rx_keepalive) == (2, 1, 1)
    c = a.endpoint.counters
    assert (c.tx_ike, c.tx_esp, c.tx_keepalive) == (2, 1, 1)


def test_marker_is_on_the_wire_only_on_4500(net: MemoryNetwork) -> None:
    wire: list[Datagram] = []

    def watch(d: Datagram) -> bool:
        wire.append(d)
        return False

    net.drop = watch
    a = Peer(net, "10.0.0.1")
    Peer(net, "10.0.0.2")
    a.endpoint.send_ike(IKE_MESSAGE, ("10.0.0.2", 4500), via_4500=True)
    a.endpoint.send_ike(IKE_MESSAGE, ("10.0.0.2", 500), via_4500=False)
    net.pump()
    assert [d.data for d in wire] == [NON_ESP_MARKER + IKE_MESSAGE, IKE_MESSAGE]


def test_garbage_is_counted_and_dropped(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    for data in (b"", b"\x00\x00", NON_ESP_MARKER, b"\x01\x02\x03"):
        a.endpoint.send_raw(data, ("10.0.0.2", 4500))
    a.endpoint.send_raw(NAT_KEEPALIVE, ("10.0.0.2", 500), via_4500=False)
    net.pump()
    assert b.ike == [] and b.esp == []
    c = b.endpoint.counters
    assert (c.rx_short, c.rx_malformed) == (4, 1)


def test_replies_sent_during_delivery_are_pumped(net: MemoryNetwork) -> None:
    a = Peer(net, "10.0.0.1")
    echo: list[int] = []

    def reflect(data: bytes, addr: tuple[str, int]) -> None:
        echo.append(1)
        b.send_esp(data, addr)

    b = MemoryEndpoint(net, lambda *_: None, reflect, host="10.0.0.2")
    a.endpoint.send_esp(ESP_PACKET, ("10.0.0.2", 4500))
    assert net.pump() == 2
    assert echo == [1] and a.esp == [(ESP_PACKET, ("10.0.0.2", 4500))]


def test_drop_hook_loses_datagrams(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    net.drop = lambda d: d.data.endswith(b"\x01")
    a.endpoint.send_esp(b"\x00\x00\x00\x07\x00\x00\x00\x01", ("10.0.0.2", 4500))
    a.endpoint.send_esp(b"\x00\x00\x00\x07\x00\x00\x00\x02", ("10.0.0.2", 4500))
    net.pump()
    assert [d for d, _ in b.esp] == [b"\x00\x00\x00\x07\x00\x00\x00\x02"]
    assert net.dropped == 1


def test_duplicate_hook_delivers_twice(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    net.duplicate = lambda d: True
    a.endpoint.send_esp(ESP_PACKET, ("10.0.0.2", 4500))
    assert net.pump() == 2
    assert len(b.esp) == 2


def test_reorder_hook_sets_delivery_order(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    net.reorder = lambda batch: list(reversed(batch))
    packets = [bytes([0, 0, 0, 9, 0, 0, 0, n]) for n in range(1, 5)]
    for p in packets:
        a.endpoint.send_esp(p, ("10.0.0.2", 4500))
    net.pump()
    assert [d for d, _ in b.esp] == packets[::-1]


def test_unbound_destination_is_lost_and_counted(net: MemoryNetwork) -> None:
    a = Peer(net, "10.0.0.1")
    a.endpoint.send_esp(ESP_PACKET, ("10.0.0.9", 4500))
    assert net.pump() == 0
    assert net.unreachable == 1


def test_pump_stops_after_max_rounds(net: MemoryNetwork) -> None:
    # Two endpoints that reflect everything forever: pump must still return.
    endpoints: dict[str, MemoryEndpoint] = {}

    def bouncer(host: str) -> Callable[[bytes, tuple[str, int]], None]:
        def on_esp(data: bytes, addr: tuple[str, int]) -> None:
            endpoints[host].send_esp(data, addr)

        return on_esp

    for host in ("10.0.0.1", "10.0.0.2"):
        endpoints[host] = MemoryEndpoint(net, lambda *_: None, bouncer(host), host=host)
    endpoints["10.0.0.1"].send_esp(ESP_PACKET, ("10.0.0.2", 4500))
    assert net.pump(max_rounds=10) == 10
    assert net.in_flight == 1


def test_address_in_use_is_refused(net: MemoryNetwork) -> None:
    Peer(net, "10.0.0.1")
    with pytest.raises(UdpError, match=r"memory address 10\.0\.0\.1:4500 is in use"):
        Peer(net, "10.0.0.1")


def test_closed_endpoint_refuses_to_send_and_unbinds(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    b.endpoint.close()
    a.endpoint.send_esp(ESP_PACKET, ("10.0.0.2", 4500))
    net.pump()
    assert net.unreachable == 1
    with pytest.raises(UdpError, match=r"memory endpoint 10\.0\.0\.2 is closed"):
        b.endpoint.send_esp(ESP_PACKET, ("10.0.0.1", 4500))
    Peer(net, "10.0.0.2")  # the address is free again


def test_nat_translate_maps_each_inside_port(net: MemoryNetwork) -> None:
    inside, server = Peer(net, "192.168.1.10"), Peer(net, "203.0.113.5")
    net.translate = nat_translate("192.168.1.10", "198.51.100.1")
    inside.endpoint.send_ike(IKE_MESSAGE, ("203.0.113.5", 500), via_4500=False)
    inside.endpoint.send_ike(IKE_MESSAGE, ("203.0.113.5", 4500), via_4500=True)
    net.pump()
    assert [(addr, port) for _, addr, port in server.ike] == [
        (("198.51.100.1", 40000), 500),
        (("198.51.100.1", 40001), 4500),
    ]
    server.endpoint.send_esp(ESP_PACKET, ("198.51.100.1", 40001))
    net.pump()
    assert inside.esp == [(ESP_PACKET, ("203.0.113.5", 4500))]


def test_keepalive_scheduler_over_memory(net: MemoryNetwork) -> None:
    a, b = Peer(net, "10.0.0.1"), Peer(net, "10.0.0.2")
    scheduler = KeepaliveScheduler(a.endpoint, interval=20)
    scheduler.add_peer(("10.0.0.2", 4500))
    a.endpoint.send_esp(ESP_PACKET, ("10.0.0.2", 4500))
    assert scheduler.tick() == []
    assert scheduler.tick() == [("10.0.0.2", 4500)]
    net.pump()
    assert b.endpoint.counters.rx_keepalive == 1
    assert len(b.esp) == 1
