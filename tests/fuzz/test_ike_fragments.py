"""Property tests for RFC 7383 fragmentation: any payload chain, any size limit the
config allows and any cipher, cut into SKF messages, stays within the limit and comes
back whole whatever the arrival order and duplication (sections 2.5 and 2.6)."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpnfleet.agent.ike.config import MIN_FRAGMENT_SIZE
from vpnfleet.agent.ike.constants import EncrId, ExchangeType, HeaderFlag, IntegId, PayloadType
from vpnfleet.agent.ike.crypto import SkKeys, decrypt_fragment
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.fragments import Reassembly, fragment_message, message_limit
from vpnfleet.agent.ike.message import IkeHeader, parse_message, parse_payloads
from vpnfleet.agent.ike.payloads import NoncePayload, NotifyPayload, Payload, SkfPayload
from vpnfleet.agent.ike.transforms import encr_for, integ_for

EXAMPLES = int(os.environ.get("VPNFLEET_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    SkKeys(
        encr_for(EncrId.AES_CBC, 128), b"e" * 16, integ_for(IntegId.HMAC_SHA2_512_256), b"a" * 64
    ),
    SkKeys(encr_for(EncrId.AES_GCM_16, 256), b"e" * 36),
    SkKeys(encr_for(EncrId.CHACHA20_POLY1305, None), b"e" * 36),
]

payload_chains = st.lists(
    st.one_of(
        st.binary(min_size=16, max_size=256).map(NoncePayload),
        st.binary(max_size=600).map(lambda d: NotifyPayload(16388, d)),
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(
    chain=payload_chains,
    keys=st.sampled_from(KEYS),
    size=st.integers(MIN_FRAGMENT_SIZE, 1500),
    peer=st.sampled_from([("192.0.2.2", 500), ("192.0.2.2", 4500), ("2001:db8::2", 4500)]),
    order=st.randoms(use_true_random=False),
)
def test_fragments_fit_and_reassemble_in_any_order(
    chain: list[Payload], keys: SkKeys, size: int, peer: tuple[str, int], order: random.Random
) -> None:
    limit = message_limit(size, peer)
    header = IkeHeader(b"\x01" * 8, b"\x02" * 8, 0, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1)
    fragments = fragment_message(header, chain, keys, limit)
    assert all(len(f) <= limit for f in fragments)
    arrivals = [*fragments, fragments[0], fragments[-1]]
    order.shuffle(arrivals)
    reassembly = Reassembly()
    whole = None
    for data in arrivals:
        message = parse_message(data)
        skf = message.encrypted
        assert isinstance(skf, SkfPayload) and skf.total_fragments == len(fragments)
        assert skf.first_inner == (
            PayloadType(chain[0].payload_type) if skf.fragment_number == 1 else 0
        )
        result = reassembly.add(1, skf, decrypt_fragment(data, message, keys), None, 0.0)
        if result is not None:
            whole = result
            break
    assert whole is not None
    assert parse_payloads(whole[1], whole[0], 0) == chain


def test_a_limit_without_room_for_content_is_refused_by_name() -> None:
    header = IkeHeader(b"\x01" * 8, b"\x02" * 8, 0, ExchangeType.IKE_AUTH, HeaderFlag.NONE, 1)
    with pytest.raises(LocalError, match="60-byte messages leave no room for a fragment"):
        fragment_message(header, [NoncePayload(b"n" * 32)], KEYS[0], 60)
