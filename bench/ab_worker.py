"""One worker's throughput on N synthetic events, for the checkout on ``sys.path`` (an A/B).

    git worktree add --detach /tmp/old <commit>
    cd /tmp/old && PYTHONPATH=service:. python /path/to/this/bench/ab_worker.py 40000
    cd . && PYTHONPATH=service:. python bench/ab_worker.py 40000 /tmp/old   # same rules as old

The optional second argument is another checkout whose ``rules/`` the worker runs, so two
runtimes are compared on the same rules. Alternate A and B runs: this machine is noisy.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson

from bench import stream
from segstream.runtime.broker import EmbeddedBroker
from segstream.synth import SynthConfig, generate


def main() -> None:
    n = int(sys.argv[1])
    if len(sys.argv) > 2:
        stream.ROOT = Path(sys.argv[2])  # the rules of that checkout
    config = SynthConfig(customers=10_000, events=n, seed=1)
    lines = [orjson.dumps(e) for e in generate(config)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        result = stream.worker_run(broker.bootstrap, lines, Path(tmp), 1)
        for proc in result.pop("procs"):
            proc.stop()
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
