"""The engine's key log: every IKE and child SA it installs or rekeys is appended as
Wireshark UAT records, and the keys logged really open the traffic on the wire.

Two engines on the in-memory network; the datagrams they exchange are recorded from
the network, and ESP is opened with :class:`InboundSa` built only from the logged text
(IKE with AES-GCM as RFC 5282 section 3 lays out the encrypted payload).
"""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.support.engine_pair import Fleet, udp4
from vpnfleet.agent.config import ConfigError, load_config
from vpnfleet.agent.engine.keylog import HEADER, KeyLog, KeyLogError, tshark_options
from vpnfleet.agent.esp.sa import InboundSa, SaParams
from vpnfleet.agent.esp.transforms import Encryption
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.io.udp import NATT_PORT, NON_ESP_MARKER
from vpnfleet.agent.sink import RekeyTarget

GCM = "AES-GCM with 16 octet ICV [RFC4106]"
IKE_GCM256 = "AES-GCM-256 with 16 octet ICV [RFC5282]"


def records(path: Path, table: str) -> list[list[str]]:
    """The fields of every ``table`` record in a key log, in file order."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith(f"{table}:"):
            out.append(next(csv.reader([line[len(table) + 1 :]])))
    return out


def esp_params(fields: list[str]) -> SaParams:
    """An ESP SA rebuilt from nothing but an ``esp_sa`` record."""
    _, src, dst, spi, encryption, key, auth, auth_key = fields
    assert encryption == GCM and auth == "NULL" and auth_key == ""
    material = bytes.fromhex(key.removeprefix("0x"))
    assert len(material) == 36  # the plans use aes256gcm16: 32-byte key, 4-byte salt
    return SaParams(int(spi, 16), Encryption.AES256GCM16, material, None, b"", src=src, dst=dst)


class Recorder:
    """Every datagram the memory network delivers, in order."""

    def __init__(self) -> None:
        self.seen: list[Datagram] = []

    def __call__(self, datagram: Datagram) -> bool:
        self.seen.append(datagram)
        return False  # deliver it

    def esp(self, src: str) -> list[bytes]:
        return [
            d.data
            for d in self.seen
            if d.src == (src, NATT_PORT) and not d.data.startswith(NON_ESP_MARKER)
        ]

    def ike(self, src: str) -> list[bytes]:
        out = []
        for d in self.seen:
            if d.src[0] != src:
                continue
            if d.src[1] == NATT_PORT and d.data.startswith(NON_ESP_MARKER):
                out.append(d.data[len(NON_ESP_MARKER) :])
            elif d.src[1] != NATT_PORT:
                out.append(d.data)
        return out


@pytest.fixture
async def logged(tmp_path: Path) -> tuple[Fleet, dict[str, Path], Recorder]:
    fleet = Fleet("a", "b")
    paths = {}
    for host in ("a", "b"):
        paths[host] = tmp_path / f"{host}.keys"
        fleet[host].engine.keylog = KeyLog.open(paths[host])
    recorder = Recorder()
    fleet.net.drop = recorder
    await fleet.start()
    await fleet.mesh()
    return fleet, paths, recorder


def open_esp(path: Path, packet: bytes) -> bytes:
    spi = int.from_bytes(packet[:4], "big")
    matching = [f for f in records(path, "esp_sa") if int(f[3], 16) == spi]
    assert matching, f"no esp_sa record for SPI {spi:08x} in {path}"
    result = InboundSa(esp_params(matching[-1]), 0.0).decap(packet, 0.0)
    assert isinstance(result, tuple), f"logged key for {spi:08x} does not open it: {result}"
    payload, next_header = result
    assert next_header == 4
    return payload


async def test_both_sas_are_logged_0600_and_the_logged_keys_open_the_esp(
    logged: tuple[Fleet, dict[str, Path], Recorder],
) -> None:
    fleet, paths, recorder = logged
    a, b = fleet["a"], fleet["b"]
    for path in paths.values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        text = path.read_text()
        assert text.startswith(HEADER) and "WARNING: THIS FILE HOLDS SECRET KEYS" in text
        assert len(records(path, "esp_sa")) == 2
        assert len(records(path, "ikev2_decryption_table")) == 1

    a_in, a_out = a.child_spis("b")
    esp_a = records(paths["a"], "esp_sa")
    assert [int(f[3], 16) for f in esp_a] == [a_in, a_out]
    # Inbound first (peer -> us), then outbound, with the underlay addresses.
    assert (esp_a[0][1], esp_a[0][2]) == ("192.0.2.2", "192.0.2.1")
    assert (esp_a[1][1], esp_a[1][2]) == ("192.0.2.1", "192.0.2.2")
    # Both ends log the same keys for each direction.
    assert sorted(map(tuple, esp_a)) == sorted(map(tuple, records(paths["b"], "esp_sa")))

    (report,) = a.engine.ike_sas()
    ike_a = records(paths["a"], "ikev2_decryption_table")
    assert ike_a == records(paths["b"], "ikev2_decryption_table")
    spi_i, spi_r, sk_ei, sk_er, encryption, sk_ai, sk_ar, integrity = ike_a[0]
    assert (int(spi_i, 16), int(spi_r, 16)) == (report.spi_i, report.spi_r)
    assert encryption == IKE_GCM256 and integrity == "NONE [RFC4306]"
    assert len(bytes.fromhex(sk_ei)) == len(bytes.fromhex(sk_er)) == 36
    assert sk_ai == sk_ar == ""  # csv reads the empty "" as an empty field

    there = udp4("10.1.0.5", "10.2.0.7", b"logged keys open this")
    back = udp4("10.2.0.7", "10.1.0.5", b"and this")
    a.send(there)
    b.send(back)
    fleet.pump()
    assert b.tun.delivered == [there] and a.tun.delivered == [back]
    (from_a,) = recorder.esp("192.0.2.1")
    (from_b,) = recorder.esp("192.0.2.2")
    for path in paths.values():
        assert open_esp(path, from_a) == there
        assert open_esp(path, from_b) == back


def open_ike(message: bytes, key_hex: str) -> bytes:
    """RFC 5282 section 3 (with RFC 7296 section 3.14): the SK payload is the generic
    header, an 8-byte IV and the ciphertext with its 16-byte ICV; the nonce is the
    4-byte salt (the key's tail) and the IV; the AAD is the IKE header and the SK
    payload's generic header."""
    assert message[16] == 46  # first payload: SK (Encrypted and Authenticated)
    key = bytes.fromhex(key_hex)
    aad, iv, sealed = message[:32], message[32:40], message[40:]
    plaintext = AESGCM(key[:-4]).decrypt(key[-4:] + iv, sealed, aad)
    return plaintext


async def test_rekeys_are_logged_and_their_keys_open_the_new_traffic(
    logged: tuple[Fleet, dict[str, Path], Recorder],
) -> None:
    fleet, paths, recorder = logged
    a, b = fleet["a"], fleet["b"]
    outcome = fleet.rekey("a", "b", RekeyTarget.CHILD)
    assert outcome.ok, outcome.detail
    fleet.pump()
    fleet.advance(10)  # the rekey responder switches its outbound SA
    a_in, a_out = a.child_spis("b")
    for path in paths.values():
        esp = records(path, "esp_sa")
        assert len(esp) == 4
        assert {int(f[3], 16) for f in esp[2:]} == {a_in, a_out}
        assert "child SA rekeyed" in path.read_text()

    there = udp4("10.1.0.5", "10.2.0.7", b"after the child rekey")
    back = udp4("10.2.0.7", "10.1.0.5", b"back after the rekey")
    a.send(there)
    b.send(back)
    fleet.pump()
    assert open_esp(paths["b"], recorder.esp("192.0.2.1")[-1]) == there
    assert open_esp(paths["a"], recorder.esp("192.0.2.2")[-1]) == back

    old_spi_i, _, old_sk_ei = records(paths["a"], "ikev2_decryption_table")[0][:3]
    outcome = fleet.rekey("a", "b", RekeyTarget.IKE)
    assert outcome.ok, outcome.detail
    fleet.pump()
    fleet.advance(1)
    (report,) = a.engine.ike_sas()
    for path in paths.values():
        ike = records(path, "ikev2_decryption_table")
        assert len(ike) == 2
        assert (int(ike[1][0], 16), int(ike[1][1], 16)) == (report.spi_i, report.spi_r)
        assert "IKE SA rekeyed" in path.read_text()
    new_spi_i, _, new_sk_ei = records(paths["a"], "ikev2_decryption_table")[1][:3]
    # a started the IKE rekey, so it is the new SA's initiator too: its requests are
    # under SK_ei, the old SA's (the rekey, the delete) and the new one's.
    outcome = fleet.rekey("a", "b", RekeyTarget.CHILD)
    assert outcome.ok, outcome.detail
    fleet.pump()
    old = requests(recorder, old_spi_i)
    new = requests(recorder, new_spi_i)
    assert len(old) >= 3 and new  # child rekey, IKE rekey, delete; the second child rekey
    for message in old:
        assert open_ike(message, old_sk_ei)
    for message in new:
        assert open_ike(message, new_sk_ei)


def requests(recorder: Recorder, spi_i: str) -> list[bytes]:
    """The IKE requests (R flag clear, RFC 7296 section 3.1) a sent on IKE SA ``spi_i``
    after IKE_SA_INIT."""
    return [
        m
        for m in recorder.ike("192.0.2.1")
        if m[:8].hex() == spi_i and not m[19] & 0x20 and m[18] != 34  # not IKE_SA_INIT
    ]


async def test_the_log_is_only_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    first = KeyLog.open(path)
    first.close()
    path.write_text(path.read_text() + "# an earlier run's records\n")
    second = KeyLog.open(path)
    second.close()
    text = path.read_text()
    assert text.count("vpnfleet key log") == 1 and text.endswith("earlier run's records\n")


async def test_unusable_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("")
    target.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(KeyLogError, match="is a symlink"):
        KeyLog.open(link)
    readable = tmp_path / "readable"
    readable.write_text("")
    readable.chmod(0o644)
    with pytest.raises(KeyLogError, match="mode 0644: others could read the keys"):
        KeyLog.open(readable)
    theirs = tmp_path / "theirs"
    theirs.write_text("")
    theirs.chmod(0o600)
    os.chown(theirs, os.geteuid() + 4242, -1)  # planted by another user
    with pytest.raises(KeyLogError, match=f"belongs to user id {os.geteuid() + 4242}, not to"):
        KeyLog.open(theirs)
    assert theirs.read_text() == ""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyLogError, match="not a regular file"):
        _open_fifo(fifo)
    with pytest.raises(KeyLogError, match=r"cannot open key log .*missing.*No such file"):
        KeyLog.open(tmp_path / "missing" / "keys.log")


