"""Reading the kernel's counters of a namespace (tests/support/kernel_counters.py) and
ping's round-trip times (tests/support/pings.py), on text taken from this machine: the
receiving namespace of bench/esp_throughput.py during a raw-ESP transfer between two
agents, and the root namespace (a few counters that were zero there are set here, so
that every field is told apart)."""

from __future__ import annotations

import pytest

from tests.support.kernel_counters import (
    CounterError,
    Device,
    parse_dev,
    parse_snmp,
    parse_stat_cpu,
    retransmit_percent,
    socket_drops,
)
from tests.support.pings import PingStream, SitePath, echo_rtts

SNMP = """\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 1150249 0 0 0 0 0 1148919 1181630 0 0 0 0 0 0 0 0 0 1181630
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps
Icmp: 72 0 0 52 0 0 0 0 20 0 0 0 0 0 68 0 0 0 48 0 0 0 0 0 20 0 0 0 0
IcmpMsg: InType3 InType8 OutType0 OutType3
IcmpMsg: 52 20 20 48
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 67466 25341 796 2311 2 1147178 1229774 2153 0 5231 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1886 48 0 1673 7 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
"""  # noqa: E501

# The agent's raw ESP socket (local "port" 0x32: IP protocol 50) after 21,558 drops.
RAW = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode ref pointer drops\n"
    " 214: 00000000:0032 00000000:0000 07 00000000:00000000 00:00000000 00000000     0  "
    "      0 4359863 2 00000000e8aaabd1 21558\n"
)
# Its UDP 500 (0x1F4) and 4500 (0x1194) sockets; the kernel pads every line with blanks.
UDP = (
    "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode ref pointer drops            \n"
    " 4686: 00000000:01F4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0  "
    "      0 4359862 2 0000000016a3d004 3       \n"
    " 8686: 00000000:1194 00000000:0000 07 00000000:00000000 00:00000000 00000000     0  "
    "      0 4359861 2 0000000013b01dba 40       \n"
)
EMPTY_UDP6 = (
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
)
DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    8486      10    0    0    0     0          0         0     8486      10    0    0    0     0       0          0
  eth0: 267378675  177664    0    0    0     0          0         0  4792377   36462    0    0    0     0       0          0
site0p:     826       7    0    0    0     0          0         0      826       7    0    0    0     0       0          0
 site0:     826       7    0    0    0     0          0         0      826       7    0    0    0     0       0          0
