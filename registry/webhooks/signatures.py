"""Is a webhook request from the provider that shares our secret?  Pure functions.

GitHub signs the raw body: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.
GitLab sends the secret itself in ``X-Gitlab-Token``.  Both are compared in constant time, so
the time an answer takes does not reveal how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac

_GITHUB_PREFIX = "sha256="


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return _GITHUB_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(),
                               header.strip().lower().encode())


def gitlab_token_valid(secret: str, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(secret.encode(), header.encode())
