"""The git adapter against a real local repository (no other service)."""

from __future__ import annotations

import os
import time

import pytest

from registry.webhooks.git import (
    GitError,
    GitRepositoryCache,
    RefusedRepositoryError,
    validate_commit,
    validate_repository_url,
    without_credentials,
)
from tests.webhooks.support import GitRemote


@pytest.mark.parametrize("url", [
    "https://github.com/Codertocat/Hello-World.git",
    "http://gitlab.example.com/group/repo.git",
    "ssh://git@github.com/Codertocat/Hello-World.git",
    "git://github.com/Codertocat/Hello-World.git",
    "file:///srv/git/features.git",
])
def test_allowed_urls(url):
    assert validate_repository_url(url) == url


@pytest.mark.parametrize("url", [
    "ext::sh -c touch% /tmp/pwned",
    "ext::sh",
    "fd::3",
    "https::example.com/repo.git",
    "--upload-pack=touch /tmp/pwned",
    "-oProxyCommand=evil",
    "git@github.com:Codertocat/Hello-World.git",  # scp-like: no scheme to check
    "/srv/git/features.git",
    "ftp://example.com/repo.git",
    "https://example.com/repo.git\n--upload-pack=x",
    "",
])
def test_refused_urls(url):
    with pytest.raises(RefusedRepositoryError):
        validate_repository_url(url)


@pytest.mark.parametrize("commit", ["HEAD", "main", "6113728", "--all",
                                    "6113728f27ae82c7b1a177c8d03f9e96e0adf24G",
                                    "6113728F27AE82C7B1A177C8D03F9E96E0ADF246"])
def test_refused_commits(commit):
    with pytest.raises(RefusedRepositoryError):
        validate_commit(commit)


def test_credentials_are_removed_from_urls_shown():
    assert without_credentials("https://user:token@example.com/r.git") == "https://example.com/r.git"
    assert without_credentials("file:///srv/r.git") == "file:///srv/r.git"
    assert without_credentials(
        "https://gitlab.example/g/r.git?private_token=glpat-x") == "https://gitlab.example/g/r.git"
    assert without_credentials(
        "https://host/r.git?x=1&access_token=ghs_x#frag") == "https://host/r.git"
    assert without_credentials("https://host?private_token=x") == "https://host"


def test_credentials_are_removed_from_urls_quoted_in_a_message():
    message = ("fatal: unable to access 'https://oauth2:glpat-x@gitlab.example/g/r.git/"
               "?private_token=glpat-x': The requested URL returned error: 403")
    assert without_credentials(message) == (
        "fatal: unable to access 'https://gitlab.example/g/r.git/': The requested URL returned "
        "error: 403")


def test_gits_own_message_reaches_the_error_without_credentials(tmp_path):
    # Nothing listens on port 9 (discard): git fails at once, quoting the URL it was given.
    url = "https://user:hunter2@127.0.0.1:9/repo.git?private_token=hunter2"
    with pytest.raises(GitError) as failure:
        GitRepositoryCache(tmp_path / "cache").export(url, "1" * 40, "features", tmp_path / "o")
    assert "127.0.0.1" in str(failure.value)
    assert "hunter2" not in str(failure.value)


def test_a_refused_url_is_named_without_credentials():
    with pytest.raises(RefusedRepositoryError) as refused:
        validate_repository_url("ftp://user:hunter2@example.com/r.git?token=hunter2")
    assert "example.com/r.git" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.fixture
def remote(tmp_path):
    return GitRemote(tmp_path / "remote")


def test_exports_exactly_the_pushed_commit(remote, tmp_path):
    first = remote.commit({"features/a.yaml": "first\n", "README.md": "not exported\n"})
    second = remote.commit({"features/a.yaml": "second\n"})
    cache = GitRepositoryCache(tmp_path / "cache")

    for commit, expected in ((first, "first\n"), (second, "second\n")):
        destination = tmp_path / commit
        folder = cache.export(remote.url, commit, "features", destination)
        assert folder == destination / "features"
        assert (folder / "a.yaml").read_text() == expected
        assert sorted(p.name for p in destination.iterdir()) == ["features"]


def test_the_clone_is_cached_with_the_pushed_commits_history(remote, tmp_path):
    remote.commit({"features/a.yaml": "one\n"})
    pushed = remote.commit({"features/a.yaml": "two\n"})
    cache = GitRepositoryCache(tmp_path / "cache")
    cache.export(remote.url, pushed, "features", tmp_path / "out1")

    (clone,) = (tmp_path / "cache").glob("*.git")
    # Complete, not shallow: ancestry checks need the history.
    assert not (clone / "shallow").exists()
    # The commit is now local: exporting it again needs no remote at all.
    remote.bare.rename(remote.bare.with_name("moved.git"))
    cache.export(remote.url, pushed, "features", tmp_path / "out2")
    assert (tmp_path / "out2" / "features" / "a.yaml").read_text() == "two\n"


