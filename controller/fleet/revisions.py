"""The inventory as it is at a git revision, read through the ``git`` command.

The inventory directory may sit anywhere inside a repository. A revision is read by
exporting that directory's tree (``git archive REV -- PATH``) into a private temporary
directory, so the working tree, the index and every ref stay as they are. (``git
archive`` honours ``export-ignore`` and ``export-subst`` attributes: an inventory should
not carry them.) Errors in an
exported inventory name the file as ``REV:PATH/FILE`` instead of the temporary copy.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..inventory import InventoryError, InventoryErrors, Mark

GIT_TIMEOUT = 120.0


class RevisionError(Exception):
    """A revision cannot be read: not a git repository, unknown revision, path missing."""


@dataclass(frozen=True, slots=True)
class Checkout:
    """One revision's copy of the inventory directory."""

    repo: Path  # the repository's top level
    revision: str  # the full commit hash
    relative: str  # the inventory directory inside the repository ("." for the top)
    path: Path  # the exported inventory directory

    @property
    def short(self) -> str:
        return self.revision[:12]


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        res = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise RevisionError("git is not installed (needed to read revisions)") from None
    except subprocess.TimeoutExpired:
        raise RevisionError(f"git {args[0]} in {repo} took over {GIT_TIMEOUT:g}s") from None
    if check and res.returncode != 0:
        message = res.stderr.decode(errors="replace").strip().splitlines()
        raise RevisionError(f"git {args[0]} in {repo} failed: {message[-1] if message else ''}")
    return res


def _existing_ancestor(path: Path) -> Path:
    # The inventory may not exist in the working tree (deleted, or only on a branch):
    # the repository is found from the nearest directory that does.
    path = path.absolute()
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path("/")


def repo_root(path: Path) -> Path:
    """The top level of the repository holding ``path``."""
    start = _existing_ancestor(path)
    res = _git(start, "rev-parse", "--show-toplevel", check=False)
    if res.returncode != 0:
        raise RevisionError(f"{path} is not inside a git repository")
    return Path(res.stdout.decode().strip())


def relative_path(repo: Path, path: Path) -> str:
    """``path`` relative to the repository top level, symlinks resolved on both sides."""
    start = _existing_ancestor(path)
    tail = path.absolute().relative_to(start) if start != path.absolute() else Path()
    try:
        inside = (start.resolve() / tail).relative_to(repo.resolve())
    except ValueError:
        raise RevisionError(f"{path} is outside the repository {repo}") from None
    return inside.as_posix() or "."


def resolve_revision(repo: Path, ref: str) -> str:
    """The full commit hash ``ref`` names in ``repo``."""
    if not ref or ref.startswith("-"):
        raise RevisionError(f"not a revision: {ref!r}")
    res = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
               check=False)  # fmt: skip
    if res.returncode != 0:
        raise RevisionError(f"unknown revision {ref!r} in {repo}")
    return res.stdout.decode().strip()


def _check_tree(repo: Path, revision: str, relative: str, ref: str) -> None:
    spec = f"{revision}:" if relative == "." else f"{revision}:{relative}"
    res = _git(repo, "cat-file", "-t", spec, check=False)
    kind = res.stdout.decode().strip()
    if res.returncode != 0:
        raise RevisionError(f"{relative} does not exist at revision {ref} ({revision[:12]})")
    if kind != "tree":
        raise RevisionError(
            f"{relative} is a {kind}, not a directory, at revision {ref} ({revision[:12]})"
        )


def _extract(archive: bytes, target: Path) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            # The "data" filter refuses absolute names, links out of the target, devices.
            tar.extractall(target, filter="data")
    except tarfile.TarError as exc:
        raise RevisionError(f"cannot export the inventory: {exc}") from None


@contextmanager
def inventory_at(inventory: Path, ref: str) -> Iterator[Checkout]:
    """The inventory directory ``inventory`` as it is at ``ref``, removed on exit."""
    repo = repo_root(inventory)
    relative = relative_path(repo, inventory)
    revision = resolve_revision(repo, ref)
    _check_tree(repo, revision, relative, ref)
    archive = _git(repo, "archive", "--format=tar", revision, "--", relative).stdout
    with tempfile.TemporaryDirectory(prefix="vpnfleet-rev-") as tmp:
        os.chmod(tmp, 0o700)  # inventories hold vault-encrypted secrets
        _extract(archive, Path(tmp))
        path = Path(tmp) / relative if relative != "." else Path(tmp)
        try:
            yield Checkout(repo, revision, relative, path)
        except InventoryErrors as exc:
            raise relocate_errors(exc, path, f"{revision[:12]}:{relative}") from None


