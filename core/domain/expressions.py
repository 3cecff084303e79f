"""The safe expression language of on-demand feature views.

An expression such as ``amount_1h / clicks_1h if clicks_1h else 0.0`` is parsed with
:mod:`ast`, every node is checked against a whitelist, and the result is rebuilt as a small
immutable tree that this module interprets itself: user text never reaches ``eval``/``exec``.
Source length, node count and nesting depth are capped at compile time, and ``**`` is
guarded at run time, so evaluating a compiled expression is cheap and bounded.

``None`` is SQL-like null: arithmetic, comparisons, ``not`` and functions (except
``coalesce``) yield ``None`` when an operand is ``None``; ``and``/``or`` use three-valued
logic; a ``None`` condition in ``a if c else b`` counts as false. Division by zero yields
``None`` too, so one odd row never fails a whole request. See ``docs/expressions.md``.
"""

from __future__ import annotations

import ast
import math
import operator
import reprlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeGuard

from core.domain import limits
from core.errors import ExpressionError, ExpressionEvaluationError

MAX_NODES = 200
MAX_DEPTH = 32
MAX_EXPONENT = 64
MAX_MAGNITUDE_DIGITS = 308  # results of ** must stay within 1e308, the float range
MAX_ROUND_DIGITS = 308  # round(int, -n) builds 10**n: keep n within the float range too

Env = Mapping[str, object]


# --- the checked tree --------------------------------------------------------------------


class _Node:
    __slots__ = ()

    def evaluate(self, env: Env) -> object:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Literal(_Node):
    value: object

    def evaluate(self, env: Env) -> object:
        return self.value


@dataclass(frozen=True, slots=True)
class _Name(_Node):
    name: str

    def evaluate(self, env: Env) -> object:
        return env[self.name]


@dataclass(frozen=True, slots=True)
class _Unary(_Node):
    symbol: str
    operand: _Node

    def evaluate(self, env: Env) -> object:
        value = self.operand.evaluate(env)
        if value is None:
            return None
        if self.symbol == "not":
            return not value
        if not _is_number(value):
            raise ExpressionEvaluationError(
                f"cannot apply unary '{self.symbol}' to {type(value).__name__}")
        return -value if self.symbol == "-" else +value


@dataclass(frozen=True, slots=True)
class _Binary(_Node):
    symbol: str
    left: _Node
    right: _Node

    def evaluate(self, env: Env) -> object:
        return _arithmetic(self.symbol, self.left.evaluate(env), self.right.evaluate(env))


@dataclass(frozen=True, slots=True)
class _Logical(_Node):
    """``and``/``or`` over truth values with three-valued (Kleene) logic; yields a bool or None."""

    is_and: bool
    operands: tuple[_Node, ...]

    def evaluate(self, env: Env) -> object:
        decisive = not self.is_and  # False decides an `and`, True decides an `or`
        unknown = False
        for operand in self.operands:
            value = operand.evaluate(env)
            if value is None:
                unknown = True
            elif bool(value) == decisive:
                return decisive
        return None if unknown else not decisive


@dataclass(frozen=True, slots=True)
class _Comparison(_Node):
    """A (possibly chained) comparison: false if any link is false, else None if any is None."""

    first: _Node
    links: tuple[tuple[str, _Node], ...]

    def evaluate(self, env: Env) -> object:
        left = self.first.evaluate(env)
        unknown = False
        for symbol, node in self.links:
            right = node.evaluate(env)
            if left is None or right is None:
                unknown = True
            else:
                try:
                    holds = _COMPARISONS[symbol](left, right)
                except TypeError:
                    raise ExpressionEvaluationError(
                        f"cannot compare {type(left).__name__} and {type(right).__name__} "
                        f"with '{symbol}'") from None
                if not holds:
                    return False
            left = right
        return None if unknown else True


@dataclass(frozen=True, slots=True)
class _IsNone(_Node):
    operand: _Node
    negated: bool

    def evaluate(self, env: Env) -> object:
        return (self.operand.evaluate(env) is None) != self.negated


@dataclass(frozen=True, slots=True)
class _Conditional(_Node):
    condition: _Node
    if_true: _Node
    if_false: _Node

    def evaluate(self, env: Env) -> object:
        # A None condition is "not known to be true", so it takes the else branch.
        chosen = self.if_true if self.condition.evaluate(env) else self.if_false
        return chosen.evaluate(env)


