"""tshark decrypts a real charon <-> charon IKEv1 exchange with our key record.

Two strongSwan charons (``version = 1``) run Main Mode, one Quick Mode and the
informational Deletes of a terminate in network namespaces while dumpcap captures
them (tests/support/charon_v1_vectors.py). From the capture's cleartext and the g^xy
charon logged, ``derive_phase1`` makes the keys and ``tshark_ikev1_options`` the
``ikev1_decryption_table`` record; tshark must then open every encrypted message:
Main Mode 5 and 6 show the identities and our HASH_I, Quick Mode and the Deletes
their payloads (RFC 2409 sections 5, 5.5, 5.7). A key with one bit flipped opens none.
Namespaces, charons and dumpcap are removed whatever happens.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.charon import skip_reason
from tests.support.charon_v1_vectors import (
    CASES,
    INITIATOR_ID,
    RESPONDER_ID,
    Recording,
    recorded,
)
from vpnfleet.agent.ike.constants import EncrId
from vpnfleet.agent.ike.transforms import encr_for
from vpnfleet.agent.ike.v1 import keys
from vpnfleet.agent.ike.v1.constants import ExchangeType, PayloadType
from vpnfleet.agent.ike.v1.export import tshark_ikev1_options

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

FIELDS = (
    "frame.number",
    "isakmp.exchangetype",
    "isakmp.typepayload",
    "isakmp.id.data.fqdn",
    "isakmp.hash",
    "isakmp.extradata",
)


def _phase1(recording: Recording) -> keys.Phase1Keys:
    v = recording.vector
    return keys.derive_phase1(
        keys.prf_for_hash(v["hash_id"]),
        v["psk"],
        v["ni"],
        v["nr"],
        v["g_xy"],
        v["icookie"],
        v["rcookie"],
        encr_for(EncrId.AES_CBC, v["key_bits"]),
        v["g_xi"],
        v["g_xr"],
    )


def _dissect(pcap: Path, options: list[str]) -> list[dict[str, list[str]]]:
    """One dict per ISAKMP frame: field -> its values (tshark's ``-T fields``)."""
    argv = ["tshark", "-n", "-r", str(pcap), *options, "-Y", "isakmp", "-T", "fields"]
    for field in FIELDS:
        argv += ["-e", field]
    argv += ["-E", "occurrence=a", "-E", "aggregator=;"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    rows = []
    for line in done.stdout.splitlines():
        values = line.split("\t")
        rows.append(
            {f: [x for x in v.split(";") if x] for f, v in zip(FIELDS, values, strict=True)}
        )
    return rows


def _types(row: dict[str, list[str]]) -> list[int]:
    """The message's payload types in order, without the Proposal and Transform
    substructures inside an SA payload (RFC 2408 sections 3.5 and 3.6)."""
    nested = (PayloadType.PROPOSAL, PayloadType.TRANSFORM)
    return [int(t) for t in row["isakmp.typepayload"] if int(t) not in nested]


@pytest.mark.parametrize(
    "case", ["psk-aes128-sha256-modp2048", "psk-aes256-sha1-modp2048"], ids=str
)
def test_tshark_opens_every_encrypted_message_with_our_record(case: str) -> None:
    with recorded(CASES[case]) as recording:
        phase1 = _phase1(recording)
        vector = recording.vector
        assert phase1.enc_key == vector["enc_key"]
        options = tshark_ikev1_options([(vector["icookie"], phase1)])
        rows = _dissect(recording.pcap, options)
        flipped = keys.Phase1Keys(
            phase1.skeyid,
            phase1.skeyid_d,
            phase1.skeyid_a,
            phase1.skeyid_e,
            bytes([phase1.enc_key[0] ^ 1]) + phase1.enc_key[1:],
            phase1.iv0,
        )
        spoiled = _dissect(recording.pcap, tshark_ikev1_options([(vector["icookie"], flipped)]))

    exchanges = [int(row["isakmp.exchangetype"][0]) for row in rows]
    main = [
        row for row, x in zip(rows, exchanges, strict=True) if x == ExchangeType.IDENTITY_PROTECTION
    ]
    quick = [row for row, x in zip(rows, exchanges, strict=True) if x == ExchangeType.QUICK]
    info = [row for row, x in zip(rows, exchanges, strict=True) if x == ExchangeType.INFORMATIONAL]
    assert len(main) == 6 and len(quick) == 3 and len(info) == 2
    five, six = main[4], main[5]
    assert five["isakmp.id.data.fqdn"] == [INITIATOR_ID]
    assert six["isakmp.id.data.fqdn"] == [RESPONDER_ID]
    assert five["isakmp.hash"] == [vector["hash_i"].hex()]
    assert _types(five)[:2] == [PayloadType.ID, PayloadType.HASH]
    # HASH(1) | SA | Nonce | KE (PFS) | IDci | IDcr, HASH(2) the same, HASH(3) alone.
    for row in quick[:2]:
        assert _types(row)[:3] == [PayloadType.HASH, PayloadType.SA, PayloadType.NONCE]
        assert _types(row).count(PayloadType.ID) == 2
    assert _types(quick[2]) == [PayloadType.HASH]
    assert [_types(row) for row in info] == [[PayloadType.HASH, PayloadType.DELETE]] * 2
    # The padding Wireshark shows after the last payload: zeros, no pad length (cipher.py).
    for row in (five, six, *quick, *info):
        assert all(set(extra) <= {"0"} for extra in row["isakmp.extradata"])

    spoiled_five = spoiled[4]
    assert spoiled_five["isakmp.id.data.fqdn"] == [] and spoiled_five["isakmp.hash"] == []
