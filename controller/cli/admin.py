"""`vpnfleet inventory`, `vpnfleet vault` and `vpnfleet ca`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from vpnfleet.protos.files import PUBLIC, write_atomically

from ..inventory import limit_hosts, load_inventory
from ..inventory import vault as vault_mod
from ..statedir import pki
from .common import (
    Ctx,
    err,
    fail,
    input_errors,
    inventory_option,
    limit_option,
    open_vault,
    out,
    output_option,
    pass_ctx,
    vault_option,
)
from .root import main

# ---------------------------------------------------------------- inventory


@main.command("inventory")
@inventory_option
@limit_option
@vault_option
@click.option("--graph", is_flag=True, help="Show the group tree, like ansible-inventory --graph.")
@click.option(
    "--host",
    "host",
    default=None,
    help="Show one host's variables as JSON, like ansible-inventory --host (--limit "
    "does not apply).",
)
@click.option(
    "--list",
    "list_",
    is_flag=True,
    help="Groups and host variables as JSON, exactly as ansible-inventory --list prints them.",
)
@click.option("--show-secrets", is_flag=True, help="Decrypt vault values in the output.")
def inventory_cmd(
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    graph: bool,
    host: str | None,
    list_: bool,
    show_secrets: bool,
) -> None:
    """Show an inventory: the group tree, one host's variables, or all of it as JSON.

    The output is ansible-inventory's for the same inventory, byte for byte: the
    variables the inventory sets (vpnfleet's defaults are not shown), groups and hosts
    in the order they are declared.
    """
    from ..inventory import render

    with input_errors():
        inv = load_inventory(inventory, vault=open_vault(vault_password_file, vault_key_file))
        if host:
            click.echo(render.dumps(render.host_vars(inv, host, show_secrets)))
            return
        if limit:
            inv = inv.subset(limit_hosts(inv, limit))
        if list_:
            click.echo(render.dumps(render.inventory_list(inv, show_secrets)))
        else:
            click.echo(render.graph(inv))


# ---------------------------------------------------------------- vault


@main.group("vault")
def vault_group() -> None:
    """Encrypt and read `!vault` values (PyNaCl SecretBox, Argon2id-derived key); values
    and files encrypted by ansible-vault are read with the same password."""


@vault_group.command("encrypt-string")
@vault_option
@click.option("--name", default=None, help="Print as 'NAME: !vault |' ready to paste into YAML.")
@click.option(
    "--ansible",
    is_flag=True,
    help="Seal in ansible-vault's format ($ANSIBLE_VAULT;1.1;AES256), which Ansible reads "
    "too (needs --vault-password-file).",
)
@click.option("--vault-id", default=None, help="With --ansible: the vault id label (format 1.2).")
@click.argument("text", required=False)
def vault_encrypt_string(
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    name: str | None,
    ansible: bool,
    vault_id: str | None,
    text: str | None,
) -> None:
    """Encrypt TEXT (or standard input when TEXT is '-' or missing)."""
    with input_errors():
        v = open_vault(vault_password_file, vault_key_file)
        if v is None:
            fail("give --vault-password-file or --vault-key-file")
        if ansible and v.kdf is vault_mod.Kdf.RAW_KEY:
            fail("--ansible needs --vault-password-file: ansible-vault has no key files")
        if vault_id is not None and not ansible:
            fail("--vault-id labels ansible-vault texts: give --ansible too")
        if vault_id is not None and (not vault_id or any(c in vault_id for c in ";@ \n")):
            fail(f"--vault-id {vault_id!r}: a label may not be empty or hold ';', '@' or spaces")
        if text is None or text == "-":
            text = sys.stdin.read().rstrip("\n")
        if ansible:
            lines = v.encrypt_ansible(text, vault_id).split("\n")
        else:
            token = v.encrypt_string(text)
            lines = [token[i : i + 64] for i in range(0, len(token), 64)]
        indent = "  " if name else ""
        head = f"{name}: !vault |" if name else "!vault |"
        click.echo("\n".join([head, *(indent + "  " + ln for ln in lines)]))


@vault_group.command("view")
@vault_option
@click.argument("source", type=click.Path(path_type=Path, exists=True))
def vault_view(vault_password_file: Path | None, vault_key_file: Path | None, source: Path) -> None:
    """Show every `!vault` value of a YAML file (or inventory directory) decrypted."""
    with input_errors():
        v = open_vault(vault_password_file, vault_key_file)
        if v is None:
            fail("give --vault-password-file or --vault-key-file")
        opened = vault_mod.view(source, v)
    for where, value in opened:
        click.echo(f"{where}: {value}")
    old = sum(1 for _, value in opened if value.sealed_in is vault_mod.VaultFormat.VPNFLEET_1)
    if old:
        err.print(
            f"note: {old} value{'s are' if old != 1 else ' is'} in vault format 1 (no KDF "
            f"limits in the header, INTERACTIVE cost); `vpnfleet vault rekey {source}` "
            "re-seals them in the current format",
            markup=False,
        )


REKEY_MAX_DERIVATIONS = 4096
"""``vault rekey`` is how values sealed under many salts are brought under one, so it
may pay for far more derivations than a plan or an apply (one per distinct salt)."""


@vault_group.command("rekey")
@vault_option
@click.option(
    "--new-vault-password-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Seal with this password instead (default: the one the values are opened with).",
)
@click.option(
    "--new-vault-key-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Seal with this raw 32-byte key file instead.",
)
@click.argument("source", type=click.Path(path_type=Path, exists=True))
def vault_rekey(
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    new_vault_password_file: Path | None,
    new_vault_key_file: Path | None,
    source: Path,
) -> None:
    """Re-seal every `!vault` value of a YAML file (or inventory directory) in place, in
    the current format: Argon2id limits in the header (MODERATE), one salt for all.

    Opens older values too (the version 1 format had no limits in its header). Every
    file is read and checked before any is written; the rest of each file is kept as
    it is. With --new-vault-password-file or --new-vault-key-file it changes the
    password or key as well.
    """
    with input_errors():
        old = open_vault(vault_password_file, vault_key_file, REKEY_MAX_DERIVATIONS)
        if old is None:
            fail("give --vault-password-file or --vault-key-file")
        new = open_vault(new_vault_password_file, new_vault_key_file) or old
        done = vault_mod.rekey(source, old, new)
    for file, count in done:
        out.print(f"{file}: {count} value{'s' if count != 1 else ''} re-sealed", markup=False)
    if not done:
        out.print(f"no !vault values in {source}", markup=False)


# ---------------------------------------------------------------- ca


@main.group("ca")
def ca_group() -> None:
    """The fleet CA: create it, sign agents' CSRs, show it."""


@ca_group.command("init")
@click.option(
    "--algorithm",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
)
@click.option("--force", is_flag=True, help="Replace an existing CA (every agent must re-enrol).")
@output_option
@pass_ctx
def ca_init(ctx: Ctx, algorithm: str, force: bool, output: str) -> None:
    """Create the fleet CA and the controller's client certificate."""
    with input_errors():
        info = pki.init_ca(ctx.state.root, algorithm=algorithm, force=force)
        pki.ensure_controller_cert(ctx.state.root)
    controller = {
        "cert": str(ctx.state.pki / pki.CONTROLLER_CERT),
        "key": str(ctx.state.pki / pki.CONTROLLER_KEY),
    }
    if output == "json":
        click.echo(json.dumps({"ca": info.to_json(), "controller": controller}))
        return
    lines = [
        f"fleet CA created ({info.algorithm})",
        f"  certificate: {info.cert_path}",
        f"  key:         {info.key_path} (0600)",
        f"  fingerprint (sha256): {info.fingerprint}",
        "controller certificate (controller role), issued by it",
        f"  certificate: {controller['cert']}",
        f"  key:         {controller['key']} (0600)",
    ]
    for line in lines:
        out.print(line, markup=False)


@ca_group.command("sign")
@click.argument("host")
@click.option("--tls-csr", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--ike-csr", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--address", default=None, help="Underlay address to add to the IKE certificate.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to write tls.pem, ike.pem and ca.pem.",
)
@pass_ctx
def ca_sign(
    ctx: Ctx, host: str, tls_csr: Path, ike_csr: Path, address: str | None, out_dir: Path
) -> None:
    """Sign HOST's TLS and IKE CSRs (made on the host by `vpnfleet-agent init`).

    Each CSR must be signed by its key and name HOST. Copy the three files back to the
    host and run `vpnfleet-agent install-certs`.
    """
    with input_errors():
        tls_pem, ike_pem, ca_pem = pki.sign_agent_csrs(
            ctx.state.root, host, tls_csr.read_bytes(), ike_csr.read_bytes(), address=address
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pem in (("tls.pem", tls_pem), ("ike.pem", ike_pem), ("ca.pem", ca_pem)):
            write_atomically(out_dir / name, pem, PUBLIC)
    out.print(f"signed certificates for {escape(host)} in {out_dir}: tls.pem ike.pem ca.pem")


@ca_group.command("show")
@output_option
@pass_ctx
def ca_show(ctx: Ctx, output: str) -> None:
    """Show the fleet CA's subject, algorithm and SHA-256 fingerprint."""
    with input_errors():
        cert, _key, _pem = pki.load_ca(ctx.state.root)
        info = pki.ca_info(ctx.state.root)
    subject = cert.subject.rfc4514_string()
    valid_until = f"{cert.not_valid_after_utc:%Y-%m-%d}"
    if output == "json":
        click.echo(json.dumps({**info.to_json(), "subject": subject, "valid_until": valid_until}))
        return
    out.print(f"subject: {subject}", markup=False)
    out.print(f"algorithm: {info.algorithm}", markup=False)
    out.print(f"fingerprint (sha256): {info.fingerprint}", markup=False)
    out.print(f"valid until: {valid_until}", markup=False)
    out.print(f"file: {info.cert_path}", markup=False)