@dataclass(frozen=True, slots=True)
class _Call(_Node):
    function: str
    arguments: tuple[_Node, ...]

    def evaluate(self, env: Env) -> object:
        function = _FUNCTIONS[self.function]
        values = [argument.evaluate(env) for argument in self.arguments]
        if function.propagates_none and any(value is None for value in values):
            return None
        try:
            return function.implementation(*values)
        except (TypeError, ValueError, ArithmeticError) as error:
            shown = ", ".join(_show(value) for value in values)
            raise ExpressionEvaluationError(f"{self.function}({shown}) failed: {error}") from None


# --- run-time semantics ------------------------------------------------------------------


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float)  # bool is an int, as in Python


def _show(value: object) -> str:
    """A short repr for messages; huge ints refuse repr() (Python's digit limit)."""
    try:
        return reprlib.repr(value)
    except ValueError:
        return f"<{type(value).__name__}>"


def _arithmetic(symbol: str, left: object, right: object) -> object:
    if left is None or right is None:
        return None
    if symbol == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not (_is_number(left) and _is_number(right)):
        hint = " (string repetition is not allowed)" if symbol == "*" else ""
        raise ExpressionEvaluationError(f"cannot apply '{symbol}' to {type(left).__name__} "
                                        f"and {type(right).__name__}{hint}")
    if symbol == "**":
        return _power(left, right)
    try:
        return _ARITHMETIC[symbol](left, right)
    except ZeroDivisionError:
        return None
    except OverflowError as error:
        raise ExpressionEvaluationError(f"'{symbol}' overflowed: {error}") from None


def _power(base: Any, exponent: Any) -> object:
    if exponent > MAX_EXPONENT:
        raise ExpressionEvaluationError(
            f"exponent {_show(exponent)} is larger than {MAX_EXPONENT}")
    # Check the size before computing: an int power near the limits would take long to build.
    if exponent > 0 and abs(base) > 1 and exponent * math.log10(abs(base)) > MAX_MAGNITUDE_DIGITS:
        raise ExpressionEvaluationError(f"result of '**' is beyond 1e{MAX_MAGNITUDE_DIGITS}")
    try:
        result = base**exponent
    except ZeroDivisionError:
        return None  # 0 ** -1 is a division by zero
    except OverflowError as error:
        raise ExpressionEvaluationError(f"'**' overflowed: {error}") from None
    if isinstance(result, complex):
        raise ExpressionEvaluationError(
            "'**' of a negative number to a fractional power has no real result")
    return result


def _round(value: Any, digits: Any = None) -> object:
    if isinstance(digits, int) and abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"digits must be between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")
    return round(value, digits)


def _coalesce(*values: object) -> object:
    return next((value for value in values if value is not None), None)


def _clip(value: Any, low: Any, high: Any) -> object:
    if low > high:
        raise ValueError("the lower bound is above the upper bound")
    return min(max(value, low), high)


def _string_function(method: Callable[[str], str]) -> Callable[[object], str]:
    def apply(value: object) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a str, got {type(value).__name__}")
        return method(value)
    return apply


_ARITHMETIC: dict[str, Callable[[Any, Any], object]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod,
}
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


@dataclass(frozen=True)
class _Function:
    implementation: Callable[..., object]
    min_arguments: int
    max_arguments: int | None  # None: any number
    propagates_none: bool = True  # a None argument makes the result None

    def arity(self) -> str:
        noun = "argument" if self.min_arguments == 1 else "arguments"
        if self.max_arguments is None:
            return f"at least {self.min_arguments} {noun}"
        if self.max_arguments == self.min_arguments:
            return f"{self.min_arguments} {noun}"
        return f"{self.min_arguments} or {self.max_arguments} arguments"


