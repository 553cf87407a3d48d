"""`vpnfleet status` warns 30 days before an agent's certificate expires: a note in the
table and a warning in the JSON, without changing the exit code's conditions."""

from __future__ import annotations

from vpnfleet.controller.reports.status import (
    AgentStatusView,
    CertificateKind,
    CertificateView,
    FleetStatus,
    HostStatus,
    fleet_conditions,
    fleet_rows,
)

HASH = "cd" * 32
NOW = 1_800_000_000.0
DAY = 86400.0


def _fleet(*certs: CertificateView) -> FleetStatus:
    view = AgentStatusView(host="a1", content_hash=HASH, data_plane=True, certificates=tuple(certs))
    return FleetStatus([HostStatus("a1", HASH, view)], taken_at=NOW)


def test_a_certificate_expiring_within_30_days_is_warned_of() -> None:
    status = _fleet(
        CertificateView(CertificateKind.TLS, NOW + 400 * DAY, "CN=a1"),
        CertificateView(CertificateKind.IKE, NOW + 12 * DAY, "CN=a1", NOW - 353 * DAY),
    )
    warning = "IKE certificate expires in 12 days; renew: vpnfleet renew"
    assert fleet_rows(status)[0][-1] == warning
    (host,) = status.to_json()["hosts"]
    assert host["warnings"] == [warning]
    assert host["observed"]["certificates"][1] == {
        "kind": "ike",
        "not_after": NOW + 12 * DAY,
        "subject": "CN=a1",
        "not_before": NOW - 353 * DAY,
    }
    assert int(fleet_conditions(status)) == 0  # a warning, not a condition


def test_hours_left_and_an_expired_certificate() -> None:
    status = _fleet(
        CertificateView(CertificateKind.TLS, NOW + 5 * 3600, "CN=a1"),
        CertificateView(CertificateKind.IKE, NOW - 3 * 3600, "CN=a1"),
    )
    assert status.to_json()["hosts"][0]["warnings"] == [
        "TLS certificate expires in 5 hours; renew: vpnfleet renew",
        "IKE certificate expired 3h00m ago; renew: vpnfleet renew",
    ]


def test_no_warning_beyond_30_days() -> None:
    status = _fleet(CertificateView(CertificateKind.TLS, NOW + 31 * DAY, "CN=a1"))
    assert fleet_rows(status)[0][-1] == ""
    assert status.to_json()["hosts"][0]["warnings"] == []
