"""Core throughput of another checkout on the same slice of the 1M-event file (an A/B).

git worktree add /tmp/old <commit>
python -m bench.ab /tmp/old 400000      # that checkout's engine
python -m bench.ab . 400000             # this one, back to back
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

from bench.common import events_file


def main() -> None:
    tree, count = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    sys.path.insert(0, str(tree / "service"))
    for name in [m for m in sys.modules if m.startswith("segstream")]:
        del sys.modules[name]  # bench.common imported this checkout's package
    from segstream.core.engine import Engine
    from segstream.core.rulelang import load_rules

    lines = events_file(1_000_000, 100_000).read_bytes().splitlines()[:count]
    engine = Engine(load_rules(tree / "rules"), clock="event")
    gc.collect()
    gc.disable()  # as `segstream replay` and the core stage run the core
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(lines), 4096):
        engine.process(lines[start : start + 4096])
        engine.drop_pending()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        f"{tree}: {len(lines) / seconds:,.0f} events/s, {cpu:.2f} s CPU, "
        f"{engine.evaluations:,} evaluations"
    )


if __name__ == "__main__":
    main()
