"""Pure parts of raw ESP and routing: the IPv4 header strip, the tunnel MTU arithmetic,
and the argument checks that refuse bad input before any netlink request is made."""

from __future__ import annotations

import pytest

from vpnfleet.agent.io.policy_rules import PolicyRule, rule_from_netlink
from vpnfleet.agent.io.rawesp import strip_ipv4_header
from vpnfleet.agent.io.routes import RouteType, Routing
from vpnfleet.agent.io.tunnel_mtu import AEAD_GCM16, CBC_SHA256, CBC_SHA384, CBC_SHA512, tunnel_mtu

ESP = bytes.fromhex("0000123400000001") + b"\xcc" * 24


def ipv4(payload: bytes, *, ihl_words: int = 5, protocol: int = 50, version: int = 4) -> bytes:
    """An IPv4 header (RFC 791 section 3.1) in front of ``payload``; options are zeros."""
    header = bytes([version << 4 | ihl_words, 0]) + (20 + len(payload)).to_bytes(2, "big")
    header += bytes(4) + bytes([64, protocol]) + bytes(2)
    header += bytes([10, 0, 0, 1, 10, 0, 0, 2]) + bytes(max(ihl_words - 5, 0) * 4)
    return header + payload


def test_strip_plain_header() -> None:
    assert strip_ipv4_header(ipv4(ESP)) == (ESP, "")


def test_strip_header_with_options() -> None:
    # IHL counts 32-bit words: 7 words means 8 bytes of options to skip.
    assert strip_ipv4_header(ipv4(ESP, ihl_words=7)) == (ESP, "")


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x45" + bytes(10), "short"),
        (ipv4(ESP[:7]), "short"),
        (ipv4(ESP, version=6), "malformed"),
        (ipv4(ESP, ihl_words=4), "malformed"),
        (ipv4(ESP, protocol=17), "malformed"),
        (ipv4(bytes(4) + ESP[4:]), "malformed"),
    ],
    ids=["shorter-than-header", "esp-7-bytes", "not-ipv4", "ihl-below-5", "not-esp", "spi-zero"],
)
def test_strip_refuses(packet: bytes, reason: str) -> None:
    assert strip_ipv4_header(packet) == (None, reason)


def test_tunnel_mtu_aead_over_udp_ipv4() -> None:
    # 1500 - (20 IPv4 + 8 UDP + 8 ESP header + 8 IV + 16 ICV) = 1440 = payload + 2 trailer.
    assert tunnel_mtu(1500, AEAD_GCM16) == 1438
    # A 1438-byte packet fills the underlay exactly: 1438 + 2 is already 4-aligned.
    assert 20 + 8 + 8 + 8 + 1438 + 2 + 16 == 1500


@pytest.mark.parametrize(
    ("kwargs", "mtu"),
    [
        ({"overhead": CBC_SHA256}, 1422),
        ({"overhead": CBC_SHA384}, 1422),  # the 8 extra ICV bytes fit in the padding
        ({"overhead": CBC_SHA512}, 1406),
        ({"udp_encap": False}, 1446),
        ({"ipv6_underlay": True}, 1418),
        ({"underlay_mtu": 9000}, 8938),
        ({"underlay_mtu": 1501}, 1438),
        ({"underlay_mtu": 1503}, 1438),
        ({"underlay_mtu": 1504}, 1442),
    ],
)
def test_tunnel_mtu_variants(kwargs: dict[str, object], mtu: int) -> None:
    assert tunnel_mtu(**kwargs) == mtu  # type: ignore[arg-type]


def test_tunnel_mtu_cbc_fits_exactly() -> None:
    # CBC: 16-byte blocks, so payload + trailer is padded to 1424 for a 1422-byte packet.
    inner = tunnel_mtu(1500, CBC_SHA256)
    padded = -(-(inner + 2) // 16) * 16
    assert 20 + 8 + 8 + 16 + padded + 16 <= 1500
    padded_next = -(-(inner + 1 + 2) // 16) * 16
    assert 20 + 8 + 8 + 16 + padded_next + 16 > 1500


def test_tunnel_mtu_too_small_underlay() -> None:
    with pytest.raises(ValueError, match="underlay MTU of 600 leaves 538 bytes"):
        tunnel_mtu(600)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.add_route("10.0.0.1/24", "tun0"), "bad prefix '10.0.0.1/24'"),
        (lambda r: r.add_route("10.0.0.0/33", "tun0"), "bad prefix '10.0.0.0/33'"),
        (lambda r: r.remove_route("nonsense", "tun0"), "bad prefix 'nonsense'"),
        (lambda r: r.add_route("10.0.0.0/24", "t", table=0), "routing table must be 1.."),
        (lambda r: r.add_address("tun0", "10.0.0.300/32"), "bad interface address"),
        (lambda r: r.remove_address("tun0", "x"), "bad interface address 'x'"),
        (lambda r: r.link_up("tun0", mtu=40), "MTU must be 68..65535, got 40"),
        (lambda r: r.add_fwmark_rule(0, 100), "firewall mark must be 1..0xffffffff, got 0"),
        (lambda r: r.add_fwmark_rule(1, 0), "routing table must be 1..4294967295, got 0"),
        (lambda r: r.remove_fwmark_rule(1, 100, priority=-1), "rule priority must be"),
        (lambda r: r.add_route("10.0.0.0/24", "t", source="10.0.0.x"), "bad source address"),
        (
            lambda r: r.add_route("10.0.0.0/24", "t", source="2001:db8::1"),
            "source address 2001:db8::1 is not of the family of 10.0.0.0/24",
        ),
        (lambda r: r.add_typed_route("10.0.0.0/24", "drop"), "route type must be one of"),
        (
            lambda r: r.remove_typed_route("10.0.0.0/33", RouteType.THROW),
            "bad prefix '10.0.0.0/33'",
        ),
        (
            lambda r: r.add_typed_route("10.0.0.0/24", RouteType.UNREACHABLE, metric=-1),
            "route metric must be 0..4294967295, got -1",
        ),
        (
            lambda r: r.add_typed_route("10.0.0.0/24", RouteType.THROW, table=0),
            "routing table must",
        ),
        (lambda r: r.add_destination_rule("10.0.0.1/24", 100, priority=1), "bad prefix"),
        (lambda r: r.add_destination_rule("10.0.0.0/24", 0, priority=1), "routing table must"),
        (
            lambda r: r.remove_destination_rule("10.0.0.0/24", 100, priority=-1),
            "rule priority must be 0..4294967295, got -1",
        ),
    ],
)
async def test_routing_refuses_bad_arguments(call: object, message: str) -> None:
    routing = Routing()  # never entered: the checks come before any netlink request
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        await call(routing)  # type: ignore[operator]


