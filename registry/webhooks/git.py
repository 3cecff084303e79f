"""The one place the platform talks to git: fetch one pushed commit and export a folder of it.

Every call is a ``git`` subprocess with an argument list (never a shell) and a timeout.  URLs
and commit ids come from webhook payloads, so both are validated before git sees them: a
commit must be a full hexadecimal object id, and a URL must use one of the transports in
:data:`ALLOWED_SCHEMES` — in particular ``ext::`` (which runs a command), ``fd::`` and anything
that could be read as a command-line option are refused.  ``GIT_ALLOW_PROTOCOL`` repeats the
same list to git itself, so a transport cannot come back through a redirect or a config file.

Each repository gets a bare clone in the cache folder, kept across pushes: a new push then
transfers only the objects the previous fetch did not bring.  The clone holds the pushed
commit's whole history, not only the commit: whether a pushed commit is an ancestor of the one
applied last (a replayed or out-of-order push) is a question about history, and a shallow
clone answers it wrongly.  Only the features folder of the commit is exported.  A clone no push
used for a while is removed by :meth:`GitRepositoryCache.prune`.

Git's messages may carry the URL it was given, credentials included; every message this module
raises passes through :func:`without_credentials` first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from core.errors import FeaturePlatformError, InfrastructureError
from registry.webhooks.processes import Finished, run_bounded, tail

ALLOWED_SCHEMES = ("https", "http", "ssh", "git", "file")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 repositories
_LAST_FETCHED_REF = "refs/fp/last-fetched"
# A URL in a text: its user information (``user:token@``) and its query string and fragment
# (``?private_token=…``) are what carry credentials.  Stops at spaces and quotes, which end a
# URL inside git's messages.
_URL_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?:[^/?#\s'\"]*@)?"
                          r"(?P<address>[^?#\s'\"]*)(?:[?#][^\s'\"]*)?")
DEFAULT_TIMEOUT_SECONDS = 120.0


class RefusedRepositoryError(FeaturePlatformError):
    """A repository URL or commit id from a payload is not one the platform will hand to git."""


class GitError(InfrastructureError):
    """git failed: the repository is unreachable, the commit is missing, or git timed out."""


def validate_commit(commit: str) -> str:
    if not _COMMIT_ID.fullmatch(commit):
        raise RefusedRepositoryError(f"{commit!r} is not a full hexadecimal commit id")
    return commit


def validate_repository_url(url: str) -> str:
    """``url`` itself, when it names a repository through an allowed transport."""
    shown = without_credentials(url)
    if not url or url.startswith("-") or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise RefusedRepositoryError(f"repository URL {shown!r} is empty, contains spaces or "
                                     "control characters, or looks like a command-line option")
    # git reads "<transport>::<address>" as a remote helper (ext:: runs a shell command).
    if "::" in url.split("/", 1)[0]:
        raise RefusedRepositoryError(f"repository URL {shown!r} names a git remote helper; "
                                     f"only {', '.join(ALLOWED_SCHEMES)} URLs are fetched")
    scheme = url_scheme(url)
    if scheme not in ALLOWED_SCHEMES:
        raise RefusedRepositoryError(
            f"repository URL {shown!r} uses {scheme + '://' if scheme else 'no scheme'}; only "
            f"{', '.join(s + '://' for s in ALLOWED_SCHEMES)} URLs are fetched")
    return url


def url_scheme(url: str) -> str:
    """The scheme of ``url`` in lower case; empty when it has none or is not a URL at all."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unbalanced "[" in the host
        return ""


def without_credentials(text: str) -> str:
    """``text`` — a URL, or a message quoting URLs — with every URL's user information
    (``user:token@``) and query string (``?private_token=…``) removed, fit for logs, delivery
    records and event metadata.  Git URLs carry nothing else in a query string."""
    return _URL_IN_TEXT.sub(r"\g<scheme>\g<address>", text)


class GitRepositoryCache:
    """Bare clones of the pushed repositories under ``root``, one per URL.

    Work on one repository is serialised with a lock file, which holds across threads and
    across registry processes sharing the folder.
    """

    def __init__(self, root: Path, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.root = root
        self.timeout = timeout

    def export(self, url: str, commit: str, folder: str, destination: Path) -> Path:
        """Write ``folder`` of ``commit`` under ``destination``; return the exported folder.

        Raises RefusedRepositoryError for an unsafe URL or commit id, GitError when git fails
        or the commit has no such folder.
        """
        validate_commit(commit)
        with self._clone(url) as repository:
            self._ensure_commit(repository, url, commit)
            tree = f"{commit}^{{tree}}" if folder == "." else f"{commit}:{folder}"
            if self._object_type(repository, tree) != "tree":
                raise GitError(f"commit {commit[:12]} has no folder {folder!r}")
            self._archive(repository, commit, folder, destination)
        return destination / folder

    def is_ancestor(self, url: str, commit: str, descendant: str) -> bool:
        """Whether ``commit`` is a proper or improper ancestor of ``descendant`` in ``url``'s
        history (``git merge-base --is-ancestor``), fetching both as needed.

        Raises RefusedRepositoryError and GitError as :meth:`export` does.
        """
        validate_commit(commit)
        validate_commit(descendant)
        with self._clone(url) as repository:
            for needed in (commit, descendant):
                self._ensure_commit(repository, url, needed)
            check = ["merge-base", "--is-ancestor", commit, descendant]
            finished = self._run(check, repository)
            if finished.timed_out or finished.returncode not in (0, 1):
                raise _failure(check, finished, self.timeout)
            return finished.returncode == 0

    def prune(self, unused_for: float) -> list[str]:
        """Remove the clones no export or ancestry check used in the last ``unused_for``
        seconds; the names of those removed.  A clone in use is never removed: its lock is
        taken first.  The lock files stay (empty files): removing one another process waits on
        would let two processes hold "the" lock at once."""
        if not self.root.is_dir():
            return []
        cutoff = time.time() - unused_for
        removed = []
        for clone in sorted(self.root.glob("*.git")):
            with _locked(clone.with_suffix(".lock")):
                if clone.exists() and clone.stat().st_mtime < cutoff:
                    shutil.rmtree(clone)
                    removed.append(clone.name)
        return removed

    @contextmanager
    def _clone(self, url: str) -> Iterator[Path]:
        """The clone of ``url``, created if new, locked while in use and marked as used."""
        validate_repository_url(url)
        self.root.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        repository = self.root / f"{key}.git"
        with _locked(self.root / f"{key}.lock"):
            if not (repository / "HEAD").exists():
                self._git(["init", "--quiet", "--bare", str(repository)])
            yield repository
            # What prune() reads: git leaves the folder's own time alone when nothing is
            # fetched.
            os.utime(repository)

    def _ensure_commit(self, repository: Path, url: str, commit: str) -> None:
        # A shallow clone (left by an earlier version of the platform) is deepened: its history
        # stops short, so an ancestry check would answer "no" for a real ancestor.
        if (self._object_type(repository, commit) != "commit"
                or (repository / "shallow").exists()):
            self._fetch(repository, url, commit)

    def _fetch(self, repository: Path, url: str, commit: str) -> None:
        # Keeping the last fetched commit under a ref lets the next fetch tell the server what
        # is already here, so only new objects travel.
        refspec = f"+{commit}:{_LAST_FETCHED_REF}"
        unshallow = ["--unshallow"] if (repository / "shallow").exists() else []
        try:
            self._git(["fetch", "--quiet", "--no-tags", *unshallow, "--", url, refspec],
                      repository)
        except GitError as by_id:
            # Servers speaking only protocol v0 refuse to send an unadvertised commit; then
            # fetch the advertised branches and look for the commit there.
            try:
                self._git(["fetch", "--quiet", "--no-tags", "--", url,
                           "+refs/heads/*:refs/fp/heads/*"], repository)
            except GitError:
                raise by_id from None
            if self._object_type(repository, commit) != "commit":
                raise GitError(f"commit {commit} is not in {without_credentials(url)}") from None

    def _object_type(self, repository: Path, name: str) -> str | None:
        """``commit``, ``tree``, ``blob``… for an object name git resolves; None otherwise."""
        try:
            return self._git(["cat-file", "-t", name], repository).decode().strip()
        except GitError:
            return None

    def _archive(self, repository: Path, commit: str, folder: str, destination: Path) -> None:
        with tempfile.TemporaryFile() as archive:
            # A tar through a file rather than a pipe: a large tree costs disk, not memory.
            self._git(["archive", "--format=tar", commit, "--", folder], repository,
                      stdout=archive)
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
                # The "data" filter refuses absolute paths, links leaving the destination and
                # device files: the tree comes from whoever can push.
                try:
                    tar.extractall(destination, filter="data")
                except tarfile.FilterError as error:
                    raise RefusedRepositoryError(f"commit {commit[:12]}: {error}") from None

    def _git(self, args: Sequence[str], repository: Path | None = None,
             stdout: IO[bytes] | int = subprocess.PIPE) -> bytes:
        """git's standard output (empty when redirected to ``stdout``)."""
        finished = self._run(args, repository, stdout)
        if finished.timed_out or finished.returncode != 0:
            raise _failure(args, finished, self.timeout)
        return finished.stdout

    def _run(self, args: Sequence[str], repository: Path | None = None,
             stdout: IO[bytes] | int = subprocess.PIPE) -> Finished:
        command = ["git"]
        if repository is not None:
            command += ["--git-dir", str(repository)]
        return run_bounded([*command, *args], timeout=self.timeout, env=_git_environment(),
                           stdout=stdout)


def _failure(args: Sequence[str], finished: Finished, timeout: float) -> GitError:
    if finished.timed_out:
        return GitError(f"git {args[0]} took longer than {timeout:g} s and was stopped")
    # git quotes the URL it was given, credentials and all ("unable to access 'https://…'").
    message = without_credentials(tail(finished.stderr)) or "no message"
    return GitError(f"git {args[0]} failed: {message}")


def _git_environment() -> dict[str, str]:
    # git keeps the registry's environment (credential helpers, ssh keys, proxies) minus the
    # platform's own settings; it must never stop to ask for a password.
    env = {name: value for name, value in os.environ.items() if not name.startswith("FP_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ALLOW_PROTOCOL=":".join(ALLOWED_SCHEMES))
    return env


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
