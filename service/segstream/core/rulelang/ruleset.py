"""Load a rule set from YAML, check it whole, and compile it once into one Python function."""

from __future__ import annotations

import ast
import hashlib
import itertools
import keyword
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segstream.core.groups import GROUP_METRICS, GroupSpec
from segstream.core.rulelang import expr
from segstream.core.rulelang.errors import RuleError, RuleErrors, did_you_mean
from segstream.core.rulelang.yamlpos import Marks, YamlLimitError, load_with_marks
from segstream.core.state import STATE_FIELDS, TRACKED_FIELDS, Windows
from segstream.core.timeutil import parse_date_day

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_TOP_KEYS = (
    "version",
    "description",
    "windows",
    "attributes",
    "scores",
    "derived",
    "families",
    "flags",
    "owners",
    "groups",
)
_ATTR_TYPES = {
    "str": ("str", (str,)),
    "int": ("num", (int,)),
    "float": ("num", (int, float)),
    "bool": ("bool", (bool,)),
    "date": ("date", (str,)),
}
# days_until(d) / days_since(d) of a date attribute d are read as these hidden counters; the
# scheduler knows how they move (one a day, down or up), as it knows recency_days
DATE_FUNCTIONS = {"days_until": -1, "days_since": 1}


def date_counter(function: str, attribute: str) -> str:
    return f"{function}__{attribute}"


_ERRORS = (TypeError, ZeroDivisionError, ArithmeticError, ValueError)
_LITERAL_ALIASES = {"true": True, "false": False, "null": None}
_KIND = {
    "attributes": "attribute",
    "scores": "score",
    "derived": "derived metric",
    "families": "family",
    "flags": "flag",
}
# Names an expression could not refer to, or that mean something already; tier names are not
# here: they are values of their family, so two families may both have a tier "other".
RESERVED = frozenset(
    {
        "rfm",
        *_LITERAL_ALIASES,
        *expr.FUNCTIONS,
        *expr.DATE_FUNCTIONS,
        *(k for k in keyword.kwlist if k.islower()),
    }
)
# Rule sets also arrive from the rules topic: bound what one may cost before parsing it.
MAX_FILE_BYTES = 256 * 1024
MAX_SET_BYTES = 1024 * 1024

Evaluator = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: str
    default: Any

    def coerce(self, value: Any) -> Any:
        """A profile value of the wrong type reads as the declared default; a date reads as
        its day number (days since 1970-01-01, UTC)."""
        if self.type == "date":
            return parse_date_day(value) if isinstance(value, str) else None
        kinds = _ATTR_TYPES[self.type][1]
        if value is None or isinstance(value, bool) != (self.type == "bool"):
            return self.default
        return value if isinstance(value, kinds) else self.default


@dataclass(frozen=True, slots=True)
class Score:
    name: str
    field: str
    bins: tuple[float, ...] = ()
    better: str = "higher"
    quantiles: int = 0

    def from_bins(self, value: float | None) -> int:
        if value is None:
            return 0
        if self.better == "lower":
            return len(self.bins) + 1 - bisect_left(self.bins, value)
        return 1 + bisect_right(self.bins, value)

    def from_cuts(self, value: float | None, cuts: tuple[float, ...]) -> int:
        """Quantile score: 0 for null, 1 for a non-positive value, else 1 + cut points <= value."""
        if value is None:
            return 0
        if value <= 0:
            return 1
        return 1 + bisect_right(cuts, value)


DEFAULT_OWNERS = ("marketing", "customer_success", "sales")
TOUCH_MODELS = ("high", "low", "tech")
_PLAYBOOK_KEYS = ("action", "owner", "touch")
_HOLD_KEYS = ("stay_while", "min_days")
_GROUP_KEYS = ("by", "metrics", "period", "max_values", "keep", "description")
_MAX_ACTION = 500


@dataclass(frozen=True, slots=True)
class Playbook:
    """What to do about a customer in a tier or flag, and who does it: travels in every change
    event, so no consumer keeps its own table from segment to playbook."""

    action: str | None = None
    owner: str | None = None
    touch: str | None = None


NO_PLAYBOOK = Playbook()


@dataclass(frozen=True, slots=True)
class Condition:
    """One named condition (a family tier or a flag), compiled for standalone use in reasons."""

    name: str
    source: str
    reads: tuple[str, ...]
    test: Callable[[dict[str, Any]], bool]
    playbook: Playbook = field(default_factory=lambda: NO_PLAYBOOK)
    # hysteresis: a member stays while ``stay`` holds (a looser condition than its own), and
    # for at least ``min_days`` after it entered (docs/rules.md, Hysteresis and dwell)
    stay: Condition | None = None
    min_days: int = 0

    def holds(self, values: dict[str, Any]) -> bool:
        try:
            return bool(self.test(values))
        except _ERRORS:
            return False


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    tiers: tuple[Condition, ...]
    ranks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ranks.update((t.name, i) for i, t in enumerate(self.tiers))

    def rank(self, tier: Any) -> int:
        """Position in the order, best first; a tier this rule set lacks ranks last."""
        return self.ranks.get(tier, len(self.tiers))


