"""ansible-vault's format beside vpnfleet's own: values made by ``ansible-vault
encrypt_string`` and files made by ``ansible-vault encrypt``, opened with the same password.

Vectors come from the real ansible-vault of the test environment (ansible-core is a dev
dependency), made at run time; two fixed vectors, made once with ansible-vault 2.17, test
the decryption on their own. What vpnfleet seals in ansible-vault's format (``vault
rekey``) is read back by ansible-vault itself.
"""

from __future__ import annotations

import binascii
import json
import os
import subprocess
import sys
import textwrap
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
from vpnfleet.controller.inventory.source import VaultText, load_yaml_text
from vpnfleet.controller.inventory.vault import (
    AnsibleSealed,
    KdfParams,
    VaultFormat,
    rekey,
    view,
)

MakeInventory = Callable[[dict[str, str]], Path]

FAST = KdfParams(opslimit=1, memlimit=8192)
PASSWORD = "correct horse battery staple"

# ansible-vault encrypt_string --vault-password-file PW 'fixed vector: ...' --name fixed
FIXED_1_1 = """\
fixed: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          66353536663334633530393333356532313235373366316664396665376266373832666563396333
          3839646463376461653533306430643536646166623132310a353433333264666266616666393036
          65646664636664646638346464383031363364626465326134356266643466343230313962633164
          3235353439666132330a366437643331663036303435316530353637366165353239343064616266
          39303533303138663566383432313031653737373632373839623561313339373334393039396138
          6364326139386363326663343138633336313131633937343966
"""
FIXED_1_1_PLAIN = "fixed vector: ünïcode, 17 bytes+"

# ansible-vault encrypt_string --vault-id prod-eu@PW 'labelled vector' --name labelled
FIXED_1_2 = """\
labelled: !vault |
          $ANSIBLE_VAULT;1.2;AES256;prod-eu
          31653932616132383236356237316434366566356534323964323036373530643038336339663633
          3738643033383437646461386439613331393564613863370a373132393733623836336534343865
          61326632346261313038316366303761663865356133626437396132353863393863663965623932
          3961653736623061320a306430366438643533356164363433343637663139396163373036376339
          3538
"""


def _ansible_vault(
    tmp_path: Path,
    *args: str,
    vault_id: str | None = None,
    password: str = PASSWORD,
    stdin: str | None = None,
) -> str:
    """Run the environment's ansible-vault with ``password``; its standard output."""
    password_file = tmp_path / "ansible-password"
    password_file.write_text(password + "\n", encoding="utf-8")
    (tmp_path / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    if vault_id is None:
        secret = ["--vault-password-file", str(password_file)]
    else:
        secret = ["--vault-id", f"{vault_id}@{password_file}"]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), *args, *secret],
        cwd=tmp_path,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def encrypt_string(tmp_path: Path, name: str, text: str, vault_id: str | None = None) -> str:
    """``name: !vault |`` made by ansible-vault encrypt_string."""
    return _ansible_vault(tmp_path, "encrypt_string", "--name", name, text, vault_id=vault_id)


def encrypt_file(tmp_path: Path, path: Path) -> None:
    _ansible_vault(tmp_path, "encrypt", str(path))


def vault() -> Vault:
    return Vault(PASSWORD.encode(), FAST)


def _value(yaml_text: str) -> VaultText:
    """The one ``!vault`` value of a YAML text, as the loader gives it (with its mark)."""
    [value] = load_yaml_text(yaml_text, "values.yaml").values()
    assert isinstance(value, VaultText)
    return value


def _indented(entry: str, spaces: int) -> str:
    return textwrap.indent(entry, " " * spaces)


# ---- the fixed vectors: decryption tested on its own


def test_fixed_vector_1_1() -> None:
    opened = vault().decrypt(_value(FIXED_1_1))
    assert opened == FIXED_1_1_PLAIN and isinstance(opened, Secret)
    assert opened.sealed_in is VaultFormat.ANSIBLE_1_1 and opened.vault_id is None
    assert repr(opened) == "<secret>"


def test_fixed_vector_1_2_with_a_vault_id() -> None:
    opened = vault().decrypt(_value(FIXED_1_2))
    assert opened == "labelled vector"
    assert opened.sealed_in is VaultFormat.ANSIBLE_1_2 and opened.vault_id == "prod-eu"


