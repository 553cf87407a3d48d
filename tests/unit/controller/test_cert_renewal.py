"""Certificate renewal before expiry (controller.rotate.cert_renewal): the renewal window on
fake time, which certificates a fleet's status shows due, and a run with nothing due
that changes nothing. A renewal with real agents: test_cert_renewal_agents.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpnfleet.controller.fleet import operations
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.reports.status import (
    AgentStatusView,
    CertificateKind,
    CertificateView,
    FleetStatus,
    HostStatus,
)
from vpnfleet.controller.rotate.cert_renewal import (
    DAY,
    DueCertificate,
    RenewalWindow,
    due_certificates,
    renew_due_certificates,
)
from vpnfleet.controller.rotate.cert_rotation import CertJournal
from vpnfleet.controller.rotate.rotation import RotationKind, journal_path
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.state import StateDir

LAB = Path(__file__).resolve().parents[3] / "inventories" / "lab"
T0 = 1_800_000_000.0
"""notBefore of the certificates below (unix seconds)."""


def test_a_year_long_certificate_is_due_in_its_last_third() -> None:
    window = RenewalWindow()
    not_after = T0 + 365 * DAY
    assert window.opens_at(T0, not_after) == pytest.approx(not_after - 365 * DAY / 3)


def test_thirty_days_before_expiry_when_that_comes_first() -> None:
    # 80 days: its last third (26.7 days) opens after the 30 days before expiry.
    assert RenewalWindow().opens_at(T0, T0 + 80 * DAY) == pytest.approx(T0 + 50 * DAY)


def test_never_in_the_first_half_of_a_short_certificate() -> None:
    # 40 days: 30 days before expiry would be day 10; a fresh certificate is not due.
    window = RenewalWindow()
    assert window.opens_at(T0, T0 + 40 * DAY) == pytest.approx(T0 + 20 * DAY)


def test_configurable_and_checked() -> None:
    window = RenewalWindow(fraction=0.1, days=7)
    assert window.opens_at(T0, T0 + 365 * DAY) == pytest.approx(T0 + 365 * DAY * 0.9)
    assert window.opens_at(0, T0) == T0 - 7 * DAY  # no notBefore known: by days only
    with pytest.raises(ValueError, match="renewal fraction must be above 0 and below 1"):
        RenewalWindow(fraction=1.5)
    with pytest.raises(ValueError, match="renewal days must be 0 or more"):
        RenewalWindow(days=-1)


def fleet_status(**not_after_days: float) -> FleetStatus:
    hosts = []
    for host, days in not_after_days.items():
        certs = tuple(
            CertificateView(kind, T0 + days * DAY, f"CN={host}", T0)
            for kind in (CertificateKind.TLS, CertificateKind.IKE)
        )
        hosts.append(HostStatus(host, "x", AgentStatusView(host=host, certificates=certs)))
    hosts.append(HostStatus("gone", "x", None, error="unreachable: connection refused"))
    return FleetStatus(hosts)


def test_due_certificates_on_fake_time() -> None:
    status = fleet_status(a1=365, a2=90)
    window = RenewalWindow()
    # a2 (90 days): due from day 60; a1 (365 days): from day 243.3.
    assert due_certificates(status, window, T0 + 59 * DAY) == []
    at_60 = due_certificates(status, window, T0 + 60 * DAY)
    assert at_60 == [
        DueCertificate("a2", "tls", T0 + 90 * DAY, T0 + 60 * DAY),
        DueCertificate("a2", "ike", T0 + 90 * DAY, T0 + 60 * DAY),
    ]
    assert str(at_60[0]) == (
        "a2: TLS certificate expires 2027-04-15 08:00 UTC, due since 2027-03-16 08:00 UTC"
    )
    later = due_certificates(status, window, T0 + 244 * DAY)
    assert sorted({d.host for d in later}) == ["a1", "a2"]


class StatusOnly:
    """An access that can only observe: any rotation would fail loudly."""

    def __init__(self, status: FleetStatus) -> None:
        self.status = status

    async def observe(self, fleet: CompiledFleet) -> FleetStatus:
        return self.status

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"nothing is due: {name} must not be called")


async def test_nothing_due_changes_nothing(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    pki.init_ca(state.root)

    def compile_fleet() -> CompiledFleet:
        return operations.compile_fleet(LAB, state)

    access = StatusOnly(fleet_status(a1=365))
    result = await renew_due_certificates(
        state,
        compile_fleet,
        access,
        RenewalWindow(),
        now=lambda: T0 + DAY,  # type: ignore[arg-type]
    )
    assert (result.due, result.rotation, result.error) == ([], None, "")
    assert result.unobserved == {"gone": "unreachable: connection refused"}
    assert result.exit_code == 4
    assert CertJournal.load(state, RotationKind.CERTS) is None
    assert not journal_path(state, RotationKind.CERTS).exists()
