"""Change detection: kinds, reasons, causes, sequence numbers, determinism, scheduling cost."""

from typing import Any

import orjson

from segstream.core.contracts import Rejection
from segstream.core.engine import Engine
from segstream.core.state import dump_state, load_state
from segstream.core.timeutil import to_rfc3339
from segstream.synth import SynthConfig, generate
from tests.unit.factories import at, default_rules, engine_for, event, order, raw, rules_from

RECENCY_RULES = """
version: 1
scores:
  r: {field: recency_days, bins: [30, 90], better: lower}
families:
  value:
    - {name: active, when: "r == 3"}
    - {name: cooling, when: "r == 2"}
    - {name: cold, when: "r == 1"}
flags:
  big: "monetary_total >= 100"
"""


def by_family(changes: list[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    return [c for c in changes if c["family"] == family]


def test_entered_downgraded_and_flags_with_reasons() -> None:
    engine = engine_for(RECENCY_RULES)
    [entered, big] = engine.process(raw(order(day=0, amount=150, event_id="e-1"))).changes
    assert entered | {"event_id": None, "state": None} == {
        "event_id": None,
        "customer_id": "C1",
        "family": "value",
        "segment": "active",
        "from": None,
        "to": "active",
        "change": "entered",
        "seq": 1,
        "at": to_rfc3339(at(0)),
        "cause": {"kind": "event", "event_id": "e-1", "rules_version": engine.rules.version},
        "reason": {"matched": "r == 3", "failed": None},
        "state": None,
        "action": None,
        "owner": None,
        "touch": None,
    }
    assert entered["state"] == {"r": 3, "recency_days": 0}
    assert (big["family"], big["from"], big["to"], big["change"], big["seq"]) == (
        "big",
        False,
        True,
        "entered",
        2,
    )
    changes = engine.advance(at(31))
    [down] = changes
    assert (down["from"], down["to"], down["change"]) == ("active", "cooling", "downgraded")
    assert down["cause"] == {
        "kind": "clock",
        "event_id": None,
        "rules_version": engine.rules.version,
    }
    assert down["reason"] == {"matched": "r == 2", "failed": "r == 3"}
    assert down["at"] == to_rfc3339(at(31, hour=0))
    assert down["seq"] == 3
    [up] = engine.process(raw(order(day=32, amount=1))).changes
    assert (up["from"], up["to"], up["change"], up["seq"]) == ("cooling", "active", "upgraded", 4)


def test_nothing_is_emitted_without_a_membership_change() -> None:
    engine = engine_for(RECENCY_RULES)
    engine.process(raw(order(day=0, amount=5)))
    assert engine.process(raw(order(day=1, amount=5))).changes == []
    assert engine.advance(at(20)) == []


def test_duplicates_emit_nothing_and_are_counted() -> None:
    engine = engine_for()
    first = order(day=0)
    assert engine.process(raw(first)).changes
    result = engine.process(raw(first, first))
    assert result.changes == [] and result.duplicates == 2


def test_change_ids_are_deterministic() -> None:
    events = raw(
        order(day=0, amount=5), order("C2", day=3, amount=500), event("survey", day=4, score=1)
    )
    runs = []
    for _ in range(2):
        engine = engine_for()
        changes = engine.process(events).changes + engine.advance(at(400))
        runs.append([c["event_id"] for c in changes])
    assert runs[0] == runs[1] and len(set(runs[0])) == len(runs[0])


def test_family_exit_when_no_tier_matches() -> None:
    rules = 'version: 1\nfamilies:\n  buyer:\n    - {name: recent, when: "orders_30d >= 1"}\n'
    engine = engine_for(rules)
    engine.process(raw(order(day=0)))
    [exited] = engine.advance(at(30))
    assert (exited["segment"], exited["from"], exited["to"], exited["change"]) == (
        "recent",
        "recent",
        None,
        "exited",
    )
    assert exited["reason"] == {"matched": None, "failed": "orders_30d >= 1"}


def test_clock_work_grows_with_the_customers_that_change_not_the_population() -> None:
    engine = engine_for(RECENCY_RULES)
    quiet = [order(f"Q{i}", day=100, amount=1) for i in range(2000)]
    moving = [order(f"M{i}", day=70, amount=1) for i in range(15)]
    engine.process(raw(*moving, *quiet))
    before = engine.evaluations
    changes = engine.advance(at(101))  # M*: recency 31 -> crosses the 30-day bin
    assert engine.evaluations - before == 15
    assert len(changes) == 15 and {c["customer_id"][0] for c in changes} == {"M"}
    # the quiet ones are next due when their own recency crosses 31 days
    before = engine.evaluations
    assert engine.advance(at(130)) == [] and engine.evaluations == before


def test_the_evaluation_census_counts_by_cause_and_by_whether_anything_moved() -> None:
    engine = engine_for(RECENCY_RULES)
    engine.process(raw(order("C1", day=0, amount=150)))  # enters active and big
    engine.process(raw(order("C1", day=1, amount=1)))  # moves nothing
    engine.advance(at(32))  # recency 31 crosses the 30-day bin: downgraded
    assert engine.evaluated == {("event", True): 1, ("event", False): 1, ("clock", True): 1}
    assert engine.evaluations == 3


def test_window_counts_are_rechecked_only_when_a_boundary_can_be_crossed() -> None:
    rules = 'version: 1\nflags:\n  busy: "activity_30d >= 3"\n'
    engine = engine_for(rules)
    engine.process(raw(*(event("profile", day=d, attributes={}) for d in range(10))))
    assert engine.store["C1"].segments["busy"] is True
    before = engine.evaluations
    assert engine.advance(at(36)) == []  # days 0..6 left: 3 remain, still busy
    assert engine.evaluations == before
    [change] = engine.advance(at(37))  # day 7 leaves: 2 remain
    assert change["change"] == "exited" and engine.evaluations == before + 1


def test_population_cause_when_only_cut_points_move() -> None:
    rules = 'version: 1\nscores:\n  m: {field: monetary, quantiles: 2}\nflags:\n  top: "m == 2"\n'
    engine = engine_for(rules)
    engine.process(raw(*(order(f"C{i}", day=0, amount=10 * (i + 1)) for i in range(10))))
    engine.refresh_population()
    assert engine.store["C5"].segments["top"] is True  # 60 is above the median of 10..100
    engine.process(raw(*(order(f"N{i}", day=1, amount=1000) for i in range(10))))
    changes = engine.refresh_population()
    moved = [c for c in changes if c["customer_id"] == "C5"]
    assert [(c["change"], c["cause"]["kind"]) for c in moved] == [("exited", "population")]


def test_rules_change_reevaluates_with_cause_rules_and_exits_removed_segments() -> None:
    engine = engine_for(RECENCY_RULES)
    engine.process(raw(order(day=0, amount=500)))
    new_rules = rules_from('version: 1\nflags:\n  big: "monetary_total >= 1000"\n')
    engine.set_rules(new_rules)
    changes = engine.reevaluate(list(engine.store), cause="rules")
    assert {(c["family"], c["change"]) for c in changes} == {("big", "exited"), ("value", "exited")}
    assert all(
        c["cause"] == {"kind": "rules", "event_id": None, "rules_version": new_rules.version}
        for c in changes
    )


def test_default_rules_end_to_end_on_a_story() -> None:
    engine = Engine(default_rules())
    story = [order(day=d, amount=200) for d in range(0, 300, 30)]
    changes = engine.process(raw(*story)).changes
    assert by_family(changes, "value")[0]["change"] == "entered"
    engine.refresh_population()
    assert engine.segments_of("C1")["value"] in ("champions", "loyal")
    engine.advance(at(270 + 200))
    engine.refresh_population()  # cut points follow the population, not one customer's past
    assert engine.segments_of("C1")["value"] == "at_risk"  # high F/M, recency gone: win back
    engine.advance(at(270 + 400))
    assert engine.segments_of("C1")["lifecycle"] == "churned"
    explained = engine.explain("C1")
    assert explained is not None
    assert [t["holds"] for t in explained["families"]["lifecycle"]] == [False, True, False]


def _walked_counts(engine: Engine) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {name: {} for name in engine.rules.segment_names}
    for st in engine.store.values():
        for name, value in st.segments.items():
            if name in counts and value is not None and value is not False:
                tier = name if value is True else str(value)
                counts[name][tier] = counts[name].get(tier, 0) + 1
    return counts


def test_member_counts_follow_changes_rules_recovery_and_released_partitions() -> None:
    engine = Engine(default_rules())
    bodies = list(generate(SynthConfig(customers=300, events=6000, seed=5)))
    for body in bodies:  # three partitions, as a worker would see them
        engine.process([orjson.dumps(body)], partition=sum(body["customer_id"].encode()) % 3)
    engine.refresh_population()
    assert engine.member_counts() == _walked_counts(engine)
    assert sum(engine.member_counts()["lifecycle"].values()) == len(engine.store)

    fresh = Engine(default_rules())  # a worker taking over recovered customers
    for customer_id, st in engine.store.items():
        fresh.adopt(load_state(dump_state(st)), engine.partition_of[customer_id])
    assert fresh.member_counts() == _walked_counts(fresh) == engine.member_counts()
    fresh.release_partition(1)
    assert fresh.member_counts() == _walked_counts(fresh)

    smaller = rules_from('version: 1\nflags:\n  big: "monetary_total >= 1000"\n')
    engine.set_rules(smaller)
    engine.reevaluate(sorted(engine.store), cause="rules")
    assert engine.member_counts() == _walked_counts(engine)
    assert set(engine.member_counts()) == {"big"}
    engine.set_rules(default_rules())  # and back: removed segments were counted out
    engine.reevaluate(sorted(engine.store), cause="rules")
    assert engine.member_counts() == _walked_counts(engine)


def test_recovered_customers_are_reevaluated_only_when_their_quantile_scores_moved() -> None:
    engine = Engine(default_rules(), partitions=3)
    for body in generate(SynthConfig(customers=300, events=6000, seed=7)):
        engine.process([orjson.dumps(body)])
    engine.refresh_population()
    engine.commits()
    stored = {cid: dump_state(st) for cid, st in engine.store.items()}
    lanes = {p: lane.record() for p, lane in engine.lanes.items()}

    def recovered(cuts_of: dict[int, Any]) -> Engine:
        fresh = Engine(default_rules(), partitions=3)
        for partition, record in cuts_of.items():
            fresh.adopt_lane(partition, record)
        for cid, raw_state in stored.items():
            fresh.adopt(load_state(raw_state), engine.partition_of[cid])
        return fresh

    same = recovered(lanes)  # lane records and customers agree: nothing to re-evaluate
    assert [c for p in sorted(lanes) for c in same.settle_adopted(p, had_record=True)] == []
    assert same.evaluations == 0

    old = {
        p: r | {"populations": {"monetary": {"cuts": [1.0, 2.0, 3.0, 4.0], "updates": 0}}}
        for p, r in lanes.items()
    }
    moved = recovered(old)  # cut points recorded apart from the customers' scores
    changes = [c for p in sorted(lanes) for c in moved.settle_adopted(p, had_record=True)]
    assert 0 < moved.evaluations < len(moved.store)
    assert changes and {c["cause"]["kind"] for c in changes} == {"population"}
    everyone = recovered(old)
    everyone.reevaluate(sorted(everyone.store), cause="population")
    assert {cid: moved.segments_of(cid) for cid in moved.store} == {
        cid: everyone.segments_of(cid) for cid in everyone.store
    }


def test_a_lane_recovered_without_its_record_catches_up_on_its_own_clock() -> None:
    """State written by an older version has no lane record: the lane takes its clock from
    its customers and runs everything due by then (a restart catches up at once)."""
    engine = Engine(default_rules())
    bodies = [orjson.dumps(b) for b in generate(SynthConfig(customers=200, events=4000, seed=9))]
    engine.process(bodies)
    engine.commits()
    stored = {cid: dump_state(st) for cid, st in engine.store.items()}
    later_ms = (engine.clock_ms or 0) + 200 * 86_400_000
    engine.advance(later_ms)
    engine.refresh_population()

    recovered = Engine(default_rules())
    for raw_state in stored.values():
        recovered.adopt(load_state(raw_state), 0)
    recovered.settle_adopted(0, had_record=False)
    recovered.advance(later_ms)
    recovered.refresh_population()
    assert {c: recovered.segments_of(c) for c in engine.store} == {
        c: engine.segments_of(c) for c in engine.store
    }


def test_a_restarted_wall_clock_runs_everything_due_on_its_first_tick() -> None:
    """The first tick after a restart used to only set the clock: customers that fell due while
    the worker was down changed only after the next UTC midnight."""
    engine = engine_for(RECENCY_RULES, clock="wall")
    engine.process(raw(order(day=0)), now_ms=at(0))
    engine.commits()
    stored = {cid: dump_state(st) for cid, st in engine.store.items()}

    restarted = engine_for(RECENCY_RULES, clock="wall")  # down for 40 days, no lane record
    for raw_state in stored.values():
        restarted.adopt(load_state(raw_state), 0)
    restarted.settle_adopted(0, had_record=False)
    changes = restarted.advance(at(40))

    assert [(c["from"], c["to"], c["cause"]["kind"]) for c in changes] == [
        ("active", "cooling", "clock")
    ]


def test_erasure_exits_every_segment_and_leaves_nothing_that_names_the_customer() -> None:
    engine = Engine(default_rules())
    engine.process(
        raw(order(day=0, amount="500.00"), order(day=3), event("survey", day=4, score=2))
    )
    before = {k: v for k, v in engine.store["C1"].segments.items() if v not in (None, False)}
    engine.commits()
    engine.confirm()
    erase = event("profile", day=5, erase=True)
    erase.pop("attributes", None)

    changes = engine.process(raw(erase)).changes
    commit = engine.commit(0)

    assert {(c["family"], c["change"], c["cause"]["kind"]) for c in changes} == {
        (name, "exited", "erasure") for name in before
    }
    assert "C1" not in engine.store and engine.segments_of("C1") is None
    assert commit is not None and commit.erased == ["C1"] and commit.states == []
    assert commit.lane["unconfirmed"] == changes  # the exits, until they are sent
    assert sum(sum(v.values()) for v in engine.member_counts().values()) == 0
    engine.confirm()
    engine.process(raw(order(customer="C2", day=5)))
    next_commit = engine.commit(0)
    assert next_commit is not None
    assert "C1" not in orjson.dumps(next_commit.lane).decode()  # a digest, not the id
    # re-delivered older events do not bring it back; a new one starts after its last seq
    assert engine.process(raw(order(day=1))).changes == []
    assert "C1" not in engine.store
    later = engine.process(raw(order(day=6))).changes
    assert later and min(c["seq"] for c in later) > max(c["seq"] for c in changes)


def test_with_the_wall_clock_a_partitions_first_event_is_judged_on_todays_date() -> None:
    engine = engine_for(RECENCY_RULES, clock="wall")
    parsed = engine.parse(raw(order(day=0))[0])
    assert not isinstance(parsed, Rejection)
    changes = engine.apply(parsed, partition=3, now_ms=at(100))
    assert changes and by_family(changes, "value")[0]["to"] == "cold"  # 100 days since
    assert engine.lanes[3].clock_day == at(100) // 86_400_000


PLAYBOOK_RULES = """
version: 1
owners: [marketing, customer_success]
scores:
  r: {field: recency_days, bins: [30, 90], better: lower}
families:
  value:
    - {name: active, when: "r == 3", action: "Thank them", owner: marketing, touch: tech}
    - {name: cooling, when: "r <= 2", action: "Call them", owner: customer_success, touch: high}
flags:
  big: {when: "monetary_total >= 100", action: "Send the VIP pack", owner: marketing}
"""


def test_changes_and_explain_carry_the_playbook_of_the_segment_they_name() -> None:
    engine = engine_for(PLAYBOOK_RULES)
    entered = engine.process(raw(order(day=0, amount=150))).changes
    playbooks = {c["family"]: (c["action"], c["owner"], c["touch"]) for c in entered}
    assert playbooks == {
        "value": ("Thank them", "marketing", "tech"),
        "big": ("Send the VIP pack", "marketing", None),
    }
    [down] = engine.advance(at(31))
    assert (down["to"], down["action"], down["owner"], down["touch"]) == (
        "cooling",
        "Call them",
        "customer_success",
        "high",
    )
    explained = engine.explain("C1")
    assert explained is not None
    assert explained["families"]["value"][1]["owner"] == "customer_success"
    assert explained["flags"]["big"]["action"] == "Send the VIP pack"


def test_ingest_is_the_one_record_path_of_replay_and_the_worker() -> None:
    """``ingest`` parses and applies one raw message, as ``process`` does for each of a batch;
    a worker's record read on a partition its customer does not belong to is applied nowhere
    (the worker sends it on), unless the caller names the lane itself (``process``)."""
    engine = Engine(rules_from(RECENCY_RULES), partitions=4)
    body = raw(order(customer="C1", day=0, amount=150, event_id="e-1"))[0]
    home = engine.partition_for("C1")
    elsewhere = (home + 1) % 4

    rejected = engine.ingest(b"{not json")
    assert isinstance(rejected.parsed, Rejection) and rejected.changes is None

    foreign = engine.ingest(body, elsewhere, reroute=True)
    assert foreign.foreign and foreign.changes is None and engine.customer_count() == 0

    applied = engine.ingest(body, home, reroute=True)
    assert not applied.foreign and applied.changes
    assert [c["segment"] for c in applied.changes] == ["active", "big"]
    assert engine.ingest(body, home, reroute=True).changes is None  # a duplicate

    forced = Engine(rules_from(RECENCY_RULES), partitions=4)
    ingested = forced.ingest(body, elsewhere)  # no reroute: the caller's lane
    assert ingested.changes and forced.partition_of["C1"] == elsewhere

    # wall_ms bounds the event's time; now_ms is the wall clock it is applied at
    later = raw(order(customer="C2", day=10, amount=1, event_id="e-2"))[0]
    early = engine.ingest(later, wall_ms=at(5))
    assert isinstance(early.parsed, Rejection)
    assert early.parsed.reason.value == "occurred_at_out_of_range"
    assert engine.ingest(later, wall_ms=at(10)).changes
    wall = Engine(rules_from(RECENCY_RULES), clock="wall")
    applied_at_day_40 = wall.ingest(body, wall_ms=at(400), now_ms=at(40)).changes
    assert applied_at_day_40 and applied_at_day_40[0]["segment"] == "cooling"  # recency 40