def test_fixed_vector_taken_apart() -> None:
    sealed = AnsibleSealed.parse(_value(FIXED_1_1), None)
    assert len(sealed.salt) == 32 and len(sealed.mac) == 32
    assert len(sealed.ciphertext) == 48  # 35 bytes of UTF-8, padded to 16-byte blocks
    assert sealed.envelope().split("\n")[1:] == [
        line.strip() for line in FIXED_1_1.splitlines()[2:]
    ]


# ---- errors: wrong password, altered, truncated; nothing opened


def test_wrong_password_names_the_place() -> None:
    with pytest.raises(VaultError) as caught:
        Vault(b"not the password", FAST).decrypt(_value(FIXED_1_1))
    assert str(caught.value) == (
        "cannot decrypt ansible-vault value at values.yaml:1: wrong password, "
        "or the text was altered"
    )


def _altered(text: str, part: int) -> str:
    """The vault text with one byte of its salt (0), HMAC (1) or ciphertext (2) flipped."""
    header, body = text.split("\n", 1)
    parts = binascii.unhexlify(body).split(b"\n", 2)
    raw = bytearray(binascii.unhexlify(parts[part]))
    raw[-1] ^= 1
    parts[part] = binascii.hexlify(bytes(raw))
    body = binascii.hexlify(b"\n".join(parts)).decode("ascii")
    return f"{header}\n{body}"


@pytest.mark.parametrize("part", [0, 1, 2], ids=["salt", "hmac", "ciphertext"])
def test_altered_text_is_refused(part: int) -> None:
    text = _altered(_value(FIXED_1_1), part)
    with pytest.raises(VaultError, match="wrong password, or the text was altered"):
        vault().decrypt(text)


@pytest.mark.parametrize(
    "cut",
    [
        lambda t: t[: len(t) // 2],  # cut inside the ciphertext
        lambda t: t[:300],  # cut inside the HMAC line
        lambda t: t.split("\n")[0],  # header only
        lambda t: t[:-1],  # one hex digit short
        lambda t: t + "zz",  # not hex
    ],
    ids=["half", "in-hmac", "header-only", "odd-length", "not-hex"],
)
def test_truncated_envelope_is_refused(cut: Callable[[str], str]) -> None:
    with pytest.raises(VaultError, match=r"ansible-vault value is truncated or damaged"):
        vault().decrypt(cut(_value(FIXED_1_1)))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("$ANSIBLE_VAULT;1.0;AES", r"is in format '1.0'; known: 1.1, 1.2"),
        ("$ANSIBLE_VAULT;1.1;AES128", r"uses cipher 'AES128'; only AES256 is known"),
        ("$ANSIBLE_VAULT;1.1", r"has no valid header line"),
    ],
)
def test_unknown_headers_are_refused(header: str, message: str) -> None:
    body = _value(FIXED_1_1).split("\n", 1)[1]
    with pytest.raises(VaultError, match=message):
        vault().decrypt(f"{header}\n{body}")


def test_a_key_file_cannot_open_an_ansible_vault_value() -> None:
    with pytest.raises(VaultError, match=r"needs the vault password: a key file cannot open it"):
        Vault.from_key(bytes(32)).decrypt(_value(FIXED_1_1))


# ---- made by the real ansible-vault now, loaded in an inventory


HOSTS = """\
all:
  children:
    mesh:
      hosts:
        h1:
          address: 10.0.0.1
        h2:
          address: 10.0.0.2
"""


def test_encrypt_string_values_in_an_inventory(
    make_inventory: MakeInventory, tmp_path: Path
) -> None:
    plain = encrypt_string(tmp_path, "x_plain", "made by ansible-vault")
    labelled = encrypt_string(tmp_path, "x_labelled", "with a vault id", vault_id="site-b")
    assert "$ANSIBLE_VAULT;1.2;AES256;site-b" in labelled
    ours = vault().encrypt_yaml("x_ours", "vpnfleet's own format")
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "group_vars/mesh.yaml": plain + ours,
            "host_vars/h2.yaml": labelled,
        }
    )
    inv = load_inventory(root, vault=Vault.from_password_file(tmp_path / "ansible-password"))
    h1, h2 = inv.resolve("h1").vars, inv.resolve("h2").vars
    assert h1["x_plain"] == "made by ansible-vault" and isinstance(h1["x_plain"], Secret)
    assert h1["x_ours"] == "vpnfleet's own format"
    assert h2["x_labelled"] == "with a vault id" and h2["x_labelled"].vault_id == "site-b"


