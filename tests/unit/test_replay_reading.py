"""Replay reads its files a chunk at a time; the engine still gets the batches the plain
line-by-line reading gave (blank lines skipped, line ends stripped, batches across files),
invalid lines are listed with their file and line, and the change file and counts are those
of writing and counting the changes one by one."""

from __future__ import annotations

import gc
import io
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from segstream import replay as replay_module
from segstream.core.engine import Engine
from segstream.core.rulelang import load_rules
from segstream.present import segment_label
from segstream.replay import replay
from segstream.synth import SynthConfig, generate
from tests.unit.factories import ROOT


def line_by_line(paths: list[Path], size: int) -> list[tuple[list[bytes], list[tuple[str, int]]]]:
    """The batches as replay made them before it read in chunks."""
    batches: list[tuple[list[bytes], list[tuple[str, int]]]] = []
    batch: list[bytes] = []
    where: list[tuple[str, int]] = []
    for path in paths:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    batch.append(line.rstrip(b"\r\n"))
                    where.append((str(path), number))
                    if len(batch) >= size:
                        batches.append((batch, where))
                        batch, where = [], []
    batches.append((batch, where))
    return batches


def files(tmp_path: Path) -> list[Path]:
    rng = random.Random(7)
    bodies = [orjson.dumps(b) for b in generate(SynthConfig(customers=40, events=400, seed=5))]
    noise = [b"", b"", b" \t ", b"not json", b"\r", b"  {oops"]
    paths = []
    for n, part in enumerate((bodies[:250], bodies[250:], [])):
        lines = []
        for body in part:
            if rng.random() < 0.15:
                lines.append(rng.choice(noise))
            lines.append(body + (b"\r" if rng.random() < 0.1 else b""))
        text = b"\n".join(lines) + (b"" if n == 0 else b"\n\n")  # the first: no final newline
        paths.append(tmp_path / f"events-{n}.jsonl")
        paths[-1].write_bytes(text)
    return paths


@pytest.mark.parametrize(
    ("read_bytes", "batch_lines"), [(1, 7), (300, 7), (4096, 50), (1 << 20, 2048)]
)
def test_the_engine_gets_the_line_by_line_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int, batch_lines: int
) -> None:
    paths = files(tmp_path)
    seen: list[list[bytes]] = []

    class Recording(Engine):
        def process(self, raws: Any, **kwargs: Any) -> Any:
            seen.append(list(raws))
            return super().process(raws, **kwargs)

    monkeypatch.setattr(replay_module, "Engine", Recording)
    monkeypatch.setattr(replay_module, "READ_BYTES", read_bytes)
    monkeypatch.setattr(replay_module, "BATCH_LINES", batch_lines)
    monkeypatch.setattr(replay_module, "MAX_REPORTED_INVALID", 10_000)
    errors, out = io.StringIO(), io.BytesIO()
    _, summary = replay(paths, load_rules(ROOT / "rules"), out=out, progress=False, errors=errors)
    expected = line_by_line(paths, batch_lines)
    assert seen == [batch for batch, _ in expected]
    assert summary.lines == sum(len(batch) for batch, _ in expected)
    bad = [
        f"{file}:{number}:"
        for batch, where in expected
        for line, (file, number) in zip(batch, where, strict=True)
        if line.strip() in (b"not json", b"{oops")
    ]
    listed = [":".join(line.split(":")[:2]) + ":" for line in errors.getvalue().splitlines()]
    assert listed == bad and len(bad) > 5

    changes = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert out.getvalue() == b"".join(orjson.dumps(c) + b"\n" for c in changes)
    assert summary.changes == len(changes) > 100
    one_by_one: Counter[tuple[str, str, str]] = Counter()
    for c in changes:
        one_by_one[(c["family"], segment_label(c["from"]), segment_label(c["to"]))] += 1
    assert summary.transitions == one_by_one
    assert list(summary.transitions) == list(one_by_one)  # the same order for equal counts


def test_the_replay_command_gives_the_collector_back_as_it_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It spares the big heap of a replay the full collections, only while replaying."""
    from segstream.cli import main

    paths = files(tmp_path)
    before = gc.get_threshold()
    out = tmp_path / "changes.jsonl"
    args = ["replay", "--no-progress", "--rules", str(ROOT / "rules"), "--out", str(out)]
    assert main([*args, *map(str, paths)]) == 0
    assert gc.get_threshold() == before
    assert out.stat().st_size > 0 and "changes" in capsys.readouterr().out


def test_the_worker_command_runs_with_few_full_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker keeps every customer of its partitions in one long-lived heap, as a replay
    does: it runs with the same thresholds, and hands the collector back as it found it."""
    from segstream.cli import main
    from segstream.runtime import main as runtime_main

    seen: list[tuple[int, ...]] = []

    def run_worker(*, demo: bool = False) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(runtime_main, "run_worker", run_worker)
    before = gc.get_threshold()
    assert main(["worker"]) == 0
    assert seen == [(50_000, 20, 100)]
    assert gc.get_threshold() == before
