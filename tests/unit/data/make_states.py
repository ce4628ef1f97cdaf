"""Write stored customer states as a release wrote them, for tests/unit/test_state_formats.py.

Run it with that release's ``service/`` on the path (``git archive <commit> service rules
samples | tar -x -C DIR``), from any directory:

    PYTHONPATH=DIR/service python tests/unit/data/make_states.py DIR NAME

It replays DIR/samples/events.jsonl through that release's engine (event clock, one
partition), picks customers so that every stored field is non-empty in at least one, and
writes ``NAME.jsonl`` (each line: the exact bytes ``dump_state`` wrote) and
``NAME.fields.json`` (each state's fields as that release held them in memory). Imports only
what every release since format 1 has.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from segstream.core.engine import Engine
from segstream.core.rulelang import load_rules
from segstream.core.state import CustomerState, dump_state

PER_FIELD = 3  # customers picked for each field they fill
FIRST = 10  # plus the first customers by id, whatever they hold


def fields(state: CustomerState) -> dict[str, Any]:
    """A state's stored fields in JSON terms: decimals as text, sets sorted, tuples as lists."""
    out: dict[str, Any] = {}
    for slot in sorted(type(state).__slots__):
        if slot in _NOT_STATE or not hasattr(state, slot):
            continue
        # the timeline is held flat since issue 15 (slot ``transitions``); its entries as
        # ``state.timeline`` gives them are what earlier releases held
        # likewise the quantile scores (slot ``ranked``), given by ``state.quantiles``
        name = {"transitions": "timeline", "ranked": "quantiles"}.get(slot, slot)
        value = getattr(state, name)
        out[name] = orjson.loads(orjson.dumps(value, default=_plain))
    return out


# slots that are not stored: the limit counts for a metric, the window index (derived)
_NOT_STATE = ("limit_hits", "windowed")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):  # (an empty one is the shared frozenset)
        return sorted(value)
    raise TypeError(type(value))


def main(release: Path, name: str) -> None:
    engine = Engine(load_rules(release / "rules"), clock="event")
    lines = (release / "samples" / "events.jsonl").read_bytes().splitlines()
    for start in range(0, len(lines), 500):
        engine.process(lines[start : start + 500])
    engine.refresh_population()
    states = [engine.store[c] for c in sorted(engine.store)]
    picked = {st.customer_id: st for st in states[:FIRST]}
    for field in fields(states[0]):
        filled = [st for st in states if fields(st)[field] not in (None, 0, "0", [], {})]
        picked.update((st.customer_id, st) for st in filled[:PER_FIELD])
    chosen = [picked[c] for c in sorted(picked)]
    out = Path(__file__).parent
    (out / f"{name}.jsonl").write_bytes(b"".join(dump_state(st) + b"\n" for st in chosen))
    expected = [fields(st) for st in chosen]
    (out / f"{name}.fields.json").write_bytes(orjson.dumps(expected, option=orjson.OPT_INDENT_2))
    print(f"{len(chosen)} states of {len(states)} written to {out}/{name}.*")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
