"""Vault: SecretBox with Argon2id-derived or raw keys; inline !vault values.

Tests seal with the smallest Argon2id limits (FAST) unless they test the default: a
MODERATE derivation costs about half a second and 256 MiB.
"""

from __future__ import annotations

import base64
import os
import stat
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
from vpnfleet.controller.inventory.source import load_yaml_file
from vpnfleet.controller.inventory.vault import (
    MAGIC,
    MAGIC_V1,
    MAX_DERIVATIONS,
    MODERATE,
    Kdf,
    KdfParams,
    rekey,
    view,
)

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

FAST = KdfParams(opslimit=1, memlimit=8192)


def fast(password: bytes) -> Vault:
    return Vault(password, FAST)


def test_round_trip_with_password() -> None:
    sealed = fast(b"correct horse").encrypt_string("s3cret psk")
    assert "s3cret" not in sealed
    assert base64.b64decode(sealed).startswith(MAGIC)
    # A fresh vault derives the key anew, with the limits the text's header names.
    opened = Vault(b"correct horse").decrypt(sealed)
    assert opened == "s3cret psk"
    assert isinstance(opened, Secret)


def test_each_value_gets_a_fresh_nonce() -> None:
    vault = fast(b"pw")
    assert vault.encrypt_string("same") != vault.encrypt_string("same")


def test_wrong_password_is_a_clear_error() -> None:
    sealed = fast(b"right").encrypt_string("x")
    with pytest.raises(VaultError, match="cannot decrypt vault value: wrong password or key"):
        fast(b"wrong").decrypt(sealed)


def test_altered_text_is_refused() -> None:
    blob = bytearray(base64.b64decode(fast(b"pw").encrypt_string("hello")))
    blob[-1] ^= 1
    with pytest.raises(VaultError, match="cannot decrypt"):
        fast(b"pw").decrypt(base64.b64encode(bytes(blob)).decode())


def test_not_a_vault_text() -> None:
    with pytest.raises(VaultError, match="not a vpnfleet vault text"):
        fast(b"pw").decrypt(base64.b64encode(b"hello world, not sealed at all").decode())
    with pytest.raises(VaultError, match="not valid base64"):
        fast(b"pw").decrypt("***")


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
    vault = fast(b"pw")
    inv = load_inventory(_vault_inventory(make_inventory, vault), vault=vault)
    value = inv.resolve("h1").vars["x_psk"]
    assert value == "topsecret" and isinstance(value, Secret)
    assert host_vars(inv, "h1")["x_psk"] == "<secret>"
    assert host_vars(inv, "h1", show_secrets=True)["x_psk"] == "topsecret"


def test_inventory_vault_value_without_vault_is_error(make_inventory: MakeInventory) -> None:
    root = _vault_inventory(make_inventory, fast(b"pw"))
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.mark is not None and error.mark.path.endswith("hosts.yaml")
    assert error.mark.line == 5  # the x_psk line: all, hosts, h1, address, x_psk
    assert "encrypted value (!vault) but no vault password or key file was given" in str(error)


def test_inventory_vault_value_with_wrong_password(make_inventory: MakeInventory) -> None:
    root = _vault_inventory(make_inventory, fast(b"pw"))
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root, vault=fast(b"nope"))
    [error] = caught.value.errors
    assert "cannot decrypt vault value at " in str(error)
    assert "hosts.yaml:5" in str(error)


def test_view_lists_every_value_of_a_file(tmp_path: Path) -> None:
    vault = fast(b"pw")
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
    vault = fast(b"pw")
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
    sealed = fast(b"hunter2").encrypt_string("x")
    assert Vault.from_password_file(password_file).decrypt(sealed) == "x"
    password_file.write_text("\n")
    with pytest.raises(VaultError, match="is empty"):
        Vault.from_password_file(password_file)


# -- the format: limits in the header, version 1 still opened, bounds, the salt cap ----

PASSWORD_V1 = b"correct horse battery staple"
SEALED_V1 = (  # "psk made by the version-1 vault", sealed by the version 1 code
    "VlBORkxFRVQtVkFVTFQxMGQ2g7rqD8JzEjk8cy4ggnGFo6ZIa41l3D1IquXLSUiL83vpvQuP2N7/shbgNDJE"
    "E2mg3yEmqux7XQAmNuzQZ8fNU103Z6ptN6jT0RaLj8OlIysJlFcx"
)
KEY_V1 = bytes(range(32))
SEALED_V1_KEY = (  # "sealed with a key file", the version 1 code with key bytes 0..31
    "VlBORkxFRVQtVkFVTFQxAAAAAAAAAAAAAAAAAAAAADZtEOw9EKZb91QiheyYOE+VKbquSbHNQky0mCKCHVTX"
    "HIGTXX+6256Xro0ROLxrJB49utHE467xiShUBp/p"
)


