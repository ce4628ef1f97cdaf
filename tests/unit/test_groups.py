"""Group figures (``groups:``): per-partition partials, quarters that close with the clock,
the whole group's figures from every partition, and the offline ``report groups``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from segstream import cli
from segstream.core.contracts import GroupSnapshot
from segstream.core.engine import Engine
from segstream.core.groups import (
    OTHER,
    merge,
    quarter_label,
    quarter_of,
    rows,
    snapshot_id,
    snapshots,
)
from segstream.core.partitioning import partition_for
from segstream.core.rulelang import RuleErrors
from segstream.core.state import load_state
from segstream.runtime.groups import GroupExchange
from segstream.runtime.metrics import Metrics
from segstream.runtime.settings import Settings
from tests.unit.factories import DAY0, engine_for, event, order, raw, rules_from
from tests.unit.fakes import Journal, MemoryOutbox

Q1_2025 = 20_089 - DAY0  # 2025-01-01, relative to DAY0 (2024-10-04, in 2024-Q4)

RULES = """
version: 1
attributes:
  account_manager: {type: str, default: ""}
flags:
  anyone: {when: "true"}
groups:
  managers:
    by: account_manager
    metrics: [csi, nps, promoters, detractors, members, revenue, orders]
"""


def manager(customer: str, name: str | None, day: int = 0) -> dict[str, Any]:
    return event("profile", customer, day, attributes={"account_manager": name})


def survey(customer: str, score: int, day: int = 1) -> dict[str, Any]:
    return event("survey", customer, day, score=score)


def figures(engine: Engine, group: str = "managers") -> dict[tuple[str, str], dict[str, Any]]:
    spec = engine.rules.groups[group]
    partials = [engine.group_partial(p)["groups"][group] for p in sorted(engine.lanes)]
    return {(r["period"], r["value"]): r for r in rows(spec, merge(spec, partials))}


def test_csi_of_a_group_is_the_ratio_of_all_its_answers_not_an_average_of_customers() -> None:
    engine = engine_for(RULES)
    engine.process(raw(manager("A", "dana"), manager("B", "dana")))
    engine.process(raw(*(survey("A", 9) for _ in range(3)), survey("B", 2)))
    row = figures(engine)[("2024-Q4", "dana")]
    # A: 3 promoters, B: 1 detractor. Ratio 3 / 1 = 3.0; the mean of A's 3.0 and B's 0.0 is 1.5
    assert row["csi"] == 3.0
    assert (row["promoters"], row["detractors"], row["members"]) == (3, 1, 2)
    assert row["nps"] == 50.0  # 3 of 4 answers 9-10, 1 of 4 answers 0-6


def test_a_quarter_closes_when_the_clock_passes_its_end_and_stays_as_it_closed() -> None:
    engine = engine_for(RULES)
    engine.process(raw(manager("A", "dana"), survey("A", 9), order("A", 2, amount="40.00")))
    assert figures(engine)[("2024-Q4", "dana")]["closed"] is False
    engine.process(raw(survey("A", 2, day=Q1_2025 + 3)))  # the clock enters 2025-Q1
    now = figures(engine)
    assert now[("2024-Q4", "dana")] | {"closed": None} == {
        "group": "managers",
        "value": "dana",
        "period": "2024-Q4",
        "closed": None,
        "csi": 1.0,
        "nps": 100.0,
        "promoters": 1,
        "detractors": 0,
        "members": 1,
        "revenue": 40.0,
        "orders": 1,
    }
    assert now[("2024-Q4", "dana")]["closed"] is True
    assert now[("2025-Q1", "dana")]["detractors"] == 1 and now[("2025-Q1", "dana")]["orders"] == 0
    # an answer dated in the closed quarter that arrives late changes neither quarter
    engine.process(raw(survey("A", 1, day=5)))
    assert figures(engine) == now


def test_a_customer_counts_for_its_current_manager_and_a_refund_removes_revenue() -> None:
    engine = engine_for(RULES)
    first = order("A", 1, amount="70.00")
    engine.process(raw(manager("A", "dana"), first, survey("A", 10)))
    engine.process(raw(manager("A", "eli", day=2)))
    now = figures(engine)
    assert set(now) == {("2024-Q4", "eli")}
    assert now[("2024-Q4", "eli")]["revenue"] == 70.0
    refund = order("A", 3, amount="70.00", order_id=first["order_id"], status="refunded")
    engine.process(raw(refund, manager("A", None, day=4)))
    engine.process(raw(manager("B", "eli", day=4)))
    assert figures(engine)[("2024-Q4", "eli")]["revenue"] == 0.0
    assert figures(engine)[("2024-Q4", "eli")]["members"] == 1  # A has no manager any more


def test_a_rolling_window_forgets_answers_as_the_clock_moves() -> None:
    rolling = RULES.replace("metrics:", "period: {rolling: 30}\n    metrics:")
    engine = engine_for(rolling)
    engine.process(raw(manager("A", "dana"), survey("A", 9, day=1)))
    (row,) = figures(engine).values()
    assert row["promoters"] == 1 and row["period"].endswith("..2024-10-05")
    engine.process(raw(manager("B", "dana", day=31)))
    (row,) = figures(engine).values()
    assert row["promoters"] == 0 and row["members"] == 2


def test_values_beyond_max_values_are_added_up_as_other() -> None:
    bounded = RULES.replace("metrics:", "max_values: 3\n    metrics:")
    engine = engine_for(bounded)
    engine.process(raw(*(manager(f"C{i}", f"m{i % 5}") for i in range(10))))
    spec = engine.rules.groups["managers"]
    (period,) = merge(spec, [engine.group_partial(0)["groups"]["managers"]])
    assert list(period.figures) == ["m0", "m1", OTHER]
    assert period.figures[OTHER][0] == 6 and period.folded == 3


def test_erasure_takes_the_customer_out_of_its_group() -> None:
    engine = engine_for(RULES)
    engine.process(raw(manager("A", "dana"), manager("B", "dana")))
    engine.process(raw(event("profile", "A", 1, attributes={}, erase=True)))
    assert figures(engine)[("2024-Q4", "dana")]["members"] == 1


def test_a_recovered_partition_reports_the_same_figures_and_closed_quarters() -> None:
    engine = engine_for(RULES, partitions=2)
    lines = raw(
        *(manager(f"C{i}", f"m{i % 2}") for i in range(8)),
        *(survey(f"C{i}", i + 2) for i in range(8)),
        *(order(f"C{i}", 3, amount=f"{i}.50") for i in range(8)),
        *(survey(f"C{i}", 9, day=Q1_2025 + 1) for i in range(8)),
    )
    engine.process(lines)
    written: dict[int, tuple[dict[str, Any], dict[str, bytes]]] = {}
    from segstream.core.state import dump_state

    for commit in engine.commits():
        states = {st.customer_id: dump_state(st) for st in commit.states}
        written[commit.partition] = (commit.lane, states)
    recovered = engine_for(RULES, partitions=2)
    for partition, (lane, states) in sorted(written.items()):
        recovered.adopt_lane(partition, orjson.loads(orjson.dumps(lane)))
        for value in states.values():
            recovered.adopt(load_state(value), partition)
        recovered.settle_adopted(partition, had_record=True)
    assert figures(recovered) == figures(engine)
    assert any(closed for (period, _), closed in _closed(engine).items() if period == "2024-Q4")


def _closed(engine: Engine) -> dict[tuple[str, str], bool]:
    return {key: row["closed"] for key, row in figures(engine).items()}


def test_one_partition_or_four_give_the_same_closed_quarter() -> None:
    lines = raw(
        *(manager(f"C{i}", f"m{i % 3}") for i in range(12)),
        *(survey(f"C{i}", (i * 7) % 11) for i in range(12)),
        *(survey(f"C{i}", 9, day=Q1_2025 + 2) for i in range(12)),
    )
    one, four = engine_for(RULES, partitions=1), engine_for(RULES, partitions=4)
    one.process(lines)
    four.process(lines)
    assert figures(one) == figures(four)
    assert all(closed for (p, _), closed in _closed(four).items() if p == "2024-Q4")


def test_quarters_are_calendar_quarters_in_utc() -> None:
    assert quarter_label(quarter_of(20_088)) == "2024-Q4"  # 2024-12-31
    assert quarter_label(quarter_of(20_089)) == "2025-Q1"  # 2025-01-01


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("by: account_manager\n    metrics: [csi, nsp]", "metric 'nsp'; did you mean 'nps'"),
        ("by: acount_manager\n    metrics: [csi]", "did you mean 'account_manager'"),
        ("by: account_manager\n    metrics: []", "'metrics' is a non-empty list"),
        ("by: account_manager\n    metrics: [csi]\n    period: {rolling: 9999}", "1-365"),
        ("by: account_manager\n    metrics: [csi]\n    period: monthly", "'period' is 'quarter'"),
        ("by: account_manager\n    metrics: [csi]\n    max_value: 3", "did you mean 'max_values'"),
    ],
)
def test_group_mistakes_are_load_errors_with_their_place(body: str, message: str) -> None:
    text = RULES.split("groups:")[0] + "groups:\n  managers:\n    " + body + "\n"
    with pytest.raises(RuleErrors) as caught:
        rules_from(text)
    (error,) = caught.value.errors
    assert message in str(error)
    assert str(error).startswith(f"rules.yaml:{error.line}:") and error.line >= 9  # in groups:


def test_report_groups_prints_one_json_object_per_value_and_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.jsonl"
    lines = raw(manager("A", "dana"), survey("A", 9), survey("A", 9, day=Q1_2025))
    events.write_bytes(b"\n".join(lines) + b"\n")
    args = ["report", "groups", "--events", str(events), "--rules", str(rules), "--format", "json"]
    assert cli.main([*args, "--partitions", "1"]) == 0
    printed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["period"], r["value"], r["closed"], r["promoters"]) for r in printed] == [
        ("2025-Q1", "dana", False, 1),
        ("2024-Q4", "dana", True, 1),
    ]
    assert cli.main([*args[:-2], "--partitions", "1"]) == 0
    text = capsys.readouterr().out
    assert "group managers  by account_manager  period quarter" in text and "2024-Q4" in text


def test_report_groups_says_when_the_rules_have_no_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.split("groups:")[0])
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(raw(manager("A", "dana"))) + b"\n")
    code = cli.main(["report", "groups", "--events", str(events), "--rules", str(rules)])
    assert code == 2
    assert "declares no groups" in capsys.readouterr().err


def test_the_default_rules_declare_the_account_managers_group() -> None:
    spec = engine_for().rules.groups["account_managers"]
    assert (spec.by, spec.rolling_days) == ("account_manager", None)
    assert set(spec.metrics) >= {"csi", "nps", "members", "revenue"}


def test_snapshot_events_follow_the_contract_and_their_ids_depend_only_on_the_quarter() -> None:
    engine = engine_for(RULES)
    engine.process(raw(manager("A", "dana"), survey("A", 9), survey("A", 9, day=Q1_2025)))
    spec = engine.rules.groups["managers"]
    closed = [p for p in merge(spec, [engine.group_partial(0)["groups"]["managers"]]) if p.closed]
    (event,) = snapshots(spec, closed[0], engine.rules.version)
    parsed = GroupSnapshot.model_validate(event)
    assert (parsed.period, parsed.start, parsed.end) == ("2024-Q4", "2024-10-01", "2024-12-31")
    assert parsed.metrics.csi == 1.0 and parsed.metrics.members == 1
    again = snapshots(spec, closed[0], "another-rules-version")
    assert again[0]["event_id"] == event["event_id"] == snapshot_id("managers", "dana", "2024-Q4")


def test_closed_quarters_of_another_definition_of_the_group_are_not_taken_over() -> None:
    engine = engine_for(RULES)
    engine.process(raw(manager("A", "dana"), survey("A", 9), survey("A", 9, day=Q1_2025)))
    (commit,) = engine.commits()
    assert commit.lane["groups"]["managers"]["closed"]
    regions = RULES.replace("by: account_manager", "by: region").replace(
        "attributes:", "attributes:\n  region: {type: str, default: north}"
    )
    recovered = engine_for(regions)
    recovered.adopt_lane(0, commit.lane)
    group = recovered.lanes[0].groups["managers"]
    assert group.closed == [] and group.current == quarter_of(DAY0 + Q1_2025)


def test_a_contribution_is_computed_again_for_the_new_quarter_though_no_item_changed() -> None:
    """An evaluation that changes none of a customer's orders and surveys reuses the tallies
    it added last, but only within the same open period: after the quarter closes, the
    closed quarter's tallies must not come back into the totals (they would be held until
    the customer changes, and counted again had it never changed)."""
    engine = engine_for(RULES)
    engine.process(raw(manager("A", "dana"), survey("A", 9), order("A", 2, amount="40.00")))
    engine.process(raw(manager("B", "ben", day=Q1_2025 + 1)))  # the clock enters 2025-Q1
    engine.process(raw(event("support", "A", Q1_2025 + 2, ticket_id="t1", status="opened")))
    (group,) = [lane.groups["managers"] for lane in engine.lanes.values() if "A" in lane.customers]
    first = group.first_bucket()
    assert first == quarter_of(Q1_2025 + DAY0)
    assert all(bucket >= first for totals in group.totals.values() for bucket in totals)
    assert all(bucket >= first for bucket in group.contributions["A"][1])


def test_a_snapshot_waits_for_every_partition_to_pass_the_quarter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two workers, one partition each. Worker B's first partial on the groups topic was
    published before its first event (no clock): worker A, past the quarter, must not emit the
    quarter's snapshots without B's answers, nor while B's clock is still inside it."""
    customers = [f"C{i}" for i in range(8)]
    by_partition = {p: [c for c in customers if partition_for(c, 2) == p] for p in (0, 1)}
    assert all(by_partition.values())

    def quarter_lines(partition: int) -> list[bytes]:
        mine = by_partition[partition]
        return raw(*(manager(c, "dana") for c in mine), *(survey(c, 9) for c in mine))

    def next_quarter(partition: int) -> list[bytes]:
        return raw(*(survey(c, 2, day=Q1_2025 + 1) for c in by_partition[partition]))

    settings = Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", partitions=2)
    a, b = engine_for(RULES, partitions=2), engine_for(RULES, partitions=2)
    journal = Journal()
    exchange = GroupExchange(settings, lambda: a, MemoryOutbox(journal), Metrics())  # type: ignore[arg-type]

    async def settle() -> None:
        pass

    def emitted_after(b_partial: dict[str, Any]) -> list[dict[str, Any]]:
        exchange.receive([orjson.dumps(b_partial)])
        asyncio.run(exchange.publish({0}, settle))
        return [orjson.loads(r[2]) for r in journal.sent(settings.topic_group_snapshots)]

    a.process(quarter_lines(0) + next_quarter(0))
    with caplog.at_level("INFO", logger="segstream.groups"):
        assert emitted_after(b.group_partial(1)) == []  # B has no clock yet
        assert emitted_after(b.group_partial(1)) == []
    waiting = [r.getMessage() for r in caplog.records if "wait for partitions" in r.getMessage()]
    assert waiting == [  # said once while nothing changes, naming what it waits for
        "group managers: quarter 2024-Q4 has closed where clocks passed it; its snapshots "
        "wait for partitions [1] (no event yet, or a clock still inside it)"
    ]
    b.process(quarter_lines(1))
    assert emitted_after(b.group_partial(1)) == []  # B's clock is still in 2024-Q4
    b.process(next_quarter(1))
    (snapshot,) = emitted_after(b.group_partial(1))
    assert snapshot["period"] == "2024-Q4" and snapshot["value"] == "dana"
    metrics = snapshot["metrics"]
    assert metrics["members"] == metrics["promoters"] == len(customers)
    assert metrics["detractors"] == 0
