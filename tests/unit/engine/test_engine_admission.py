"""The engine's half-open caps on fake time: requests from one address over its cap are
dropped and counted (GetStatus carries the counts), the agent logs one line per cap and
interval rather than one per request, and the tunnel already up is untouched."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from test_engine_status import message, services

from tests.support.engine_pair import Fleet
from vpnfleet.agent.ike.admission import ResponderLimits
from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
from vpnfleet.agent.ike.constants import NotifyType
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.payloads import NotifyPayload
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import Role

B = ("192.0.2.2", 500)


def stranger() -> IkeConfig:
    return IkeConfig(
        Identity.parse("stranger.invalid"),
        Identity.parse("b"),
        b"not the key",
        (IkeProposal.parse("aes256gcm16-prfsha384-x25519"),),
        ChildConfig(
            "net",
            (EspProposal.parse("aes256gcm16"),),
            (selector("10.9.0.0/24"),),
            (selector("10.2.0.0/24"),),
        ),
    )


async def test_half_open_over_a_cap_is_dropped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet("a", "b", limits=ResponderLimits(half_open_per_source=2))
    await fleet.start()
    agents = await services(fleet, tmp_path)
    await agents["b"].apply(message("b", "a"), dry_run=False)
    await agents["a"].apply(message("a", "b"), dry_run=False)
    fleet.pump()
    (up,) = agents["b"].status().ike_sas
    assert up.state == "established"
    engine = fleet["b"].engine
    with caplog.at_level(logging.WARNING, logger="vpnfleet.agent.engine.engine"):
        for port in range(40000, 40006):  # a's address, other ports: one source
            flood = IkeSa(stranger(), Role.INITIATOR)
            flood.initiate(B, engine.now())
            ((data, _),) = flood.datagrams_to_send(engine.now())
            engine._on_ike(data, ("192.0.2.1", port), 500)
    status = agents["b"].status()
    assert status.admission.half_open == 2
    limits = {limit.name: (limit.value, limit.refused) for limit in status.admission.limits}
    assert limits["half_open_per_source"] == (2, 4)
    assert limits["half_open_total"] == (256, 0)
    assert limits["preauth_message_bytes"] == (10_000, 0)
    (line,) = [r.getMessage() for r in caplog.records if "half_open_per_source" in r.getMessage()]
    assert line.startswith(
        "dropped 1 IKE message(s) over half_open_per_source=2 since the last such line, "
        "the latest from 192.0.2.1"
    )
    # The tunnel in force is the same SA, before and after the half-open ones expire.
    (still,) = status.ike_sas
    assert (still.state, still.spi_i, still.spi_r) == ("established", up.spi_i, up.spi_r)
    fleet.advance(31)
    status = agents["b"].status()
    assert status.admission.half_open == 0
    (still,) = status.ike_sas
    assert (still.state, still.spi_i, still.spi_r) == ("established", up.spi_i, up.spi_r)


async def test_an_ike_sa_init_refused_without_state_leaves_nothing_behind(tmp_path: Path) -> None:
    """Section 1.3: INVALID_KE_PAYLOAD keeps no state. The engine answers each such
    request and holds no IKE SA for it afterwards, however many come."""
    fleet = Fleet("a", "b")
    await fleet.start()
    agents = await services(fleet, tmp_path)
    await agents["b"].apply(message("b", "a"), dry_run=False)
    engine = fleet["b"].engine
    held = len(engine._by_spi)
    wrong_group = dataclasses.replace(
        stranger(),
        ike_proposals=(
            IkeProposal.parse("aes256gcm16-prfsha384-ecp256"),
            IkeProposal.parse("aes256gcm16-prfsha384-x25519"),
        ),
    )
    assert engine.endpoint is not None
    answers: list[bytes] = []
    engine.endpoint.send_ike = lambda data, addr, natt: answers.append(data)  # type: ignore[method-assign]
    for port in range(40000, 40010):
        flood = IkeSa(wrong_group, Role.INITIATOR)
        flood.initiate(B, engine.now())
        ((data, _),) = flood.datagrams_to_send(engine.now())
        engine._on_ike(data, ("192.0.2.1", port), 500)
    assert len(engine._by_spi) == held
    assert len(answers) == 10
    for answer in answers:
        (notify,) = parse_message(answer).payloads
        assert isinstance(notify, NotifyPayload)
        assert notify.notify_type == NotifyType.INVALID_KE_PAYLOAD
    assert engine.counters["ike_refused"] == 10
