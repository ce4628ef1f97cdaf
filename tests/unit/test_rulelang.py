"""The rule language: safe by construction, checked at load, errors with file:line:col."""

import pytest

from segstream.core.rulelang import RuleErrors, compile_rules, load_rules, rules_version
from segstream.core.rulelang.ruleset import Score
from tests.unit.factories import ROOT, rules_from

HEADER = "version: 1\n"


def flag(expression: str) -> str:
    return HEADER + f"flags:\n  probe: {expression!r}\n"


def errors_of(text: str) -> list[str]:
    with pytest.raises(RuleErrors) as info:
        rules_from(text)
    return [str(e) for e in info.value.errors]


def test_default_rules_load_and_have_a_content_version() -> None:
    rules = load_rules(ROOT / "rules")
    assert set(rules.families) == {
        "value",
        "satisfaction",
        "activity_matrix",
        "lifecycle",
        "health",
    }
    assert {"unhappy", "support_heavy", "renewal_candidate", "onboarding"} <= set(rules.flags)
    assert rules.version == rules_version(rules.source_files)
    edited = dict(rules.source_files)
    first = sorted(edited)[0]
    edited[first] += "\n# a comment changes the content\n"
    assert compile_rules(edited).version != rules.version


ESCAPES = [
    "__import__('os').system('true')",
    "().__class__.__bases__[0].__subclasses__()",
    "r.__class__",
    "(lambda: 1)()",
    "[x for x in (1, 2)]",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('x=1')",
    "getattr(r, 'real')",
    "globals()",
    "r[0]",
    "2 ** 99999999",
    "9 ** 9 ** 9",
    "'a' * 10000000",
    "f'{r}'",
    "r if (x := 1) else 0",
    "not " * 40 + "True",
    "(" * 300 + "1" + ")" * 300,
    "-" * 5000 + "1",
    "1 + " * 2000 + "1",
]


@pytest.mark.parametrize("expression", ESCAPES)
def test_escapes_are_rejected_at_load(expression: str) -> None:
    errors = errors_of(flag(expression))
    assert errors and all(e.startswith("rules.yaml:") for e in errors)


def test_no_builtins_are_reachable_at_run_time() -> None:
    rules = rules_from(flag("frequency >= 1"))
    namespace = rules.evaluate.__globals__
    assert namespace["__builtins__"] == {}
    assert "__import__" not in namespace and "open" not in namespace


def test_unknown_name_gives_file_line_column_and_a_suggestion() -> None:
    text = HEADER + 'families:\n  value:\n    - {name: a, when: "frequncy >= 3"}\n'
    [error] = errors_of(text)
    assert error.startswith("rules.yaml:4:24:")  # the column of the misspelt name itself
    assert "unknown name 'frequncy'" in error and "did you mean 'frequency'" in error


def test_unknown_segment_name_in_a_comparison_is_caught() -> None:
    text = HEADER + (
        'families:\n  tier:\n    - {name: gold, when: "true"}\nflags:\n  vip: "tier == \'glod\'"\n'
    )
    [error] = errors_of(text)
    assert "no segment 'glod'" in error and "did you mean 'gold'" in error


def test_type_errors_are_caught() -> None:
    text = HEADER + 'attributes:\n  industry: {type: str}\nflags:\n  a: "industry > 3"\n'
    assert any("cannot compare str with num" in e for e in errors_of(text))
    assert any(
        "arithmetic" in e
        for e in errors_of(
            flag("industry + 1 > 2").replace(
                "flags:", "attributes:\n  industry: {type: str}\nflags:"
            )
        )
    )


def test_cycles_between_rules_are_rejected() -> None:
    text = HEADER + 'flags:\n  a: "b"\n  b: "c"\n  c: "a"\n'
    errors = errors_of(text)
    assert any("cycle" in e for e in errors)
    assert any("refers to itself" in e for e in errors_of(HEADER + 'flags:\n  a: "a"\n'))


