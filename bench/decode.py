"""Parse speed: the msgspec decoder (``parse_event``) against the reference path it falls back
to (``parse_event_reference``: orjson, the plain-Python fast path, pydantic), on the same lines.

    python -m bench.decode [--events 1000000] [--customers 100000] [--lines 50000] [--repeats 5]

Reads the first ``--lines`` lines of the seeded synthetic file (a mix of order, support, survey
and profile events). Each repeat walks them in chunks of 1,000 and times every path on each
chunk in turn, so the paths share the machine's ups and downs (it is shared and noisy); the
figures are medians over the repeats, with their ranges, and each ratio is reference over
decoder within one repeat. ``orjson.loads`` and msgspec's typed decode alone are timed the same
way, as the floors under either path.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench.common import events_file
from segstream.core import decode
from segstream.core.contracts import parse_event, parse_event_reference

_PATHS: dict[str, Callable[[bytes], object]] = {
    "reference": parse_event_reference,
    "decoder": parse_event,
    "orjson.loads alone": orjson.loads,
    "msgspec decode alone": decode._DECODER.decode,
}


CHUNK = 1000


def _us_per_line(
    paths: dict[str, Callable[[bytes], object]], lines: list[bytes]
) -> dict[str, float]:
    spent = dict.fromkeys(paths, 0.0)
    clock = time.perf_counter
    for start in range(0, len(lines), CHUNK):
        chunk = lines[start : start + CHUNK]
        for name, parse in paths.items():
            started = clock()
            for line in chunk:
                parse(line)
            spent[name] += clock() - started
    return {name: seconds / len(lines) * 1e6 for name, seconds in spent.items()}


def _kind(line: bytes) -> str:
    return str(orjson.loads(line).get("type"))


def decode_speed(lines: list[bytes], repeats: int = 5) -> dict[str, Any]:
    """us per event for each path over ``lines``, and per event type for the two parse paths."""
    for line in lines[:1000]:  # a wrong answer makes every figure meaningless
        new, old = parse_event(line), parse_event_reference(line)
        assert type(new) is type(old) and new == old, line
    groups = {"all": lines}
    for line in lines:
        groups.setdefault(_kind(line), []).append(line)
    gc.collect()
    runs: dict[str, dict[str, list[float]]] = {group: {} for group in groups}
    for _ in range(repeats):
        for group, members in groups.items():
            paths = _PATHS if group == "all" else dict(list(_PATHS.items())[:2])
            for name, us in _us_per_line(paths, members).items():
                runs[group].setdefault(name, []).append(us)
    result: dict[str, Any] = {"lines": len(lines), "repeats": repeats}
    for group, timings in runs.items():
        ratios = [
            old / new for old, new in zip(timings["reference"], timings["decoder"], strict=True)
        ]
        result[group] = {
            "events": len(groups[group]),
            **{
                name: {
                    "us_median": round(statistics.median(values), 2),
                    "us_range": [round(min(values), 2), round(max(values), 2)],
                }
                for name, values in timings.items()
            },
            "ratio_median": round(statistics.median(ratios), 2),
            "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
        }
    return result


def table(result: dict[str, Any]) -> str:
    rows = [f"{'events':<16} {'path':<22} {'us/event (median)':>18}  range        ratio"]
    for group, figures in result.items():
        if not isinstance(figures, dict):
            continue
        label = f"{group} ({figures['events']:,})"
        for name in _PATHS:
            if name not in figures:
                continue
            low, high = figures[name]["us_range"]
            ratio = ""
            if name == "decoder":
                r_low, r_high = figures["ratio_range"]
                ratio = f"{figures['ratio_median']}x ({r_low}-{r_high})"
            rows.append(
                f"{label:<16} {name:<22} {figures[name]['us_median']:>18}  "
                f"{low:>5}-{high:<6} {ratio}"
            )
            label = ""
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    lines = events_file(args.events, args.customers).read_bytes().splitlines()[: args.lines]
    print(table(decode_speed(lines, args.repeats)))


if __name__ == "__main__":
    main()
