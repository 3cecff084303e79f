"""Validation scaling: seconds to parse and validate 5k, 10k, 20k and 100k definitions.

Validation must be linear in the number of definitions (core/domain/validation.py): each
size here takes about twice the time of the size before it, not four times.  A batch is
capped at ``limits.MAX_DEFINITIONS_PER_BATCH``, but the catalog a batch is validated against
is not, so the larger sizes are validated as a registered catalog plus one changed source
every definition depends on — the worst case of one apply.

    .venv/bin/python benchmarks/validation_scaling.py [--sizes 5000 10000 20000 100000]
        [--bound 10]

Exits 1 when validating 20k definitions takes longer than ``--bound`` seconds (generous:
linear validation takes well under one).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from core.domain.definitions import definition_key, parse_definitions
from core.domain.validation import validate_batch

BOUNDED_SIZE = 20_000


def definitions(count: int) -> list[dict[str, Any]]:
    """An entity, a source, and ``count - 2`` feature views over them."""
    return [
        {"kind": "entity", "name": "user", "join_keys": ["user_id"]},
        {"kind": "source", "name": "clicks", "topic": "clicks", "timestamp_field": "ts",
         "schema": [{"name": "user_id", "type": "string", "required": True},
                    {"name": "amount", "type": "double", "min": 0},
                    {"name": "ts", "type": "long", "required": True}]},
        *({"kind": "feature_view", "name": f"view_{i}", "entities": ["user"],
           "source": "clicks",
           "features": [{"name": "clicks_1h", "aggregation": "count", "window": "1h"},
                        {"name": "amount_1h", "aggregation": "sum", "column": "amount",
                         "window": "1h"}]}
          for i in range(count - 2)),
    ]


def seconds_to_validate(count: int) -> tuple[float, float, float]:
    """Seconds to parse ``count`` definitions, to validate them as one batch, and to validate
    one change of the source every one of them depends on against them as the catalog."""
    raw = definitions(count)
    started = time.perf_counter()
    batch = parse_definitions(raw)
    parsed = time.perf_counter()
    catalog = validate_batch({}, batch)
    validated = time.perf_counter()
    registered = {definition_key(d): d for d in catalog.values()}
    change = parse_definitions([raw[1]])
    started_change = time.perf_counter()
    validate_batch(registered, change)
    return (parsed - started, validated - parsed, time.perf_counter() - started_change)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 10_000, 20_000, 100_000])
    parser.add_argument("--bound", type=float, default=10.0,
                        help=f"seconds allowed for {BOUNDED_SIZE} definitions")
    args = parser.parse_args()
    print(f"{'definitions':>12} {'parse s':>9} {'validate s':>11} {'change s':>9}")
    over_bound = False
    for count in sorted(set([*args.sizes, BOUNDED_SIZE])):
        parse, validate, change = seconds_to_validate(count)
        print(f"{count:>12} {parse:>9.3f} {validate:>11.3f} {change:>9.3f}")
        over_bound |= count == BOUNDED_SIZE and max(validate, change) > args.bound
    if over_bound:
        print(f"validating {BOUNDED_SIZE} definitions took longer than {args.bound} s",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