def test_structural_errors_point_at_their_place() -> None:
    text = HEADER + (
        "windws: {rfm_days: 10}\n"
        "scores:\n  r: {field: recency_days, bins: [30, 10]}\n"
        "families:\n  value: []\n"
    )
    errors = errors_of(text)
    assert any(e.startswith("rules.yaml:2:1:") and "did you mean 'windows'" in e for e in errors)
    assert any(e.startswith("rules.yaml:4:") and "strictly increasing" in e for e in errors)
    assert any(e.startswith("rules.yaml:6:") and "non-empty" in e for e in errors)


def test_yaml_syntax_error_and_duplicates_across_files() -> None:
    assert errors_of("version: 1\nflags: [\n")[0].startswith("rules.yaml:")
    with pytest.raises(RuleErrors) as info:
        compile_rules({"a.yaml": flag("true"), "b.yaml": flag("false")})
    assert str(info.value) == "b.yaml:3:3: flag 'probe' is already defined: flag at a.yaml:3:3"


def test_python_tags_are_not_constructed() -> None:
    errors = errors_of("version: 1\nflags:\n  a: !!python/object/apply:os.system ['true']\n")
    assert errors


def test_literals_lists_functions_and_null_checks() -> None:
    text = HEADER + (
        "attributes:\n  industry: {type: str, default: ''}\n"
        "flags:\n"
        "  a: \"industry in ['retail', 'health'] and not (csi is None)\"\n"
        '  b: "coalesce(csi, 0) + max(frequency, 1) >= 2 and abs(-1) == 1 and round(1.4) == 1"\n'
    )
    rules = rules_from(text)
    values = {"industry": "retail", "csi": 2.0, "frequency": 0}
    rules.evaluate(values)
    assert values["a"] is True and values["b"] is True


def test_null_comparisons_and_division_by_zero_are_false_not_errors() -> None:
    rules = rules_from(flag("csi < 1") + '  probe2: "frequency / 0 > 1"\n')
    values = {"csi": None, "frequency": 3}
    rules.evaluate(values)
    assert values["probe"] is False and values["probe2"] is False


@pytest.mark.parametrize(
    ("value", "lower", "higher"),
    [
        (None, 0, 0),
        (0, 5, 1),
        (30, 5, 3),
        (31, 4, 3),
        (90, 4, 4),
        (91, 3, 4),
        (365, 2, 5),
        (366, 1, 5),
    ],
)
def test_bin_scores(value: float | None, lower: int, higher: int) -> None:
    bins = (30.0, 90.0, 180.0, 365.0)
    assert Score("r", "recency_days", bins, "lower").from_bins(value) == lower
    assert Score("x", "recency_days", (1.0, 30.0, 90.0, 365.0), "higher").from_bins(value) == higher


def test_quantile_score() -> None:
    score = Score("m", "monetary", quantiles=5)
    cuts = (10.0, 20.0, 30.0, 40.0)
    assert [score.from_cuts(v, cuts) for v in (None, 0, 5, 10, 25, 40, 99)] == [0, 1, 1, 2, 3, 5, 5]


ALIAS_BOMB = "version: 1\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
)


def test_yaml_aliases_and_anchors_are_refused_before_anything_expands() -> None:
    """A 10-line alias bomb expanded to 10**7 values (30 s, 0.5 GB); a self-referencing anchor
    recursed until RecursionError. Both must stop at the first anchor, pointing at it."""
    assert len(ALIAS_BOMB) < 400
    [error] = errors_of(ALIAS_BOMB)
    assert error == "rules.yaml:2:4: YAML anchors/aliases are not allowed in rule files"
    [error] = errors_of("version: 1\nderived: &x {a: *x}\n")
    assert error == "rules.yaml:2:10: YAML anchors/aliases are not allowed in rule files"
    assert errors_of(flag("true") + "description: &d plain anchor\n")[0].startswith("rules.yaml:4:")


def test_yaml_nesting_and_value_count_are_bounded() -> None:
    deep = HEADER + "description: " + "[" * 200 + "]" * 200 + "\n"
    [error] = errors_of(deep)
    assert error.startswith("rules.yaml:2:") and "nested deeper than 20 levels" in error
    many = HEADER + "description: [" + "1," * 20_000 + "1]\n"
    [error] = errors_of(many)
    assert "more than 10000 YAML values in one file" in error
    [error] = errors_of(HEADER + "description: " + "9" * 5000 + "\n")
    assert error.startswith("rules.yaml:2:14: YAML value not allowed")


