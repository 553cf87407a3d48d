"""Record IKEv1 key-derivation vectors from two strongSwan charons (no tests here).

Two charons (``version = 1``) in two network namespaces, logging at level 4 for ike
and chd, run one Main Mode and one Quick Mode per case while dumpcap captures the
datagrams. A vector takes:

- from the initiator's log: ``shared Diffie Hellman secret`` (g^xy), ``SKEYID``,
  ``SKEYID_d``/``_a``/``_e``, ``encryption key Ka``, ``initial IV``, ``next IV for MID
  …``, ``HASH_I data`` (which holds IDii_b) and ``HASH_I``, ``Hash(1)``/``(2)``/``(3)``,
  and at chd 4 ``DH secret`` (the Quick Mode PFS secret), the two ``SA seed`` lines
  (protocol, SPIs, Quick Mode nonces) and the ESP keys;
- from the capture: the cookies, the KE and Nonce payload bodies and the initiator's
  SA payload body (Main Mode messages 1 to 4 are cleartext), and Main Mode messages 5
  and 6, the Quick Mode messages and the informational exchanges of the final
  Deletes as sent (encrypted).

Run as root from the repository:
``python -m tests.support.charon_v1_vectors [case …] [--keep DIR]`` prints CharonVector
literals; tests/unit/ike_v1/test_v1_keys.py holds a copy of them as fixed bytes.
Namespaces, charons and dumpcap are stopped and removed whatever happens; the logs and
captures stay only under ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.charon import CHARON_ADDR, OUR_ADDR, Charon, Topology

PSK = "vpnfleet IKEv1 vector pre-shared key"
INITIATOR_ID, RESPONDER_ID = "moon.example", "sun.example"
INITIATOR_NET, RESPONDER_NET = "10.1.0.0/16", "10.2.0.0/16"


@dataclass(frozen=True)
class Case:
    name: str
    ike: str
    esp: str
    auth: str  # "psk" or "ecdsa"


CASES = {
    c.name: c
    for c in (
        Case(
            "psk-aes128-sha256-modp2048", "aes128-sha256-modp2048", "aes128-sha256-modp2048", "psk"
        ),
        Case("psk-aes128-sha256-ecp256", "aes128-sha256-ecp256", "aes128-sha256", "psk"),
        # The proposal's hash (SHA-1) is not the ECDSA-256 signature's (SHA-256).
        Case("ecdsa-aes128-sha1-modp2048", "aes128-sha1-modp2048", "aes128-sha1", "ecdsa"),
        # A 20-byte SKEYID_e for a 32-byte key: Appendix B expansion.
        Case("psk-aes256-sha1-modp2048", "aes256-sha1-modp2048", "aes256-sha1", "psk"),
    )
}


# -- certificates -----------------------------------------------------------------------


def _certificates() -> dict[str, bytes]:
    """An ECDSA P-256 CA and a leaf for each side (SAN = its IKE identity)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpnfleet v1 vector CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": ca.public_bytes(serialization.Encoding.DER)}
    for who, identity in (("initiator", INITIATOR_ID), ("responder", RESPONDER_ID)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        out[f"{who}_cert"] = cert.public_bytes(serialization.Encoding.DER)
        out[f"{who}_key"] = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return out


def _connection(case: Case, local: str, remote: str, ids: tuple[str, str], nets: tuple[str, str],
                cert: bytes | None) -> dict[str, Any]:  # fmt: skip
    auth = "pubkey" if case.auth == "ecdsa" else "psk"
    return {
        "v1": {
            "version": "1",
            "local_addrs": [local],
            "remote_addrs": [remote],
            "proposals": [case.ike],
            "rekey_time": "0",
            "reauth_time": "0",
            "local": {"auth": auth, "id": ids[0], **({"certs": [cert]} if cert else {})},
            "remote": {"auth": auth, "id": ids[1]},
            "children": {
                "net": {
                    "local_ts": [nets[0]],
                    "remote_ts": [nets[1]],
                    "esp_proposals": [case.esp],
                    "mode": "tunnel",
                    "rekey_time": "0",
                    "start_action": "none",
                }
            },
        }
    }


def _load(charon: Charon, case: Case, who: str, certs: dict[str, bytes]) -> None:
    session = charon.session()
    initiator = who == "initiator"
    ids = (INITIATOR_ID, RESPONDER_ID) if initiator else (RESPONDER_ID, INITIATOR_ID)
    nets = (INITIATOR_NET, RESPONDER_NET) if initiator else (RESPONDER_NET, INITIATOR_NET)
    addrs = (OUR_ADDR, CHARON_ADDR) if initiator else (CHARON_ADDR, OUR_ADDR)
    cert = None
    if case.auth == "psk":
        session.load_shared({"type": "IKE", "data": PSK, "owners": [INITIATOR_ID, RESPONDER_ID]})
    else:
        cert = certs[f"{who}_cert"]
        session.load_cert({"type": "X509", "flag": "CA", "data": certs["ca"]})
        session.load_cert({"type": "X509", "flag": "NONE", "data": cert})
        session.load_key({"type": "any", "data": certs[f"{who}_key"]})
    session.load_conn(_connection(case, *addrs, ids, nets, cert))


# -- capture ----------------------------------------------------------------------------


@contextmanager
def _capture(ns: str, interface: str, path: Path) -> Iterator[None]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "dumpcap", "-i", interface,
         "-f", "udp port 500 or udp port 4500", "-s", "0", "-P", "-w", str(path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 10
        while b"File: " not in seen:  # dumpcap names its file once the interface is live
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stderr], [], [], max(left, 0))
            chunk = proc.stderr.read1(4096) if ready else b""
            if not chunk:  # the deadline passed, or dumpcap exited
                raise RuntimeError(f"dumpcap did not start: {seen.decode(errors='replace')}")
            seen += chunk
        yield
        time.sleep(0.3)  # the last datagrams reach the file
    finally:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _isakmp_messages(pcap: Path) -> list[bytes]:
    """The ISAKMP messages of a classic pcap (Ethernet, IPv4, UDP; the non-ESP marker of
    UDP 4500 removed), in capture order."""
    data = pcap.read_bytes()
    pos, out = 24, []
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        ihl = (frame[14] & 0x0F) * 4
        udp = frame[14 + ihl :]
        dport = struct.unpack_from("!H", udp, 2)[0]
        payload = udp[8:]
        if dport == 4500 or struct.unpack_from("!H", udp, 0)[0] == 4500:
            if payload[:4] != b"\x00\x00\x00\x00":
                continue  # ESP in UDP
            payload = payload[4:]
        out.append(payload)
    return out


