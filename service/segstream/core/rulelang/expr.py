"""The expression language: Python's own parser, a strict whitelist, a light type check.

An expression is parsed with :mod:`ast`, every node is checked against a whitelist, every name
against the declared symbols, and then it is rewritten to read from the evaluation dict
``s["name"]``. Nothing from Python's builtins is reachable: the generated code runs with an
empty ``__builtins__`` and only the functions in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import ast
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from segstream.core.rulelang.errors import did_you_mean

MAX_LENGTH = 2000
MAX_DEPTH = 32
MAX_STRING = 256
MAX_NUMBER = 10**15


def _coalesce(*values: Any) -> Any:
    """First non-null argument: ``coalesce(csi, 0)``."""
    for value in values:
        if value is not None:
            return value
    return None


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int, str]] = {
    # name: (function, min args, max args, result type)
    "min": (min, 2, 8, "num"),
    "max": (max, 2, 8, "num"),
    "abs": (abs, 1, 1, "num"),
    "round": (round, 1, 2, "num"),
    "coalesce": (_coalesce, 2, 8, "any"),
}

_CMP = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot)
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.FloorDiv)


class ExprError(Exception):
    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Symbol:
    """A name an expression may read: its type ('num', 'str', 'bool', 'date', 'any') and
    allowed values."""

    type: str
    nullable: bool = False
    values: tuple[str, ...] = ()


@dataclass(slots=True)
class Checked:
    """A checked expression: the names it reads and where day counters are compared to literals."""

    source: str
    tree: ast.Expression
    names: set[str] = field(default_factory=set)
    nullable: set[str] = field(default_factory=set)
    thresholds: dict[str, set[int]] = field(default_factory=dict)


def check(
    source: str, symbols: dict[str, Symbol], counters: frozenset[str] = frozenset()
) -> Checked:
    """Parse and validate one expression; raises ExprError with a column offset."""
    if not isinstance(source, str):
        raise ExprError("an expression must be a string")
    if len(source) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error: {exc.msg}", max((exc.offset or 1) - 1, 0)) from None
    except (MemoryError, RecursionError, ValueError):
        raise ExprError("expression is too deeply nested") from None
    try:
        tree = ast.fix_missing_locations(_DateCalls(symbols).visit(tree))
    except RecursionError:
        raise ExprError(f"expression nested deeper than {MAX_DEPTH} levels") from None
    checked = Checked(source=source, tree=tree)
    _Checker(symbols, counters, checked).type_of(tree.body, 0)
    return checked


DATE_FUNCTIONS = ("days_until", "days_since")


class _DateCalls(ast.NodeTransformer):
    """``days_until(d)`` / ``days_since(d)`` of a date attribute become the hidden counter
    names the engine fills in (``days_until__d``), so thresholds on them are found and
    scheduled like those on ``recency_days``."""

    def __init__(self, symbols: dict[str, Symbol]) -> None:
        self.symbols = symbols

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if not (isinstance(node.func, ast.Name) and node.func.id in DATE_FUNCTIONS):
            return self.generic_visit(node)
        name = node.func.id
        arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not isinstance(arg, ast.Name) or getattr(self.symbols.get(arg.id), "type", "") != "date":
            raise ExprError(f"{name}() takes one date attribute", node.col_offset)
        return ast.copy_location(ast.Name(id=f"{name}__{arg.id}", ctx=ast.Load()), node)


class _Checker:
    def __init__(self, symbols: dict[str, Symbol], counters: frozenset[str], out: Checked) -> None:
        self.symbols = symbols
        self.counters = counters
        self.out = out

    def fail(self, node: ast.AST, message: str) -> ExprError:
        return ExprError(message, getattr(node, "col_offset", 0))

    def type_of(self, node: ast.expr, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"expression nested deeper than {MAX_DEPTH} levels")
        d = depth + 1
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self.type_of(value, d)
            return "bool"
        if isinstance(node, ast.UnaryOp):
            inner = self.type_of(node.operand, d)
            if isinstance(node.op, ast.Not):
                return "bool"
            if isinstance(node.op, ast.USub | ast.UAdd):
                self.expect_num(node.operand, inner)
                return "num"
            raise self.fail(node, "operator not allowed")
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, _ARITH):
                name = type(node.op).__name__
                raise self.fail(node, f"operator {name} is not allowed (use + - * / // %)")
            self.expect_num(node.left, self.type_of(node.left, d))
            self.expect_num(node.right, self.type_of(node.right, d))
            return "num"
        if isinstance(node, ast.Compare):
            return self.compare(node, d)
        if isinstance(node, ast.IfExp):
            self.type_of(node.test, d)
            left, right = self.type_of(node.body, d), self.type_of(node.orelse, d)
            return left if left == right else "any"
        if isinstance(node, ast.Call):
            return self.call(node, d)
        if isinstance(node, ast.Name):
            return self.name(node).type
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Attribute):
            raise self.fail(node, "attribute access ('.') is not allowed")
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            raise self.fail(node, "a list is allowed only on the right of 'in' / 'not in'")
        raise self.fail(node, f"{type(node).__name__} is not allowed in a rule expression")

    def expect_num(self, node: ast.expr, kind: str) -> None:
        if kind not in ("num", "any"):
            raise self.fail(node, f"arithmetic needs numbers, this is {kind}")

    def name(self, node: ast.Name) -> Symbol:
        symbol = self.symbols.get(node.id)
        if symbol is None:
            hint = did_you_mean(node.id, self.symbols)
            raise self.fail(node, f"unknown name {node.id!r}{hint}")
        self.out.names.add(node.id)
        if symbol.nullable:
            self.out.nullable.add(node.id)
        return symbol

    def constant(self, node: ast.Constant) -> str:
        value = node.value
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int | float):
            if abs(value) > MAX_NUMBER:
                raise self.fail(node, f"number larger than {MAX_NUMBER}")
            return "num"
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise self.fail(node, f"string longer than {MAX_STRING} characters")
            return "str"
        raise self.fail(node, f"literal {value!r} is not allowed")

    def call(self, node: ast.Call, depth: int) -> str:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            allowed = ", ".join([*FUNCTIONS, *DATE_FUNCTIONS])
            raise self.fail(node, f"only these functions can be called: {allowed}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "functions take plain positional arguments only")
        _, low, high, result = FUNCTIONS[node.func.id]
        if not low <= len(node.args) <= high:
            raise self.fail(node, f"{node.func.id}() takes {low} to {high} arguments")
        for arg in node.args:
            kind = self.type_of(arg, depth)
            if node.func.id != "coalesce":
                self.expect_num(arg, kind)
        return result

    def compare(self, node: ast.Compare, depth: int) -> str:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            left, right = operands[i], operands[i + 1]
            if not isinstance(op, _CMP):
                raise self.fail(node, "comparison not allowed")
            if isinstance(op, ast.Is | ast.IsNot):
                if not (isinstance(right, ast.Constant) and right.value is None):
                    raise self.fail(right, "'is' / 'is not' compare with None only")
                self.type_of(left, depth)
                continue
            if isinstance(op, ast.In | ast.NotIn):
                self.membership(left, right, depth)
                continue
            lt, rt = self.type_of(left, depth), self.type_of(right, depth)
            ordering = not isinstance(op, ast.Eq | ast.NotEq)
            self.compatible(node, left, lt, right, rt, ordering)
            self.note_threshold(op, left, right, False)
            self.note_threshold(op, right, left, True)
        return "bool"

    def membership(self, left: ast.expr, right: ast.expr, depth: int) -> None:
        if not isinstance(right, ast.List | ast.Tuple | ast.Set):
            raise self.fail(right, '\'in\' needs a literal list on its right, like ["a", "b"]')
        if len(right.elts) > 1000:
            raise self.fail(right, "list longer than 1000 items")
        lt = self.type_of(left, depth)
        for item in right.elts:
            if not isinstance(item, ast.Constant):
                raise self.fail(item, "list items must be literals")
            self.compatible(item, left, lt, item, self.constant(item), False)

    def compatible(
        self, node: ast.AST, left: ast.expr, lt: str, right: ast.expr, rt: str, ordering: bool
    ) -> None:
        if "any" in (lt, rt) or lt == rt:
            pass
        elif "none" in (lt, rt):
            raise self.fail(node, "compare with None using 'is None' / 'is not None'")
        elif {lt, rt} != {"num", "bool"} or ordering:
            raise self.fail(node, f"cannot compare {lt} with {rt}")
        for a, b in ((left, right), (right, left)):
            if isinstance(a, ast.Name) and isinstance(b, ast.Constant) and isinstance(b.value, str):
                allowed = self.symbols[a.id].values
                if allowed and b.value not in allowed:
                    hint = did_you_mean(b.value, allowed)
                    raise self.fail(b, f"{a.id!r} has no segment {b.value!r}{hint}")

    def note_threshold(self, op: ast.cmpop, name: ast.expr, other: ast.expr, flipped: bool) -> None:
        """Record where a tracked field compared with a number can flip the comparison."""
        if not (isinstance(name, ast.Name) and name.id in self.counters):
            return
        if isinstance(other, ast.Constant) and isinstance(other.value, int | float):
            points = boundaries(op, float(other.value), flipped)
            self.out.thresholds.setdefault(name.id, set()).update(points)


_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.Gt,
    ast.Gt: ast.Lt,
    ast.LtE: ast.GtE,
    ast.GtE: ast.LtE,
    ast.Eq: ast.Eq,
    ast.NotEq: ast.NotEq,
}


def boundaries(op: ast.cmpop, threshold: float, flipped: bool = False) -> set[int]:
    """Integer values ``a`` such that ``x OP threshold`` may differ between x = a-1 and x = a.

    ``flipped`` means the literal stands on the left (``3 <= x``).
    """
    kind = _FLIP[type(op)] if flipped else type(op)
    if kind in (ast.GtE, ast.Lt):
        return {math.ceil(threshold)}
    if kind in (ast.Gt, ast.LtE):
        return {math.floor(threshold) + 1}
    if threshold.is_integer():
        return {int(threshold), int(threshold) + 1}
    return set()


def opaque_names(checked: Checked, tracked: frozenset[str]) -> set[str]:
    """Tracked names read anywhere except directly against a numeric literal in a comparison."""
    direct: set[int] = set()
    for node in ast.walk(checked.tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                a, b = operands[i], operands[i + 1]
                if isinstance(op, ast.Is | ast.IsNot):
                    direct.add(id(a))  # null-ness does not change with the clock
                    continue
                if isinstance(op, ast.In | ast.NotIn):
                    continue
                for x, y in ((a, b), (b, a)):
                    if isinstance(x, ast.Name) and isinstance(y, ast.Constant):
                        direct.add(id(x))
    return {
        node.id
        for node in ast.walk(checked.tree)
        if isinstance(node, ast.Name) and node.id in tracked and id(node) not in direct
    }


def _may_be_null(node: ast.expr, nullable: set[str]) -> bool:
    """Whether evaluating ``node`` can give None (arithmetic and min/max raise instead)."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in nullable
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id == "coalesce"
    if isinstance(node, ast.IfExp):
        return _may_be_null(node.body, nullable) or _may_be_null(node.orelse, nullable)
    if isinstance(node, ast.BoolOp):  # ``a or b`` gives one of its operands
        return any(_may_be_null(v, nullable) for v in node.values)
    return False