def _open_fifo(path: Path) -> None:
    # O_WRONLY on a FIFO blocks until a reader opens it: hold a reader open meanwhile.
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        KeyLog.open(path)
    finally:
        os.close(reader)


async def test_a_write_failure_stops_logging_without_raising(tmp_path: Path) -> None:
    fleet = Fleet("a", "b")
    keylog = KeyLog.open(tmp_path / "keys.log")
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, keylog._fd)  # type: ignore[arg-type]  # writes now fail with EBADF
    os.close(fd)
    fleet["a"].engine.keylog = keylog
    await fleet.start()
    await fleet.mesh()
    assert fleet["a"].engine.peers_up() == 1  # the tunnel is unaffected
    assert keylog.records == 0


def test_tshark_options_take_every_record_line() -> None:
    text = HEADER + '# comment\nesp_sa:"IPv4","*","*","0x1","NULL","","NULL",""\n\n'
    assert tshark_options(text) == [
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
        "-o",
        'uat:esp_sa:"IPv4","*","*","0x1","NULL","","NULL",""',
    ]


def test_config_keylog_is_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("name: a1\nkeylog: debug/keys.log\n")
    assert load_config(config).keylog == tmp_path / "debug" / "keys.log"
    config.write_text("name: a1\n")
    assert load_config(config).keylog is None
    config.write_text("name: a1\nkeylog: 7\n")
    with pytest.raises(ConfigError, match="'keylog' must be a non-empty string"):
        load_config(config)
