"""Signature and token checks, against vectors computed by GitHub's own tooling."""

from __future__ import annotations

from registry.webhooks.signatures import (
    github_signature,
    github_signature_valid,
    gitlab_token_valid,
)
from tests.webhooks.support import FIXTURES, SECRET

# From @octokit/webhooks-methods sign(), see fixtures/README.md.
OCTOKIT_FIXTURE_SIGNATURE = (
    "sha256=68d4bf5568af57295264bd29de646b35d83804d6986661bcd5bc844505bf29ad")
# GitHub's documented example ("Validating webhook deliveries"), also what octokit's sign() gives.
GITHUB_DOCS_SIGNATURE = (
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def test_signature_matches_githubs_documented_example():
    assert github_signature(SECRET, b"Hello, World!") == GITHUB_DOCS_SIGNATURE
    assert github_signature_valid(SECRET, b"Hello, World!", GITHUB_DOCS_SIGNATURE)


def test_signature_of_the_push_fixture_matches_octokit():
    body = (FIXTURES / "github_push.json").read_bytes()
    assert github_signature_valid(SECRET, body, OCTOKIT_FIXTURE_SIGNATURE)


def test_signature_is_refused_when_anything_differs():
    body = b'{"ref": "refs/heads/main"}'
    good = github_signature(SECRET, body)
    assert github_signature_valid(SECRET, body, good)
    assert not github_signature_valid(SECRET, body + b" ", good)
    assert not github_signature_valid("another secret", body, good)
    assert not github_signature_valid(SECRET, body, good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert not github_signature_valid(SECRET, body, good.removeprefix("sha256="))
    assert not github_signature_valid(SECRET, body, "sha1=" + good.removeprefix("sha256="))
    assert not github_signature_valid(SECRET, body, None)
    assert not github_signature_valid(SECRET, body, "")


def test_gitlab_token_must_equal_the_secret():
    assert gitlab_token_valid(SECRET, SECRET)
    assert not gitlab_token_valid(SECRET, SECRET + "x")
    assert not gitlab_token_valid(SECRET, SECRET[:-1])
    assert not gitlab_token_valid(SECRET, None)
    assert not gitlab_token_valid(SECRET, "")
    assert not gitlab_token_valid(SECRET, "sécret")
