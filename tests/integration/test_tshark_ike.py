"""tshark judges the IKEv2 messages (RFC 7296) that our IkeSa pair exchanges.

An initiator and a responder run to ESTABLISHED in memory on fake time; child processes
in the two namespaces then send exactly the datagrams the pair produced, in order, over
UDP 500, and dumpcap captures them. tshark decrypts IKE_AUTH with the record from
``tshark_ike_options``: the SK payload must open, its ICV verify and its payloads be the
ones RFC 7296 section 1.2 lists. A flipped key bit must spoil the one direction it keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.support.tshark_lab import (
    ADDR_A,
    ADDR_B,
    STEP_TIMEOUT,
    Lab,
    ike_verdicts,
    make_lab,
)
from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
from vpnfleet.agent.ike.constants import ExchangeType, PayloadType
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import IkeSaEstablished
from vpnfleet.agent.ike.export import (
    ike_sa_decryption_record,
    ikev2_decryption_record,
    tshark_ike_options,
)
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.keys import IkeSaKeys
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import Role


@pytest.fixture
def lab() -> Iterator[Lab]:
    with make_lab() as made:
        yield made


IKE_PORT = 500

UDP_PEER = """
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((PARAMS["addr"], PARAMS["port"]))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if "send" in command:
        sent = sock.sendto(bytes.fromhex(command["send"]), tuple(command["to"]))
        print(json.dumps({"sent": sent}), flush=True)
    elif "recv" in command:
        sock.settimeout(command["recv"])
        data, addr = sock.recvfrom(65535)
        print(json.dumps({"recv": data.hex(), "from": list(addr)}), flush=True)
