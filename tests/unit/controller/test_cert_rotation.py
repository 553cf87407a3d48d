"""Certificate and CA rotation (controller.rotate.cert_rotation) against fake agents.

The fakes do what the agent contract (protos/agent.proto) says: PrepareEnrollment makes
key pairs and returns CSRs; InstallCredentials checks a certificate against the staged
key, trusts the bundle it is given for TLS, and re-establishes its certificate peers;
a new IKE SA comes up only when each end's plan accepts the CA of the other end's IKE
certificate. A TLS connection from the controller succeeds only when each side trusts
the CA of the other's certificate. The clock is fake: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from vpnfleet.controller.delivery.health import Clock
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.planner.model import AuthMethod
from vpnfleet.controller.reports.results import AggregateResult, HostResult, Outcome
from vpnfleet.controller.reports.status import (
    AgentStatusView,
    ChildSaView,
    FleetStatus,
    HostStatus,
    IkeSaView,
)
from vpnfleet.controller.rotate.cert_rotation import (
    CertJournal,
    Phase,
    certificate_peers,
    prepare_cert_rotation,
    reissue_waves,
    run_cert_rotation,
)
from vpnfleet.controller.rotate.rotation import RotationError, RotationKind, RotationResult
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.state import StateDir
from vpnfleet.controller.transport.client import (
    AgentCallFailed,
    AgentUnreachable,
    InstalledCredentials,
)

LAB = Path(__file__).resolve().parents[3] / "inventories" / "lab"
HOSTS = ["a1", "a2", "a3", "a4"]


@dataclass
class FakeClock:
    t: float = 100.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def issuer_fingerprint(cert_pem: bytes, bundle: list[bytes]) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    for pem in bundle:
        ca = x509.load_pem_x509_certificate(pem)
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:
            continue
        return pki.fingerprint(pem)
    return ""


def split_bundle(bundle: bytes) -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.PEM) for c in x509.load_pem_x509_certificates(bundle)]


@dataclass
class FakeAgents:
    """Agents of a mesh, as the controller sees them through CredentialAccess."""

    clock: FakeClock
    state: StateDir
    plans: dict[str, Any]  # host -> the planner NodePlan in force
    tls_ca: dict[str, str] = field(default_factory=dict)  # CA of the TLS cert presented
    ike_ca: dict[str, str] = field(default_factory=dict)
    trusted: dict[str, list[str]] = field(default_factory=dict)  # TLS trust bundle
    staged: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # SPKI DER
    established: dict[tuple[str, str], float] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)  # host -> install error
    refuse_only: str = ""  # refuse only the install of this phase (trust, reissue, retire)
    wrong_name: set[str] = field(default_factory=set)  # CSRs naming another host
    wrong_fingerprint: set[str] = field(default_factory=set)
    interrupt_after: int | None = None  # certificate installs before a Ctrl-C
    installs: list[str] = field(default_factory=list)  # hosts given new certificates
    auth_failures: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, clock: FakeClock, state: StateDir, fleet: CompiledFleet) -> FakeAgents:
        ca = pki.fingerprint(pki.load_ca(state.root)[2])
        agents = cls(clock, state, dict(fleet.plans))
        for h in fleet.plans:
            agents.tls_ca[h] = agents.ike_ca[h] = ca
            agents.trusted[h] = [ca]
        return agents

    def _connect(self, host: str) -> None:
        """The controller's TLS handshake with ``host``."""
        ours = pki.controller_issuer(self.state.root)
        bundle = pki.bundle_fingerprints(pki.ensure_controller_cert(self.state.root).ca_pem)
        if ours not in self.trusted[host]:
            raise AgentUnreachable(host, "UNAVAILABLE", "the agent refused our certificate")
        if self.tls_ca[host] not in bundle:
            raise AgentUnreachable(host, "UNAVAILABLE", "the agent's certificate is untrusted")

    async def push(self, fleet: CompiledFleet) -> AggregateResult:
        out = AggregateResult()
        for h in fleet.selected:
            self._connect(h)
            self.plans[h] = fleet.plans[h]
            out.add(HostResult(h, Outcome.CHANGED))
        return out

    async def observe(self, fleet: CompiledFleet) -> FleetStatus:
        hosts = []
        for h in fleet.selected:
            self._connect(h)
            ikes = tuple(
                IkeSaView(
                    peer=p.name,
                    state="established",
                    established_at=self.established.get((h, p.name), 1.0),
                    children=(ChildSaView(state="installed"),),
                )
                for p in self.plans[h].peers
            )
            view = AgentStatusView(host=h, content_hash="x", ike_sas=ikes)
            hosts.append(HostStatus(h, "x", view))
        return FleetStatus(hosts)

    async def prepare_enrollment(self, host: str, endpoint: str) -> tuple[bytes, bytes]:
        self._connect(host)
        name = "a9" if host in self.wrong_name else host
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
        self.staged[host] = (pki._spki(keys[0].public_key()), pki._spki(keys[1].public_key()))
        return pki._make_csr(keys[0], name), pki._make_csr(keys[1], name)

    def _accepts(self, host: str, peer: str, ca: str) -> bool:
        auth = next(p.auth for p in self.plans[host].peers if p.name == peer)
        return ca in (auth.ca_fingerprint, *auth.accepted_ca_fingerprints)

    async def install_credentials(
        self,
        host: str,
        endpoint: str,
        *,
        tls_cert: bytes = b"",
        ike_cert: bytes = b"",
        ca_bundle: bytes = b"",
    ) -> InstalledCredentials:
        self._connect(host)
        phase = "reissue" if tls_cert else ("retire" if ca_bundle.count(b"BEGIN") == 1 else "trust")
        if host in self.refuse and self.refuse_only in ("", phase):
            raise AgentCallFailed(host, "INVALID_ARGUMENT", self.refuse[host])
        limit = self.interrupt_after
        if tls_cert and limit is not None and len(self.installs) >= limit:
            # Ctrl-C under asyncio.run: the run is cancelled where it awaits.
            raise asyncio.CancelledError
        bundle = split_bundle(ca_bundle)
        for pem, staged in zip(
            (tls_cert, ike_cert), self.staged.get(host, (b"", b"")), strict=True
        ):
            if pem:
                cert = x509.load_pem_x509_certificate(pem)
                if pki._spki(cert.public_key()) != staged:
                    raise AgentCallFailed(host, "FAILED_PRECONDITION", "not the staged key")
                if not issuer_fingerprint(pem, bundle):
                    raise AgentCallFailed(host, "INVALID_ARGUMENT", "not from the bundle's CAs")
        self.trusted[host] = [pki.fingerprint(p) for p in bundle]
        count = 0
        if tls_cert:
            self.installs.append(host)
            self.tls_ca[host] = issuer_fingerprint(tls_cert, bundle)
        if ike_cert:
            self.ike_ca[host] = issuer_fingerprint(ike_cert, bundle)
            for p in self.plans[host].peers:
                if p.auth.method is not AuthMethod.PUBKEY:
                    continue
                count += 1
                if self._accepts(p.name, host, self.ike_ca[host]) and self._accepts(
                    host, p.name, self.ike_ca[p.name]
                ):
                    # Newer than any SA so far: it is made after this install.
                    stamp = max(self.established.values(), default=self.clock.t) + 0.1
                    self.established[(host, p.name)] = self.established[(p.name, host)] = stamp
                else:
                    self.auth_failures.append(f"{host}->{p.name}")
        tls_fp = pki.fingerprint(tls_cert) if tls_cert else ""
        if host in self.wrong_fingerprint:
            tls_fp = "00" * 32
        return InstalledCredentials(
            tls_fp,
            pki.fingerprint(ike_cert) if ike_cert else "",
            tuple(self.trusted[host]),
            count,
        )


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    path = tmp_path / "inv"
    shutil.copytree(LAB, path)
    return path