def relocate_errors(exc: InventoryErrors, exported: Path, shown: str) -> InventoryErrors:
    """The same errors, naming files as ``REV:PATH/FILE`` instead of the temporary copy."""
    prefix = str(exported)
    moved = []
    for e in exc.errors:
        mark = e.mark
        if mark is not None and mark.path.startswith(prefix):
            mark = Mark(shown + mark.path[len(prefix) :], mark.line, mark.column)
        moved.append(InventoryError(e.message, mark))
    out = type(exc).__new__(type(exc))
    InventoryErrors.__init__(out, moved)
    return out


def remote_of(repo: Path, branch: str) -> str:
    """The remote ``branch`` follows, or the only/``origin`` remote, or "" for none."""
    res = _git(repo, "config", "--get", f"branch.{branch}.remote", check=False)
    configured = res.stdout.decode().strip()
    if res.returncode == 0 and configured and configured != ".":
        return configured
    remotes = _git(repo, "remote").stdout.decode().split()
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else ""


@dataclass(frozen=True, slots=True)
class BranchHead:
    """What ``serve`` follows: the exact ref and its commit, and the local branch."""

    ref: str  # refs/remotes/REMOTE/BRANCH when the branch has a remote, else refs/heads/BRANCH
    commit: str
    local_commit: str = ""  # refs/heads/BRANCH when it differs from the followed ref
    local_ahead: int = 0  # commits refs/heads/BRANCH has that the followed ref lacks
    local_behind: int = 0

    def describe(self) -> str:
        return f"{self.ref} at {self.commit[:12]}"

    def local_note(self) -> str:
        """'' or what the local branch holds that is not followed."""
        if not self.local_commit:
            return ""
        local = "refs/heads/" + self.ref.rsplit("/", 1)[-1]
        return (
            f"{local} at {self.local_commit[:12]} is {self.local_ahead} commit(s) ahead and "
            f"{self.local_behind} behind {self.ref}: only {self.ref} is followed (push "
            "the local commits to roll them out)"
        )


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    """Whether commit ``older`` is ``newer`` or one of its ancestors."""
    res = _git(repo, "merge-base", "--is-ancestor", older, newer, check=False)
    if res.returncode in (0, 1):
        return res.returncode == 0
    message = res.stderr.decode(errors="replace").strip().splitlines()
    raise RevisionError(
        f"cannot compare {older[:12]} with {newer[:12]}: {message[-1] if message else ''}"
    )


def _count(repo: Path, spec: str) -> int:
    return int(_git(repo, "rev-list", "--count", spec).stdout.decode().strip() or 0)


def branch_head(repo: Path, branch: str) -> BranchHead:
    """The ref serve follows and its commit: ``refs/remotes/REMOTE/BRANCH`` after a fetch
    when the branch has a remote, else ``refs/heads/BRANCH``."""
    if not branch or branch.startswith("-"):
        raise RevisionError(f"not a branch name: {branch!r}")
    local_ref = f"refs/heads/{branch}"
    remote = remote_of(repo, branch)
    if not remote:
        try:
            return BranchHead(local_ref, resolve_revision(repo, local_ref))
        except RevisionError:
            raise RevisionError(f"no branch {branch!r} in {repo}") from None
    ref = f"refs/remotes/{remote}/{branch}"
    _git(repo, "fetch", "--quiet", "--no-tags", remote, f"+{local_ref}:{ref}")
    commit = resolve_revision(repo, ref)
    try:
        local = resolve_revision(repo, local_ref)
    except RevisionError:
        return BranchHead(ref, commit)
    if local == commit:
        return BranchHead(ref, commit)
    ahead, behind = _count(repo, f"{commit}..{local}"), _count(repo, f"{local}..{commit}")
    return BranchHead(ref, commit, local, ahead, behind)


def commit_subject(repo: Path, revision: str) -> str:
    res = _git(repo, "log", "-1", "--format=%s", revision, "--", check=False)
    return res.stdout.decode(errors="replace").strip() if res.returncode == 0 else ""
