"""Bad input for a real worker, drawn by hypothesis: raw records for every input topic, and rule
sets (YAML text and expressions) for ``segstream rules check`` and the ``segment-rules`` topic.

What must hold, whatever the input:

- records: the worker never crashes (the process lives, no traceback in its log, ``/readyz``
  200) and accounts for every record: ``consumed + tombstones - rerouted == sent``, each record
  rejected exactly as the engine's own parser rejects it offline (DLQ by reason), and the DLQ
  topic holds one record per rejection;
- rule sets: ``rules check`` answers 0 or 2 and never raises; a worker reading the set from
  ``segment-rules`` either runs it or counts it rejected, and stays up.

``Fuzzer`` holds the running totals the figures print (inputs tried, crashes, events lost, DLQ
by reason); tests/integration/test_fuzz.py runs it fast, ``make soak`` with more examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import string
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from segstream import cli
from segstream.core.contracts import Rejection
from segstream.core.engine import Engine
from segstream.core.rulelang import load_rules
from segstream.runtime.rulestopic import newest_valid
from tests.integration.conftest import ROOT, Deployment, WorkerProcess

INPUTS = ("orders", "support", "surveys", "profiles")
TYPES = ("order", "support", "survey", "profile")
HUGE = 600_000  # a huge string, under the producer's 1 MiB request limit
Record = tuple[str, bytes | None, bytes | None]  # (input topic, key, value: None = tombstone)

# -- records -----------------------------------------------------------------------------------

EXTREME_INTS = st.sampled_from(
    [0, -1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), 2**64, 10**30, -(10**30)]
)
EXTREME_FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [1e308, -1e308, 5e-324, -0.0]
)
TIMESTAMPS = st.one_of(
    EXTREME_INTS,
    st.integers(min_value=-(10**16), max_value=10**16),
    EXTREME_FLOATS,
    st.sampled_from(
        [
            "2025-06-01T12:00:00Z",
            "2025-06-01T12:00:00.123456789+14:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2025-13-45T25:61:61Z",
            "2025-06-01",
            "1e20",
            "",
            "now",
        ]
    ),
    st.text(max_size=40),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    EXTREME_INTS,
    st.integers(),
    EXTREME_FLOATS,
    st.text(max_size=30),
    st.just("x" * 5_000),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = {
    "event_id": st.text(max_size=20) | st.just("E-fixed"),
    "customer_id": st.sampled_from(["C1", "C2", "C3", ""])
    | st.text(max_size=12)
    | st.just("C" * 5_000),
    "type": st.sampled_from(TYPES) | st.text(max_size=10),
    "occurred_at": TIMESTAMPS,
    "order_id": st.text(max_size=12),
    "amount": st.sampled_from(["12.50", "-1", "1e400", "NaN", "Infinity", "0"]) | EXTREME_FLOATS,
    "currency": st.sampled_from(["USD", "EUR", "usd", ""]),
    "status": st.sampled_from(["completed", "refunded", "cancelled", "opened", "closed", "?"]),
    "ticket_id": st.text(max_size=12),
    "priority": st.sampled_from(["low", "high", "urgent"]),
    "score": EXTREME_INTS | st.integers(-5, 15),
    "survey_id": st.text(max_size=12),
    "attributes": st.dictionaries(st.text(max_size=12), JSON, max_size=6),
}


@st.composite
def event_like(draw: st.DrawFn) -> bytes:
    """An object with some of an event's fields, each a plausible or a hostile value."""
    names = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=len(FIELDS)))
    body: dict[str, Any] = {name: draw(FIELDS[name] | JSON) for name in sorted(names)}
    body.update(draw(st.dictionaries(st.text(max_size=8), JSON, max_size=2)))
    return _dumps(body)


def _dumps(value: Any) -> bytes:
    """JSON text of anything drawn: integers past 64 bits, and NaN/Infinity as JSON-ish."""
    return json.dumps(value, allow_nan=True).encode(errors="surrogatepass")


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


RAW = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"", b"null", b"true", b"1e999", b"NaN", b'"\\ud800"', b"\xff\xfe{}", b"{}"]),
    st.builds(_nested, st.sampled_from([10, 1_000, 100_000]), st.sampled_from(["list", "dict"])),
    st.builds(lambda n: b'{"type":"order","customer_id":"' + b"x" * n + b'"}', st.just(HUGE)),
    st.builds(lambda n: b'"' + b"y" * n + b'"', st.just(HUGE)),
    JSON.map(_dumps),
)
DAY_2025 = 1_735_689_600_000