vpnfleet0: 224082486  155894    0    5    0     0          0         0  2221004   36409    0    2    0     0       0          0
"""  # noqa: E501


def test_snmp_gives_each_protocols_counters_by_name() -> None:
    snmp = parse_snmp(SNMP)
    assert snmp["Tcp"]["OutSegs"] == 1229774
    assert snmp["Tcp"]["RetransSegs"] == 2153
    assert snmp["Udp"]["RcvbufErrors"] == 7
    assert snmp["Tcp"]["MaxConn"] == -1
    assert set(snmp) == {"Ip", "Icmp", "IcmpMsg", "Tcp", "Udp", "UdpLite"}


@pytest.mark.parametrize(
    "text",
    [
        SNMP.rsplit("\n", 2)[0],  # the last values line missing
        SNMP.replace("Udp: 1886 48 0 1673 7", "Udp: 1886 48 0 1673"),  # one value short
        SNMP.replace("Tcp: 1 200", "Ip: 1 200"),  # names and values of different protocols
    ],
    ids=["odd-lines", "short-values", "mismatched-protocols"],
)
def test_snmp_that_does_not_pair_up_is_refused(text: str) -> None:
    with pytest.raises(CounterError):
        parse_snmp(text)


def test_socket_drops_sum_the_drops_column() -> None:
    assert socket_drops(RAW) == 21558
    assert socket_drops(UDP) == 43
    assert socket_drops(EMPTY_UDP6) == 0


def test_a_table_without_a_drops_column_is_refused() -> None:
    with pytest.raises(CounterError, match="drops"):
        socket_drops(RAW.replace(" drops", ""))


def test_dev_reads_bytes_packets_and_drops_each_way() -> None:
    devices = parse_dev(DEV)
    assert devices["vpnfleet0"] == Device(
        rx_bytes=224082486,
        rx_packets=155894,
        rx_dropped=5,
        tx_bytes=2221004,
        tx_packets=36409,
        tx_dropped=2,
    )
    assert list(devices) == ["lo", "eth0", "site0p", "site0", "vpnfleet0"]


def test_dev_refuses_a_short_line() -> None:
    with pytest.raises(CounterError, match="unexpected line"):
        parse_dev(DEV + "   tun9: 1 2 3\n")


def test_retransmits_are_a_share_of_every_segment_sent() -> None:
    # OutSegs leaves retransmissions out: 23,279 of 156,340 + 23,279 segments sent.
    assert retransmit_percent(156340, 23279) == pytest.approx(12.96, abs=0.005)
    assert retransmit_percent(406644, 0) == 0.0
    with pytest.raises(CounterError):
        retransmit_percent(0, 0)


# /proc/PID/stat of a process here (its name changed to one with a blank and a ")").
STAT = (
    "1 (a) b) S 0 0 0 0 -1 4194560 181621 781856672 0 48272 2757 9687 2859873 453015 10 "
    "-10 42 0 21 58597376 3265 18446744073709551615 1 1 0 0 0 0 0 4096 1256 0 0 0 17 1 0 "
    "0 0 0 0 0 0 0 0 0 0 0 0\n"
)


def test_cpu_seconds_are_user_plus_system_ticks() -> None:
    # utime 2757 and stime 9687 ticks (fields 14 and 15), 100 ticks a second here.
    assert parse_stat_cpu(STAT, 100) == pytest.approx(124.44)
    with pytest.raises(CounterError):
        parse_stat_cpu("1 (a) S 0 0", 100)


def test_echo_rtts_by_sequence_number() -> None:
    output = (
        "PING 10.2.0.1 (10.2.0.1) from 10.1.0.1 : 56(84) bytes of data.\n"
        "64 bytes from 10.2.0.1: icmp_seq=1 ttl=64 time=0.718 ms\n"
        "64 bytes from 10.2.0.1: icmp_seq=3 ttl=64 time=1.05 ms\n"
        "64 bytes from 10.2.0.1: icmp_seq=3 ttl=64 time=9.99 ms (DUP!)\n"
        "[1795752533.492460] 64 bytes from 10.2.0.1: icmp_seq=4 ttl=64 time=12 ms\n"
        "\n--- 10.2.0.1 ping statistics ---\n"
        "4 packets transmitted, 3 received, +1 duplicates, 25% packet loss, time 31ms\n"
        "rtt min/avg/max/mdev = 0.718/5.939/12.000/4.973 ms\n"
    )
    assert echo_rtts(output) == {1: 0.718, 3: 1.05, 4: 12.0}


def _stream(interval: float, rtts: dict[int, float], transmitted: int) -> PingStream:
    """A stopped stream as :meth:`PingStream._read` leaves it after ping's output."""
    path = SitePath("a1", "a4", "ns", "10.1.1.1", "10.1.4.1")
    stream = PingStream(path, interval, proc=None)  # type: ignore[arg-type]
    for seq, rtt in rtts.items():
        stream.output.append(
            f"[1765000000.{seq:06d}] 64 bytes from 10.1.4.1: icmp_seq={seq} ttl=63 time={rtt} ms\n"
        )
        stream.replies[seq] = 1765000000 + seq / 1e6
    stream.transmitted = transmitted
    return stream


def test_requests_sent_within_the_slowest_round_trips_are_in_flight_not_lost() -> None:
    """Seen on a loaded machine: replies as slow as 0.98 s while ping sent every 5 ms,
    so the last few requests were still on their way when ping stopped."""
    rtts = {seq: 0.4 for seq in range(1, 1163)}
    rtts[900] = 978.5
    assert _stream(0.005, rtts, 1167).lost == []
    # A gap among answered requests is a loss however slow the replies.
    del rtts[500]
    assert _stream(0.005, rtts, 1167).lost == [500]


def test_with_fast_replies_only_the_last_two_requests_are_in_flight() -> None:
    rtts = {seq: 0.4 for seq in range(1, 1163)}
    assert _stream(0.005, rtts, 1167).lost == [1163, 1164, 1165]
