"""Parsing and validating serving requests (pure: bytes and dicts in, checked values out),
and the serving API's caps (docs/reference.md, "Serving API")."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from core.domain.definitions import Field, ValueType, json_type_name
from core.errors import (
    InvalidFeatureRequestError,
    LimitExceededError,
    MalformedBodyError,
    Problem,
)
from core.values import judge
from serving.decoding import Scalar

# ---------------------------------------------------------------------------- the caps
# An answer can be far larger than its request: one request-context value applies to every
# row, every row repeats the references as its keys, and an expression can build a string
# out of its inputs.  These caps bound the answer by the request, each refused with the cap
# named: 413 (LimitExceededError) for a size, 422 for a count.

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_BATCH_ENTITIES = 10_000
MAX_FEATURES_PER_REQUEST = 1_000
MAX_RESPONSE_CELLS = 1_000_000
"""Entities times features of one batch: 10,000 entities of 100 features, or 1,000 of
1,000.  A cell costs ≈1 µs to read, assemble and encode (measured: 0.85 s for 10,000 by 100)
and 25 to 60 bytes of answer, as every row repeats the references as its keys (≈150 MB with the
longest references), so the cap holds a request to about a second of the server's one worker,
where the two counts' own caps together allowed ten times that."""
MAX_REQUEST_STRING_CHARS = 1_000
"""Characters of one request-context string: a request signal (a channel, a query, a device),
never a document; a scalar applies to every row, so this is also what one value can
multiply."""
MAX_ON_DEMAND_STRING_CHARS = 10_000
"""Characters of one string an on-demand expression yields: room for several request-context
strings and stored values joined, far below what concatenations in a 10,000-character
expression can build."""
MAX_ON_DEMAND_CHARS_PER_RESPONSE = 10_000_000
"""Characters of all the strings on-demand expressions yield in one answer: 1,000 a row at
10,000 entities, ≈10 MB of JSON.  Without it the per-value cap allows 10 GB."""

MAX_PROBLEMS_LISTED = 20  # a 10,000-row request with one bad column should not yield 10,000

KeyValue = str | int


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    # Values are checked by check_entity_rows and request_columns rather than by msgspec,
    # whose messages cannot name the offending key of a dict ("entities[3][...]").
    entities: list[dict[str, Any]]
    features: list[str]
    request_context: dict[str, Any] = msgspec.field(default_factory=dict)


_batch_decoder = msgspec.json.Decoder(BatchRequest)
_ERROR_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)


def decode_batch_request(body: bytes) -> BatchRequest:
    """The request body as a BatchRequest; InvalidFeatureRequestError says what is wrong."""
    try:
        request = _batch_decoder.decode(body)
    except msgspec.ValidationError as error:
        match = _ERROR_PATH.match(str(error))
        assert match is not None  # the pattern matches any text
        raise InvalidFeatureRequestError.single(match["path"] or "$", match["message"]) from None
    except msgspec.DecodeError as error:
        raise MalformedBodyError(f"the body is not valid JSON: {error}") from None
    problems = []
    if len(request.entities) > MAX_BATCH_ENTITIES:
        problems.append(Problem("entities", f"has {len(request.entities)} rows; at most "
                                            f"{MAX_BATCH_ENTITIES} per request"))
    if len(request.features) > MAX_FEATURES_PER_REQUEST:
        problems.append(Problem("features", f"names {len(request.features)} features; at most "
                                            f"{MAX_FEATURES_PER_REQUEST} per request"))
    if problems:
        raise InvalidFeatureRequestError(problems)
    cells = len(request.entities) * len(request.features)
    if cells > MAX_RESPONSE_CELLS:
        raise LimitExceededError(
            f"{len(request.entities)} entities times {len(request.features)} features is "
            f"{cells} response cells: the limit is {MAX_RESPONSE_CELLS} cells per request "
            "(split the entities over several requests)")
    return request


def _raise_if_any(problems: list[Problem], more: int) -> None:
    if more > 0:
        problems.append(Problem("$", f"... and {more} more problems"))
    if problems:
        raise InvalidFeatureRequestError(problems)


