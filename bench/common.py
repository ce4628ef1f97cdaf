"""Shared helpers for the benchmarks: cached synthetic inputs and result records."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import orjson

from segstream.synth import SynthConfig, generate

DATA = Path(__file__).resolve().parent / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def events_file(events: int, customers: int, seed: int = 11) -> Path:
    """A seeded synthetic JSONL file, generated once and cached under bench/data/."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"events-{events}-{customers}-{seed}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            for event in generate(SynthConfig(customers=customers, events=events, seed=seed)):
                handle.write(orjson.dumps(event) + b"\n")
        tmp.rename(path)
    return path


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