"""


@dataclass
class IkeExchange:
    """An initiator and responder run to ESTABLISHED in memory, on fake time."""

    initiator: IkeSa
    responder: IkeSa
    datagrams: list[tuple[str, bytes]]
    """("a" or "b" for the sender, datagram) in the order they were produced."""


def _ike_config(
    proposal: str, local_id: str, remote_id: str, local_net: str, remote_net: str
) -> IkeConfig:
    return IkeConfig(
        Identity.parse(local_id),
        Identity.parse(remote_id),
        b"tshark judges what we send",
        (IkeProposal.parse(proposal),),
        ChildConfig(
            "net",
            (EspProposal.parse("aes128gcm16"), EspProposal.parse("aes128-sha256")),
            (selector(local_net),),
            (selector(remote_net),),
        ),
    )


def run_ike_exchange(proposal: str) -> IkeExchange:
    # The namespaces' own addresses, so the NAT detection hashes (section 2.23) the pair
    # computes match the packets as they are later sent.
    left, right = (ADDR_A, IKE_PORT), (ADDR_B, IKE_PORT)
    initiator = IkeSa(
        _ike_config(proposal, "left.example", "right.example", "10.1.0.0/16", "10.2.0.0/16"),
        Role.INITIATOR,
        left,
    )
    responder = IkeSa(
        _ike_config(proposal, "right.example", "left.example", "10.2.0.0/16", "10.1.0.0/16"),
        Role.RESPONDER,
        right,
    )
    now = 1000.0
    initiator.initiate(right, now)
    datagrams: list[tuple[str, bytes]] = []
    for _ in range(10):
        moved = False
        for data, addr in initiator.datagrams_to_send(now):
            assert addr == right
            datagrams.append(("a", data))
            responder.receive_datagram(data, left, now)
            moved = True
        for data, addr in responder.datagrams_to_send(now):
            assert addr == left
            datagrams.append(("b", data))
            initiator.receive_datagram(data, right, now)
            moved = True
        if not moved:
            break
    for sa in (initiator, responder):
        events = []
        while (event := sa.next_event()) is not None:
            events.append(event)
        assert any(isinstance(e, IkeSaEstablished) for e in events), f"{sa!r}: {events}"
    return IkeExchange(initiator, responder, datagrams)


def _replace_key(keys: IkeSaKeys, name: str) -> IkeSaKeys:
    """The same keys with one bit of ``name`` changed."""
    key: bytes = getattr(keys, name)
    return replace(keys, **{name: key[:-1] + bytes([key[-1] ^ 0x01])})


@dataclass(frozen=True)
class IkeCapture:
    pcap: Path
    exchange: IkeExchange


def capture_ike_exchange(lab: Lab, proposal: str) -> IkeCapture:
    """Run the pair in memory, then replay its datagrams for real between the namespaces."""
    exchange = run_ike_exchange(proposal)
    addresses = {"a": ADDR_A, "b": ADDR_B}
    peers = {
        "a": lab.run(lab.a, UDP_PEER, addr=ADDR_A, port=IKE_PORT),
        "b": lab.run(lab.b, UDP_PEER, addr=ADDR_B, port=IKE_PORT),
    }
    for peer in peers.values():
        assert peer.line() == {"ready": True}
    capture = lab.start_capture("ike", f"udp port {IKE_PORT}", len(exchange.datagrams))
    for sender, data in exchange.datagrams:
        receiver = "b" if sender == "a" else "a"
        assert peers[sender].ask(send=data.hex(), to=[addresses[receiver], IKE_PORT]) == {
            "sent": len(data)
        }
        got = peers[receiver].ask(recv=STEP_TIMEOUT)
        assert bytes.fromhex(got["recv"]) == data
        assert got["from"] == [addresses[sender], IKE_PORT]
    return IkeCapture(capture.wait(), exchange)


IKE_PROPOSALS = ("aes128gcm16-prfsha256-x25519", "aes128-sha256-x25519")


@pytest.mark.netns
@pytest.mark.parametrize("proposal", IKE_PROPOSALS)
def test_ike_tshark_decrypts_and_verifies_ike_auth(lab: Lab, proposal: str) -> None:
    captured = capture_ike_exchange(lab, proposal)
    initiator, responder = captured.exchange.initiator, captured.exchange.responder
    # Both ends derived the same keys (RFC 7296 section 2.14), so either may be exported.
    record = ike_sa_decryption_record(initiator)
    assert record == ike_sa_decryption_record(responder)
    verdicts = ike_verdicts(captured.pcap, tshark_ike_options([initiator]))
    assert [(v.exchange, v.response) for v in verdicts] == [
        (ExchangeType.IKE_SA_INIT, False),
        (ExchangeType.IKE_SA_INIT, True),
        (ExchangeType.IKE_AUTH, False),
        (ExchangeType.IKE_AUTH, True),
    ]
    init_request, init_response, auth_request, auth_response = verdicts
    assert init_request.spi_i == initiator.spi_i and init_request.spi_r == bytes(8)
    for verdict in (init_response, auth_request, auth_response):
        assert (verdict.spi_i, verdict.spi_r) == (initiator.spi_i, initiator.spi_r)
    for verdict in verdicts:
        assert not verdict.malformed, verdict
        assert not verdict.integrity_failed, verdict
    # IKE_SA_INIT goes in the clear: SA, KE, Ni/Nr first (section 1.2).
    for verdict in (init_request, init_response):
        assert verdict.outer_payloads[:3] == (PayloadType.SA, PayloadType.KE, PayloadType.NONCE)
        assert not verdict.decrypted
    # IKE_AUTH carries one SK payload (section 3.14) that tshark opens.
    for verdict, identity in ((auth_request, PayloadType.IDI), (auth_response, PayloadType.IDR)):
        assert verdict.outer_payloads[0] == PayloadType.SK
        assert verdict.decrypted, f"{verdict}: not decrypted"
        assert verdict.inner_payloads is not None
        for payload in (
            identity,
            PayloadType.AUTH,
            PayloadType.SA,
            PayloadType.TSI,
            PayloadType.TSR,
        ):
            assert payload in verdict.inner_payloads, f"{payload!r} missing: {verdict}"


@pytest.mark.netns
@pytest.mark.parametrize("proposal", IKE_PROPOSALS)
def test_ike_wrong_keys_are_caught(lab: Lab, proposal: str) -> None:
    """One flipped bit in the initiator's keys spoils its message and only that one."""
    captured = capture_ike_exchange(lab, proposal)
    initiator = captured.exchange.initiator
    assert initiator.keys is not None and initiator.proposal is not None
    good = ike_verdicts(captured.pcap, tshark_ike_options([initiator]))
    aead = initiator.proposal.encr.is_aead
    for name in ["sk_ei"] if aead else ["sk_ei", "sk_ai"]:
        keys = _replace_key(initiator.keys, name)
        record = ikev2_decryption_record(initiator.spi_i, initiator.spi_r, initiator.proposal, keys)
        verdicts = ike_verdicts(captured.pcap, ["-o", f"uat:ikev2_decryption_table:{record}"])
        request, response = verdicts[2], verdicts[3]
        # The responder's message is protected by SK_er / SK_ar, which are unchanged.
        assert response == good[3]
        if name == "sk_ai" or aead:
            # The ICV (HMAC keyed by SK_ai, or the GCM tag keyed by SK_ei) fails ...
            assert request.integrity_failed, f"{name}: {request}"
        else:
            # ... but a wrong AES-CBC key alone passes the HMAC and decrypts to garbage.
            assert not request.integrity_failed, f"{name}: {request}"
            assert request.inner_payloads != good[2].inner_payloads, f"{name}: {request}"
        if name == "sk_ai":
            # CBC decrypts whatever the integrity key: "decrypted" alone proves nothing.
            assert request.decrypted and request.inner_payloads == good[2].inner_payloads