_FUNCTIONS: dict[str, _Function] = {
    "abs": _Function(abs, 1, 1),
    "min": _Function(min, 2, None),
    "max": _Function(max, 2, None),
    "round": _Function(_round, 1, 2),
    "float": _Function(float, 1, 1),
    "int": _Function(int, 1, 1),
    "str": _Function(str, 1, 1),
    "bool": _Function(bool, 1, 1),
    "len": _Function(len, 1, 1),
    "coalesce": _Function(_coalesce, 1, None, propagates_none=False),
    "log": _Function(math.log, 1, 2),
    "exp": _Function(math.exp, 1, 1),
    "sqrt": _Function(math.sqrt, 1, 1),
    "floor": _Function(math.floor, 1, 1),
    "ceil": _Function(math.ceil, 1, 1),
    "clip": _Function(_clip, 3, 3),
    "lower": _Function(_string_function(str.lower), 1, 1),
    "upper": _Function(_string_function(str.upper), 1, 1),
}
_ALLOWED_FUNCTIONS = ", ".join(sorted(_FUNCTIONS))


# --- compiling ---------------------------------------------------------------------------

_BINARY_SYMBOLS: dict[type[ast.operator], str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
    ast.BitXor: "^", ast.BitAnd: "&", ast.MatMult: "@",
}
_COMPARISON_SYMBOLS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}
_UNARY_SYMBOLS: dict[type[ast.unaryop], str] = {
    ast.USub: "-", ast.UAdd: "+", ast.Not: "not", ast.Invert: "~",
}
_LITERAL_TYPES = (int, float, str, bool, type(None))
_REFUSED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts (x[...]) are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred arguments (*x) are not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Slice: "slices are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}


@dataclass(frozen=True)
class Expression:
    """A checked expression from :func:`compile_expression`; ``names`` are the inputs it reads."""

    source: str
    names: frozenset[str]
    _root: _Node = field(repr=False, compare=False)

    def evaluate(self, env: Mapping[str, object]) -> object:
        """The expression's value on one row whose inputs are ``env`` (extra keys are ignored)."""
        missing = sorted(name for name in self.names if name not in env)
        if missing:
            raise ExpressionEvaluationError(f"missing values for {', '.join(missing)}")
        return self._root.evaluate(env)


def compile_expression(source: str, allowed_names: Collection[str]) -> Expression:
    """Parse and check ``source``; raise ExpressionError saying exactly what is not allowed."""
    if not isinstance(source, str):
        raise ExpressionError(f"expression must be a string, not {type(source).__name__}")
    if len(source) > limits.MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {limits.MAX_EXPRESSION_CHARS} "
                              "characters")
    if not source.strip():
        raise ExpressionError("expression is empty")
    # Like eval(), tolerate leading blanks (the parser would call them an indent).
    text = source.lstrip(" \t")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise ExpressionError(_syntax_message(error, text, len(source) - len(text))) from None
    except (ValueError, RecursionError, MemoryError) as error:  # the parser's own limits
        raise ExpressionError(f"syntax error: {error}") from None
    checker = _Checker(frozenset(allowed_names))
    root = checker.convert(tree.body, depth=1)
    return Expression(source, frozenset(checker.names), root)


def _syntax_message(error: SyntaxError, text: str, indent: int) -> str:
    if error.lineno is None:
        return f"syntax error: {error.msg}"
    if not error.offset:  # the parser points before the text when it ends too early
        return f"syntax error at end of expression: {error.msg}"
    column = error.offset + indent if error.lineno == 1 else error.offset
    if "\n" in text.rstrip():
        return f"syntax error at line {error.lineno}, column {column}: {error.msg}"
    return f"syntax error at column {column}: {error.msg}"


