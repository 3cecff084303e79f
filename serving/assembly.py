"""Raw HMGET replies → typed values, statuses and response rows (pure, the hot path).

Decoding works per read (one view version) over all entities, assembly per entity over the
plan's columns; both lean on values precomputed in the plan so that the per-value work is a
decoder call and a list append.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from core.domain.layout import encode_entity_key
from core.errors import ExpressionEvaluationError, LimitExceededError
from serving.decoding import (
    ERROR,
    EXPIRED,
    NOT_FOUND,
    PRESENT,
    STATUS_SEVERITY,
    DecodeError,
    Scalar,
    Status,
    coerce_to_type,
    event_time_millis,
    expiry_cutoff,
)
from serving.planning import OnDemandColumn, Plan, Segment, ViewRead
from serving.requests import MAX_ON_DEMAND_CHARS_PER_RESPONSE, MAX_ON_DEMAND_STRING_CHARS

RawRow = Sequence[bytes | None]
Values = Sequence[Scalar | None]
Statuses = Sequence[Status]


def entity_key_of(row: Mapping[str, str | int], join_keys: Sequence[str]) -> str:
    """The encoded entity key of one request row (ints are keyed by their decimal text)."""
    if len(join_keys) == 1:
        return encode_entity_key((str(row[join_keys[0]]),))
    return encode_entity_key([str(row[key]) for key in join_keys])


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A row whose expiry needs its per-feature times (see :func:`settle_expiry`)."""

    values: Sequence[Scalar | None]
    errors: Sequence[int]
    event_time: int | None


@dataclass(frozen=True, slots=True)
class DecodedRead:
    values: list[Values]
    statuses: list[Statuses]
    event_times: list[int | None]
    """``__ts`` of each entity's hash: the event time of its newest value."""
    found: list[bool]
    """Whether each entity's hash exists (all its features may still be missing or expired)."""
    pending: dict[int, PendingRow]
    """Rows (by position) whose values and statuses wait for :func:`settle_expiry`."""


class _AllStale:
    """Marks a row whose newest value is older than the ttl: then every value is."""


_ALL_STALE = _AllStale()
Staleness = _AllStale | set[int] | None
"""Every value stale, the positions of the stale ones, or None: nothing is."""


def decode_read(read: ViewRead, rows: Sequence[RawRow], now_ms: int) -> DecodedRead:
    """Typed values and statuses of one read's rows (``read.fields`` of each entity).

    A row can be judged from ``__ts`` and ``__ts_min`` alone unless its oldest value may be
    expired (or the hash predates ``__ts_min``): such rows are left pending."""
    count = len(read.features)
    cutoff = expiry_cutoff(read.schema.ttl_ms, now_ms)
    own_times = bool(read.time_fields)
    decoded_read = DecodedRead([], [], [], [], {})
    values, statuses = decoded_read.values, decoded_read.statuses
    event_times, found = decoded_read.event_times, decoded_read.found
    for raw, row in zip(rows, read.row_decoder.decode_rows(rows), strict=True):
        if row is None:
            values.append(read.no_values)
            statuses.append(read.all_missing)
            event_times.append(None)
            found.append(False)
            continue
        found.append(True)
        errors: Sequence[int] = ()
        decoded: Sequence[Scalar | None]
        if isinstance(row, tuple):  # values, __ts, then __ts_min when read
            decoded, row_time = row[:count], row[count]
            oldest = row[count + 1] if own_times else None
        else:  # UNDECODED
            decoded, errors = _decode_strictly(read, raw[:count])
            row_time = event_time_millis(raw[count])
            oldest = event_time_millis(raw[count + 1]) if own_times else None
        event_times.append(row_time)
        stale: Staleness = None
        if cutoff is not None:
            if row_time is not None and row_time < cutoff:
                stale = _ALL_STALE
            elif own_times and (oldest is None or oldest < cutoff):
                decoded_read.pending[len(values)] = PendingRow(decoded, errors, row_time)
                values.append(read.no_values)
                statuses.append(read.all_missing)
                continue
        row_values, row_statuses = _judged(read, decoded, errors, stale)
        values.append(row_values)
        statuses.append(row_statuses)
    return decoded_read


def settle_expiry(read: ViewRead, decoded_read: DecodedRead, time_rows: Sequence[RawRow],
                  now_ms: int) -> None:
    """Judge the pending rows from their ``__ts:{feature}`` fields (``read.time_fields``, in
    the order of ``decoded_read.pending``): a feature's time is its own when written, else
    ``__ts``."""
    cutoff = expiry_cutoff(read.schema.ttl_ms, now_ms)
    assert cutoff is not None, "rows are pending only when a ttl applies"
    for (position, row), raw_times in zip(decoded_read.pending.items(), time_rows,
                                          strict=True):
        times = [event_time_millis(t) for t in raw_times]
        stale = _staleness(row.event_time, times, cutoff)
        decoded_read.values[position], decoded_read.statuses[position] = _judged(
            read, row.values, row.errors, stale)
    decoded_read.pending.clear()


def _judged(read: ViewRead, decoded: Sequence[Scalar | None], errors: Sequence[int],
            stale: Staleness) -> tuple[Values, Statuses]:
    """A row's values (expired ones nulled) and statuses."""
    complete = None not in decoded
    if stale is None and not errors:
        return decoded, (read.all_present if complete else
                         [PRESENT if v is not None else NOT_FOUND for v in decoded])
    if stale is _ALL_STALE and not errors:
        return read.no_values, (read.all_expired if complete else
                                [EXPIRED if v is not None else NOT_FOUND for v in decoded])
    judged = list(decoded)
    return judged, _judge(judged, errors, stale)


