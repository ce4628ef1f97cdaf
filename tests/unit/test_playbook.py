"""The default rule set read as a playbook: concrete customers land in the value tier, health
tier and onboarding flag the rule files describe, through the engine and through the offline
commands (`segstream replay`, `segstream explain`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from segstream.core.engine import Change, Engine
from segstream.core.timeutil import to_rfc3339
from tests.unit.factories import at, default_rules, event, order, raw
from tests.unit.test_cli import segstream


def settled(*events: dict[str, Any], day: int) -> Engine:
    engine = Engine(default_rules())
    engine.process(raw(*sorted(events, key=lambda e: e["occurred_at"])))
    engine.advance(at(day))
    engine.refresh_population()
    return engine


def segment(engine: Engine, customer: str, name: str) -> Any:
    segments = engine.segments_of(customer)
    assert segments is not None
    return segments[name]


def of(changes: list[Change], customer: str, family: str) -> list[tuple[Any, ...]]:
    return [
        (c["from"], c["to"], c["change"], c["cause"]["kind"], c["at"][:10])
        for c in changes
        if c["customer_id"] == customer and c["family"] == family
    ]


def date(day: int) -> str:
    return to_rfc3339(at(day))[:10]


# --- value: four tiers a team acts on -------------------------------------------------------

# On day 400: monetary cut points (20, 30, 50, 1200) from six small buyers and three big ones.
POPULATION = [
    *(order("CH", d, "500") for d in (370, 380, 390, 395)),  # recent, 4 orders, 2000
    *(order("LO", d, "400") for d in (260, 270, 280)),  # 120 days ago, 3 orders, 1200
    *(order("AR", d, "300") for d in (150, 160, 170, 200)),  # 200 days ago, 4 orders, 1200
    order("OC", 390, "20"),  # one small order
    *(order(f"F{i}", 100 + i, str(10 * (i + 1))) for i in range(6)),
    event("profile", "LE", 100, attributes={"industry": "retail"}),  # never ordered
]


def test_value_has_four_tiers_each_with_its_own_play() -> None:
    tiers = default_rules().families["value"].tiers
    assert [t.name for t in tiers] == ["champions", "loyal", "at_risk", "occasional"]
    plays = {(t.playbook.owner, t.playbook.touch) for t in tiers}
    assert len(plays) == len(tiers) and all(t.playbook.action for t in tiers)
    assert {t.name: t.playbook.touch for t in tiers if t.playbook.touch == "high"}.keys() == {
        "champions",
        "at_risk",
    }  # the most valuable and the slipping customers get a person


def test_concrete_customers_land_in_the_intended_value_tier() -> None:
    engine = settled(*POPULATION, day=400)
    assert engine.lanes[0].populations["monetary"].cuts == (20.0, 30.0, 50.0, 1200.0)
    tiers = {c: segment(engine, c, "value") for c in ("CH", "LO", "AR", "OC", "F0", "LE")}
    assert tiers == {
        "CH": "champions",
        "LO": "loyal",
        "AR": "at_risk",
        "OC": "occasional",
        "F0": "occasional",  # one small order 300 days ago: still only automated offers
        "LE": None,  # a lead has no value tier (lifecycle rejected_lead)
    }


def test_a_champion_who_stops_buying_is_downgraded_to_loyal_then_at_risk() -> None:
    engine = settled(*POPULATION, day=400)
    changes: list[Change] = []
    for day in range(401, 600):
        changes += engine.advance(at(day)) + engine.refresh_population()
    assert of(changes, "CH", "value") == [
        ("champions", "loyal", "downgraded", "clock", date(395 + 91)),  # r 4 -> 3
        ("loyal", "at_risk", "downgraded", "clock", date(395 + 181)),  # r 3 -> 2
    ]


# --- onboarding: the first 90 days after the first order ------------------------------------


def test_onboarding_is_the_first_90_days_and_ends_on_day_90_with_no_new_event() -> None:
    engine = Engine(default_rules())
    entered = engine.process(raw(order(day=0), order(day=50))).changes
    assert of(entered, "C1", "onboarding") == [(False, True, "entered", "event", date(0))]
    assert of(engine.advance(at(89)), "C1", "onboarding") == []  # day 89: still onboarding
    assert segment(engine, "C1", "onboarding") is True
    on_day_90 = engine.advance(at(90))  # the second order does not extend it
    assert of(on_day_90, "C1", "onboarding") == [(True, False, "exited", "clock", date(90))]
    # a flag, not a tier: lifecycle stays current, and nothing is downgraded
    assert segment(engine, "C1", "lifecycle") == "current"
    assert not [c for c in on_day_90 if c["change"] == "downgraded"]
    [leaving] = [c for c in on_day_90 if c["family"] == "onboarding"]
    assert (leaving["owner"], leaving["touch"]) == ("customer_success", "low")


def test_onboarding_counts_from_the_first_order_even_when_it_arrives_late() -> None:
    engine = Engine(default_rules())
    engine.process(raw(order(day=60)))
    engine.advance(at(80))
    assert segment(engine, "C1", "onboarding") is True
    late = engine.process(raw(order(day=-20))).changes  # an earlier first order, sent late
    assert of(late, "C1", "onboarding") == [(True, False, "exited", "event", date(80))]


def test_a_lead_is_never_onboarding() -> None:
    engine = settled(event("profile", day=0, attributes={"industry": "retail"}), day=10)
    assert segment(engine, "C1", "onboarding") is False


# --- health: satisfaction, activity trend, open tickets -------------------------------------


def survey(customer: str, day: int, score: int) -> dict[str, Any]:
    return event("survey", customer, day, score=score, survey_id=f"s-{customer}-{day}")


def ticket(customer: str, day: int, ticket_id: str) -> dict[str, Any]:
    return event("support", customer, day, ticket_id=ticket_id, status="opened")


HEALTH = [
    order("OK", 0),  # nothing known: 100 - 20 (no answer) = 80
    order("UN", 0),  # one unhappy answer (nps -100): 100 - 40 = 60
    survey("UN", 1, 2),
    order("TK", 0),  # two open tickets: 100 - 20 - 20 = 60
    ticket("TK", 1, "t1"),
    ticket("TK", 2, "t2"),
    order("BAD", 0),  # unhappy and two open tickets: 100 - 40 - 20 = 40
    survey("BAD", 1, 0),
    ticket("BAD", 1, "t3"),
    ticket("BAD", 2, "t4"),
    order("OLD", -400),  # churned: no health score
    event("profile", "LEAD", 0, attributes={"industry": "retail"}),
]


def test_concrete_customers_land_in_the_intended_health_tier() -> None:
    engine = settled(*HEALTH, day=5)
    tiers = {c: segment(engine, c, "health") for c in ("OK", "UN", "TK", "BAD", "OLD", "LEAD")}
    assert tiers == {
        "OK": "healthy",
        "UN": "watch",
        "TK": "watch",
        "BAD": "at_risk",
        "OLD": None,
        "LEAD": None,
    }
    explained = engine.explain("BAD")
    assert explained is not None
    parts = ("health_satisfaction", "health_activity", "health_tickets", "health_score")
    assert [explained["state"][p] for p in parts] == [40, 0, 20, 40]  # which part took the points
    at_risk = explained["families"]["health"][2]
    assert (at_risk["tier"], at_risk["holds"], at_risk["touch"]) == ("at_risk", True, "high")


def test_health_moves_with_the_clock_as_activity_falls_off() -> None:
    """The story in docs/rules.md, "Health"."""
    engine = Engine(default_rules())
    story = [order("C1", 0), order("C2", 0), ticket("C1", 2, "t1"), ticket("C1", 3, "t2")]
    changes = engine.process(raw(*story)).changes
    for day in range(1, 70):
        changes += engine.advance(at(day))
    assert of(changes, "C1", "health") == [
        (None, "healthy", "entered", "event", date(0)),
        ("healthy", "watch", "downgraded", "event", date(3)),  # two open tickets: 60
        ("watch", "at_risk", "downgraded", "clock", date(33)),  # three events fewer: 40
        ("at_risk", "watch", "upgraded", "clock", date(60)),  # two fewer: 50
    ]
    scores = [
        c["state"]["health_score"]
        for c in changes
        if c["customer_id"] == "C1" and c["family"] == "health"
    ]
    assert scores == [80, 60, 40, 50]  # the score travels in the change event
    # C2's one order leaves the 30-day window on day 30: one event fewer is noise
    assert of(changes, "C2", "health") == [(None, "healthy", "entered", "event", date(0))]


# --- the offline commands -------------------------------------------------------------------

CUSTOMER = [
    order("C1", 0),
    ticket("C1", 10, "t1"),
    ticket("C1", 11, "t2"),  # 100 - 20 - 20 = 60: healthy -> watch
]
# other customers' orders move the event clock to days 45 and 90; C1 sends nothing more
STORY = [*CUSTOMER, order("C2", 45), order("C3", 90)]


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def test_replay_writes_onboarding_and_health_changes(tmp_path: Path) -> None:
    events, out = write(tmp_path / "events.jsonl", STORY), tmp_path / "changes.jsonl"
    # one partition: the other customers' orders move C1's clock (each partition has its own)
    done = segstream("replay", str(events), "--out", str(out), "--no-progress", "--partitions", "1")
    assert done.returncode == 0, done.stderr
    changes = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert of(changes, "C1", "onboarding") == [
        (False, True, "entered", "event", date(0)),
        (True, False, "exited", "clock", date(90)),
    ]
    # day 45: nothing in the last 30 days, three events in the 30 before (-20 points); day 90:
    # nothing in either, the trend is 0 again
    assert of(changes, "C1", "health") == [
        (None, "healthy", "entered", "event", date(0)),
        ("healthy", "watch", "downgraded", "event", date(11)),
        ("watch", "at_risk", "downgraded", "clock", date(45)),
        ("at_risk", "watch", "upgraded", "clock", date(90)),
    ]
    assert "onboarding" in done.stdout and "health" in done.stdout  # the segment sizes


def test_explain_shows_onboarding_and_health_with_their_playbooks(tmp_path: Path) -> None:
    events = write(tmp_path / "events.jsonl", CUSTOMER)

    def explain(day: int) -> dict[str, Any]:
        as_of = to_rfc3339(at(day))
        done = segstream("explain", "C1", "--events", str(events), "--as-of", as_of, "--json")
        assert done.returncode == 0, done.stderr
        body: dict[str, Any] = orjson.loads(done.stdout)
        return body

    day_89 = explain(89)
    assert day_89["segments"]["onboarding"] is True
    assert day_89["flags"]["onboarding"]["owner"] == "customer_success"
    assert day_89["state"]["tenure_days"] == 89
    assert (day_89["segments"]["value"], day_89["segments"]["health"]) == ("occasional", "watch")
    assert day_89["state"]["health_tickets"] == 20
    watch = next(t for t in day_89["families"]["health"] if t["tier"] == "watch")
    assert (watch["holds"], watch["owner"], watch["touch"]) == (True, "customer_success", "low")
    day_90 = explain(90)
    assert day_90["segments"]["onboarding"] is False
    assert day_90["flags"]["onboarding"]["holds"] is False
    assert day_90["segments"]["lifecycle"] == "current"
