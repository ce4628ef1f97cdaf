"""Replay is reproducible: two processes (different hash seeds) replaying the same 10,000-customer
file write the same change file, byte for byte. Quantile cut points used to come from a KLL
sketch whose compaction is random: three replays of a 5,000-customer file gave three different
change counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from segstream.synth import SynthConfig, generate


def replay_to(events: Path, out: Path, hash_seed: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "segstream.cli",
            "replay",
            str(events),
            "--out",
            str(out),
            "--partitions",
            "4",
            "--no-progress",
        ],
        check=True,
        capture_output=True,
        env=os.environ | {"PYTHONHASHSEED": hash_seed},
        timeout=300,
    )


def test_two_replays_of_a_10000_customer_file_are_identical(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = SynthConfig(customers=10_000, events=30_000, seed=11, duplicate_rate=0.02)
    events.write_bytes(b"".join(orjson.dumps(body) + b"\n" for body in generate(config)))
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    replay_to(events, first, "1")
    replay_to(events, second, "2")
    assert first.stat().st_size > 1_000_000
    assert first.read_bytes() == second.read_bytes()


def test_replay_keeps_no_pending_work_of_the_batches_it_wrote(tmp_path: Path) -> None:
    """Without a changelog nothing commits: pending changes and states would grow with the
    input (a million-event replay held every change it ever wrote)."""
    import io

    from segstream.core.rulelang import load_rules
    from segstream.replay import replay
    from tests.unit.factories import ROOT

    events = tmp_path / "events.jsonl"
    config = SynthConfig(customers=300, events=6000, seed=2)
    events.write_bytes(b"".join(orjson.dumps(body) + b"\n" for body in generate(config)))
    engine, summary = replay(
        [events], load_rules(ROOT / "rules"), out=None, progress=False, errors=io.StringIO()
    )
    assert summary.changes > 1000
    left = [c for lane in engine.lanes.values() for c in lane.fresh]
    assert all(c["cause"]["kind"] != "event" for c in left)  # only the final settle's