def header(sealed: str) -> tuple[bytes, int, int, int, bytes]:
    """magic, kdf, opslimit, memlimit, salt of a version 2 text."""
    blob = base64.b64decode(sealed)
    n = len(MAGIC)
    kdf, opslimit, memlimit = blob[n], blob[n + 1 : n + 5], blob[n + 5 : n + 13]
    salt = blob[n + 13 : n + 29]
    return blob[:n], kdf, int.from_bytes(opslimit), int.from_bytes(memlimit), salt


def with_header(sealed: str, kdf: int, opslimit: int, memlimit: int) -> str:
    blob = base64.b64decode(sealed)
    n = len(MAGIC)
    params = bytes([kdf]) + opslimit.to_bytes(4) + memlimit.to_bytes(8)
    return base64.b64encode(blob[:n] + params + blob[n + 13 :]).decode()


def test_the_header_carries_the_kdf_and_its_limits() -> None:
    vault = fast(b"pw")
    sealed = vault.encrypt_string("hello")
    magic, kdf, opslimit, memlimit, salt = header(sealed)
    assert (magic, kdf, opslimit, memlimit) == (b"VPNFLEET-VAULT2", Kdf.ARGON2ID, 1, 8192)
    assert salt != bytes(16)
    assert header(vault.encrypt_string("again"))[4] == salt  # one salt per run
    keyed = Vault.from_key(KEY_V1).encrypt_string("x")
    assert header(keyed) == (MAGIC, Kdf.RAW_KEY, 0, 0, bytes(16))


def test_new_values_are_sealed_with_the_moderate_limits() -> None:
    vault = Vault(b"pw")  # one MODERATE derivation: about half a second
    sealed = vault.encrypt_string("default")
    _magic, kdf, opslimit, memlimit, _salt = header(sealed)
    assert (kdf, opslimit, memlimit) == (Kdf.ARGON2ID, 3, 256 * 2**20)
    assert (opslimit, memlimit) == (MODERATE.opslimit, MODERATE.memlimit)
    assert vault.decrypt(sealed) == "default"
    assert vault.derivations == 1  # sealing and opening share the derived key


def test_version_1_texts_still_open() -> None:
    assert base64.b64decode(SEALED_V1).startswith(MAGIC_V1)
    assert fast(PASSWORD_V1).decrypt(SEALED_V1) == "psk made by the version-1 vault"
    assert Vault.from_key(KEY_V1).decrypt(SEALED_V1_KEY) == "sealed with a key file"
    with pytest.raises(VaultError, match="wrong password or key"):
        fast(b"not it").decrypt(SEALED_V1)


def test_a_password_text_asks_for_the_password_and_a_key_text_for_the_key() -> None:
    with pytest.raises(VaultError, match="sealed with a password, but a key file was given"):
        Vault.from_key(KEY_V1).decrypt(fast(b"pw").encrypt_string("x"))
    with pytest.raises(VaultError, match="sealed with a key file, but a password was given"):
        fast(b"pw").decrypt(Vault.from_key(KEY_V1).encrypt_string("x"))


@pytest.mark.parametrize(
    ("opslimit", "memlimit", "complaint"),
    [
        (1, 64 * 2**30, "memlimit 68719476736 bytes (65536 MiB), outside 8192..1073741824"),
        (1, 4096, "memlimit 4096 bytes"),
        (0, 8192, "opslimit 0, outside 1..4"),
        (2**32 - 1, 8192, "opslimit 4294967295, outside 1..4"),
    ],
)
def test_limits_out_of_bounds_are_refused_before_deriving(
    opslimit: int, memlimit: int, complaint: str
) -> None:
    vault = fast(b"pw")
    sealed = with_header(vault.encrypt_string("x"), Kdf.ARGON2ID, opslimit, memlimit)
    opener = fast(b"pw")
    with pytest.raises(VaultError, match="asks for Argon2id") as caught:
        opener.decrypt(sealed)
    assert complaint in str(caught.value) and "refused" in str(caught.value)
    assert opener.derivations == 0


def test_an_unknown_kdf_and_a_raw_key_with_limits_are_refused() -> None:
    sealed = fast(b"pw").encrypt_string("x")
    with pytest.raises(VaultError, match="names key derivation 7, which this version"):
        fast(b"pw").decrypt(with_header(sealed, 7, 1, 8192))
    with pytest.raises(VaultError, match="sealed with a raw key but carries Argon2id limits"):
        Vault.from_key(KEY_V1).decrypt(with_header(sealed, Kdf.RAW_KEY, 1, 8192))


