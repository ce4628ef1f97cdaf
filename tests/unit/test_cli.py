"""The offline commands, run as a user runs them."""

import subprocess
import sys
from pathlib import Path

import orjson

from segstream.core.contracts import SEGMENT_CHANGE_ADAPTER
from tests.unit.factories import ROOT

SAMPLE = ROOT / "samples" / "events.jsonl"


def segstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segstream.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_replay_writes_changes_state_and_a_summary(tmp_path: Path) -> None:
    out, state = tmp_path / "changes.jsonl", tmp_path / "state.jsonl"
    done = segstream(
        "replay",
        str(SAMPLE),
        "--out",
        str(out),
        "--state-out",
        str(state),
        "--as-of",
        "2026-07-01T00:00:00Z",
    )
    assert done.returncode == 0, done.stderr
    assert "segment sizes:" in done.stdout and "transitions" in done.stdout
    assert "invalid events by reason:" in done.stdout
    assert f"{SAMPLE}:" in done.stderr  # invalid lines are reported with file:line
    changes = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert changes and all(SEGMENT_CHANGE_ADAPTER.validate_python(c) for c in changes)
    rows = [orjson.loads(line) for line in state.read_bytes().splitlines()]
    assert {"customer_id", "state", "segments"} == set(rows[0])
    last_to: dict[tuple[str, str], object] = {}
    for change in changes:
        last_to[(change["customer_id"], change["family"])] = change["to"]
    for row in rows:  # the change stream replays to the final segments
        for family, value in row["segments"].items():
            assert last_to.get((row["customer_id"], family), value if not value else None) == value


def test_replay_is_deterministic(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        assert segstream("replay", str(SAMPLE), "--out", str(path), "--no-progress").returncode == 0
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]


def test_rules_check(tmp_path: Path) -> None:
    ok = segstream("rules", "check", "rules")
    assert ok.returncode == 0 and ok.stdout.startswith("ok ")
    (tmp_path / "bad.yaml").write_text('version: 1\nflags:\n  x: "recency_dayz > 3"\n')
    bad = segstream("rules", "check", str(tmp_path))
    assert bad.returncode == 2
    assert f"{tmp_path / 'bad.yaml'}:3:" in bad.stderr and "recency_days" in bad.stderr


def test_explain() -> None:
    done = segstream("explain", "C0000030", "--events", str(SAMPLE), "--json")
    assert done.returncode == 0, done.stderr
    body = orjson.loads(done.stdout)
    assert body["customer_id"] == "C0000030"
    assert set(body["families"]) == {
        "value",
        "satisfaction",
        "activity_matrix",
        "lifecycle",
        "health",
    }
    held = [t["tier"] for t in body["families"]["value"] if t["holds"]]
    assert body["segments"]["value"] == (held[0] if held else None)
    at_risk = next(t for t in body["families"]["value"] if t["tier"] == "at_risk")
    assert (at_risk["owner"], at_risk["touch"]) == ("customer_success", "high")
    assert body["flags"]["unhappy"]["action"]
    assert segstream("explain", "nobody", "--events", str(SAMPLE)).returncode == 1


def test_rules_check_refuses_yaml_aliases_quickly(tmp_path: Path) -> None:
    """Before, this bomb ran `rules check` for over 30 s and ~0.5 GB, and a self-referencing
    anchor ended in a RecursionError traceback."""
    from tests.unit.test_rulelang import ALIAS_BOMB

    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    (tmp_path / "loop.yaml").write_text("version: 1\nderived: &x {a: *x}\n")
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "rules", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=15,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"{tmp_path / 'bomb.yaml'}:2:4: YAML anchors/aliases are not allowed in rule files",
        f"{tmp_path / 'loop.yaml'}:2:10: YAML anchors/aliases are not allowed in rule files",
    ]


def test_rules_check_reports_a_file_that_is_not_utf8_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b'version: 1\nflags:\n  caf\xe9: "true"\n')
    done = segstream("rules", "check", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{tmp_path / 'latin1.yaml'}:3:6: not UTF-8 text (byte 0xe9); save as UTF-8"
    ]


def test_rules_check_refuses_an_empty_set_and_a_name_defined_twice(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "rules.yaml").write_text("")
    done = segstream("rules", "check", str(empty))
    assert done.returncode == 2 and "defines no family and no flag" in done.stderr
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "a.yaml").write_text("version: 1\nfamilies:\n  vip: [{name: gold, when: 'true'}]\n")
    (twice / "b.yaml").write_text("version: 1\nflags:\n  vip: 'true'\n")
    done = segstream("rules", "check", str(twice))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{twice / 'b.yaml'}:3:3: flag 'vip' is already defined: family at {twice / 'a.yaml'}:3:3"
    ]


def test_replay_counts_events_dated_out_of_range_and_goes_on(tmp_path: Path) -> None:
    """An order dated 9999-12-31T23:59:59-01:00 passed validation, then building its change
    raised OverflowError: replay printed a traceback. Years 0001 and 2300 were accepted, and a
    year-2300 order moved the event clock centuries ahead."""
    good = {
        "event_id": "ok",
        "type": "order",
        "customer_id": "C1",
        "order_id": "o1",
        "occurred_at": "2026-01-05T10:00:00Z",
        "amount": "20.00",
        "status": "completed",
    }
    dated = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2300-01-01T00:00:00Z"]
    bad = [
        good | {"event_id": f"bad{i}", "order_id": f"b{i}", "occurred_at": when}
        for i, when in enumerate(dated)
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(e) for e in [*bad, good]) + b"\n")
    out = tmp_path / "changes.jsonl"

    done = segstream("replay", str(events), "--out", str(out), "--as-of", "2026-02-01T00:00:00Z")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "occurred_at_out_of_range" in done.stdout and "invalid 3" in done.stdout
    changes = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert changes and {c["customer_id"] for c in changes} == {"C1"}
    assert max(c["at"] for c in changes) < "2026-02-02"  # the clock stayed in 2026
