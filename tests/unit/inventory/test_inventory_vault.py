"""Vault: SecretBox with Argon2id-derived or raw keys; inline !vault values."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import (
    InventoryErrors,
    Secret,
    Vault,
    VaultError,
    host_vars,
    load_inventory,
)
from vpnfleet.controller.inventory.vault import MAGIC, view

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)


def test_round_trip_with_password() -> None:
    sealed = Vault(b"correct horse").encrypt_string("s3cret psk")
    assert "s3cret" not in sealed
    assert base64.b64decode(sealed).startswith(MAGIC)
    opened = Vault(b"correct horse").decrypt(sealed)  # a fresh vault: derives the key anew
    assert opened == "s3cret psk"
    assert isinstance(opened, Secret)


def test_each_value_gets_a_fresh_nonce() -> None:
    vault = Vault(b"pw")
    assert vault.encrypt_string("same") != vault.encrypt_string("same")


def test_wrong_password_is_a_clear_error() -> None:
    sealed = Vault(b"right").encrypt_string("x")
    with pytest.raises(VaultError, match="cannot decrypt vault value: wrong password or key"):
        Vault(b"wrong").decrypt(sealed)


def test_altered_text_is_refused() -> None:
    blob = bytearray(base64.b64decode(Vault(b"pw").encrypt_string("hello")))
    blob[-1] ^= 1
    with pytest.raises(VaultError, match="cannot decrypt"):
        Vault(b"pw").decrypt(base64.b64encode(bytes(blob)).decode())


def test_not_a_vault_text() -> None:
    with pytest.raises(VaultError, match="not a vpnfleet vault text"):
        Vault(b"pw").decrypt(base64.b64encode(b"hello world, not sealed at all").decode())
    with pytest.raises(VaultError, match="not valid base64"):
        Vault(b"pw").decrypt("***")


def test_secret_repr_is_masked() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "<secret>"
    assert repr({"psk": secret}) == "{'psk': <secret>}"
    assert str(secret) == "hunter2"


def test_key_file_round_trip(tmp_path: Path) -> None:
    key_file = Vault.generate_key_file(tmp_path / "vault.key")
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    sealed = Vault.from_key_file(key_file).encrypt_string("via key file")
    assert Vault.from_key_file(key_file).decrypt(sealed) == "via key file"
    other = Vault.generate_key_file(tmp_path / "other.key")
    with pytest.raises(VaultError, match="wrong password or key"):
        Vault.from_key_file(other).decrypt(sealed)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(bytes(32))
    key_file.chmod(0o644)
    with pytest.raises(VaultError, match="accessible by group or others"):
        Vault.from_key_file(key_file)


def test_key_file_of_wrong_size_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "vault.key"
    key_file.write_bytes(b"short")
    key_file.chmod(0o600)
    with pytest.raises(VaultError, match="exactly 32 raw bytes, it holds 5"):
        Vault.from_key_file(key_file)


def test_generate_key_file_refuses_to_overwrite(tmp_path: Path) -> None:
    Vault.generate_key_file(tmp_path / "k")
    with pytest.raises(VaultError, match="already exists"):
        Vault.generate_key_file(tmp_path / "k")


def _vault_inventory(make_inventory: MakeInventory, vault: Vault) -> Path:
    entry = vault.encrypt_yaml("x_psk", "topsecret")
    indented = "".join(f"      {line}\n" for line in entry.splitlines())
    return make_inventory(
        {"hosts.yaml": f"all:\n  hosts:\n    h1:\n      address: 10.0.0.1\n{indented}"}
    )


def test_inventory_vault_values_are_opened(make_inventory: MakeInventory) -> None:
    vault = Vault(b"pw")
    inv = load_inventory(_vault_inventory(make_inventory, vault), vault=vault)
    value = inv.resolve("h1").vars["x_psk"]
    assert value == "topsecret" and isinstance(value, Secret)
    assert host_vars(inv, "h1")["x_psk"] == "<secret>"
    assert host_vars(inv, "h1", show_secrets=True)["x_psk"] == "topsecret"


def test_inventory_vault_value_without_vault_is_error(make_inventory: MakeInventory) -> None:
    root = _vault_inventory(make_inventory, Vault(b"pw"))
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.mark is not None and error.mark.path.endswith("hosts.yaml")
    assert error.mark.line == 5  # the x_psk line: all, hosts, h1, address, x_psk
    assert "encrypted value (!vault) but no vault password or key file was given" in str(error)


def test_inventory_vault_value_with_wrong_password(make_inventory: MakeInventory) -> None:
    root = _vault_inventory(make_inventory, Vault(b"pw"))
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root, vault=Vault(b"nope"))
    [error] = caught.value.errors
    assert "cannot decrypt vault value at " in str(error)
    assert "hosts.yaml:5" in str(error)


def test_view_lists_every_value_of_a_file(tmp_path: Path) -> None:
    vault = Vault(b"pw")
    path = tmp_path / "secrets.yaml"
    nested = "".join(f"    {line}\n" for line in vault.encrypt_yaml("d", "two").splitlines())
    path.write_text(
        "a: plain\n" + vault.encrypt_yaml("b", "one") + "c:\n  -\n" + nested, encoding="utf-8"
    )
    assert [(where, str(value)) for where, value in view(path, vault)] == [
        (f"{path}:2:4 b", "one"),
        (f"{path}:7:8 c[0].d", "two"),  # b's text takes lines 2-4
    ]


def test_view_walks_an_inventory_directory(make_inventory: MakeInventory) -> None:
    vault = Vault(b"pw")
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": vault.encrypt_yaml("x_a", "alpha"),
            "host_vars/h1.yaml": vault.encrypt_yaml("x_b", "beta"),
        }
    )
    assert [str(value) for _, value in view(root, vault)] == ["alpha", "beta"]


def test_password_file(tmp_path: Path) -> None:
    password_file = tmp_path / "pass"
    password_file.write_text("hunter2\n")
    sealed = Vault(b"hunter2").encrypt_string("x")
    assert Vault.from_password_file(password_file).decrypt(sealed) == "x"
    password_file.write_text("\n")
    with pytest.raises(VaultError, match="is empty"):
        Vault.from_password_file(password_file)