def test_file_and_rule_set_sizes_are_bounded() -> None:
    padding = "#" * 1000 + "\n"
    with pytest.raises(RuleErrors) as info:
        compile_rules({"big.yaml": flag("true") + padding * 300})
    assert str(info.value).startswith("big.yaml:1:1: rule file is ")
    assert "the limit is 262144 bytes per file" in str(info.value)
    files = {f"{i}.yaml": flag("true").replace("probe", f"p{i}") + padding * 200 for i in range(6)}
    with pytest.raises(RuleErrors) as info:
        compile_rules(files)
    assert "the limit is 1048576 bytes in all" in str(info.value)


def test_a_duplicate_key_names_the_first_one() -> None:
    [error] = errors_of(HEADER + "flags:\n  a: 'true'\n  a: 'false'\n")
    assert error.startswith("rules.yaml:4:3:") and "first at line 3, column 3" in error


def test_an_empty_rule_set_is_refused() -> None:
    message = "the rule set defines no family and no flag: it would segment nobody"
    assert errors_of("") == [f"rules.yaml:1:1: {message}"]
    assert errors_of(HEADER + "derived:\n  x: '1'\n") == [f"rules.yaml:1:1: {message}"]
    with pytest.raises(RuleErrors) as info:
        compile_rules({})
    assert str(info.value) == f"<rule set>:1:1: {message}"


@pytest.mark.parametrize(
    ("files", "error"),
    [
        (  # a family and a flag: replay crashed with IndexError in Engine._diff
            {
                "a.yaml": HEADER + "families:\n  vip:\n    - {name: gold, when: 'true'}\n",
                "b.yaml": HEADER + "flags:\n  vip: 'true'\n",
            },
            "b.yaml:3:3: flag 'vip' is already defined: family at a.yaml:3:3",
        ),
        (  # a derived metric and a flag: the flag silently won
            {"a.yaml": HEADER + "derived:\n  x: '1'\nflags:\n  x: 'true'\n"},
            "a.yaml:5:3: flag 'x' is already defined: derived metric at a.yaml:3:3",
        ),
        (
            {"a.yaml": flag("true") + "scores:\n  probe: {field: frequency, bins: [1]}\n"},
            "a.yaml:5:3: score 'probe' is already defined: flag at a.yaml:3:3",
        ),
        (
            {"a.yaml": flag("true") + "attributes:\n  probe: {type: int}\n"},
            "a.yaml:5:3: attribute 'probe' is already defined: flag at a.yaml:3:3",
        ),
        (  # an attribute shadowed a state field
            {"a.yaml": flag("true") + "attributes:\n  frequency: {type: int}\n"},
            "a.yaml:5:3: attribute 'frequency' has the name of a state field; choose another name",
        ),
        (
            {"a.yaml": flag("true") + "derived:\n  csi: '1'\n"},
            "a.yaml:5:3: derived metric 'csi' has the name of a state field; choose another name",
        ),
        (
            {"a.yaml": HEADER + "flags:\n  rfm: 'true'\n"},
            "a.yaml:3:3: flag 'rfm': 'rfm' is a reserved name; choose another name",
        ),
        (
            {"a.yaml": HEADER + "flags:\n  ok: 'true'\n  coalesce: 'true'\n"},
            "a.yaml:4:3: flag 'coalesce': 'coalesce' is a reserved name; choose another name",
        ),
        (
            {"a.yaml": HEADER + "flags:\n  ok: 'true'\n  'null': 'true'\n"},
            "a.yaml:4:3: flag 'null': 'null' is a reserved name; choose another name",
        ),
    ],
)
def test_a_name_defined_twice_anywhere_names_both_places(files: dict[str, str], error: str) -> None:
    with pytest.raises(RuleErrors) as info:
        compile_rules(files)
    assert [str(e) for e in info.value.errors] == [error]


