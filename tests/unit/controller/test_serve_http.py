"""The pure parts of `vpnfleet serve`'s HTTP side: secret files, allowed hosts, webhook checks."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from click.testing import CliRunner

from vpnfleet.controller.cli import main
from vpnfleet.controller.gitops.serve_http import (
    HttpOptions,
    SecretFileError,
    WebhookAuth,
    allowed_hosts,
    check_webhook,
    exposure_warnings,
    github_signature,
    host_of,
    read_secret_file,
)


def write(path: Path, content: bytes, mode: int) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_a_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "secret", b"  s3cret-value\n", 0o600)
    assert read_secret_file(path, "webhook secret file") == b"s3cret-value"
    assert read_secret_file(write(tmp_path / "ro", b"x", 0o400), "token") == b"x"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o602, 0o610])
def test_a_secret_file_others_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "secret", b"s3cret", mode)
    with pytest.raises(SecretFileError) as exc:
        read_secret_file(path, "webhook secret file")
    assert str(exc.value) == (
        f"webhook secret file {path} is accessible by group or others (mode {mode:04o}); "
        f"run: chmod 600 {path}"
    )


def test_an_empty_missing_or_odd_secret_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="is empty"):
        read_secret_file(write(tmp_path / "empty", b"\n", 0o600), "API token file")
    with pytest.raises(SecretFileError, match=r"cannot read API token file .*No such file"):
        read_secret_file(tmp_path / "missing", "API token file")
    folder = tmp_path / "dir"
    folder.mkdir(mode=0o700)
    with pytest.raises(SecretFileError, match="is not a regular file"):
        read_secret_file(folder, "API token file")


def test_serve_refuses_a_world_readable_secret_before_doing_anything(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret", b"s3cret", 0o644)
    result = CliRunner().invoke(
        main,
        ["--state", str(tmp_path / "state"), "serve", "-i", str(tmp_path / "inv"),
         "--webhook-secret-file", str(secret)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "is accessible by group or others (mode 0644); run: chmod 600" in result.output
    assert not (tmp_path / "state").exists()


def test_allowed_hosts_are_the_listen_address_localhost_and_the_extra_names() -> None:
    assert allowed_hosts("192.0.2.10", ["GitOps.Example.org."]) == {
        "localhost", "127.0.0.1", "::1", "192.0.2.10", "gitops.example.org",
    }  # fmt: skip
    # A wildcard is no name a client can give: only localhost and the extra names.
    assert allowed_hosts("0.0.0.0") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("::", ["[2001:db8::1]"]) == {
        "localhost",
        "127.0.0.1",
        "::1",
        "2001:db8::1",
    }
    for bad in ("gitops.example.org:8080", "http://x", "", "a b"):
        with pytest.raises(ValueError, match="--allowed-host takes"):
            allowed_hosts("127.0.0.1", [bad])


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8080", "localhost"),
        ("LocalHost", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("gitops.example.org.:443", "gitops.example.org"),
        ("rebind.attacker.example", "rebind.attacker.example"),
    ],
)
def test_the_host_header_is_compared_by_name_without_port(header: str, name: str) -> None:
    assert host_of(header) == name


def test_github_signature_is_hmac_sha256_of_the_body() -> None:
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert github_signature(secret, body) == expected
    assert check_webhook(secret, expected, None, body) is WebhookAuth.ACCEPTED
    assert check_webhook(secret, expected, None, body + b" ") is WebhookAuth.BAD_SIGNATURE
    assert check_webhook(secret, expected.upper(), None, body) is WebhookAuth.BAD_SIGNATURE
    assert check_webhook(secret, "sha256=é", None, body) is WebhookAuth.BAD_SIGNATURE
    # A signature, when given, decides: a right GitLab token beside it does not help.
    assert check_webhook(secret, "sha256=00", secret.decode(), body) is WebhookAuth.BAD_SIGNATURE
    assert check_webhook(secret, None, secret.decode(), body) is WebhookAuth.ACCEPTED
    assert check_webhook(secret, None, "guess", body) is WebhookAuth.BAD_TOKEN
    assert check_webhook(secret, None, None, body) is WebhookAuth.MISSING


def test_listening_beyond_this_host_is_warned_about_what_is_open() -> None:
    def options(hosts: frozenset[str], token: bytes | None = None) -> HttpOptions:
        return HttpOptions(allowed_hosts=hosts, api_token=token)

    local = allowed_hosts("127.0.0.1")
    assert exposure_warnings("127.0.0.1", options(local)) == []
    assert exposure_warnings("[::1]", options(local)) == []
    token_hint, host_hint = exposure_warnings("0.0.0.0", options(allowed_hosts("0.0.0.0")))
    assert "give --api-token-file" in token_hint
    assert "give --allowed-host" in host_hint
    named = allowed_hosts("0.0.0.0", ["gitops.example.org"])
    assert exposure_warnings("0.0.0.0", options(named, b"t")) == []
    assert exposure_warnings("192.0.2.10", options(allowed_hosts("192.0.2.10"), b"t")) == []