class _Checker:
    """Converts checked ast nodes to the tree, collecting the names read."""

    def __init__(self, allowed_names: frozenset[str]) -> None:
        self.allowed_names = allowed_names
        self.names: set[str] = set()
        self.node_count = 0

    def convert(self, node: ast.expr, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels")
        self.node_count += 1
        if self.node_count > MAX_NODES:
            raise ExpressionError(f"expression has more than {MAX_NODES} parts "
                                  "(names, literals, operators, calls)")
        inner = depth + 1
        match node:
            case ast.Constant(value=value):
                if not isinstance(value, _LITERAL_TYPES):
                    kind = type(value).__name__
                    raise ExpressionError(f"literals of type {kind} are not allowed")
                return _Literal(value)
            case ast.Name(id=name):
                return _Name(self._checked_name(name))
            case ast.UnaryOp(op=op, operand=operand):
                symbol = _UNARY_SYMBOLS[type(op)]
                if symbol == "~":
                    raise ExpressionError("operator '~' is not allowed")
                return _Unary(symbol, self.convert(operand, inner))
            case ast.BinOp(left=left, op=op, right=right):
                symbol = _BINARY_SYMBOLS[type(op)]
                _check_binary(symbol, left, right)
                return _Binary(symbol, self.convert(left, inner), self.convert(right, inner))
            case ast.BoolOp(op=op, values=values):
                return _Logical(isinstance(op, ast.And),
                                tuple(self.convert(value, inner) for value in values))
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                return self._comparison(left, ops, comparators, inner)
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return _Conditional(self.convert(test, inner), self.convert(body, inner),
                                    self.convert(orelse, inner))
            case ast.Call():
                return self._call(node, inner)
        raise ExpressionError(_REFUSED.get(type(node), f"{type(node).__name__} is not allowed"))

    def _checked_name(self, name: str) -> str:
        if name.startswith("_"):
            raise ExpressionError(f"name {name!r} is not allowed: names may not start with '_'")
        if name not in self.allowed_names:
            known = ", ".join(sorted(self.allowed_names)) or "none"
            raise ExpressionError(f"unknown name {name!r} (known: {known})")
        self.names.add(name)
        return name

    def _comparison(self, left: ast.expr, ops: list[ast.cmpop],
                    comparators: list[ast.expr], depth: int) -> _Node:
        symbols = [_COMPARISON_SYMBOLS[type(op)] for op in ops]
        operands = [left, *comparators]
        for symbol, (before, after) in zip(symbols, pairwise(operands), strict=True):
            if symbol in ("in", "not in"):
                raise ExpressionError(f"operator '{symbol}' is not allowed")
            if symbol in ("is", "is not"):
                if len(ops) > 1:
                    raise ExpressionError(f"'{symbol} None' cannot be chained with other "
                                          "comparisons")
                if not _is_none_literal(after):
                    raise ExpressionError(f"'{symbol}' is only allowed as 'x {symbol} None'")
                return _IsNone(self.convert(left, depth), negated=symbol == "is not")
            if _is_none_literal(before) or _is_none_literal(after):
                # With null semantics `x == None` is always None: a silent bug, so refuse it.
                raise ExpressionError(f"'{symbol}' with None is always None; "
                                      "use 'x is None' or 'x is not None'")
        first, *rest = (self.convert(operand, depth) for operand in operands)
        return _Comparison(first, tuple(zip(symbols, rest, strict=True)))

    def _call(self, node: ast.Call, depth: int) -> _Node:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                raise ExpressionError(_REFUSED[ast.Attribute])
            raise ExpressionError("only functions named directly can be called, e.g. abs(x)")
        name = node.func.id
        function = _FUNCTIONS.get(name)
        if function is None:
            raise ExpressionError(
                f"function {name!r} is not allowed; allowed functions: {_ALLOWED_FUNCTIONS}")
        if node.keywords:
            raise ExpressionError(f"keyword arguments are not allowed in {name}(); "
                                  "pass arguments by position")
        count = len(node.args)
        if count < function.min_arguments or (function.max_arguments is not None
                                              and count > function.max_arguments):
            raise ExpressionError(f"function {name!r} takes {function.arity()}, got {count}")
        return _Call(name, tuple(self.convert(argument, depth) for argument in node.args))


def _is_none_literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _check_binary(symbol: str, left: ast.expr, right: ast.expr) -> None:
    """Refuse operators outside the language, and literal operands bound to fail at run time."""
    if symbol not in _ARITHMETIC and symbol != "**":  # ** is applied by _power, not the table
        raise ExpressionError(f"operator '{symbol}' is not allowed")
    if symbol != "+" and any(isinstance(o, ast.Constant) and isinstance(o.value, str)
                             for o in (left, right)):
        detail = "string repetition" if symbol == "*" else f"'{symbol}' on strings"
        raise ExpressionError(f"{detail} is not allowed")
    if (symbol == "**" and isinstance(right, ast.Constant) and _is_number(right.value)
            and right.value > MAX_EXPONENT):
        raise ExpressionError(f"exponent {right.value} is larger than {MAX_EXPONENT}")