class _ToSubscripts(ast.NodeTransformer):
    """Rewrite ``name`` to ``s["name"]`` (function names stay bare: they live in globals), and
    make every comparison with a null operand false.

    Python's ``None != 10`` is True and ``None not in [...]`` is True, so a rule such as
    ``last_score != 10`` held for customers who never answered. Each comparison ``a OP b`` whose
    operand may be null becomes ``(t := a) is not None and t OP b``; a chain ``a < b < c``
    becomes a conjunction with each operand evaluated once, as Python does.
    """

    def __init__(self, nullable: set[str]) -> None:
        self.nullable = nullable
        self.temps = 0

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node.args = [self.visit(a) for a in node.args]
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if any(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
            return self.generic_visit(node)  # 'x is None' asks about null itself
        operands = [node.left, *node.comparators]
        simple = (ast.Constant, ast.Name, ast.List, ast.Tuple, ast.Set)
        guarded = [  # a chain's middle operand is read twice: bind it once like Python does
            self.is_null(o) or (0 < i < len(operands) - 1 and not isinstance(o, simple))
            for i, o in enumerate(operands)
        ]
        if not any(guarded):
            return self.generic_visit(node)
        terms: list[ast.expr] = []
        values: list[ast.expr] = []
        for operand, guard in zip(operands, guarded, strict=True):
            value = self.visit(operand)
            if guard:
                temp = f"_n{self.temps}"
                self.temps += 1
                bound = ast.NamedExpr(target=ast.Name(temp, ast.Store()), value=value)
                terms.append(ast.Compare(bound, [ast.IsNot()], [ast.Constant(None)]))
                value = ast.Name(temp, ast.Load())
            values.append(value)
            if len(values) > 1:
                op = node.ops[len(values) - 2]
                terms.append(ast.Compare(values[-2], [op], [values[-1]]))
        return ast.copy_location(ast.BoolOp(ast.And(), terms), node)

    def is_null(self, node: ast.expr) -> bool:
        return _may_be_null(node, self.nullable)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(
            ast.Subscript(
                value=ast.Name(id="s", ctx=ast.Load()), slice=ast.Constant(node.id), ctx=ast.Load()
            ),
            node,
        )


def to_python(checked: Checked) -> str:
    """Python source of a checked expression, reading names from the dict ``s``."""
    tree = _ToSubscripts(checked.nullable).visit(copy.deepcopy(checked.tree))
    return ast.unparse(ast.fix_missing_locations(tree))
