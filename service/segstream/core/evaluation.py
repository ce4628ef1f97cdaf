"""What evaluating a rule set needs besides the customer's window values, prepared once per
rule set: declared attributes with their defaults, date counters, bin and quantile scores and
``rfm``. The live rules and a shadow set read their values through the same code.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segstream.core.population import Population
from segstream.core.rulelang import RuleSet
from segstream.core.rulelang.ruleset import Score
from segstream.core.timeutil import parse_date_day


@dataclass(frozen=True, slots=True)
class Reading:
    """What computing a rule set's values needs, prepared once per rule set: the live rules'
    and a shadow set's values come from the same code."""

    rules: RuleSet
    attribute_defaults: dict[str, Any]
    date_counters: list[tuple[str, str, int]]
    bin_scores: list[Score]
    quantile_scores: list[Score]
    has_rfm: bool
    # fill(values, attrs, day, populations): everything above, one generated function
    fill: Callable[[dict[str, Any], dict[str, Any], int, dict[str, Population]], None]

    @classmethod
    def of(cls, rules: RuleSet) -> Reading:
        return cls(
            rules,
            {a.name: a.default for a in rules.attributes.values()},
            [(c, attribute, step) for c, (attribute, step) in rules.date_counters.items()],
            [s for s in rules.scores.values() if not s.quantiles],
            list(rules.quantile_scores),
            {"r", "f", "m"} <= rules.scores.keys(),
            _compile_fill(rules),
        )


def _compile_fill(
    rules: RuleSet,
) -> Callable[[dict[str, Any], dict[str, Any], int, dict[str, Population]], None]:
    """One Python function per rule set that adds to a customer's state values what its rules
    read besides them, in straight-line code: every evaluation runs it, and a loop over lists
    of attributes and scores with a method call each cost several times as much.

    It writes exactly what the general form wrote, in the same key order: the declared
    attributes (in declaration order; a profile value of the wrong type reads as the default,
    a date as its day number, see :meth:`Attribute.coerce`), the date counters, the bin scores,
    the quantile scores from the lane's cut points (:meth:`Score.from_bins`,
    :meth:`Score.from_cuts`) and ``rfm``. Every constant (a default, the bins) is the rule
    set's own object, bound by name, never written out as text."""
    namespace: dict[str, Any] = {
        "__builtins__": {},
        "isinstance": isinstance,
        "_str": str,
        "_bool": bool,
        "_int": int,
        "_number": (int, float),
        "_date": parse_date_day,
        "_bl": bisect_left,
        "_br": bisect_right,
    }
    lines = ["def fill(values, attrs, day, populations):"]
    for i, a in enumerate(rules.attributes.values()):
        default = f"_d{i}"
        namespace[default] = a.default
        if a.type == "date":
            coerced = "_date(v) if isinstance(v, _str) else None"
        elif a.type == "bool":
            coerced = f"v if isinstance(v, _bool) else {default}"
        elif a.type == "int":
            coerced = f"v if isinstance(v, _int) and not isinstance(v, _bool) else {default}"
        elif a.type == "float":
            coerced = f"v if isinstance(v, _number) and not isinstance(v, _bool) else {default}"
        elif a.type == "str":
            coerced = f"v if isinstance(v, _str) else {default}"
        else:  # pragma: no cover - the rule compiler knows no other type
            raise ValueError(f"attribute {a.name}: unknown type {a.type!r}")
        lines += [
            f"    item = attrs.get({a.name!r})",
            "    if item is None or (v := item[2]) is None:",
            f"        values[{a.name!r}] = {default}",
            "    else:",
            f"        values[{a.name!r}] = {coerced}",
        ]
    for counter, (attribute, step) in rules.date_counters.items():
        lines += [
            f"    v = values[{attribute!r}]",
            f"    values[{counter!r}] = None if v is None else (day - v) * {int(step)!r}",
        ]
    for i, s in enumerate(x for x in rules.scores.values() if not x.quantiles):
        bins = f"_b{i}"
        namespace[bins] = s.bins
        if s.better == "lower":
            score = f"{len(s.bins) + 1} - _bl({bins}, v)"
        else:
            score = f"1 + _br({bins}, v)"
        lines += [
            f"    v = values[{s.field!r}]",
            f"    values[{s.name!r}] = 0 if v is None else {score}",
        ]
    for s in rules.quantile_scores:
        lines += [
            f"    v = values[{s.field!r}]",
            f"    cuts = populations[{s.field!r}].cuts",
            f"    values[{s.name!r}] = 0 if v is None else 1 if v <= 0 else 1 + _br(cuts, v)",
        ]
    if {"r", "f", "m"} <= rules.scores.keys():
        lines.append("    values['rfm'] = f\"{values['r']}{values['f']}{values['m']}\"")
    lines.append("    return None")
    exec(compile("\n".join(lines) + "\n", "<fill>", "exec"), namespace)
    fill: Callable[[dict[str, Any], dict[str, Any], int, dict[str, Population]], None]
    fill = namespace.pop("fill")  # its globals holding it would be a reference cycle
    return fill


__all__ = ["Reading"]
