"""Shadow rule sets: compared on the live state, emitting nothing, and predicting exactly the
changes a promotion makes."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import orjson
import pytest

from segstream import cli
from segstream.core.engine import Engine
from segstream.core.rulelang import RuleSet, load_rules
from segstream.runtime.rulestopic import newest_valid, rules_message
from segstream.synth import SynthConfig, generate
from tests.unit.factories import ROOT, default_rules


def tightened(tmp_path: Path) -> Path:
    """The default rules with champions made harder to reach: what a marketer would try."""
    target = tmp_path / "candidate"
    shutil.copytree(ROOT / "rules", target)
    value = target / "value.yaml"
    text, n = re.subn(
        r'(- name: champions\n\s+when: ")[^"]*(")',
        r"\g<1>r >= 5 and f >= 5 and m >= 5\g<2>",
        value.read_text(),
    )
    assert n == 1
    value.write_text(text)
    return target


def events(n: int = 6000) -> list[bytes]:
    config = SynthConfig(customers=400, events=n, seed=3)
    return [orjson.dumps(e) for e in generate(config)]


def run(rules: RuleSet, lines: list[bytes], shadow: RuleSet | None = None) -> Engine:
    engine = Engine(rules, partitions=2)
    engine.set_shadow(shadow)
    for start in range(0, len(lines), 500):
        engine.process(lines[start : start + 500])
    return engine


def test_a_shadow_set_emits_nothing_and_changes_no_live_decision(tmp_path: Path) -> None:
    live, candidate = default_rules(), load_rules(tightened(tmp_path))
    lines = events()
    plain = Engine(live, partitions=2)
    plain_changes = [
        c for s in range(0, len(lines), 500) for c in plain.process(lines[s : s + 500]).changes
    ]
    shadowed = Engine(live, partitions=2)
    shadowed.set_shadow(candidate)
    shadowed_changes = [
        c for s in range(0, len(lines), 500) for c in shadowed.process(lines[s : s + 500]).changes
    ]
    assert shadowed_changes == plain_changes
    report = shadowed.shadow_report()
    assert report is not None and report["shadow"] == candidate.version


def test_the_report_predicts_exactly_the_changes_a_promotion_makes(tmp_path: Path) -> None:
    live, candidate = default_rules(), load_rules(tightened(tmp_path))
    engine = run(live, events(), candidate)
    # a promotion recomputes the cut points; with them fresh, the prediction is exact
    engine.refresh_population()
    engine.observe_shadow(engine.customer_ids())  # as the worker's periodic comparison does
    report = engine.shadow_report()
    assert report is not None
    predicted = Counter(
        {
            (name, kind): counts[kind]
            for name, counts in report["segments"].items()
            for kind in counts
            if kind != "sample"
        }
    )
    predicted = +predicted
    assert predicted[("value", "downgraded")] > 0  # some champions would fall
    engine.set_rules(candidate)
    changes = engine.reevaluate(engine.customer_ids())
    made = Counter((c["family"], c["change"]) for c in changes)
    assert made == predicted
    assert engine.shadow_report() is None  # promoted: nothing left to compare


def test_a_shadow_set_may_rank_only_what_the_live_set_ranks(tmp_path: Path) -> None:
    candidate = tightened(tmp_path)
    value = candidate / "value.yaml"
    value.write_text(value.read_text().replace("quantiles: 5", "quantiles: 4"))
    engine = Engine(default_rules())
    with pytest.raises(ValueError, match="ranks monetary in 4 quantiles"):
        engine.set_shadow(load_rules(candidate))


def test_the_rules_topic_runs_a_shadow_set_until_a_live_set_follows(tmp_path: Path) -> None:
    live, candidate = default_rules(), load_rules(tightened(tmp_path))
    records = [(0, rules_message(live)), (1, rules_message(candidate, shadow=True))]
    latest = newest_valid(records)
    assert latest.rules is not None and latest.rules.version == live.version
    assert latest.shadow is not None and latest.shadow.version == candidate.version
    promoted = newest_valid([*records, (2, rules_message(candidate))])
    assert promoted.rules is not None and promoted.rules.version == candidate.version
    assert promoted.shadow is None
    later_live = newest_valid(
        [(0, rules_message(candidate, shadow=True)), (1, rules_message(live))]
    )
    assert later_live.shadow is None and not later_live.shadow_seen


def test_rules_diff_prints_the_same_report_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tightened(tmp_path)
    path = tmp_path / "events.jsonl"
    lines = events()
    path.write_bytes(b"\n".join(lines) + b"\n")
    args = ["rules", "diff", str(ROOT / "rules"), str(candidate), "--events", str(path)]
    assert cli.main([*args, "--partitions", "2", "--format", "json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    engine = run(default_rules(), lines)
    engine.refresh_population()  # as replay does at its end
    engine.set_shadow(load_rules(candidate))
    engine.observe_shadow(engine.customer_ids())
    expected = engine.shadow_report()
    assert expected is not None
    assert report["customers_moving"] == expected["customers_moving"] > 0
    assert report["segments"]["value"]["downgraded"] == expected["segments"]["value"]["downgraded"]
    assert cli.main([*args, "--partitions", "2"]) == 0
    text = capsys.readouterr().out
    assert "would move" in text and "champions" in text