def pubkey(inv: Path) -> Path:
    group_vars = inv / "group_vars" / "all.yaml"
    text = group_vars.read_text()
    assert "\nauth: psk" in text
    group_vars.write_text(text.replace("\nauth: psk", "\nauth: pubkey", 1))
    return inv


@dataclass
class Setup:
    state: StateDir
    compile: Callable[[], CompiledFleet]
    clock: FakeClock
    agents: FakeAgents

    async def run(self, kind: str, **kwargs: Any) -> RotationResult:
        journal, resumed = prepare_cert_rotation(kind, self.state, self.compile())
        return await run_cert_rotation(
            journal,
            self.state,
            self.compile,
            self.agents,
            resumed=resumed,
            clock=Clock(self.clock.now, self.clock.sleep),
            **kwargs,
        )


def setup(inv: Path, tmp_path: Path) -> Setup:
    state = StateDir(tmp_path / "s")
    pki.init_ca(state.root)
    pki.ensure_controller_cert(state.root)

    def compile_fleet() -> CompiledFleet:
        return operations.compile_fleet(inv, state)

    clock = FakeClock()
    return Setup(state, compile_fleet, clock, FakeAgents.start(clock, state, compile_fleet()))


def all_pairs_newer(agents: FakeAgents, than: float) -> bool:
    pairs = [(h, p.name) for h in HOSTS for p in agents.plans[h].peers]
    return len(pairs) == 12 and all(agents.established.get(t, 0) > than for t in pairs)