def _decode_strictly(read: ViewRead, stored: RawRow) -> tuple[list[Scalar | None], list[int]]:
    """The slow path, for a row the row decoder refused: value by value, so that one bad
    value is an ERROR of its own and the others are still served."""
    decoded: list[Scalar | None] = []
    errors: list[int] = []
    for position, (decode, value) in enumerate(zip(read.decoders, stored, strict=True)):
        try:
            decoded.append(None if value is None else decode(value))
        except DecodeError:
            decoded.append(None)
            errors.append(position)
    return decoded, errors


def _staleness(row_time: int | None, times: Sequence[int | None], cutoff: int) -> Staleness:
    """Which values are older than ``cutoff``: a feature's time is its own ``__ts:{feature}``
    when written, else ``__ts``.  ``__ts`` is the newest, so when it is stale all are."""
    if row_time is not None and row_time < cutoff:
        return _ALL_STALE
    if not times or (None not in times and min(cast("Sequence[int]", times)) >= cutoff):
        return None  # the common case, decided in C
    stale = {position for position, time in enumerate(times)
             if time is not None and time < cutoff}
    return stale or None


def _judge(decoded: list[Scalar | None], errors: Sequence[int], stale: Staleness
           ) -> list[Status]:
    """Per-value statuses of a row with expired or undecodable values; nulls the expired."""
    row_statuses: list[Status] = []
    for position, value in enumerate(decoded):
        if position in errors:
            row_statuses.append(ERROR)
        elif value is None:
            row_statuses.append(NOT_FOUND)
        elif stale is _ALL_STALE or (isinstance(stale, set) and position in stale):
            decoded[position] = None
            row_statuses.append(EXPIRED)
        else:
            row_statuses.append(PRESENT)
    return row_statuses


def evaluate_on_demand(column: OnDemandColumn, reads: Sequence[DecodedRead], row: int,
                       context: Mapping[str, Sequence[Scalar | None]]
                       ) -> tuple[Scalar | None, Status]:
    """One on-demand value: the expression over this row's inputs (None when missing).

    The value is what the expression yields (its null semantics decide what a missing input
    gives); the status is PRESENT only when every input feature it read was PRESENT, else
    the most severe input status.  An evaluation failure or a result that does not fit the
    declared type gives null and ERROR, for this value only.
    """
    expression = column.feature.expression
    if expression is None:
        return None, ERROR
    env: dict[str, object] = {name: context[name][row] for name in column.request_fields}
    status: Status = PRESENT
    input_status: Status
    for slot in column.inputs:
        if slot.read is None:
            env[slot.name] = None
            input_status = NOT_FOUND
        else:
            decoded = reads[slot.read]
            env[slot.name] = decoded.values[row][slot.position]
            input_status = decoded.statuses[row][slot.position]
        if input_status != PRESENT and \
                STATUS_SEVERITY[input_status] > STATUS_SEVERITY[status]:
            status = input_status
    try:
        return coerce_to_type(expression.evaluate(env), column.feature.type), status
    except (ExpressionEvaluationError, TypeError):
        return None, ERROR


def check_made_string(reference: str, row: int, size: int, made_so_far: int) -> None:
    """LimitExceededError when a string of ``size`` characters that the on-demand feature
    ``reference`` yielded for entity ``row`` is over its cap, or brings the strings made for
    one answer (``made_so_far``, this one included) over theirs: an expression over a
    request-context value applies it to every row, so a small request could otherwise ask
    for a huge answer."""
    if size > MAX_ON_DEMAND_STRING_CHARS:
        raise LimitExceededError(
            f"on-demand feature {reference} yielded a string of {size} characters for entity "
            f"{row} of the request: the limit is {MAX_ON_DEMAND_STRING_CHARS} characters per "
            "on-demand string")
    if made_so_far > MAX_ON_DEMAND_CHARS_PER_RESPONSE:
        raise LimitExceededError(
            f"on-demand features yielded strings of more than "
            f"{MAX_ON_DEMAND_CHARS_PER_RESPONSE} characters by entity {row} of the request "
            f"({reference}): the limit is {MAX_ON_DEMAND_CHARS_PER_RESPONSE} characters of "
            "on-demand strings per response (split the entities over several requests)")


@dataclass(frozen=True, slots=True)
class Assembled:
    results: list[dict[str, object]]
    statuses: list[list[Status]]


def assemble(plan: Plan, entities: Sequence[Mapping[str, str | int]],
             reads: Sequence[DecodedRead],
             context: Mapping[str, Sequence[Scalar | None]]) -> Assembled:
    """One result row per entity: its key columns as given, then each requested column.
    LimitExceededError when on-demand strings are over a cap (:func:`check_made_string`)."""
    results: list[dict[str, object]] = []
    all_statuses: list[list[Status]] = []
    columns, template = plan.columns, plan.row_template
    made_chars = 0
    for row, entity in enumerate(entities):
        result = template.copy()
        result.update(entity)
        statuses: list[Status] = []
        for column in columns:
            if isinstance(column, Segment):
                decoded = reads[column.read]
                if column.whole:
                    result.update(zip(column.names, decoded.values[row], strict=False))
                    statuses.extend(decoded.statuses[row])
                    continue
                start, stop = column.start, column.stop
                result.update(zip(column.names, decoded.values[row][start:stop], strict=True))
                statuses.extend(decoded.statuses[row][start:stop])
            else:
                value, status = evaluate_on_demand(column, reads, row, context)
                if type(value) is str:
                    made_chars += len(value)
                    check_made_string(column.name, row, len(value), made_chars)
                result[column.name] = value
                statuses.append(status)
        results.append(result)
        all_statuses.append(statuses)
    return Assembled(results, all_statuses)
