"""What the codec writes, read back by an independent dissector: Wireshark's ISAKMP.

The messages go into a pcap file (raw IPv4, UDP 500, no network needed) and tshark
must find every payload of the chain (RFC 2408 section 3.1 Next Payload numbers,
Proposals and Transforms included), the fields we put in, and nothing malformed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.support.isakmp_vectors import EVERY_PAYLOAD, MAIN_1, MAIN_3
from vpnfleet.agent.ike.v1.constants import ExchangeType, Flag
from vpnfleet.agent.ike.v1.message import IsakmpHeader
from vpnfleet.agent.ike.v1.payloads import CertPayload, encode_message

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

FIELDS = [
    "isakmp.typepayload",
    "isakmp.trans.id",
    "isakmp.ipsec.attr.life_duration",
    "isakmp.id.port",
    "isakmp.notify.msgtype",
    "isakmp.notify.data.dpd.are_you_there",
    "isakmp.delete.spi",
    "isakmp.cfg.attr.internal_ip4_address",
    "isakmp.ike.nat_original_address_ipv4",
    "isakmp.ike.nat_original_address_ipv6",
    "_ws.malformed",
    "_ws.expert.message",
]


def pcap(datagrams: list[bytes]) -> bytes:
    """A classic pcap of LINKTYPE_RAW (101) frames: IPv4, UDP 500 -> 500."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for number, datagram in enumerate(datagrams):
        udp = struct.pack("!HHHH", 500, 500, 8 + len(datagram), 0) + datagram
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            number,
            0,
            64,
            17,
            0,
            bytes([192, 0, 2, 1]),
            bytes([192, 0, 2, 2]),
        )
        frame = ip + udp
        out.append(struct.pack("<IIII", number, 0, len(frame), len(frame)) + frame)
    return b"".join(out)


def dissect(datagrams: list[bytes], directory: Path) -> list[dict[str, str]]:
    path = directory / "v1.pcap"
    path.write_bytes(pcap(datagrams))
    args = [str(TSHARK), "-r", str(path), "-T", "fields"]
    for name in FIELDS:
        args += ["-e", name]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in done.stdout.splitlines()]


def test_tshark_reads_what_we_write(tmp_path: Path) -> None:
    # A certificate body of our own making is no X.509, which tshark would decode.
    payloads = [p for p in EVERY_PAYLOAD if not isinstance(p, CertPayload)]
    header = IsakmpHeader(b"\x01" * 8, b"\x02" * 8, 0, ExchangeType.QUICK, Flag.NONE, 9)
    ours = encode_message(header, payloads)
    strongswan_1, strongswan_3, every = dissect([MAIN_1, MAIN_3, ours], tmp_path)

    assert strongswan_1["isakmp.typepayload"] == "1,2,3,13,13,13,13,13"
    assert strongswan_3["isakmp.typepayload"] == "4,10,20,20"
    assert every["isakmp.typepayload"] == (
        "1,2,3,3,2,3,4,5,5,7,8,9,10,11,11,12,12,13,14,20,130,21,131,132"
    )
    assert every["isakmp.trans.id"] == "12,20,5"
    assert every["isakmp.ipsec.attr.life_duration"] == "3600"
    assert every["isakmp.id.port"] == "500,0"
    assert every["isakmp.notify.msgtype"] == "36136,24578"
    assert every["isakmp.notify.data.dpd.are_you_there"] == "7"
    assert every["isakmp.delete.spi"] == ("00000001,00000002,01020304050607081112131415161718")
    assert every["isakmp.cfg.attr.internal_ip4_address"] == "10.3.0.1"
    assert every["isakmp.ike.nat_original_address_ipv4"] == "192.0.2.9"
    assert every["isakmp.ike.nat_original_address_ipv6"] == "2001:db8::9"
    for dissected in (strongswan_1, strongswan_3, every):
        assert dissected["_ws.malformed"] == ""
        assert dissected["_ws.expert.message"] == ""
