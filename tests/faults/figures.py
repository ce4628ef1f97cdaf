"""The figures table: one column per run, one row per figure, and a few examples of each
failure so a red run can be read without re-running it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tests.faults.checker import SegmentDiff
from tests.faults.harness import KINDS, Outcome

EXAMPLES = 5


def table(outcomes: Sequence[Outcome]) -> str:
    rows: list[tuple[str, list[str]]] = [
        ("store / workers", [f"{_store(o)} x{o.plan.workers}" for o in outcomes]),
        ("kill mode", [o.plan.mode if o.kills else "-" for o in outcomes]),
        ("SIGKILLs", [str(sum(k.sigkills for k in o.kills)) for o in outcomes]),
        ("faults", [_faults(o) for o in outcomes]),
        ("input lines", [str(o.lines) for o in outcomes]),
        ("customers (replay)", [str(len(o.reference.segments)) for o in outcomes]),
        ("changes read", [str(o.report.changes) for o in outcomes]),
        ("changes lost (seq gaps)", [str(o.report.lost_changes) for o in outcomes]),
        ("  customers with gaps", [str(len(o.report.lost)) for o in outcomes]),
        ("(customer,seq) with 2+ ids", [str(len(o.report.conflicts)) for o in outcomes]),
        ("duplicates, shared id", [str(o.report.duplicates) for o in outcomes]),
        ("chain breaks (from != last to)", [str(len(o.report.chain_breaks)) for o in outcomes]),
        ("final != replay, topic", [_diff(o.topic_vs_replay) for o in outcomes]),
        ("final != replay, worker", [_diff(o.worker_vs_replay) for o in outcomes]),
        ("final topic != worker state", [_diff(o.topic_vs_worker) for o in outcomes]),
        ("final != never-killed, worker", [_diff(o.vs_baseline) for o in outcomes]),
        ("DLQ records", [str(sum(o.dlq.values())) for o in outcomes]),
    ]
    reasons = sorted({r for o in outcomes for r in o.dlq} | {r for o in outcomes for r in _inv(o)})
    for reason in reasons:
        cells = [f"{o.dlq.get(reason, 0)}/{_inv(o).get(reason, 0)}" for o in outcomes]
        rows.append((f"  DLQ {reason} (got/replay)", cells))
    rows += [
        ("invalid lines missing in DLQ", [str(o.dlq_missing) for o in outcomes]),
        ("seconds", [f"{o.seconds:.0f}" for o in outcomes]),
        ("verdict", ["ok" if o.ok else "FAIL" for o in outcomes]),
    ]
    names = [o.plan.name for o in outcomes]
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(n), *(len(cells[i]) for _, cells in rows)) + 2 for i, n in enumerate(names)]
    out = ["".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols, strict=True))]
    out += [
        label.ljust(width) + "".join(v.rjust(c) for v, c in zip(cells, cols, strict=True))
        for label, cells in rows
    ]
    out.append(f"reference: {outcomes[0].reference.mode}" if outcomes else "no runs")
    return "\n".join(out)


def details(outcome: Outcome) -> str:
    """Kill points and a few examples of every failing category."""
    o, r = outcome, outcome.report
    lines = [f"[{o.plan.name}] faults (fed lines, slot, mode, s):"]
    lines += [f"  {k.fed:>7} slot {k.slot:>2} {k.mode:<10} {k.seconds:6.1f}s" for k in o.kills]
    lines += [f"  {note}" for note in o.notes]
    lines += _examples("seq gaps (customer: missing seqs)", list(r.lost.items()))
    lines += _examples("(customer, seq) with 2+ ids", list(r.conflicts.items()))
    lines += _examples("chain breaks (customer, family, seq)", r.chain_breaks)
    for label, diff in (
        ("final != replay, topic", o.topic_vs_replay),
        ("final != replay, worker", o.worker_vs_replay),
        ("final topic != worker state", o.topic_vs_worker),
        ("final != never-killed, worker", o.vs_baseline),
    ):
        if diff is not None and diff.pairs:
            lines.append(f"  {label} by family: {diff.by_family()}")
            lines += _examples(
                f"{label} ((customer, family): got, want)", list(diff.differ.items())
            )
    return "\n".join(lines)


def _examples(label: str, items: Sequence[Any]) -> list[str]:
    if not items:
        return []
    shown = ", ".join(map(str, items[:EXAMPLES]))
    more = f" ... (+{len(items) - EXAMPLES})" if len(items) > EXAMPLES else ""
    return [f"  {label}: {shown}{more}"]


def _diff(diff: SegmentDiff | None) -> str:
    return "-" if diff is None else f"{diff.pairs} ({diff.customers} cust)"


def _faults(outcome: Outcome) -> str:
    """Faults by kind, e.g. ``kill2 rules1 pause1``; ``-`` for none."""
    kinds = Counter(
        k.mode.split()[0] if k.mode.split()[0] in KINDS else "kill" for k in outcome.kills
    )
    return " ".join(f"{kind}{n}" for kind, n in sorted(kinds.items())) or "-"


def _store(outcome: Outcome) -> str:
    return outcome.plan.store.removesuffix("://")


def _inv(outcome: Outcome) -> dict[str, int]:
    return dict(outcome.reference.invalid)
