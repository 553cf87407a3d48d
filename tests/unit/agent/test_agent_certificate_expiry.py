"""The agent's own certificates carry their expiry: in GetStatus (AgentStatus.certificates,
read by the controller) and in its metrics (vpnfleet_agent_certificate_expiry_seconds)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agent_harness import make_fleet
from vpnfleet.agent.cert_expiry import CertificateKind, certificate_expiries
from vpnfleet.agent.enroll import IKE_CERT, TLS_CERT, CredentialFiles
from vpnfleet.agent.metrics import MetricsSources, agent_registry
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import PlanOnlySink
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.reports import status as controller_status
from vpnfleet.controller.transport.convert import status_from_proto


def _not_after(path: Path) -> float:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()


def _enrolled(tmp_path: Path) -> CredentialFiles:
    fleet = make_fleet(tmp_path)
    return CredentialFiles.in_state_dir(fleet.enroll("a1"))


def test_get_status_carries_each_certificate_and_the_controller_reads_it(tmp_path: Path) -> None:
    files = _enrolled(tmp_path)
    service = AgentService("a1", PlanStore(tmp_path / "plans"), PlanOnlySink(), credentials=files)
    view = status_from_proto(service.status())
    tls_after = _not_after(files.state_dir / TLS_CERT)
    ike_after = _not_after(files.state_dir / IKE_CERT)
    assert [(c.kind, c.not_after) for c in view.certificates] == [
        (controller_status.CertificateKind.TLS, tls_after),
        (controller_status.CertificateKind.IKE, ike_after),
    ]
    assert all("CN=a1" in c.subject for c in view.certificates)


def test_a_missing_certificate_is_absent_not_an_error(tmp_path: Path) -> None:
    files = _enrolled(tmp_path)
    (files.state_dir / IKE_CERT).unlink()
    assert [c.kind for c in certificate_expiries(files)] == [CertificateKind.TLS]
    service = AgentService("a1", PlanStore(tmp_path / "plans"), PlanOnlySink())
    assert list(service.status().certificates) == []  # no state dir for credentials


def test_metrics_export_the_expiry_by_kind(tmp_path: Path) -> None:
    files = _enrolled(tmp_path)
    sources = MetricsSources(
        "a1", "1.0", PlanOnlySink(), lambda: None, certificates=lambda: certificate_expiries(files)
    )
    text = generate_latest(agent_registry(sources)).decode()
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "vpnfleet_agent_certificate_expiry_seconds"
    ]
    assert family.type == "gauge"
    assert {s.labels["kind"]: s.value for s in family.samples} == {
        "tls": _not_after(files.state_dir / TLS_CERT),
        "ike": _not_after(files.state_dir / IKE_CERT),
    }