def _payloads(message: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each payload of a cleartext ISAKMP message (RFC 2408 3.1, 3.2)."""
    next_type, pos, out = message[16], 28, []
    while next_type:
        following, length = message[pos], struct.unpack_from("!H", message, pos + 2)[0]
        out.append((next_type, message[pos + 4 : pos + length]))
        next_type, pos = following, pos + length
    return out


# -- the log ----------------------------------------------------------------------------

_DUMP_HEAD = re.compile(r"\[(?:IKE|CHD)\] (.+?) => (\d+) bytes @ 0x[0-9a-f]+$")
_DUMP_LINE = re.compile(r"\[(?:IKE|CHD)\]\s+\d+: ((?:[0-9A-F]{2} ?)+)")


def logged_dumps(text: str) -> list[tuple[str, bytes]]:
    """Every ``%B`` dump of a charon log: (label, bytes), in log order."""
    out: list[tuple[str, bytes]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        head = _DUMP_HEAD.search(line)
        if head is None:
            continue
        label, size = head.group(1), int(head.group(2))
        raw = b""
        for follow in lines[i + 1 :]:
            if len(raw) >= size:
                break
            match = _DUMP_LINE.search(follow)
            if match is None:
                break
            raw += bytes.fromhex(match.group(1).replace(" ", ""))
        out.append((label, raw[:size]))
    return out


@dataclass(frozen=True)
class Recording:
    vector: dict[str, Any]
    pcap: Path
    """The capture (classic pcap, full snaplen) of the whole exchange."""


@contextmanager
def recorded(case: Case) -> Iterator[Recording]:
    """Run the case between two charons; the capture lives until the block ends."""
    directory = Path(tempfile.mkdtemp(prefix="vf-v1vec-"))
    try:
        with ExitStack() as stack:
            topology = Topology()
            stack.callback(topology.close)
            responder = Charon(topology.charon_ns, directory, log_level=4, name="responder")
            stack.callback(responder.close)
            initiator = Charon(topology.our_ns, directory, log_level=4, name="initiator")
            stack.callback(initiator.close)
            certs = _certificates() if case.auth == "ecdsa" else {}
            _load(responder, case, "responder", certs)
            _load(initiator, case, "initiator", certs)
            links = subprocess.run(
                ["ip", "-n", topology.charon_ns, "-o", "link"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            veth = next(
                field.split("@")[0]
                for line in links.splitlines()
                if (field := line.split(":")[1].strip()).startswith("vc")
            )
            pcap = directory / "capture.pcap"
            with _capture(topology.charon_ns, veth, pcap):
                initiator.swanctl("--initiate", "--ike", "v1", "--child", "net", "--timeout", "10")
                # Deletes for the ESP SAs and the ISAKMP SA: informational exchanges.
                initiator.swanctl("--terminate", "--ike", "v1", "--timeout", "10")
            init_log, resp_log = initiator.log_text(), responder.log_text()
        vector = _vectors(case, _isakmp_messages(pcap), init_log, resp_log)
        yield Recording(vector, pcap)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def record(case: Case, keep: Path | None) -> dict[str, Any]:
    """The case's vector; its logs and capture copied under ``keep`` if given."""
    with recorded(case) as recording:
        if keep is not None:
            target = keep / case.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(
                recording.pcap.parent, target, ignore=shutil.ignore_patterns("*.vici", "run")
            )
        return recording.vector


def _vectors(case: Case, messages: list[bytes], init_log: str, resp_log: str) -> dict[str, Any]:
    """The case's inputs and outputs, named as CharonVector in test_v1_keys.py names them."""
    main = [m for m in messages if m[18] == 2]  # Identity Protection (Main Mode)
    quick = [m for m in messages if m[18] == 32]  # Quick Mode
    informational = [m for m in messages if m[18] == 5]
    bodies = {i: dict(_payloads(m)) for i, m in enumerate(main[:4], 1)}
    dumps = logged_dumps(init_log)
    resp_dumps = dict(logged_dumps(resp_log))

    def first(label: str) -> bytes:
        found = next((raw for name, raw in dumps if name == label), None)
        if found is None:
            raise RuntimeError(f"the initiator's log has no {label!r} dump")
        return found

    if resp_dumps.get("SKEYID") != first("SKEYID") or resp_dumps.get("encryption key Ka") != first(
        "encryption key Ka"
    ):
        raise RuntimeError("the two charons logged different phase 1 keys")
    g_xi, g_xr = bodies[3][4], bodies[4][4]
    sa_i_body = bodies[1][1]
    hash_i_data = first("HASH_I data")
    idii_body = hash_i_data[len(g_xi) + len(g_xr) + 16 + len(sa_i_body) :]
    if hash_i_data != g_xi + g_xr + main[0][:8] + main[1][8:16] + sa_i_body + idii_body:
        raise RuntimeError("HASH_I data is not g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b")
    g_qm = next((raw for name, raw in dumps if name == "DH secret"), b"")
    seed_i, seed_r = first("initiator SA seed"), first("responder SA seed")
    nonces = seed_i[len(g_qm) + 5 :]
    half = len(nonces) // 2
    qm_id = int.from_bytes(quick[0][20:24], "big")
    hash_name, encr_name = case.ike.split("-")[1], case.ike.split("-")[0]
    return {
        "case": case.name,
        "ike": case.ike,
        "esp": case.esp,
        "hash_id": {"sha1": 2, "sha256": 4}[hash_name],
        "key_bits": int(encr_name[3:]),
        "auth_method": 9 if case.auth == "ecdsa" else 1,
        "psk": PSK.encode() if case.auth == "psk" else None,
        "icookie": main[0][:8],
        "rcookie": main[1][8:16],
        "ni": bodies[3][10],
        "nr": bodies[4][10],
        "g_xi": g_xi,
        "g_xr": g_xr,
        "g_xy": first("shared Diffie Hellman secret"),
        "sa_i_body": sa_i_body,
        "idii_body": idii_body,
        "skeyid": first("SKEYID"),
        "skeyid_d": first("SKEYID_d"),
        "skeyid_a": first("SKEYID_a"),
        "skeyid_e": first("SKEYID_e"),
        "enc_key": first("encryption key Ka"),
        "iv0": first("initial IV"),
        "hash_i": first("HASH_I"),
        "main_mode_5": main[4],
        "main_mode_6": main[5],
        "qm_message_id": qm_id,
        "qm_iv": first(f"next IV for MID {qm_id}"),
        "quick_mode": tuple(quick[:3]),
        "qm_hash1": first("Hash(1)"),
        "qm_hash2": first("Hash(2)"),
        "qm_hash3": first("Hash(3)"),
        "informational": tuple(informational),
        "g_qm": g_qm or None,
        "protocol": seed_i[len(g_qm)],
        "spi_r": seed_i[len(g_qm) + 1 : len(g_qm) + 5],
        "spi_i": seed_r[len(g_qm) + 1 : len(g_qm) + 5],
        "qm_ni": nonces[:half],
        "qm_nr": nonces[half:],
        "esp_encr_i": first("encryption initiator key"),
        "esp_integ_i": first("integrity initiator key"),
        "esp_encr_r": first("encryption responder key"),
        "esp_integ_r": first("integrity responder key"),
    }


def _literal(value: Any, indent: str) -> str:
    if isinstance(value, bytes):
        text = value.hex()
        if len(text) <= 64:
            return f'bytes.fromhex("{text}")'
        chunks = [text[i : i + 64] for i in range(0, len(text), 64)]
        inner = "".join(f'\n{indent}    "{c}"' for c in chunks)
        return f"bytes.fromhex({inner}\n{indent})"
    if isinstance(value, tuple):
        items = "".join(f"\n{indent}    {_literal(v, indent + '    ')}," for v in value)
        return f"({items}\n{indent})"
    return repr(value)


def python_source(vectors: list[dict[str, Any]]) -> str:
    """The vectors as CharonVector(...) literals, for pasting into test_v1_keys.py."""
    out = []
    for vector in vectors:
        fields = "".join(
            f"\n        {k}={repr(v) if k == 'psk' else _literal(v, '        ')},"
            for k, v in vector.items()
        )
        out.append(f"    CharonVector({fields}\n    ),")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--keep", type=Path, help="keep logs and captures here")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    out = [record(CASES[name], args.keep) for name in args.cases]
    print(python_source(out))


if __name__ == "__main__":
    main()
