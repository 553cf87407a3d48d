"""`--limit` and the vault password as an operator who also runs Ansible uses them: a
retry file and subscripts on the command line, values and files encrypted by the real
ansible-vault (ansible-core is a dev dependency)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
ANSIBLE_VAULT = str(Path(sys.executable).parent / "ansible-vault")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(cwd / "state"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def graph_hosts(out: str) -> list[str]:
    return [line.split("--")[-1] for line in out.splitlines() if "--@" not in line and "--" in line]


def test_limit_with_retry_file_and_subscript(tmp_path: Path) -> None:
    (tmp_path / "site.retry").write_text("a3\na1\n", encoding="utf-8")
    inventory = str(REPO / "inventories/lab")
    res = run("inventory", "-i", inventory, "--limit", "@site.retry", "--graph", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert graph_hosts(res.stdout) == ["a1", "a3"]
    res = run("inventory", "-i", inventory, "--limit", "mesh[1:2],~a4", "--graph", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert graph_hosts(res.stdout) == ["a2", "a3", "a4"]
    res = run("inventory", "-i", inventory, "--limit", "@gone.retry", "--graph", cwd=tmp_path)
    assert res.returncode == 1
    assert "no limit file 'gone.retry'" in res.stderr
    res = run("inventory", "-i", inventory, "--limit", "mesh[9]", "--graph", cwd=tmp_path)
    assert res.returncode == 1
    assert "'mesh[9]' selects nothing: 'mesh' lists 4 host(s)" in res.stderr


def _ansible_vault(tmp_path: Path, *args: str) -> str:
    (tmp_path / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    done = subprocess.run(
        [ANSIBLE_VAULT, *args, "--vault-password-file", str(tmp_path / "pw")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_inventory_encrypted_by_ansible_vault(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("one password for both tools\n", encoding="utf-8")
    inventory = tmp_path / "inv"
    shutil.copytree(REPO / "inventories/lab", inventory)
    entry = _ansible_vault(tmp_path, "encrypt_string", "--name", "x_token", "from ansible-vault")
    host_vars = inventory / "host_vars" / "a2.yaml"
    host_vars.parent.mkdir(exist_ok=True)
    with host_vars.open("a", encoding="utf-8") as f:
        f.write("\n" + entry)
    _ansible_vault(tmp_path, "encrypt", str(host_vars))
    assert host_vars.read_text(encoding="utf-8").startswith("$ANSIBLE_VAULT;1.1;AES256\n")

    res = run(
        "inventory",
        "-i",
        str(inventory),
        "--host",
        "a2",
        "--show-secrets",
        "--vault-password-file",
        str(tmp_path / "pw"),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert '"x_token": "from ansible-vault"' in res.stdout

    res = run("inventory", "-i", str(inventory), "--host", "a2", cwd=tmp_path)
    assert res.returncode == 1
    assert f"{host_vars}:1:1: file encrypted with ansible-vault, but no vault password" in (
        res.stderr
    )


def test_encrypt_string_for_ansible_is_read_by_ansible_vault(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("one password for both tools\n", encoding="utf-8")
    res = run(
        "vault",
        "encrypt-string",
        "--vault-password-file",
        str(tmp_path / "pw"),
        "--ansible",
        "--vault-id",
        "prod",
        "--name",
        "x_token",
        "sealed by vpnfleet",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["x_token: !vault |", "    $ANSIBLE_VAULT;1.2;AES256;prod"]
    sealed = "\n".join(line.strip() for line in lines[1:]) + "\n"
    (tmp_path / "value.vault").write_text(sealed, encoding="utf-8")
    opened = _ansible_vault(tmp_path, "decrypt", "--output", "-", str(tmp_path / "value.vault"))
    assert opened == "sealed by vpnfleet"

    key = tmp_path / "key"
    key.write_bytes(bytes(32))
    key.chmod(0o600)
    res = run(
        "vault", "encrypt-string", "--vault-key-file", str(key), "--ansible", "x", cwd=tmp_path
    )
    assert res.returncode != 0
    assert "--ansible needs --vault-password-file" in res.stderr
