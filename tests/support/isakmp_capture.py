"""Record a strongSwan IKEv1 Main mode exchange for the codec's fixed vectors.

Two charons (tests/support/charon.py: one network namespace each, joined by a veth
pair) with one ``version = 1`` PSK connection; tcpdump on the initiator's veth keeps
the UDP 500 datagrams, which are printed as hex, one line per datagram:

    flock /tmp/vpnfleet-lab.lock .venv/bin/python -m tests.support.isakmp_capture [--aggressive]

Messages 1 and 2 (SA, vendor IDs) and 3 and 4 (KE, Nonce, NAT-D) are in the clear;
kernel-libipsec fakes a NAT, so messages 5 on move to UDP 4500 and are not kept.
Namespaces, processes and files are removed whatever happens.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from vici.exception import CommandException

from tests.support.charon import (
    CHARON_ADDR,
    CHARON_ID,
    OUR_ADDR,
    OUR_ID,
    PSK,
    Charon,
    interop_setup,
)

IKE_PROPOSAL = "aes128-sha256-modp2048"
ESP_PROPOSAL = "aes128-sha256"


def v1_connection(
    local: str, remote: str, local_id: str, remote_id: str, *, aggressive: bool = False
) -> dict[str, object]:
    return {
        "v1": {
            "version": "1",
            "aggressive": "yes" if aggressive else "no",
            "local_addrs": [local],
            "remote_addrs": [remote],
            "proposals": [IKE_PROPOSAL],
            "rekey_time": "24h",  # a lifetime above 65535 s: sent as a TLV attribute
            "local": {"auth": "psk", "id": local_id},
            "remote": {"auth": "psk", "id": remote_id},
            "children": {
                "net": {
                    "local_ts": ["10.1.0.0/16" if local == OUR_ADDR else "10.2.0.0/16"],
                    "remote_ts": ["10.2.0.0/16" if local == OUR_ADDR else "10.1.0.0/16"],
                    "esp_proposals": [ESP_PROPOSAL],
                    "start_action": "none",
                }
            },
        }
    }


def load(charon: Charon, conn: dict[str, object]) -> None:
    session = charon.session()
    session.load_conn(conn)
    session.load_shared({"type": "IKE", "data": PSK, "owners": [OUR_ID, CHARON_ID]})


def udp_payloads(pcap: bytes) -> list[tuple[str, str, bytes]]:
    """(source, destination, UDP payload) of each IPv4/UDP frame of a classic
    Ethernet pcap, as tcpdump -w writes it."""
    magic = struct.unpack_from("<I", pcap)[0]
    order = "<" if magic == 0xA1B2C3D4 else ">"
    pos = 24
    out = []
    while pos + 16 <= len(pcap):
        caplen = struct.unpack_from(order + "I", pcap, pos + 8)[0]
        frame = pcap[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue
        udp = ip[ihl:]
        length = struct.unpack_from("!H", udp, 4)[0]
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        out.append((src, dst, udp[8:length]))
    return out


def capture(*, aggressive: bool = False) -> list[tuple[str, str, bytes]]:
    """The UDP 500 datagrams of one exchange. With ``aggressive`` the initiator uses
    Aggressive mode, which a charon responder refuses for PSK unless strongswan.conf
    says otherwise (INTEROP.md): its cleartext first message and the answer are kept."""
    with interop_setup() as (topology, responder, directory):
        initiator = Charon(topology.our_ns, directory, name="initiator")
        dump: subprocess.Popen[bytes] | None = None
        try:
            load(responder, v1_connection(CHARON_ADDR, OUR_ADDR, CHARON_ID, OUR_ID))
            load(
                initiator,
                v1_connection(OUR_ADDR, CHARON_ADDR, OUR_ID, CHARON_ID, aggressive=aggressive),
            )
            pcap = directory / "v1.pcap"
            veth = "vo" + topology.our_ns.split("-", 1)[1]
            dump = subprocess.Popen(
                ["ip", "netns", "exec", topology.our_ns, "tcpdump", "-i", veth, "-U",
                 "--immediate-mode", "-s", "0", "-w", str(pcap), "udp", "port", "500"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            time.sleep(1.0)  # tcpdump needs a moment before it sees packets
            try:
                for _ in initiator.session().initiate({"child": "net", "timeout": 10000}):
                    pass
            except CommandException:
                if not aggressive:
                    raise
            time.sleep(0.5)
            os.killpg(dump.pid, signal.SIGINT)
            dump.wait(5)
            return udp_payloads(Path(pcap).read_bytes())
        finally:
            if dump is not None and dump.poll() is None:
                os.killpg(dump.pid, signal.SIGKILL)
                dump.wait(5)
            initiator.close()


def main() -> None:
    for src, dst, payload in capture(aggressive="--aggressive" in sys.argv[1:]):
        print(f"{src} -> {dst} {payload.hex()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