def test_files_encrypted_whole(make_inventory: MakeInventory, tmp_path: Path) -> None:
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "group_vars/mesh.yaml": "x_site: paris\nx_list: [1, 2]\n",
            "host_vars/h1.yaml": "x_site: rome\n",
        }
    )
    for name in ("hosts.yaml", "group_vars/mesh.yaml", "host_vars/h1.yaml"):
        encrypt_file(tmp_path, root / name)
        assert (root / name).read_text(encoding="utf-8").startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    inv = load_inventory(root, vault=vault())
    assert list(inv.hosts) == ["h1", "h2"]
    assert inv.resolve("h1").vars["x_site"] == "rome"
    assert inv.resolve("h2").vars["x_site"] == "paris"
    assert inv.resolve("h2").vars["x_list"] == [1, 2]
    # what came from an encrypted file is shown as <secret>, as !vault values are
    site = inv.resolve("h2").vars["x_site"]
    assert isinstance(site, Secret) and site.sealed_in is VaultFormat.ANSIBLE_1_1
    assert site.mark is not None and site.mark.path.endswith("mesh.yaml")
    assert host_vars(inv, "h2")["x_site"] == "<secret>"
    assert host_vars(inv, "h2", show_secrets=True)["x_site"] == "paris"


def test_view_shows_ansible_values_and_files(tmp_path: Path) -> None:
    work = tmp_path / "inv"
    work.mkdir()
    (work / "a.yaml").write_text(encrypt_string(tmp_path, "a", "first"), encoding="utf-8")
    whole = work / "b.yaml"
    whole.write_text("b: in a file\n", encoding="utf-8")
    encrypt_file(tmp_path, whole)
    shown = [(where.split("/")[-1], str(value)) for where, value in view(work, vault())]
    assert shown == [("a.yaml:1:4 a", "first"), ("b.yaml:1:1 (file)", "b: in a file\n")]


def test_encrypted_file_with_wrong_password_or_none(
    make_inventory: MakeInventory, tmp_path: Path
) -> None:
    root = make_inventory({"hosts.yaml": HOSTS, "group_vars/mesh.yaml": "x_site: paris\n"})
    encrypt_file(tmp_path, root / "group_vars" / "mesh.yaml")
    where = f"{root / 'group_vars' / 'mesh.yaml'}:1"
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root, vault=Vault(b"wrong", FAST))
    [error] = caught.value.errors
    assert f"cannot decrypt ansible-vault file at {where}: wrong password" in str(error)
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert "file encrypted with ansible-vault, but no vault password file was given" in str(error)
    assert str(error.mark).startswith(where)


def test_wrong_password_in_an_inventory_value(
    make_inventory: MakeInventory, tmp_path: Path
) -> None:
    entry = encrypt_string(tmp_path, "x_secret", "s")
    root = make_inventory({"hosts.yaml": HOSTS + _indented(entry, 10)})
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root, vault=Vault(b"wrong", FAST))
    [error] = caught.value.errors
    # at the x_secret line
    assert f"cannot decrypt ansible-vault value at {root / 'hosts.yaml'}:9" in str(error)