@dataclass(slots=True)
class RuleSet:
    version: str
    windows: Windows
    attributes: dict[str, Attribute]
    scores: dict[str, Score]
    derived: dict[str, str]
    families: dict[str, Family]
    flags: dict[str, Condition]
    evaluate: Evaluator
    source_files: dict[str, str]
    python_source: str
    reads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    used_fields: frozenset[str] = frozenset()
    # int fields compared only with literals: values a where a rule may flip between a-1 and a
    boundaries: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # int fields read any other way: every change of them matters
    opaque_fields: frozenset[str] = frozenset()
    owners: tuple[str, ...] = DEFAULT_OWNERS
    # hidden counter name -> (date attribute, +1 a day for days_since / -1 for days_until)
    date_counters: dict[str, tuple[str, int]] = field(default_factory=dict)
    groups: dict[str, GroupSpec] = field(default_factory=dict)
    # evaluation errors per family, flag or derived metric since the last take_errors()
    errors: Counter[str] = field(default_factory=Counter)

    def take_errors(self) -> dict[str, int]:
        taken = dict(self.errors)
        self.errors.clear()
        return taken

    @property
    def segment_names(self) -> list[str]:
        return [*self.families, *self.flags]

    @property
    def quantile_scores(self) -> list[Score]:
        return [s for s in self.scores.values() if s.quantiles]


