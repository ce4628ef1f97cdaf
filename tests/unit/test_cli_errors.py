"""Every mistake with the offline commands is one line on stderr and a non-zero exit code,
run as a user runs them (a subprocess); and their human output has no Python reprs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.factories import ROOT
from tests.unit.test_cli import SAMPLE, segstream


def assert_one_line(
    done: subprocess.CompletedProcess[str], *fragments: str, code: int | None = None
) -> None:
    lines = done.stderr.splitlines()
    assert done.returncode != 0, done.stderr
    if code is not None:
        assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def usage_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """argparse's own refusal: usage, then one ``error:`` line (exit code 2)."""
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert "error:" in last
    for fragment in fragments:
        assert fragment in last, last


def test_explain_of_a_missing_file() -> None:
    done = segstream("explain", "C1", "--events", "nope.jsonl")
    assert_one_line(done, "nope.jsonl", "No such file", code=2)


def test_explain_and_replay_of_a_directory() -> None:
    assert_one_line(segstream("explain", "C1", "--events", "samples"), "is a directory")
    assert_one_line(segstream("replay", "samples"), "is a directory")


def test_replay_of_a_missing_file() -> None:
    assert_one_line(segstream("replay", "nope.jsonl"), "nope.jsonl", "No such file")


@pytest.mark.parametrize("count", ["0", "-5"])
def test_generate_needs_customers(tmp_path: Path, count: str) -> None:
    done = segstream("generate", "--customers", count, "--out", str(tmp_path / "g.jsonl"))
    usage_line(done, "--customers", "at least 1")


def test_generate_needs_events(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    usage_line(segstream("generate", "--events", "-3", "--out", str(out)), "--events")
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--invalid-rate", "--duplicate-rate"])
def test_generate_rates_are_fractions(tmp_path: Path, flag: str) -> None:
    usage_line(segstream("generate", flag, "1.5", "--out", str(tmp_path / "g")), flag)


def test_out_into_a_missing_directory(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "out.jsonl")
    assert_one_line(segstream("generate", "--out", missing), "--out", "No such file")
    done = segstream("replay", str(SAMPLE), "--no-progress", "--out", missing)
    assert_one_line(done, "--out", "No such file")
    done = segstream("replay", str(SAMPLE), "--no-progress", "--state-out", missing)
    assert_one_line(done, "--state-out", "No such file")


def test_out_is_a_directory_or_an_input(tmp_path: Path) -> None:
    assert_one_line(segstream("generate", "--out", str(tmp_path)), "is a directory")
    copy = tmp_path / "events.jsonl"
    copy.write_bytes(SAMPLE.read_bytes())
    done = segstream("replay", str(copy), "--out", str(copy))
    assert_one_line(done, "also an input")
    assert copy.read_bytes() == SAMPLE.read_bytes()


def test_as_of_garbage() -> None:
    usage_line(segstream("replay", str(SAMPLE), "--as-of", "garbage"), "--as-of", "garbage")
    usage_line(segstream("explain", "C1", "--events", str(SAMPLE), "--as-of", "2026-01-01"))


def test_partitions_must_be_positive() -> None:
    usage_line(segstream("replay", str(SAMPLE), "--partitions", "0"), "--partitions")
    usage_line(segstream("explain", "C1", "--events", str(SAMPLE), "--partitions", "x"))


def test_partitions_from_the_environment_is_checked() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "replay", str(SAMPLE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"SEGSTREAM_PARTITIONS": "x"},
        check=False,
    )
    assert_one_line(done, "SEGSTREAM_PARTITIONS='x'", code=2)


def test_currency_is_an_iso_code() -> None:
    usage_line(segstream("replay", str(SAMPLE), "--currency", "usd"), "--currency")


def test_rules_pointing_at_a_file_that_is_no_rule_set() -> None:
    done = segstream("replay", str(SAMPLE), "--rules", str(SAMPLE))
    assert_one_line(done, f"{SAMPLE}:1:1")


def test_rules_check_of_an_empty_directory_and_file(tmp_path: Path) -> None:
    assert_one_line(segstream("rules", "check", str(tmp_path)), "no *.yaml rule files")
    (tmp_path / "empty.yaml").write_text("")
    assert_one_line(segstream("rules", "check", str(tmp_path / "empty.yaml")), "no family")
    assert_one_line(segstream("rules", "check", str(tmp_path / "nope")), "no such file")


def test_rules_publish_to_an_unreachable_cluster() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "rules", "publish", "rules"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
        | {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        timeout=60,
        check=False,
    )
    assert_one_line(done, "cannot connect to Kafka (PLAINTEXT): 127.0.0.1:1", code=1)


def test_rules_publish_with_a_misspelled_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "rules", "publish", "rules"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "SEGSTREAM_TOPIC_RULE": "x"},
        timeout=60,
        check=False,
    )
    assert_one_line(done, "SEGSTREAM_TOPIC_RULE", "did you mean 'SEGSTREAM_TOPIC_RULES'", code=2)


def test_replay_into_a_pipe_closed_early() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "segstream.cli", "replay", str(SAMPLE), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_replay_says_how_many_invalid_lines_it_did_not_list(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n" * 25)
    done = segstream("replay", str(bad), "--out", str(tmp_path / "c.jsonl"))
    listed = [line for line in done.stderr.splitlines() if line.startswith(f"{bad}:")]
    assert done.returncode == 0 and len(listed) == 20
    assert "5 more invalid lines not listed" in done.stderr


def test_explain_lists_only_the_customers_invalid_lines(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_bytes(
        SAMPLE.read_bytes() + b'{"event_id": "x1", "type": "order", "customer_id": "C0000030"}\n'
    )
    done = segstream("explain", "C0000030", "--events", str(events))
    assert done.returncode == 0, done.stderr
    listed = [line for line in done.stderr.splitlines() if line.startswith(f"{events}:")]
    assert len(listed) == 1 and listed[0].startswith(f"{events}:3064:")
    assert "23 invalid lines of other or no customers not listed" in done.stderr


def test_human_output_has_no_python_reprs(tmp_path: Path) -> None:
    done = segstream("replay", str(SAMPLE), "--out", str(tmp_path / "c.jsonl"))
    transitions = done.stdout.split("transitions", 1)[1].split("invalid events", 1)[0]
    for repr_ in ("None", "False", "True"):
        assert repr_ not in transitions
    assert " - -> " in transitions and " out -> in " in transitions
    explained = segstream("explain", "C0000030", "--events", str(SAMPLE)).stdout
    # rule conditions may say `is not None`; values and segments never do
    assert not re.search(r"^(\s+\w+\s+|\w+: )(None|False|True)\b", explained, re.M)
    assert re.search(r"^satisfaction: none$", explained, re.M)
    assert re.search(r"^unhappy: out ", explained, re.M)


def test_no_terminal_escape_codes_when_not_a_terminal(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as handle:  # over the progress bar's threshold (8 MiB)
        line = b'{"pad": "' + b"x" * 1000 + b'"}\n'
        handle.write(line * 9000)
    done = subprocess.run(  # bytes: text mode would turn the bar's \r into \n
        [sys.executable, "-m", "segstream.cli", "replay", str(big), "--out", str(tmp_path / "c")],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0
    assert b"\x1b" not in done.stderr and b"\r" not in done.stderr
