"""The value types of definitions, and how a JSON value is judged for each — decided here once.

Values arrive as JSON at three doors, and each judges them with :func:`judge`: a source's
events (:mod:`core.domain.contracts`, which must agree with the streaming job's SQL check,
``sinks.compiler``), the request-context fields of a serving request (``serving.requests``),
and the values serving reads back from the online store or computes with an on-demand
expression (``serving.decoding``).

=================  ======================================================  ==============
type               the JSON values of that type                           judged value
=================  ======================================================  ==============
``string``         a string                                                as is
``boolean``        ``true`` or ``false``                                   as is
``long``           an integer in the int64 range                           an int
                   (as the stream renders it: ``1.5e1`` is, ``3.0`` is not)
``int``            an integer in the int32 range                           an int
``double, float``  any number; an integer widens                           a float
``timestamp``      epoch milliseconds (an integer in the int64 range) or   as written
                   a date-time string
=================  ======================================================  ==============

Strict: kinds never turn into each other — ``"12"`` is not a long, ``1`` not a boolean,
``true`` not a number.

**An integral float is not a long**: ``3.0`` is refused where a long or an int is expected,
at every door.  The stream judges a long by the text its JSON functions render for the number
(``-?[0-9]+``): Java's ``BigDecimal.toString()`` of the number as written, which
:class:`decimal.Decimal` renders alike (:func:`rendered_number`).  That text is integer digits
exactly when the power of ten of the last written digit is 0: ``15`` and ``1.5e1`` are longs,
``3.0``, ``1.50e1`` (``15.0``) and ``1e3`` (``1E+3``) are not.  A door that parses numbers
exactly (``parse_float``/``parse_int`` as ``Decimal``, as the contract check does) is judged by
that rule; a Python float has lost its spelling and is never a long.  A request or a stored
value judged by another rule would make one value valid at one door and invalid at the next;
the platform's own writers never spell a long ``3.0``, and an on-demand expression declared a
long must give an integer (``round``, ``int``, ``//``) on every row rather than on those whose
quotient happens to be whole.  A client holding floats converts them before sending.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import Decimal

from core.domain.definitions import Scalar, ValueType

INT64_RANGE = (-(2**63), 2**63 - 1)
INT32_RANGE = (-(2**31), 2**31 - 1)
INTEGER_RANGES: Mapping[ValueType, tuple[int, int]] = {
    ValueType.LONG: INT64_RANGE, ValueType.INT: INT32_RANGE}


def rendered_number(number: Decimal) -> str:
    """A number as the stream's JSON functions render it: Java's ``BigDecimal.toString()``,
    which follows the same decimal arithmetic specification as ``str(Decimal)`` (``1E+3``,
    ``15``, ``1.50``, ``1E-7``), except that a BigDecimal has no negative zero."""
    return str(number.copy_abs() if number.is_zero() else number)


def _integer(low: int, high: int) -> Callable[[object], Scalar | None]:
    def judge_integer(value: object) -> Scalar | None:
        if type(value) is Decimal and value.as_tuple().exponent == 0:
            value = int(value)  # rendered as integer digits, so an integer to the stream
        if type(value) is int and low <= value <= high:  # bool is an int subclass: excluded
            return value
        return None

    return judge_integer


def _real(value: object) -> Scalar | None:
    if type(value) is float:
        return value
    if type(value) is Decimal:
        return float(value)  # beyond the double range an infinity, as the stream's cast
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:  # beyond the double range: the stream casts it to infinity
            return math.inf if value > 0 else -math.inf
    return None


def _string(value: object) -> Scalar | None:
    return value if type(value) is str else None


def _boolean(value: object) -> Scalar | None:
    return value if type(value) is bool else None


_epoch_millis = _integer(*INT64_RANGE)


def _timestamp(value: object) -> Scalar | None:
    return value if type(value) is str else _epoch_millis(value)


_JUDGES: Mapping[ValueType, Callable[[object], Scalar | None]] = {
    ValueType.STRING: _string,
    ValueType.BOOLEAN: _boolean,
    ValueType.LONG: _integer(*INT64_RANGE),
    ValueType.INT: _integer(*INT32_RANGE),
    ValueType.DOUBLE: _real,
    ValueType.FLOAT: _real,
    ValueType.TIMESTAMP: _timestamp,
}


def judge_of(value_type: ValueType) -> Callable[[object], Scalar | None]:
    """:func:`judge` for one type, for callers that judge many values of it."""
    return _JUDGES[value_type]


def judge(value_type: ValueType, value: object) -> Scalar | None:
    """``value``, a JSON value as parsed, as a value of ``value_type``; None when it is not
    one (see the module's table).  None itself is no value of any type."""
    return _JUDGES[value_type](value)