def test_derivations_are_cached_per_salt_and_capped_per_run() -> None:
    texts = [fast(b"pw").encrypt_string(f"value {n}") for n in range(MAX_DERIVATIONS + 1)]
    assert len({header(t)[4] for t in texts}) == MAX_DERIVATIONS + 1  # a salt each
    opener = fast(b"pw")
    for n, text in enumerate(texts[:MAX_DERIVATIONS]):
        assert opener.decrypt(text) == f"value {n}"
        assert opener.decrypt(text) == f"value {n}"  # the same salt again: cached
    assert opener.derivations == MAX_DERIVATIONS
    with pytest.raises(VaultError, match="one more Argon2id derivation") as caught:
        opener.decrypt(texts[-1])
    assert f"sealed under {MAX_DERIVATIONS} different salts" in str(caught.value)
    assert "`vpnfleet vault rekey`" in str(caught.value)
    assert opener.derivations == MAX_DERIVATIONS


def test_an_inventory_of_many_salts_is_refused_quickly(make_inventory: MakeInventory) -> None:
    many = 3 * MAX_DERIVATIONS
    text = "".join(
        fast(b"pw").encrypt_yaml(f"x_v{n}", "s") for n in range(many)
    )  # each from a run of its own: a salt each
    root = make_inventory(
        {"hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}", "group_vars/all.yaml": text}
    )
    opener = fast(b"pw")
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root, vault=opener)
    assert opener.derivations == MAX_DERIVATIONS
    assert len(caught.value.errors) == many - MAX_DERIVATIONS
    assert all("vault rekey" in str(e) for e in caught.value.errors)


def test_rekey_reseals_every_value_in_place_under_one_salt(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    third = fast(PASSWORD_V1).encrypt_string("third")
    path.write_text(
        "# kept as it is\n"
        "a: !vault |\n"
        f"  {SEALED_V1[:70]}\n"
        f"  {SEALED_V1[70:]}\n"
        "\n"
        f'b: &shared !vault "{fast(PASSWORD_V1).encrypt_string("second")}"\n'
        f"c: [!vault {third}, *shared]\n"
        "d: plain\n",
        encoding="utf-8",
    )
    path.chmod(0o640)
    new = Vault(b"new password", FAST)
    assert rekey(path, fast(PASSWORD_V1), new) == [(path, 3)]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# kept as it is\na: !vault |\n  VlBORkxFRVQtVkFVTFQy")
    assert '\n\nb: &shared !vault "' in text and text.endswith("*shared]\nd: plain\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    opened = [(where.split()[-1], str(value)) for where, value in view(path, fast(b"new password"))]
    assert opened == [
        ("a", "psk made by the version-1 vault"),
        ("b", "second"),
        ("c[0]", "third"),
        ("c[1]", "second"),
    ]
    loaded = load_yaml_file(path)
    salts = {header(loaded[k])[4] for k in ("a", "b")} | {header(loaded["c"][0])[4]}
    assert len(salts) == 1


def test_rekey_writes_nothing_when_a_value_cannot_be_opened(tmp_path: Path) -> None:
    good, bad = tmp_path / "a.yaml", tmp_path / "b.yaml"
    good.write_text(fast(b"pw").encrypt_yaml("x", "one"), encoding="utf-8")
    bad.write_text(fast(b"other").encrypt_yaml("y", "two"), encoding="utf-8")
    before = good.read_bytes(), bad.read_bytes()
    with pytest.raises(VaultError, match="cannot decrypt vault value at"):
        rekey(tmp_path, fast(b"pw"), fast(b"pw"))
    assert (good.read_bytes(), bad.read_bytes()) == before


def test_the_cap_counts_per_load_and_keys_stay_cached(make_inventory: MakeInventory) -> None:
    """``vpnfleet serve`` loads one inventory per revision with one vault: each load is
    a run of its own, and what an earlier load derived costs nothing again."""
    text = "".join(fast(b"pw").encrypt_yaml(f"x_v{n}", "s") for n in range(MAX_DERIVATIONS))
    root = make_inventory(
        {"hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}", "group_vars/all.yaml": text}
    )
    opener = fast(b"pw")
    load_inventory(root, vault=opener)
    assert opener.derivations == MAX_DERIVATIONS
    (root / "host_vars").mkdir()
    (root / "host_vars" / "h1.yaml").write_text(fast(b"pw").encrypt_yaml("x_new", "t"))
    inv = load_inventory(root, vault=opener)
    assert opener.derivations == 1  # only the new value's salt
    assert inv.resolve("h1").vars["x_new"] == "t"