def load_rules(path: str | Path) -> RuleSet:
    """Load every ``*.yaml``/``*.yml`` file of a directory (or one file) as one rule set."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise RuleErrors([RuleError(str(root), 1, 1, "no *.yaml rule files in this directory")])
    elif root.is_file():
        files = [root]
    else:
        raise RuleErrors([RuleError(str(root), 1, 1, "no such file or directory")])
    texts: dict[str, str] = {}
    errors: list[RuleError] = []
    for p in files:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:  # checked before reading: a rule file is never this big
            errors.append(RuleError(str(p), 1, 1, _too_big(size)))
            continue
        try:
            texts[str(p)] = _decode(str(p), p.read_bytes())
        except RuleErrors as exc:
            errors += exc.errors
    if errors:
        raise RuleErrors(errors)
    return compile_rules(texts)


def _too_big(size: int) -> str:
    return f"rule file is {size} bytes; the limit is {MAX_FILE_BYTES} bytes per file"


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        byte = data[exc.start]
        raise RuleErrors(
            [RuleError(name, line, column, f"not UTF-8 text (byte 0x{byte:02x}); save as UTF-8")]
        ) from None


def rules_version(files: Mapping[str, str]) -> str:
    """Content hash of a rule set: file base names and texts, independent of where it lives."""
    digest = hashlib.sha256()
    for name in sorted(files, key=lambda n: Path(n).name):
        digest.update(Path(name).name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()[:16]


def compile_rules(files: Mapping[str, str]) -> RuleSet:
    """Check a whole rule set (all errors at once) and compile it."""
    sizes = {name: len(text.encode("utf-8", "surrogatepass")) for name, text in files.items()}
    big = [RuleError(name, 1, 1, _too_big(n)) for name, n in sizes.items() if n > MAX_FILE_BYTES]
    if big:
        raise RuleErrors(big)
    if sum(sizes.values()) > MAX_SET_BYTES:
        first = next(iter(files))
        total = sum(sizes.values())
        raise RuleErrors(
            [
                RuleError(
                    first,
                    1,
                    1,
                    f"rule set is {total} bytes; the limit is {MAX_SET_BYTES} bytes in all",
                )
            ]
        )
    return _Compiler(dict(files)).build()


class _Compiler:
    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.errors: list[RuleError] = []
        self.docs: list[tuple[str, Any, Marks]] = []
        # section -> name -> (file, path, value)
        self.entries: dict[str, dict[str, tuple[str, tuple[Any, ...], Any]]] = {}
        # one namespace for every name an expression can read: name -> (kind, file, path)
        self.defined: dict[str, tuple[str, str, tuple[Any, ...]]] = {}

    def error(self, file: str, marks: Marks, path: tuple[Any, ...], message: str) -> None:
        line, col = marks.get(path, (1, 1))
        self.errors.append(RuleError(file, line, col, message))

    def build(self) -> RuleSet:
        for name, text in self.files.items():
            self.parse_file(name, text)
        nothing = not self.entries.get("families") and not self.entries.get("flags")
        if nothing and not self.errors:  # a file that did not parse may hold them
            self.errors.append(
                RuleError(
                    next(iter(self.files), "<rule set>"),
                    1,
                    1,
                    "the rule set defines no family and no flag: it would segment nobody",
                )
            )
        windows = self.windows()
        attributes = self.attributes()
        symbols: dict[str, expr.Symbol] = {
            name: expr.Symbol("str" if kind.startswith("str") else "num", kind.endswith("?"))
            for name, kind in STATE_FIELDS.items()
        }
        date_counters: dict[str, tuple[str, int]] = {}
        for attr in attributes.values():
            symbols[attr.name] = expr.Symbol(_ATTR_TYPES[attr.type][0], attr.default is None)
            if attr.type == "date":
                for function, step in DATE_FUNCTIONS.items():
                    counter = date_counter(function, attr.name)
                    symbols[counter] = expr.Symbol("num", True)
                    date_counters[counter] = (attr.name, step)
        tracked = TRACKED_FIELDS | frozenset(date_counters)
        scores = self.scores(symbols)
        for score in scores.values():
            symbols[score.name] = expr.Symbol("num")
        if {"r", "f", "m"} <= scores.keys():
            symbols["rfm"] = expr.Symbol("str")
        families_raw = self.entries.get("families", {})
        flags_raw = self.entries.get("flags", {})
        derived_raw = self.entries.get("derived", {})
        tier_names: dict[str, tuple[str, ...]] = {}
        for fam, (file, path, tiers) in families_raw.items():
            tier_names[fam] = self.tier_names(file, path, tiers)
            symbols[fam] = expr.Symbol("str", True, tier_names[fam])
        for flag in flags_raw:
            symbols[flag] = expr.Symbol("bool")
        for name in derived_raw:
            symbols[name] = expr.Symbol("any", True)
        checked: dict[str, list[tuple[str, expr.Checked]]] = {}
        locations: dict[str, tuple[str, tuple[Any, ...]]] = {}

        def check(
            owner: str, label: str, source: Any, file: str, path: tuple[Any, ...], keep: bool = True
        ) -> expr.Checked | None:
            if isinstance(source, bool):
                source = str(source)
            try:
                result = expr.check(
                    _aliases(source) if isinstance(source, str) else source, symbols, tracked
                )
            except expr.ExprError as exc:
                line, col = self.marks(file).get(path, (1, 1))
                self.errors.append(
                    RuleError(
                        file,
                        line,
                        col + _quote_shift(file, line, col, self.files) + exc.offset,
                        str(exc),
                    )
                )
                return None
            result.source = str(source)
            if keep:
                checked.setdefault(owner, []).append((label, result))
                locations[owner] = (file, path)
            return result

        for name, (file, path, source) in derived_raw.items():
            check(name, name, source, file, path)
        for fam, (file, path, tiers) in families_raw.items():
            for i, tier in enumerate(tiers if isinstance(tiers, list) else []):
                if isinstance(tier, dict) and "when" in tier:
                    check(fam, str(tier.get("name")), tier["when"], file, (*path, i, "when"))
        for name, (file, path, source) in flags_raw.items():
            if isinstance(source, dict):
                source, path = source.get("when"), (*path, "when")
            check(name, name, source, file, path)
        # stay_while conditions are checked like the rest, but evaluated by the engine against
        # a customer's current segment (hysteresis), not by the compiled rules function
        stays: dict[tuple[str, str], expr.Checked] = {}
        dwell: dict[tuple[str, str], int] = {}
        held = [
            (fam, str(tier.get("name")), file, (*path, i), tier)
            for fam, (file, path, tiers) in families_raw.items()
            for i, tier in enumerate(tiers if isinstance(tiers, list) else [])
            if isinstance(tier, dict)
        ] + [
            (flag, flag, file, path, body)
            for flag, (file, path, body) in flags_raw.items()
            if isinstance(body, dict)
        ]
        for owner, label, file, path, body in held:
            if "stay_while" in body:
                stay = check(owner, label, body["stay_while"], file, (*path, "stay_while"), False)
                if stay is not None:
                    stays[(owner, label)] = stay
            if "min_days" in body:
                days = body["min_days"]
                if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
                    self.error(
                        file,
                        self.marks(file),
                        (*path, "min_days"),
                        "'min_days' is a whole number of days 1-3650",
                    )
                else:
                    dwell[(owner, label)] = days
        owners = self.owners()
        playbooks = self.playbooks(families_raw, flags_raw, owners)
        order = self.topo_order(checked, locations)
        groups = self.groups(windows, attributes, tier_names)
        if self.errors:
            raise RuleErrors(self.errors)
        ruleset = self.assemble(
            stays,
            dwell,
            date_counters,
            owners,
            playbooks,
            windows,
            attributes,
            scores,
            checked,
            order,
            list(families_raw),
            list(flags_raw),
            list(derived_raw),
        )
        ruleset.groups = groups
        return ruleset

    # -- parsing sections --------------------------------------------------------------------

    def marks(self, file: str) -> Marks:
        for name, _, marks in self.docs:
            if name == file:
                return marks
        return {}

    def parse_file(self, name: str, text: str) -> None:
        try:
            data, marks = load_with_marks(text, name)
        except YamlLimitError as exc:
            self.errors.append(RuleError(name, exc.line, exc.column, exc.message))
            return
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            self.errors.append(RuleError(name, line, col, f"YAML: {exc.problem}"))
            return
        except yaml.YAMLError as exc:
            self.errors.append(RuleError(name, 1, 1, f"YAML: {exc}"))
            return
        self.docs.append((name, data, marks))
        if data is None:
            return
        if not isinstance(data, dict):
            self.error(name, marks, (), "a rule file must be a mapping of sections")
            return
        if data.get("version") != 1:
            self.error(
                name,
                marks,
                ("version",) if "version" in data else (),
                "every rule file needs 'version: 1'",
            )
        for key, value in data.items():
            if key not in _TOP_KEYS:
                hint = did_you_mean(key, _TOP_KEYS)
                self.error(name, marks, (key, "<key>"), f"unknown section {key!r}{hint}")
            elif key == "groups":
                self.parse_groups(name, marks, value)
            elif key in ("attributes", "scores", "derived", "families", "flags", "windows"):
                if not isinstance(value, dict):
                    self.error(name, marks, (key,), f"section {key!r} must be a mapping")
                    continue
                section = self.entries.setdefault(key, {})
                for entry, body in value.items():
                    if key != "windows" and not (isinstance(entry, str) and _NAME.match(entry)):
                        self.error(
                            name,
                            marks,
                            (key, entry, "<key>"),
                            f"{entry!r} is not a valid name (lowercase letters, digits, _)",
                        )
                        continue
                    if key == "windows" and entry in section:
                        other = section[entry][0]
                        self.error(
                            name,
                            marks,
                            (key, entry, "<key>"),
                            f"{key}.{entry} is already defined in {other}",
                        )
                        continue
                    if key != "windows" and not self.define(_KIND[key], name, (key, entry)):
                        continue
                    section[entry] = (name, (key, entry), body)

    def parse_groups(self, file: str, marks: Marks, value: Any) -> None:
        """Groups have their own names (no expression reads them): checked apart."""
        if not isinstance(value, dict):
            self.error(file, marks, ("groups",), "section 'groups' must be a mapping")
            return
        section = self.entries.setdefault("groups", {})
        for entry, body in value.items():
            here = ("groups", entry, "<key>")
            if not (isinstance(entry, str) and _NAME.match(entry)):
                bad = f"{entry!r} is not a valid name (lowercase letters, digits, _)"
                self.error(file, marks, here, bad)
            elif entry in section:
                other = section[entry][0]
                line, col = self.marks(other).get(here, (1, 1))
                self.error(
                    file, marks, here, f"group {entry!r} is already defined at {other}:{line}:{col}"
                )
            else:
                section[entry] = (file, ("groups", entry), body)

    def groups(
        self,
        windows: Windows,
        attributes: dict[str, Attribute],
        families: dict[str, tuple[str, ...]],
    ) -> dict[str, GroupSpec]:
        """``groups:`` entries: ``by`` an attribute or a family, ``metrics``, ``period``."""
        result: dict[str, GroupSpec] = {}
        groupable = [a.name for a in attributes.values() if a.type != "date"]
        longest = max(windows.csi_days, 90)  # surveys older than this are not kept
        for name, (file, path, body) in self.entries.get("groups", {}).items():
            marks = self.marks(file)
            if not isinstance(body, dict):
                self.error(file, marks, path, f"group {name!r} must be a mapping")
                continue
            ok = True
            for key in body:
                if key not in _GROUP_KEYS:
                    hint = did_you_mean(key, _GROUP_KEYS)
                    self.error(file, marks, (*path, key, "<key>"), f"unknown key {key!r}{hint}")
                    ok = False
            by = body.get("by")
            if by not in families and by not in groupable:
                hint = did_you_mean(by, [*groupable, *families])
                self.error(
                    file,
                    marks,
                    (*path, "by") if "by" in body else path,
                    f"group {name!r} needs 'by': a declared attribute (not a date) or a"
                    f" family{hint}",
                )
                ok = False
            metrics = body.get("metrics")
            if (
                not isinstance(metrics, list)
                or not metrics
                or len(set(map(str, metrics))) != len(metrics)
            ):
                self.error(
                    file,
                    marks,
                    (*path, "metrics") if "metrics" in body else path,
                    f"'metrics' is a non-empty list without repeats of: {', '.join(GROUP_METRICS)}",
                )
                ok = False
            else:
                for i, metric in enumerate(metrics):
                    if metric not in GROUP_METRICS:
                        hint = did_you_mean(metric, GROUP_METRICS)
                        self.error(
                            file,
                            marks,
                            (*path, "metrics", i),
                            f"unknown metric {metric!r}{hint}; metrics are"
                            f" {', '.join(GROUP_METRICS)}",
                        )
                        ok = False
            period = body.get("period", "quarter")
            rolling: int | None = None
            if isinstance(period, dict) and list(period) == ["rolling"]:
                rolling = period["rolling"]
                if isinstance(rolling, bool) or not isinstance(rolling, int):
                    rolling = 0
                if not 1 <= rolling <= longest:
                    self.error(
                        file,
                        marks,
                        (*path, "period", "rolling"),
                        f"'rolling' is a whole number of days 1-{longest} (answers older than"
                        " the CSI window are not kept)",
                    )
                    ok = False
            elif period != "quarter":
                self.error(
                    file,
                    marks,
                    (*path, "period"),
                    "'period' is 'quarter' (calendar quarters, UTC) or {rolling: N} (days)",
                )
                ok = False
            limits = {}
            for key, default, top in (("max_values", 200, 10_000), ("keep", 4, 40)):
                n = body.get(key, default)
                if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top:
                    self.error(file, marks, (*path, key), f"'{key}' is a whole number 1-{top}")
                    ok = False
                limits[key] = n
            if ok:
                result[name] = GroupSpec(
                    name,
                    str(by),
                    by in families,
                    tuple(str(m) for m in metrics),  # type: ignore[union-attr]
                    rolling,
                    limits["max_values"],
                    limits["keep"],
                )
        return result

    def define(self, kind: str, file: str, path: tuple[Any, ...]) -> bool:
        """Claim a name in the one namespace expressions read; False (and an error) if taken."""
        name = path[-1]
        here = (*path, "<key>")
        if name in STATE_FIELDS:
            message = f"{kind} {name!r} has the name of a state field; choose another name"
        elif name in RESERVED:
            message = f"{kind} {name!r}: {name!r} is a reserved name; choose another name"
        elif name in self.defined:
            other_kind, other_file, other_path = self.defined[name]
            line, col = self.marks(other_file).get((*other_path, "<key>"), (1, 1))
            message = (
                f"{kind} {name!r} is already defined: {other_kind} at {other_file}:{line}:{col}"
            )
        else:
            self.defined[name] = (kind, file, path)
            return True
        self.error(file, self.marks(file), here, message)
        return False

    def owners(self) -> tuple[str, ...]:
        """The teams a tier or flag may name as ``owner`` (one ``owners:`` list per set)."""
        found: list[str] = []
        for file, data, marks in self.docs:
            if not isinstance(data, dict) or "owners" not in data:
                continue
            value = data["owners"]
            if found:
                self.error(file, marks, ("owners", "<key>"), "'owners' is declared twice")
            elif (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and _NAME.match(v) for v in value)
            ):
                self.error(
                    file, marks, ("owners",), "'owners' is a non-empty list of names (a-z, 0-9, _)"
                )
            else:
                found = list(dict.fromkeys(value))
        return tuple(found) if found else DEFAULT_OWNERS

    def playbooks(
        self,
        families: dict[str, tuple[str, tuple[Any, ...], Any]],
        flags: dict[str, tuple[str, tuple[Any, ...], Any]],
        owners: tuple[str, ...],
    ) -> dict[tuple[str, str], Playbook]:
        """``action``, ``owner`` and ``touch`` of each tier and flag, checked."""
        found: dict[tuple[str, str], Playbook] = {}
        entries: list[tuple[str, str, str, tuple[Any, ...], dict[Any, Any], tuple[str, ...]]] = []
        for fam, (file, path, tiers) in families.items():
            for i, tier in enumerate(tiers if isinstance(tiers, list) else []):
                if isinstance(tier, dict) and isinstance(tier.get("name"), str):
                    own = ("name", "when", *_HOLD_KEYS)
                    entries.append((fam, tier["name"], file, (*path, i), tier, own))
        for flag, (file, path, body) in flags.items():
            if isinstance(body, dict):
                entries.append((flag, flag, file, path, body, ("when", *_HOLD_KEYS)))
        for owner, label, file, path, body, own_keys in entries:
            marks = self.marks(file)
            allowed = (*own_keys, *_PLAYBOOK_KEYS)
            for key in body:
                if key not in allowed:
                    hint = did_you_mean(key, allowed)
                    self.error(file, marks, (*path, key, "<key>"), f"unknown key {key!r}{hint}")
            action, who, touch = (body.get(k) for k in _PLAYBOOK_KEYS)
            if action is not None and not (
                isinstance(action, str) and 0 < len(action) <= _MAX_ACTION
            ):
                self.error(
                    file,
                    marks,
                    (*path, "action"),
                    f"'action' is text of 1-{_MAX_ACTION} characters",
                )
            if who is not None and who not in owners:
                hint = did_you_mean(who, owners)
                self.error(
                    file,
                    marks,
                    (*path, "owner"),
                    f"owner {who!r} is not one of the owners ({', '.join(owners)}){hint}",
                )
            if touch is not None and touch not in TOUCH_MODELS:
                self.error(
                    file,
                    marks,
                    (*path, "touch"),
                    f"touch {touch!r} is not one of {', '.join(TOUCH_MODELS)}",
                )
            found[(owner, label)] = Playbook(
                action if isinstance(action, str) else None,
                who if isinstance(who, str) else None,
                touch if isinstance(touch, str) else None,
            )
        return found

    def windows(self) -> Windows:
        values = {"rfm_days": 365, "csi_days": 365}
        for key, (file, path, value) in self.entries.get("windows", {}).items():
            if key not in values:
                self.error(
                    file,
                    self.marks(file),
                    (*path, "<key>"),
                    f"unknown window {key!r}; windows are rfm_days, csi_days",
                )
            elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3650:
                self.error(
                    file, self.marks(file), path, f"{key} must be a whole number of days 1-3650"
                )
            else:
                values[key] = value
        return Windows(**values)

    def attributes(self) -> dict[str, Attribute]:
        result: dict[str, Attribute] = {}
        for name, (file, path, body) in self.entries.get("attributes", {}).items():
            marks = self.marks(file)
            if not isinstance(body, dict) or body.get("type") not in _ATTR_TYPES:
                self.error(
                    file,
                    marks,
                    path,
                    f"attribute {name!r} needs a type: str, int, float, bool or date",
                )
                continue
            kind = body["type"]
            default = body.get("default")
            if kind == "date" and default is not None:
                self.error(file, marks, (*path, "default"), "a date attribute has no default")
                continue
            if default is not None and Attribute(name, kind, None).coerce(default) is None:
                self.error(file, marks, (*path, "default"), f"default of {name!r} is not a {kind}")
                continue
            unknown = set(body) - {"type", "default", "description"}
            if unknown:
                self.error(
                    file, marks, path, f"unknown keys in attribute {name!r}: {sorted(unknown)}"
                )
            result[name] = Attribute(name, kind, default)
        return result

    def scores(self, symbols: dict[str, expr.Symbol]) -> dict[str, Score]:
        result: dict[str, Score] = {}
        for name, (file, path, body) in self.entries.get("scores", {}).items():
            marks = self.marks(file)
            if not isinstance(body, dict):
                self.error(file, marks, path, f"score {name!r} must be a mapping")
                continue
            source = body.get("field")
            if source not in symbols or symbols[source].type != "num":
                hint = did_you_mean(source, [s for s, v in symbols.items() if v.type == "num"])
                self.error(
                    file,
                    marks,
                    (*path, "field") if "field" in body else path,
                    f"score {name!r} needs a numeric state field or attribute{hint}",
                )
                continue
            bins, quantiles, better = (
                body.get("bins"),
                body.get("quantiles"),
                body.get("better", "higher"),
            )
            if (bins is None) == (quantiles is None):
                self.error(
                    file, marks, path, f"score {name!r} needs exactly one of bins or quantiles"
                )
                continue
            if better not in ("higher", "lower"):
                self.error(file, marks, (*path, "better"), "better must be 'higher' or 'lower'")
                continue
            if bins is not None:
                ok = (
                    isinstance(bins, list)
                    and 1 <= len(bins) <= 9
                    and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bins)
                    and all(a < b for a, b in itertools.pairwise(bins))
                )
                if not ok:
                    self.error(
                        file, marks, (*path, "bins"), "bins must be 1-9 strictly increasing numbers"
                    )
                    continue
                result[name] = Score(name, source, tuple(float(b) for b in bins), better)
            else:
                if (
                    isinstance(quantiles, bool)
                    or not isinstance(quantiles, int)
                    or not 2 <= quantiles <= 10
                ):
                    self.error(
                        file, marks, (*path, "quantiles"), "quantiles must be a whole number 2-10"
                    )
                    continue
                if better != "higher":
                    self.error(
                        file, marks, (*path, "better"), "quantile scores rank higher as better"
                    )
                    continue
                result[name] = Score(name, source, quantiles=quantiles)
        return result

    def tier_names(self, file: str, path: tuple[Any, ...], tiers: Any) -> tuple[str, ...]:
        marks = self.marks(file)
        if not isinstance(tiers, list) or not tiers:
            self.error(
                file, marks, path, "a family is a non-empty list of {name, when} tiers, best first"
            )
            return ()
        names: list[str] = []
        for i, tier in enumerate(tiers):
            if not isinstance(tier, dict) or "name" not in tier or "when" not in tier:
                self.error(file, marks, (*path, i), "each tier needs 'name' and 'when'")
                continue
            tier_name = tier["name"]
            if not isinstance(tier_name, str) or not _NAME.match(tier_name):
                self.error(
                    file, marks, (*path, i, "name"), f"{tier_name!r} is not a valid tier name"
                )
            elif tier_name in names:
                self.error(file, marks, (*path, i, "name"), f"tier {tier_name!r} appears twice")
            else:
                names.append(tier_name)
        return tuple(names)

    def topo_order(
        self,
        checked: dict[str, list[tuple[str, expr.Checked]]],
        locations: dict[str, tuple[str, tuple[Any, ...]]],
    ) -> list[str]:
        deps = {
            owner: {n for _, c in items for n in c.names if n in checked and n != owner}
            for owner, items in checked.items()
        }
        for owner, items in checked.items():
            if any(owner in c.names for _, c in items):
                file, path = locations[owner]
                self.error(file, self.marks(file), path, f"{owner!r} refers to itself")
                deps[owner] = set()
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(node: str, trail: list[str]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                cycle = " -> ".join([*trail[trail.index(node) :], node])
                file, path = locations[node]
                self.error(
                    file, self.marks(file), path, f"rules refer to each other in a cycle: {cycle}"
                )
                return
            state[node] = 1
            for dep in sorted(deps[node]):
                visit(dep, [*trail, node])
            state[node] = 2
            order.append(node)

        for owner in checked:
            visit(owner, [])
        return order

    # -- code generation ---------------------------------------------------------------------

    def assemble(
        self,
        stays: dict[tuple[str, str], expr.Checked],
        dwell: dict[tuple[str, str], int],
        date_counters: dict[str, tuple[str, int]],
        owners: tuple[str, ...],
        playbooks: dict[tuple[str, str], Playbook],
        windows: Windows,
        attributes: dict[str, Attribute],
        scores: dict[str, Score],
        checked: dict[str, list[tuple[str, expr.Checked]]],
        order: list[str],
        family_names: list[str],
        flag_names: list[str],
        derived_names: list[str],
    ) -> RuleSet:
        # evaluation errors per segment or derived metric (a division by zero, ...): the value
        # is then null/false, the count reaches a metric (segment health)
        errors: Counter[str] = Counter()
        namespace: dict[str, Any] = {
            "__builtins__": {},
            "_ERRORS": _ERRORS,
            "_bool": bool,
            "_errors": errors,
        }
        namespace.update({name: fn for name, (fn, *_rest) in expr.FUNCTIONS.items()})
        lines = ["def evaluate(s):"]
        for owner in order:
            items = checked[owner]
            if owner in derived_names:
                code = expr.to_python(items[0][1])
                lines += [
                    "    try:",
                    f"        s[{owner!r}] = {code}",
                    "    except _ERRORS:",
                    f"        s[{owner!r}] = None",
                    f"        _errors[{owner!r}] += 1",
                ]
            elif owner in flag_names:
                code = expr.to_python(items[0][1])
                lines += [
                    "    try:",
                    f"        s[{owner!r}] = _bool({code})",
                    "    except _ERRORS:",
                    f"        s[{owner!r}] = False",
                    f"        _errors[{owner!r}] += 1",
                ]
            else:
                lines.append("    v = None")
                for i, (tier, c) in enumerate(items):
                    pad = "    " if i == 0 else "        "
                    if i:
                        lines.append("    if v is None:")
                    lines += [
                        f"{pad}try:",
                        f"{pad}    if {expr.to_python(c)}:",
                        f"{pad}        v = {tier!r}",
                        f"{pad}except _ERRORS:",
                        f"{pad}    _errors[{owner!r}] += 1",
                    ]
                lines.append(f"    s[{owner!r}] = v")
        if len(lines) == 1:
            lines.append("    pass")
        source = "\n".join(lines) + "\n"
        exec(compile(source, "<rules>", "exec"), namespace)

        def condition(
            name: str, c: expr.Checked, playbook: Playbook, owner: str | None = None
        ) -> Condition:
            test = eval(compile(f"lambda s: {expr.to_python(c)}", "<rule>", "eval"), namespace)
            stay = stays.get((owner, name)) if owner is not None else None
            return Condition(
                name,
                c.source,
                tuple(sorted(c.names)),
                test,
                playbook,
                condition(f"{name} (stay)", stay, NO_PLAYBOOK) if stay is not None else None,
                dwell.get((owner, name), 0) if owner is not None else 0,
            )

        families = {
            f: Family(
                f,
                tuple(
                    condition(t, c, playbooks.get((f, t), NO_PLAYBOOK), f)
                    for t, c in checked.get(f, [])
                ),
            )
            for f in family_names
        }
        flags = {
            f: condition(f, checked[f][0][1], playbooks.get((f, f), NO_PLAYBOOK), f)
            for f in flag_names
            if f in checked
        }
        derived = {d: checked[d][0][1].source for d in derived_names if d in checked}
        # names each segment reads, through derived metrics and scores down to state fields
        direct = {owner: {n for _, c in items for n in c.names} for owner, items in checked.items()}
        for (owner, _), stay in stays.items():
            direct.setdefault(owner, set()).update(stay.names)
        score_fields = {s.name: s.field for s in scores.values()}

        def closure(names: set[str]) -> set[str]:
            seen: set[str] = set()
            todo = list(names)
            while todo:
                n = todo.pop()
                if n in seen:
                    continue
                seen.add(n)
                todo.extend(direct.get(n, ()))
                if n in score_fields:
                    todo.append(score_fields[n])
                if n == "rfm":
                    todo.extend(k for k in ("r", "f", "m") if k in score_fields)
            return seen

        everything = closure(set(checked))
        tracked = TRACKED_FIELDS | frozenset(date_counters)
        points: dict[str, set[int]] = {}
        opaque: set[str] = set()
        for c in [c for items in checked.values() for _, c in items] + list(stays.values()):
            for name, values in c.thresholds.items():
                points.setdefault(name, set()).update(values)
            opaque |= expr.opaque_names(c, tracked)
        for name in derived_names:
            opaque |= {n for n in direct.get(name, ()) if n in tracked}
        for s in scores.values():
            if s.field not in TRACKED_FIELDS:
                continue
            if s.quantiles:
                opaque.add(s.field)
            else:
                op = ast.Gt() if s.better == "lower" else ast.GtE()
                for b in s.bins:
                    points.setdefault(s.field, set()).update(expr.boundaries(op, b))
        return RuleSet(
            errors=errors,
            version=rules_version(self.files),
            windows=windows,
            attributes=attributes,
            scores=scores,
            derived=derived,
            families=families,
            flags=flags,
            evaluate=namespace.pop("evaluate"),  # held by its own globals: a cycle
            source_files=dict(self.files),
            python_source=source,
            reads={o: tuple(sorted(closure({o}) - {o})) for o in checked if o not in derived_names},
            used_fields=frozenset(n for n in everything if n in STATE_FIELDS),
            boundaries={k: tuple(sorted(v)) for k, v in points.items() if k in everything},
            opaque_fields=frozenset(d for d in opaque if d in everything),
            owners=owners,
            date_counters={k: v for k, v in date_counters.items() if k in everything},
        )


def _aliases(source: str) -> str:
    """Accept YAML-style literals ``true``/``false``/``null`` inside expressions."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, MemoryError, RecursionError, ValueError):
        return source
    if not any(isinstance(n, ast.Name) and n.id in _LITERAL_ALIASES for n in ast.walk(tree)):
        # ast.walk is iterative: safe on any depth
        return source

    class Replace(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id in _LITERAL_ALIASES:
                return ast.copy_location(ast.Constant(_LITERAL_ALIASES[node.id]), node)
            return node

    try:
        return ast.unparse(Replace().visit(tree))
    except RecursionError:  # the checker reports it with the nesting limit
        return source


def _quote_shift(file: str, line: int, col: int, files: Mapping[str, str]) -> int:
    """Expressions usually sit in quotes; point the column past the opening quote."""
    lines = files.get(file, "").splitlines()
    if 0 < line <= len(lines) and col - 1 < len(lines[line - 1]):
        return 1 if lines[line - 1][col - 1] in "\"'" else 0
    return 0
