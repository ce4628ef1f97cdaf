"""Core throughput of a checkout's engine on given rules (an A/B of engines or of rule sets).

    python bench/ab_rules.py /tmp/old/service /tmp/old/rules   # the old engine, old rules
    python bench/ab_rules.py service /tmp/old/rules            # this engine, the same rules
    python bench/ab_rules.py service rules                     # this engine, today's rules

60,000 synthetic events (10,000 customers, seed 1), 8 partitions; prints events/s.
"""

from __future__ import annotations

import gc
import sys
import time


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    import orjson

    from segstream.core.engine import Engine
    from segstream.core.rulelang import load_rules
    from segstream.synth import SynthConfig, generate

    config = SynthConfig(customers=10_000, events=60_000, seed=1)
    lines = [orjson.dumps(e) for e in generate(config)]
    engine = Engine(load_rules(sys.argv[2]), partitions=8)
    gc.collect()
    started = time.perf_counter()
    for start in range(0, len(lines), 2048):
        engine.process(lines[start : start + 2048])
    print(f"{len(lines) / (time.perf_counter() - started):.0f}")


if __name__ == "__main__":
    main()