def check_entity_rows(rows: Sequence[Mapping[str, Any]], join_keys: Sequence[str]) -> None:
    """Every row must hold exactly the join keys of the views requested, as strings or ints."""
    expected = set(join_keys)
    problems: list[Problem] = []
    skipped = 0
    for index, row in enumerate(rows):
        if row.keys() == expected and all(type(v) is str or type(v) is int for v in row.values()):
            continue  # the common case, decided without building messages
        found: list[str] = []
        missing = [key for key in join_keys if key not in row]
        if missing:
            found.append(f"missing key columns {', '.join(missing)}")
        unknown = sorted(set(row) - expected)
        if unknown:
            found.append(f"unknown columns {', '.join(unknown)} (key columns of the features "
                         f"requested: {', '.join(join_keys)})")
        for key, value in row.items():
            if key in expected and type(value) is not str and type(value) is not int:
                found.append(f"key column {key} must be a string or an integer, got "
                             f"{json_type_name(value)}")
        for message in found:
            if len(problems) < MAX_PROBLEMS_LISTED:
                problems.append(Problem(f"entities[{index}]", message))
            else:
                skipped += 1
    _raise_if_any(problems, skipped)


# --------------------------------------------------------------------------- request context

def checked_request_value(spec: Field, value: object) -> Scalar | None:
    """``value`` of request field ``spec``, judged by the platform's one rule
    (:mod:`core.values`: ``3.0`` is no long); ValueError saying why it does not fit,
    LimitExceededError for a string over :data:`MAX_REQUEST_STRING_CHARS` (before any message
    could quote it)."""
    if value is None:
        if spec.required:
            raise ValueError("is required")
        return None
    typed = judge(spec.type, value)
    if typed is None:
        raise ValueError(f"must be of type {spec.type}, got {json_type_name(value)} "
                         f"{value!r:.40}")
    if type(typed) is str and len(typed) > MAX_REQUEST_STRING_CHARS:
        raise LimitExceededError(
            f"request_context.{spec.name} holds a string of {len(typed)} characters: the limit "
            f"is {MAX_REQUEST_STRING_CHARS} characters per request-context string")
    if isinstance(typed, int | float) and not isinstance(typed, bool):
        if spec.min is not None and typed < spec.min:
            raise ValueError(f"{typed} is below the minimum {spec.min}")
        if spec.max is not None and typed > spec.max:
            raise ValueError(f"{typed} is above the maximum {spec.max}")
    if spec.allowed is not None and typed not in spec.allowed:
        raise ValueError(f"{typed!r} is not one of {', '.join(map(repr, spec.allowed))}")
    return typed


def request_columns(context: Mapping[str, object], fields: Sequence[Field], rows: int
                    ) -> dict[str, list[Scalar | None]]:
    """One checked column of ``rows`` values per request field; a scalar applies to every row.

    Fields that several on-demand views declare are checked against each declaration.
    Problems name the field and the first offending rows.
    """
    problems: list[Problem] = []
    skipped = 0
    columns: dict[str, list[Scalar | None]] = {}
    declared = {spec.name for spec in fields}
    for name in sorted(set(context) - declared):
        problems.append(Problem(f"request_context.{name}", "is not a request field of the "
                                f"on-demand features requested (known: "
                                f"{', '.join(sorted(declared)) or 'none'})"))
    for spec in fields:
        path = f"request_context.{spec.name}"
        given = context.get(spec.name)
        if given is None:
            if spec.required:
                problems.append(Problem(path, f"is required by the on-demand features requested "
                                              f"({spec.type}, one value per entity)"))
            else:
                columns.setdefault(spec.name, [None] * rows)
            continue
        values: list[Any] = given if isinstance(given, list) else [given] * rows
        if len(values) != rows:
            problems.append(Problem(path, f"has {len(values)} values for {rows} entities"))
            continue
        checked: list[Scalar | None] = []
        for index, value in enumerate(values):
            try:
                checked.append(checked_request_value(spec, value))
            except ValueError as error:
                if len(problems) < MAX_PROBLEMS_LISTED:
                    problems.append(Problem(f"{path}[{index}]", str(error)))
                else:
                    skipped += 1
        columns[spec.name] = checked
    _raise_if_any(problems, skipped)
    return columns


_query_number = msgspec.json.Decoder(int | float)


def parse_query_value(spec: Field, text: str) -> Scalar:
    """A request field given as a query parameter (single-entity GET): the JSON value its
    text spells for a number or a boolean (``7``, ``2.5``, ``true``), else the text; judged
    afterwards like any request value."""
    if spec.type.is_numeric:
        try:
            return _query_number.decode(text)
        except msgspec.DecodeError:
            raise ValueError(f"must be of type {spec.type}, got {text!r:.40}") from None
    if spec.type is ValueType.BOOLEAN:
        try:
            return {"true": True, "false": False}[text.lower()]
        except KeyError:
            raise ValueError(f"must be of type {spec.type}, got {text!r:.40}") from None
    return text