async def test_certs_rotation_reissues_every_agent_and_reestablishes(
    inv: Path, tmp_path: Path
) -> None:
    s = setup(pubkey(inv), tmp_path)
    ca = pki.fingerprint(pki.load_ca(s.state.root)[2])
    lines: list[str] = []
    out = await s.run(RotationKind.CERTS, report=lines.append)
    assert out.error == "" and out.exit_code == 0, out.error
    assert sorted(s.agents.installs) == HOSTS
    assert set(s.agents.tls_ca.values()) == {ca} and set(s.agents.ike_ca.values()) == {ca}
    assert all_pairs_newer(s.agents, 100.0) and not s.agents.auth_failures
    journal = CertJournal.load(s.state, RotationKind.CERTS)
    assert journal is not None and journal.finished
    assert sorted(journal.done[Phase.REISSUE]) == HOSTS
    assert any("3 certificate peer(s) re-established" in ln for ln in lines)
    assert lines[-1] == "certs rotation done"
    data = out.to_json()
    assert data["kind"] == "certs" and data["exit_code"] == 0 and len(data["hosts"]) == 4


async def test_ca_rotation_runs_three_phases_without_auth_failure(
    inv: Path, tmp_path: Path
) -> None:
    s = setup(pubkey(inv), tmp_path)
    old = pki.fingerprint(pki.load_ca(s.state.root)[2])
    lines: list[str] = []
    out = await s.run(RotationKind.CA, report=lines.append)
    assert out.error == "" and out.exit_code == 0, out.error
    new = pki.fingerprint(pki.load_ca(s.state.root)[2])
    assert new != old and out.extra["ca"] == new
    assert set(s.agents.tls_ca.values()) == {new} and set(s.agents.ike_ca.values()) == {new}
    assert all(t == [new] for t in s.agents.trusted.values())  # the old CA is not trusted
    assert pki.controller_issuer(s.state.root) == new
    assert pki.previous_ca_pem(s.state.root) is None and pki.next_ca_pem(s.state.root) is None
    assert all_pairs_newer(s.agents, 100.0) and not s.agents.auth_failures
    for plan in s.agents.plans.values():  # plans in force name only the new CA
        assert [pki.fingerprint(a) for a in plan.trust_anchors] == [new]
        assert {p.auth.ca_fingerprint for p in plan.peers} == {new}
    phase_lines = [ln for ln in lines if ln.startswith("phase ")]
    assert [ln.split(":")[0] for ln in phase_lines] == [
        "phase 1/3 trust",
        "phase 2/3 reissue",
        "phase 3/3 retire",
    ]
    journal = CertJournal.load(s.state, RotationKind.CA)
    assert journal is not None and journal.finished and journal.next_ca == new
    assert journal.old_ca == old