@st.composite
def valid_event(draw: st.DrawFn) -> bytes:
    """A valid event of any type (a few customers, times in 2025), one field maybe hostile."""
    kind = draw(st.sampled_from(TYPES))
    n = draw(st.integers(0, 10_000))
    body: dict[str, Any] = {
        "event_id": f"F{n}",
        "customer_id": f"C{n % 7}",
        "type": kind,
        "occurred_at": DAY_2025 + draw(st.integers(0, 364 * 86_400_000)),
    }
    body |= {
        "order": {"order_id": f"O{n % 50}", "amount": draw(st.sampled_from(["9.99", "120"]))},
        "support": {"ticket_id": f"T{n % 20}", "status": "opened", "priority": "low"},
        "survey": {"score": draw(st.integers(0, 10)), "survey_id": f"S{n}"},
        "profile": {"attributes": draw(st.dictionaries(st.text(max_size=6), SCALARS, max_size=3))},
    }[kind]
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(FIELDS)))
        body[name] = draw(FIELDS[name] | JSON)
    return _dumps(body)


VALUES = st.one_of(valid_event(), valid_event(), event_like(), RAW, st.none())  # None: tombstone


@st.composite
def records(draw: st.DrawFn) -> Record:
    value = draw(VALUES)
    key = draw(st.none() | st.binary(max_size=12) | st.sampled_from([b"C1", b"C2", b"C3"]))
    if value is None and key is None:
        key = b"C1"  # Kafka: a tombstone has a key
    return draw(st.sampled_from(INPUTS)), key, value


# -- rule sets ---------------------------------------------------------------------------------

NAMES = [
    "activity_30d",
    "capacity",
    "monetary_total",
    "orders_total",
    "recency_days",
    "frequency",
    "monetary",
    "r",
    "f",
    "m",
    "csi",
    "true",
    "false",
    "null",
    "nope",
    "__class__",
]
TOKENS = [
    *NAMES,
    *"()[]{}.,:+-*/%<>=!",
    " and ",
    " or ",
    " not ",
    " in ",
    " if ",
    " else ",
    "==",
    ">=",
    "**",
    "//",
    "min(",
    "max(",
    "abs(",
    "round(",
    "coalesce(",
    "lambda x: ",
    "__import__('os')",
    "0",
    "1",
    "1e308",
    "10**10**10",
    "9" * 400,
    "'s'",
    "\x00",
    "é",
]
EXPRESSIONS = st.one_of(
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12).map("".join),
    st.text(max_size=60),
    st.integers(1, 3000).map(lambda n: "(" * n + "1" + ")" * n),
    st.integers(1, 3000).map(lambda n: "not " * n + "true"),
    st.integers(1, 500).map(lambda n: " + ".join(["activity_30d"] * n) + " > 1"),
)
YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    EXTREME_INTS,
    EXTREME_FLOATS,
    st.text(max_size=20),
    EXPRESSIONS,
)
IDENT = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)


@st.composite
def rule_document(draw: st.DrawFn) -> dict[str, Any]:
    """A rule file's shape with hostile contents: families, flags, scores, windows."""
    doc: dict[str, Any] = {"version": draw(st.sampled_from([1, 2, "1", None]) | YAML_SCALARS)}
    if draw(st.booleans()):
        doc["flags"] = draw(st.dictionaries(IDENT, EXPRESSIONS | YAML_SCALARS, max_size=3))
    if draw(st.booleans()):
        segment = st.fixed_dictionaries({"name": IDENT | YAML_SCALARS, "when": EXPRESSIONS})
        doc["families"] = draw(
            st.dictionaries(IDENT, st.lists(segment, max_size=3) | YAML_SCALARS, max_size=2)
        )
    if draw(st.booleans()):
        doc["windows"] = draw(st.dictionaries(IDENT, EXTREME_INTS | YAML_SCALARS, max_size=2))
    if draw(st.booleans()):
        score = st.fixed_dictionaries(
            {"field": st.sampled_from(NAMES) | YAML_SCALARS},
            optional={
                "bins": st.lists(EXTREME_INTS | st.integers(), max_size=5) | YAML_SCALARS,
                "quantiles": EXTREME_INTS | st.integers(-2, 20) | YAML_SCALARS,
                "better": st.sampled_from(["lower", "higher", "sideways"]),
            },
        )
        doc["scores"] = draw(st.dictionaries(IDENT, score, max_size=2))
    if draw(st.booleans()):
        doc["attributes"] = draw(
            st.dictionaries(
                IDENT,
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["int", "str", "float", "bool", "list"])},
                    optional={"default": YAML_SCALARS},
                ),
                max_size=2,
            )
        )
    return doc


def _yaml_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, allow_nan=True)  # JSON is YAML