async def test_routing_outside_context_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="Routing used outside 'async with'"):
        await Routing().add_route("10.0.0.0/24", "tun0")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"family": 5}, "rule family must be 4 or 6, got 5"),
        ({"table": 0}, "routing table must be 1..4294967295, got 0"),
        ({"priority": -1}, "rule priority must be 0..4294967295, got -1"),
        ({"source": "10.0.0.1/24"}, "bad prefix '10.0.0.1/24'"),
        ({"destination": "2001:db8::/32"}, "rule destination 2001:db8::/32 is not an IPv4"),
        ({"family": 6, "source": "10.0.0.0/8"}, "rule source 10.0.0.0/8 is not an IPv6"),
        ({"protocol": 256}, "IP protocol must be 0..255, got 256"),
        ({"destination_ports": (7, 7)}, "ports 7-7 need protocol tcp, udp or sctp, got 0"),
        ({"protocol": 1, "source_ports": (8, 8)}, "need protocol tcp, udp or sctp, got 1"),
        ({"protocol": 6, "source_ports": (9, 8)}, "bad port range 9-8"),
        ({"protocol": 6, "destination_ports": (1, 70000)}, "bad port range 1-70000"),
        ({"fwmark": 0}, "firewall mark must be 1..0xffffffff, got 0"),
    ],
)
def test_policy_rule_refuses_bad_fields(fields: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"priority": 100, "table": 254, **fields}
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        PolicyRule(**args)  # type: ignore[arg-type]


def test_policy_rule_as_text_and_netlink_attributes() -> None:
    rule = PolicyRule(
        4501, 254, source="10.1.0.0/16", destination="10.1.2.0/24", protocol=17,
        source_ports=(1024, 65535), destination_ports=(7, 7),
    )  # fmt: skip
    assert str(rule) == (
        "4501: from 10.1.0.0/16 to 10.1.2.0/24 ipproto 17 sport 1024-65535 dport 7-7 lookup main"
    )
    assert rule.netlink_args() == {
        "family": 2, "table": 254, "priority": 4501, "src": "10.1.0.0", "src_len": 16,
        "dst": "10.1.2.0", "dst_len": 24, "ip_proto": 17, "sport_range": "1024:65535",
        "dport_range": "7:7",
    }  # fmt: skip
    mark = PolicyRule(4500, 254, family=6, fwmark=0x4500)
    assert str(mark) == "-6 4500: from all fwmark 0x4500 lookup main"
    assert mark.netlink_args() == {"family": 10, "table": 254, "priority": 4500, "fwmark": 0x4500}


class FakeRuleMessage(dict[str, object]):
    """A dumped rule as pyroute2 gives it: header fields as items, attributes by get()."""

    def __init__(self, attrs: dict[str, object], **header: object) -> None:
        base = {"family": 2, "dst_len": 0, "src_len": 0, "tos": 0, "table": 254, "action": 1}
        super().__init__({**base, **header})
        self.attrs = attrs

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        return self.attrs.get(key, default)


def test_dumped_rules_read_back_and_foreign_ones_are_left_out() -> None:
    unset = {"FRA_SUPPRESS_PREFIXLEN": 0xFFFFFFFF, "FRA_FWMASK": 0xFFFFFFFF}
    ours = FakeRuleMessage(
        {**unset, "priority": 4501, "table": 4500, "dst": "10.1.2.0", "ip_proto": 6,
         "dport_range": "22:22"},
        dst_len=24,
    )  # fmt: skip
    assert rule_from_netlink(ours) == PolicyRule(
        4501, 4500, destination="10.1.2.0/24", protocol=6, destination_ports=(22, 22)
    )
    # The local table's rule at priority 0 carries no priority attribute.
    assert rule_from_netlink(FakeRuleMessage({"table": 255}, table=255)) == PolicyRule(0, 255)
    for foreign in (
        FakeRuleMessage({"FRA_IIFNAME": "eth0", "priority": 4501}),
        FakeRuleMessage({"FRA_SUPPRESS_PREFIXLEN": 0, "priority": 4501}),
        FakeRuleMessage({"FRA_FWMASK": 0xFF, "fwmark": 1, "priority": 4501}),
        FakeRuleMessage({"priority": 4501}, action=2),  # goto / blackhole / ...
        FakeRuleMessage({"priority": 4501}, tos=16),
    ):
        assert rule_from_netlink(foreign) is None, foreign.attrs