# -- the export itself ----------------------------------------------------------------------

SPI_I = bytes.fromhex("0123456789abcdef")
SPI_R = bytes.fromhex("fedcba9876543210")


def _keys(proposal: IkeProposal) -> IkeSaKeys:
    a = proposal.integ.key_length if proposal.integ else 0
    e = proposal.encr.key_length
    p = proposal.prf.key_length
    sizes = (p, a, a, e, e, p, p)
    return IkeSaKeys(*(bytes([n + 1]) * size for n, size in enumerate(sizes)))


def test_ike_record_for_aes_gcm_has_empty_integrity_keys() -> None:
    proposal = IkeProposal.parse("aes128gcm16-prfsha256-x25519")
    record = ikev2_decryption_record(SPI_I, SPI_R, proposal, _keys(proposal))
    # SK_ei / SK_er are 16 key bytes and the 4-byte salt (RFC 5282 section 7.1).
    assert record == (
        f"0123456789abcdef,fedcba9876543210,{'04' * 20},{'05' * 20},"
        '"AES-GCM-128 with 16 octet ICV [RFC5282]","","","NONE [RFC4306]"'
    )


def test_ike_record_for_aes_cbc_with_hmac() -> None:
    proposal = IkeProposal.parse("aes256-sha512-ecp384")
    record = ikev2_decryption_record(SPI_I, SPI_R, proposal, _keys(proposal))
    assert record == (
        f"0123456789abcdef,fedcba9876543210,{'04' * 32},{'05' * 32},"
        f'"AES-CBC-256 [RFC3602]",{"02" * 64},{"03" * 64},"HMAC_SHA2_512_256 [RFC4868]"'
    )


def test_ike_record_refuses_what_wireshark_cannot_name() -> None:
    proposal = IkeProposal.parse("chacha20poly1305-prfsha256-x25519")
    with pytest.raises(LocalError, match="no entry for chacha20poly1305"):
        ikev2_decryption_record(SPI_I, SPI_R, proposal, _keys(proposal))


def test_ike_record_refuses_a_bad_spi() -> None:
    proposal = IkeProposal.parse("aes128gcm16-prfsha256-x25519")
    with pytest.raises(LocalError, match="responder IKE SPI must be 8 bytes"):
        ikev2_decryption_record(SPI_I, SPI_R[:4], proposal, _keys(proposal))


def test_ike_record_refuses_an_sa_without_keys() -> None:
    config = _ike_config(
        "aes128gcm16-prfsha256-x25519",
        "left.example",
        "right.example",
        "10.1.0.0/16",
        "10.2.0.0/16",
    )
    with pytest.raises(LocalError, match="no keys yet"):
        ike_sa_decryption_record(IkeSa(config, Role.INITIATOR))
