"""The platform's limits on definitions, decided here once.

Every limit bounds work that one request makes the platform do — parsing, validation,
storage, the streaming job's SQL — so that a batch or a spec far beyond what any real
features repository holds is refused up front with the limit named, instead of holding a
worker for minutes or producing a job Flink refuses.  A batch over its count is answered 413
(:class:`core.errors.LimitExceededError`); a spec over one of its sizes is an invalid
definition (422), its problem naming the field and the limit.  The table is documented in
docs/reference.md, "Definitions".
"""

from __future__ import annotations

from typing import Final

from core.errors import LimitExceededError

MAX_DEFINITIONS_PER_BATCH: Final = 10_000
"""Definitions in one apply (a CLI apply, a REST apply, a git push)."""

MAX_TEXT_CHARS: Final = 10_000
"""Characters of a ``description`` or an ``owner``."""

MAX_TAGS: Final = 50
"""Tags of one source or view."""

MAX_TAG_CHARS: Final = 256
"""Characters of a tag's key and of its value."""

MAX_ALLOWED_VALUES: Final = 1_000
"""Values in one field's ``allowed`` list: each becomes a literal of the streaming job's
contract check."""

MAX_ALLOWED_VALUE_CHARS: Final = 1_000
"""Characters of one string in an ``allowed`` list."""

MAX_FEATURES_PER_VIEW: Final = 1_000
"""Features of one feature view or on-demand feature view."""

MAX_SCHEMA_FIELDS: Final = 1_000
"""Fields of one source's ``schema`` or one on-demand view's ``request_schema``."""

MAX_REFERENCES: Final = 100
"""Names in one list of names: an entity's ``join_keys``, a view's ``entities``, an
on-demand view's ``inputs``."""

MAX_EXPRESSION_CHARS: Final = 1_000
"""Characters of one on-demand feature's ``expression``."""

STREAMED_DURATION_BOUND_MS: Final = 100 * 86_400_000
"""A ``window``, ``slide`` or ``watermark_delay`` must be shorter than this (100 days): the
streaming job writes them as Flink interval literals, whose day field holds two digits."""


def check_batch_size(count: int) -> None:
    """Raise LimitExceededError when a batch of ``count`` definitions is over the limit."""
    if count > MAX_DEFINITIONS_PER_BATCH:
        raise LimitExceededError(
            f"{count} definitions in one batch: the limit is {MAX_DEFINITIONS_PER_BATCH} "
            "definitions per batch")