YAML_TEXT = st.one_of(
    rule_document().map(_yaml_text),
    st.text(max_size=300),
    st.sampled_from(
        [
            "a: &x [1]\nb: *x\n",
            "!!python/object/apply:os.system ['true']\n",
            "[" * 5_000,
            "flags:\n  f: '" + "x" * 200_000 + "'\n",
            "version: 1\nflags:\n  f: " + "(" * 2_000 + "true" + ")" * 2_000 + "\n",
            "\t\x00\x7f",
        ]
    ),
)
DEFAULT_FILES = {p.name: p.read_text() for p in sorted((ROOT / "rules").glob("*.yaml"))}
ONE_FLAG = st.builds(
    lambda name, when: f"version: 1\nflags:\n  {name}: {json.dumps(when)}\n", IDENT, EXPRESSIONS
)
RULE_FILES = st.one_of(
    st.dictionaries(
        st.sampled_from(["a.yaml", "b.yml", "c.txt", "../up.yaml", ".hidden.yaml"]),
        YAML_TEXT,
        min_size=1,
        max_size=3,
    ),
    ONE_FLAG.map(lambda text: DEFAULT_FILES | {"zz.yaml": text}),  # the default set plus a flag
)

# -- the checks --------------------------------------------------------------------------------


@dataclass
class Fuzzer:
    """One worker under fuzz and the running totals."""

    dep: Deployment
    worker: WorkerProcess
    records: int = 0
    rule_sets: int = 0
    crashes: int = 0
    lost: int = 0
    tombstones: int = 0
    events: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    rules_accepted: int = 0
    rules_rejected: int = 0
    checks: Counter[int] = field(default_factory=Counter)  # rules check exit codes

    def send_records(self, batch: list[Record]) -> None:
        before = metrics(self.worker)
        asyncio.run(_send(self.dep, [(self.dep.topic(t), k, v) for t, k, v in batch]))
        self.records += len(batch)
        want = expected(batch)
        deadline = time.monotonic() + 60
        after = before
        while time.monotonic() < deadline:
            self.alive()
            after = metrics(self.worker)
            if _accounted(after) - _accounted(before) >= len(batch):
                break
            time.sleep(0.1)
        got = _delta(after, before)
        consumed = got["consumed"] + got["tombstones"] - got["rerouted"]
        self.lost += max(len(batch) - int(consumed), 0)
        self.tombstones += int(got["tombstones"])
        self.events += int(got["consumed"] - got["rerouted"] - sum(got["invalid"].values()))
        self.dlq.update(got["invalid"])
        assert consumed == len(batch), f"sent {len(batch)}, accounted for {consumed}: {got}"
        assert got["invalid"] == want, f"DLQ by reason {got['invalid']} != parser's {want}"

    def check_rules(self, files: dict[str, str]) -> int:
        """``segstream rules check`` on the files, in this process: 0 or 2, never a raise."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in files.items():
                (Path(tmp) / Path(name).name).write_text(text)
            err = io.StringIO()
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = cli.main(["rules", "check", tmp])
            except SystemExit as exc:
                code = int(exc.code or 0)
        self.checks[code] += 1
        assert code in (0, 2), f"rules check exited {code}: {err.getvalue()[-2000:]}"
        return code

    def publish_rules(self, files: dict[str, str]) -> None:
        """Send a rules message as anyone could: a worker runs it (a valid set of another
        version) or counts it rejected; either way it stays up."""
        before = metrics(self.worker)
        value = orjson.dumps({"version": "fuzz", "files": files})
        verdict = newest_valid([(0, value)]).rules
        topic = self.dep.topic("segment-rules")
        asyncio.run(_send(self.dep, [(topic, b"fuzz", value)], partition=0))
        self.rule_sets += 1
        if verdict is not None and verdict.version == before["rules_version"]:
            self.rules_accepted += 1  # the set it runs already: nothing to see
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.alive()
            now = metrics(self.worker)
            if verdict is None and now["rules_rejected"] > before["rules_rejected"]:
                self.rules_rejected += 1
                return
            if verdict is not None and now["rules_version"] == verdict.version:
                self.rules_accepted += 1
                return
            time.sleep(0.1)
        raise AssertionError(f"the worker neither ran nor rejected {files!r:.2000}")

    def alive(self) -> None:
        if self.worker.proc.poll() is not None or "Traceback" in self.worker.log.read_text():
            self.crashes += 1
            raise AssertionError(f"worker crashed: {self.worker.log.read_text()[-3000:]}")

    def ready(self) -> None:
        self.alive()
        assert self.worker.get("/readyz").status_code == 200, self.worker.get("/readyz").text

    def figures(self) -> str:
        rows = [
            ("records tried", self.records),
            ("  events (valid)", self.events),
            ("  tombstones", self.tombstones),
            ("  DLQ", sum(self.dlq.values())),
            ("records unaccounted (lost)", self.lost),
            ("rule sets tried (check)", sum(self.checks.values())),
            ("  check exit 0 / 2", f"{self.checks[0]} / {self.checks[2]}"),
            ("rule sets sent to the worker", self.rule_sets),
            ("  run / rejected", f"{self.rules_accepted} / {self.rules_rejected}"),
            ("worker crashes", self.crashes),
        ]
        rows += [(f"  DLQ {reason}", n) for reason, n in sorted(self.dlq.items())]
        return "\n".join(f"{label:<32}{value!s:>12}" for label, value in rows)


def expected(batch: list[Record]) -> Counter[str]:
    """DLQ reasons as the engine's parser gives them offline (the worker's wall clock bounds
    future times: none of the drawn times is near that bound)."""
    engine = Engine(load_rules(ROOT / "rules"))
    now = int(time.time() * 1000)
    reasons: Counter[str] = Counter()
    for _, _, value in batch:
        if value is None:
            continue
        parsed = engine.parse(value, now)
        if isinstance(parsed, Rejection):
            reasons[parsed.reason.value] += 1
    return reasons


def metrics(worker: WorkerProcess) -> dict[str, Any]:
    out: dict[str, Any] = {
        "consumed": 0.0,
        "tombstones": 0.0,
        "rerouted": 0.0,
        "rules_rejected": 0.0,
        "invalid": Counter(),
        "rules_version": None,
    }
    for line in httpx.get(worker.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        base = name.split("{", 1)[0]
        if base == "segstream_events_consumed_total":
            out["consumed"] += float(value)
        elif base == "segstream_tombstones_total":
            out["tombstones"] += float(value)
        elif base == "segstream_events_rerouted_total":
            out["rerouted"] += float(value)
        elif base == "segstream_rules_rejected_total":
            out["rules_rejected"] += float(value)
        elif base == "segstream_events_invalid_total":
            reason = _label(name, "reason")
            out["invalid"][reason] += int(float(value))
        elif base == "segstream_rules_info":
            out["rules_version"] = _label(name, "rules_version")
    return out


def _label(sample: str, label: str) -> str:
    return sample.split(f'{label}="', 1)[1].split('"', 1)[0]


def _accounted(m: dict[str, Any]) -> float:
    return float(m["consumed"] + m["tombstones"] - m["rerouted"])


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    out = {k: after[k] - before[k] for k in ("consumed", "tombstones", "rerouted")}
    out["invalid"] = after["invalid"] - before["invalid"]
    return out


async def _send(
    dep: Deployment,
    batch: list[tuple[str, bytes | None, bytes | None]],
    partition: int | None = None,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=dep.bootstrap,
        enable_idempotence=False,
        max_request_size=2 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k, partition=partition) for t, k, v in batch]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _examples(found: list[dict[str, str]]) -> Any:
    def apply(test: Any) -> Any:
        for files in found:
            test = example(files=files)(test)
        return test

    return apply


def _settings(examples: int, seed: int) -> Any:
    def apply(test: Any) -> Any:
        configured = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )(test)
        return hypothesis_seed(seed)(configured)

    return apply


def fuzz_records(fuzzer: Fuzzer, examples: int, seed: int = 0) -> None:
    """Batches of hostile records to the worker; each batch accounted for before the next."""

    @_settings(examples, seed)
    @given(batch=st.lists(records(), min_size=1, max_size=40))
    def one(batch: list[Record]) -> None:
        fuzzer.send_records(batch)

    one()
    fuzzer.ready()


def fuzz_rules_topic(fuzzer: Fuzzer, examples: int, seed: int = 0) -> None:
    """Hostile rule sets on ``segment-rules``: the worker runs or rejects each, and stays up."""

    @_settings(examples, seed)
    @given(files=RULE_FILES)
    def one(files: dict[str, str]) -> None:
        fuzzer.publish_rules(files)

    one()
    fuzzer.ready()


#: Found by this fuzzer: each once made ``rules check`` raise instead of answering 2.
FOUND = [
    DEFAULT_FILES | {"zz.yaml": 'version: 1\nflags:\n  deep: "' + "not " * 490 + 'true"\n'},
]


def fuzz_rules_check(fuzzer: Fuzzer, examples: int, seed: int = 0) -> None:
    """Hostile rule files through ``segstream rules check``: exit 0 or 2, never a traceback."""

    @_settings(examples, seed)
    @given(files=RULE_FILES)
    @_examples(FOUND)
    def one(files: dict[str, str]) -> None:
        fuzzer.check_rules(files)

    one()
