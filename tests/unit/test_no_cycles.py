"""The core makes no reference cycles, which is why ``segstream replay`` runs it with the
cyclic collector off (docs/performance.md): its memory must then be freed by reference counts
alone. With the collector off, whatever a run leaves unreachable stays allocated until the
next collection, which counts it; these tests run the core, and the replay command, with the
collector off and ask that collection to find nothing."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from hypothesis import given, seed, settings

from segstream.core import engine as production
from segstream.core import state as production_state
from segstream.core.evaluation import Reading
from segstream.core.rulelang import load_rules
from segstream.synth import SynthConfig, generate
from tests.unit.factories import ROOT
from tests.unit.test_reference_equality import EQUALITY, Scenario, Side, scenarios
from tests.unit.test_replay_reading import files


@contextmanager
def collector_off() -> Iterator[list[int]]:
    """Collects what came before, turns the collector off, and reports (in the list it gives)
    how many unreachable objects the collection after the block found."""
    found: list[int] = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield found
        found.append(gc.collect())
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("partitions", [1, 4])
@pytest.mark.parametrize("wall", [False, True], ids=["event-clock", "wall-clock"])
def test_the_core_leaves_no_cyclic_garbage_on_random_streams(partitions: int, wall: bool) -> None:
    """Events (with duplicates, corrections, late and invalid ones), clock jumps, population
    refreshes, rule changes, shadow sets, commits and recoveries, as the equality tests run
    them."""

    @settings(EQUALITY, max_examples=15)
    @seed(2000 + 10 * partitions + wall)
    @given(scenarios(partitions, wall))
    def check(scenario: Scenario) -> None:
        with collector_off() as found:
            side = Side(production, production_state, scenario)
            for step in scenario.steps:
                side.step(step)
            side.commit()
            side.final()
            del side
        assert found == [0]

    check()


def test_the_replay_commands_cyclic_garbage_does_not_grow_with_its_input(
    tmp_path: Path,
) -> None:
    """The whole command: reading files with invalid lines, the engine, the change file, the
    state file and the summary. Loading the rules (PyYAML, ``ast``) and parsing the arguments
    (argparse) leave some cyclic garbage once per command; the events leave none, so a run over
    five times the events leaves exactly as much."""
    from segstream.cli import main

    runs = iter(range(3))

    def garbage_of(customers: int, events: int) -> int:
        folder = tmp_path / f"run-{next(runs)}"
        folder.mkdir()
        bodies = generate(SynthConfig(customers=customers, events=events, seed=5))
        feed = folder / "events.jsonl"
        feed.write_bytes(b"\n".join([*map(orjson.dumps, bodies), b"not json", b"{}"]) + b"\n")
        out, state = folder / "changes.jsonl", folder / "state.jsonl"
        args = ["replay", "--no-progress", "--rules", str(ROOT / "rules"), "--out", str(out)]
        with collector_off() as found:
            assert main([*args, "--state-out", str(state), str(feed)]) == 0
        assert out.stat().st_size > 0 and state.stat().st_size > 0
        return found[0]

    garbage_of(40, 400)  # the first run also imports, and so leaves more
    assert garbage_of(40, 400) == garbage_of(200, 2000)


def test_the_replay_command_runs_without_the_cyclic_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off while it replays, and on again after, as it found it."""
    from segstream import cli
    from segstream import replay as replay_module  # the command imports it when it runs

    seen: list[bool] = []
    real = replay_module.replay

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(replay_module, "replay", watched)
    assert gc.isenabled()
    out = tmp_path / "changes.jsonl"
    args = ["replay", "--no-progress", "--rules", str(ROOT / "rules"), "--out", str(out)]
    assert cli.main([*args, *map(str, files(tmp_path))]) == 0
    assert seen == [False]
    assert gc.isenabled()


def test_a_rule_sets_generated_functions_are_freed_by_reference_counts() -> None:
    """The rule set's ``evaluate`` and the engine's ``fill`` are compiled per rule set (every
    rules change): held by their own globals, each would live on until a collection."""
    with collector_off():
        rules = load_rules(ROOT / "rules")
        generated = [weakref.ref(rules.evaluate), weakref.ref(Reading.of(rules).fill)]
        del rules
        assert [f() for f in generated] == [None, None]