async def test_agent_refusing_install_stops_the_run_and_resume_finishes(
    inv: Path, tmp_path: Path
) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.refuse["a3"] = "IKE certificate does not match the staged key"
    out = await s.run(RotationKind.CA, options=None)
    assert out.exit_code == 2
    assert out.error == (
        "phase trust: a3: IKE certificate does not match the staged key (INVALID_ARGUMENT)"
    )
    journal = CertJournal.load(s.state, RotationKind.CA)
    assert journal is not None and not journal.finished and journal.phase == "trust"
    assert sorted(journal.done["trust"]) == ["a1", "a2", "a4"]
    assert s.agents.installs == []  # no certificate re-issued before everyone trusts both

    del s.agents.refuse["a3"]
    lines: list[str] = []
    again = await s.run(RotationKind.CA, report=lines.append)
    assert again.error == "" and again.resumed
    assert lines[0] == "resuming the ca rotation in phase trust: 3 of 4 host(s) done in it"
    assert again.skipped == ["a1", "a2", "a4"]
    assert sorted(s.agents.installs) == HOSTS  # each agent re-issued once
    assert not s.agents.auth_failures


async def test_csr_naming_another_host_is_refused(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.wrong_name = {"a2"}
    out = await s.run(RotationKind.CERTS)
    assert out.exit_code == 2
    assert out.error == (
        "phase reissue: a2: its new CSRs were refused: the TLS CSR names a9, not 'a2': "
        "is it another host's?"
    )
    assert "a2" not in s.agents.installs
    assert out.result.results["a2"].outcome is Outcome.FAILED


async def test_agent_reporting_other_certificate_is_a_failure(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.wrong_fingerprint = {"a4"}
    out = await s.run(RotationKind.CERTS)
    assert out.error.startswith(
        "phase reissue: a4: InstallCredentials answered with TLS certificate 0000000000000000…"
    )


async def test_interrupted_ca_rotation_resumes_in_its_phase(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.interrupt_after = 2
    with pytest.raises(asyncio.CancelledError):
        await s.run(RotationKind.CA, options=operations.RolloutOptions(forks=1))
    journal = CertJournal.load(s.state, RotationKind.CA)
    assert journal is not None and journal.phase == Phase.REISSUE
    assert journal.done[Phase.REISSUE] == s.agents.installs == ["a1", "a2"]
    next_ca = pki.next_ca_pem(s.state.root)
    assert next_ca is not None and pki.fingerprint(next_ca) == journal.next_ca

    s.agents.interrupt_after = None
    out = await s.run(RotationKind.CA)
    assert out.error == "" and out.resumed and sorted(out.skipped) == ["a1", "a2"]
    assert sorted(s.agents.installs) == HOSTS  # a1 and a2 not re-issued twice
    assert pki.fingerprint(pki.load_ca(s.state.root)[2]) == journal.next_ca
    assert not s.agents.auth_failures


async def test_resume_after_promotion_does_not_promote_again(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.refuse["a1"] = "disk full"
    s.agents.refuse_only = "retire"
    out = await s.run(RotationKind.CA)
    assert out.error == "phase retire: a1: disk full (INVALID_ARGUMENT)"
    journal = CertJournal.load(s.state, RotationKind.CA)
    assert journal is not None and journal.phase == Phase.RETIRE
    promoted = pki.fingerprint(pki.load_ca(s.state.root)[2])
    assert promoted == journal.next_ca and pki.previous_ca_pem(s.state.root) is not None
    assert s.agents.trusted["a1"] != [promoted]  # still trusts the old CA too

    del s.agents.refuse["a1"]
    again = await s.run(RotationKind.CA)
    assert again.error == "" and again.skipped == ["a2", "a3", "a4"]
    assert pki.fingerprint(pki.load_ca(s.state.root)[2]) == promoted
    assert pki.previous_ca_pem(s.state.root) is None
    assert all(t == [promoted] for t in s.agents.trusted.values())


async def test_missing_next_ca_on_resume_is_named(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.refuse["a2"] = "no"
    await s.run(RotationKind.CA)
    (s.state.pki / pki.CA_NEXT_CERT).unlink()
    (s.state.pki / pki.CA_NEXT_KEY).unlink()
    del s.agents.refuse["a2"]
    with pytest.raises(RotationError, match=r"the next CA [0-9a-f]{16}… of the unfinished"):
        await s.run(RotationKind.CA)


async def test_unreachable_agent_stops_the_run(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.trusted["a4"] = ["00" * 32]  # it does not trust the controller any more
    out = await s.run(RotationKind.CERTS)
    assert out.result.results["a4"].outcome is Outcome.UNREACHABLE
    assert out.error == ("phase reissue: a4: the agent refused our certificate (UNAVAILABLE)")


async def test_psk_fleet_rotates_certificates_and_says_so(inv: Path, tmp_path: Path) -> None:
    s = setup(inv, tmp_path)
    fleet = s.compile()
    assert not any(certificate_peers(fleet, h) for h in HOSTS)
    lines: list[str] = []
    out = await s.run(RotationKind.CERTS, report=lines.append)
    assert out.error == ""
    assert sorted(s.agents.installs) == HOSTS
    assert any("(PSK fleet)" in ln and "no IKE SA needs re-establishing" in ln for ln in lines)
    assert any("no certificate peers: nothing re-established" in ln for ln in lines)
    assert not s.agents.established


async def test_other_rotation_unfinished_is_refused(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.refuse["a1"] = "no"
    await s.run(RotationKind.CA)
    with pytest.raises(RotationError, match=r"an unfinished `rotate ca` is in .*ca\.json"):
        prepare_cert_rotation(RotationKind.CERTS, s.state, s.compile())


async def test_hosts_changed_during_rotation_is_refused(inv: Path, tmp_path: Path) -> None:
    s = setup(pubkey(inv), tmp_path)
    s.agents.refuse["a1"] = "no"
    await s.run(RotationKind.CERTS)
    fleet = s.compile()
    fleet.selected.remove("a4")
    with pytest.raises(RotationError, match=r"hosts changed .*\(removed: a4\)"):
        prepare_cert_rotation(RotationKind.CERTS, s.state, fleet)


def test_journal_of_another_kind_is_refused(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    CertJournal(RotationKind.CERTS, ["a1"], Phase.REISSUE).save(state)
    path = state.root / "rotation" / "certs.json"
    path.rename(state.root / "rotation" / "ca.json")
    with pytest.raises(RotationError, match="not a ca rotation"):
        CertJournal.load(state, RotationKind.CA)


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RotationError, match="unknown rotation 'keys'"):
        prepare_cert_rotation("keys", StateDir(tmp_path), None)  # type: ignore[arg-type]


def test_reissue_waves_keep_the_ends_of_a_certificate_tunnel_apart(
    inv: Path, tmp_path: Path
) -> None:
    s = setup(pubkey(inv), tmp_path)
    mesh = s.compile()
    assert reissue_waves(mesh, HOSTS, 10) == [["a1"], ["a2"], ["a3"], ["a4"]]


def test_reissue_waves_of_a_psk_fleet_only_follow_forks(inv: Path, tmp_path: Path) -> None:
    s = setup(inv, tmp_path)
    fleet = s.compile()
    assert reissue_waves(fleet, HOSTS, 10) == [HOSTS]
    assert reissue_waves(fleet, HOSTS, 3) == [["a1", "a2", "a3"], ["a4"]]


async def test_progress_counts_each_acknowledgement_once(inv: Path, tmp_path: Path) -> None:
    s = setup(inv, tmp_path)
    lines: list[str] = []
    out = await s.run(RotationKind.CERTS, report=lines.append)
    assert out.error == ""
    counts = sorted(ln.split("(")[1].split(")")[0] for ln in lines if ": ok (" in ln)
    assert counts == ["1/4", "2/4", "3/4", "4/4"]