def test_a_commit_without_the_features_folder_is_an_error(remote, tmp_path):
    commit = remote.commit({"src/app.py": "print()\n"})
    with pytest.raises(GitError, match="has no folder 'features'"):
        GitRepositoryCache(tmp_path / "cache").export(remote.url, commit, "features",
                                                      tmp_path / "o")


def test_an_unknown_commit_or_repository_is_an_error(remote, tmp_path):
    remote.commit({"features/a.yaml": "x\n"})
    cache = GitRepositoryCache(tmp_path / "cache")
    with pytest.raises(GitError, match=f"commit {'1' * 40} is not in"):
        cache.export(remote.url, "1" * 40, "features", tmp_path / "o1")
    with pytest.raises(GitError, match="fetch failed"):
        cache.export((tmp_path / "nowhere.git").as_uri(), remote.head(), "features",
                     tmp_path / "o2")


def test_refuses_before_running_git(tmp_path):
    cache = GitRepositoryCache(tmp_path / "cache")
    with pytest.raises(RefusedRepositoryError):
        cache.export(f"ext::sh -c touch% {tmp_path}/pwned", "1" * 40, "features", tmp_path / "o")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "cache").exists()


def test_symlinks_leaving_the_checkout_are_not_followed(remote, tmp_path):
    (remote.work / "features").mkdir()
    (remote.work / "features" / "passwd.yaml").symlink_to("/etc/passwd")
    commit = remote.commit({"features/a.yaml": "x\n"})
    with pytest.raises(RefusedRepositoryError, match=r"passwd\.yaml"):
        GitRepositoryCache(tmp_path / "cache").export(remote.url, commit, "features",
                                                      tmp_path / "o")


def test_ancestry_is_answered_from_the_fetched_history(remote, tmp_path):
    first = remote.commit({"features/a.yaml": "one\n"})
    second = remote.commit({"features/a.yaml": "two\n"})
    third = remote.commit({"features/a.yaml": "three\n"})
    side = remote.commit({"features/a.yaml": "side\n"}, branch="side")
    cache = GitRepositoryCache(tmp_path / "cache")
    cache.export(remote.url, third, "features", tmp_path / "o")

    assert cache.is_ancestor(remote.url, first, third)
    assert cache.is_ancestor(remote.url, third, third)
    assert not cache.is_ancestor(remote.url, third, first)
    assert not cache.is_ancestor(remote.url, side, second)
    assert cache.is_ancestor(remote.url, second, side)


def test_a_shallow_clone_left_by_an_older_version_is_deepened(remote, tmp_path):
    first = remote.commit({"features/a.yaml": "one\n"})
    second = remote.commit({"features/a.yaml": "two\n"})
    cache = GitRepositoryCache(tmp_path / "cache")
    cache.export(remote.url, second, "features", tmp_path / "o")
    (clone,) = (tmp_path / "cache").glob("*.git")
    GitRemote._git(tmp_path, "--git-dir", str(clone), "fetch", "--quiet", "--depth=1",
                   remote.url, f"+{second}:refs/fp/last-fetched")
    assert (clone / "shallow").exists()

    assert cache.is_ancestor(remote.url, first, second)


def test_clones_unused_for_the_retention_are_pruned(tmp_path):
    old, recent = GitRemote(tmp_path / "old"), GitRemote(tmp_path / "recent")
    cache = GitRepositoryCache(tmp_path / "cache")
    for used in (old, recent):
        cache.export(used.url, used.commit({"features/a.yaml": "x\n"}), "features",
                     tmp_path / used.bare.parent.name)
    clones = {path.stat().st_mtime_ns: path for path in (tmp_path / "cache").glob("*.git")}
    two_days_ago = time.time() - 2 * 86400
    # The clone used first is made old; the other stays as used just now.
    first_used = clones[min(clones)]
    os.utime(first_used, (two_days_ago, two_days_ago))

    assert cache.prune(unused_for=86400) == [first_used.name]
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.git")) == [clones[max(clones)].name]
    # A pruned repository is cloned again by its next push.
    cache.export(old.url, old.head(), "features", tmp_path / "again")
    assert cache.prune(unused_for=86400) == []