def test_tier_names_belong_to_their_family() -> None:
    rules = rules_from(
        HEADER + "families:\n"
        "  a: [{name: other, when: 'true'}]\n"
        "  b: [{name: other, when: 'true'}, {name: a, when: 'true'}]\n"
        "flags:\n  other: \"a == 'other'\"\n"
    )
    values: dict[str, object] = {}
    rules.evaluate(values)
    assert values == {"a": "other", "b": "other", "other": True}


NULL_CASES = [
    "last_score == 10",
    "last_score != 10",  # held for customers who never answered
    "last_score < 10",
    "last_score <= 10",
    "last_score > 1",
    "last_score >= 1",
    "last_score in [1, 2]",
    "last_score not in [1, 2]",  # held too
    "10 != last_score",
    "1 <= last_score <= 10",
    "frequency < 5 != last_score",
    "csi == nps",  # two nulls are not equal
    "csi != nps",
    "coalesce(csi, nps) != 1",
    "(csi if frequency > 0 else nps) != 1",
    "tier != 'gold'",  # a family with no tier
    "tier not in ['gold']",
    "industry != 'retail'",  # an attribute without a default
    "ratio != 1",  # a derived metric that failed (division by zero)
]


@pytest.mark.parametrize("expression", NULL_CASES)
def test_every_comparison_with_a_null_operand_is_false(expression: str) -> None:
    text = HEADER + (
        "attributes:\n  industry: {type: str}\n"
        "derived:\n  ratio: 'frequency / 0'\n"
        "families:\n  tier: [{name: gold, when: 'frequency > 99'}]\n"
        f"flags:\n  probe: {expression!r}\n  negated: {'not (' + expression + ')'!r}\n"
    )
    rules = rules_from(text)
    values = {"last_score": None, "csi": None, "nps": None, "frequency": 3, "industry": None}
    rules.evaluate(values)
    assert values["probe"] is False
    assert values["negated"] is True  # 'not' of a false comparison, as the docs say
    assert rules.flags["probe"].holds(values) is False  # explain agrees with evaluation


def test_comparisons_without_nulls_and_null_checks_keep_their_meaning() -> None:
    text = HEADER + (
        "flags:\n"
        "  ne: 'last_score != 10'\n"
        "  chain: '1 <= last_score <= 3 < frequency'\n"
        "  member: 'last_score not in [1, 2]'\n"
        "  unknown: 'last_score is None'\n"
        "  known: 'last_score is not None'\n"
    )
    rules = rules_from(text)
    answered = {"last_score": 3, "frequency": 4}
    rules.evaluate(answered)
    assert [answered[k] for k in ("ne", "chain", "member", "unknown", "known")] == [
        True,
        True,
        True,
        False,
        True,
    ]
    never = {"last_score": None, "frequency": 4}
    rules.evaluate(never)
    assert [never[k] for k in ("ne", "chain", "member", "unknown", "known")] == [
        False,
        False,
        False,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("tier", "message"),
    [
        (
            "owner: finance",
            "owner 'finance' is not one of the owners (marketing, customer_success, sales)",
        ),
        ("touch: medium", "touch 'medium' is not one of high, low, tech"),
        ('acton: "x"', "unknown key 'acton'; did you mean 'action'?"),
        ("action: 5", "'action' is text of 1-500 characters"),
    ],
)
def test_a_playbook_names_a_declared_owner_and_a_touch_model(tier: str, message: str) -> None:
    text = f'version: 1\nfamilies:\n  value:\n    - {{name: a, when: "true", {tier}}}\n'
    with pytest.raises(RuleErrors) as caught:
        compile_rules({"r.yaml": text})
    assert [e.message for e in caught.value.errors] == [message]


def test_a_deep_expression_under_the_length_limit_is_an_error_not_a_crash() -> None:
    """490 nested `not` (1,964 characters) overflowed the stack in the alias rewrite, before
    the nesting limit was checked: a traceback from `rules check` (found by the fuzzer)."""
    for tail in ("true", "orders_total > 1"):
        text = f'version: 1\nflags:\n  f: "{"not " * 490}{tail}"\n'
        with pytest.raises(RuleErrors) as caught:
            compile_rules({"r.yaml": text})
        assert "nested deeper than 32 levels" in str(caught.value)