def test_executable_password_file_is_run_as_ansible_runs_it(tmp_path: Path) -> None:
    script = tmp_path / "vault-pass.sh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{PASSWORD} '\n", encoding="utf-8")
    script.chmod(0o700)
    # ansible-vault itself, given the same script, seals with what it prints
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
    }
    (tmp_path / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
    command = [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string"]
    made = subprocess.run(
        [*command, "--name", "x", "--vault-password-file", str(script), "from a script"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    opened = Vault.from_password_file(script, FAST).decrypt(_value(made.stdout))
    assert opened == "from a script"
    # the trailing space is part of the password printed (only line breaks are dropped)
    with pytest.raises(VaultError, match="wrong password"):
        vault().decrypt(_value(made.stdout))


def test_failing_password_script_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "vault-pass.sh"
    script.write_text("#!/bin/sh\nexit 3\n", encoding="utf-8")
    script.chmod(0o700)
    with pytest.raises(VaultError, match=r"vault-pass.sh exited with status 3; no password read"):
        Vault.from_password_file(script, FAST)


# ---- many lengths, both ways, through ansible-core's own VaultLib

VAULTLIB_SIDE = textwrap.dedent(
    """
    import json, sys
    from ansible.parsing.vault import VaultLib, VaultSecret

    job = json.loads(sys.stdin.read())
    secret = VaultSecret(job["password"].encode())
    lib = VaultLib([("default", secret)])
    made = [
        lib.encrypt(text, secret, vault_id).decode()
        for text, vault_id in zip(job["plain"], job["ids"])
    ]
    opened = [lib.decrypt(text).decode() for text in job["ours"]]
    print(json.dumps({"made": made, "opened": opened}))
    """
)

PLAINTEXTS = ["x", "15 bytes long..", "16 bytes long...", "17 bytes long....", "é" * 700]
PLAINTEXTS += ["line one\nline two\n", " spaces kept ", "ends in $ANSIBLE_VAULT;1.1;AES256"]


def test_lengths_both_ways_with_ansible_core(tmp_path: Path) -> None:
    ids = [None if i % 2 else f"id{i}" for i in range(len(PLAINTEXTS))]
    ours = [
        vault().encrypt_ansible(text, vault_id)
        for text, vault_id in zip(PLAINTEXTS, ids, strict=True)
    ]
    job = {"password": PASSWORD, "plain": PLAINTEXTS, "ids": ids, "ours": ours}
    done = subprocess.run(
        [sys.executable, "-c", VAULTLIB_SIDE],
        input=json.dumps(job),
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["opened"] == PLAINTEXTS  # ansible-core opens what vpnfleet sealed
    for made, plain, vault_id in zip(answer["made"], PLAINTEXTS, ids, strict=True):
        opened = vault().decrypt(made)
        assert (opened, opened.vault_id) == (plain, vault_id)


# ---- what vpnfleet seals in ansible-vault's format, ansible-vault reads


def test_rekey_keeps_ansible_values_readable_by_ansible_vault(tmp_path: Path) -> None:
    work = tmp_path / "inv"
    work.mkdir()
    values = work / "values.yaml"
    values.write_text(
        encrypt_string(tmp_path, "a", "first")
        + encrypt_string(tmp_path, "b", "second", vault_id="prod")
        + vault().encrypt_yaml("c", "third"),
        encoding="utf-8",
    )
    whole = work / "whole.yaml"
    whole.write_text("x: whole file\n", encoding="utf-8")
    encrypt_file(tmp_path, whole)
    new_password = "a new password for all"
    new = Vault(new_password.encode(), FAST)
    assert sorted(rekey(work, vault(), new)) == [(values, 3), (whole, 1)]
    rewritten = values.read_text(encoding="utf-8")
    assert "$ANSIBLE_VAULT;1.1;AES256\n" in rewritten
    assert "$ANSIBLE_VAULT;1.2;AES256;prod\n" in rewritten
    # ansible-vault itself reads them with the new password
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    viewed = _ansible_vault(new_dir, "view", str(whole), password=new_password)
    assert viewed == "x: whole file\n"
    loaded = load_yaml_text(rewritten, str(values))
    for key, plain in (("a", "first"), ("b", "second")):
        out = _ansible_vault(
            new_dir, "decrypt", "--output", "-", "-", password=new_password, stdin=loaded[key]
        )
        assert out == plain
    assert new.decrypt(load_yaml_text(rewritten, str(values))["c"]) == "third"


def test_rekey_refuses_a_key_file_for_ansible_values(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(FIXED_1_1, encoding="utf-8")
    before = values.read_bytes()
    with pytest.raises(VaultError, match=r"can only be sealed with a password"):
        rekey(values, vault(), Vault.from_key(bytes(32)))
    assert values.read_bytes() == before
