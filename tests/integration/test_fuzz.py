"""Fast fuzz profile: hostile records on every input topic and hostile rule sets, against one
real worker and ``segstream rules check`` (tests/faults/fuzz.py; ``make soak`` draws more)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.fuzz import FOUND, Fuzzer, fuzz_records, fuzz_rules_check, fuzz_rules_topic
from tests.integration.conftest import Deployment

RECORD_EXAMPLES, TOPIC_EXAMPLES, CHECK_EXAMPLES = 15, 8, 60


@pytest.fixture(scope="module")
def fuzzer(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    dep = Deployment(kafka_bootstrap, "fuzz-", tmp_path_factory.mktemp("fuzz"))
    dep.prefix = f"fuzz{id(dep) % 10**6}-"
    worker = dep.start_worker()
    worker.wait_ready()
    fuzzer = Fuzzer(dep, worker)
    yield fuzzer
    print(f"\n{fuzzer.figures()}")
    worker.stop()


def test_hostile_records_never_crash_the_worker_and_each_is_accounted_for(
    fuzzer: Fuzzer,
) -> None:
    fuzz_records(fuzzer, RECORD_EXAMPLES)
    assert (fuzzer.crashes, fuzzer.lost) == (0, 0) and fuzzer.records > 0


def test_hostile_rule_sets_on_the_rules_topic_are_run_or_rejected(fuzzer: Fuzzer) -> None:
    fuzz_rules_topic(fuzzer, TOPIC_EXAMPLES)
    assert fuzzer.crashes == 0 and fuzzer.rule_sets == TOPIC_EXAMPLES


def test_rules_check_answers_every_hostile_rule_set_without_a_traceback(fuzzer: Fuzzer) -> None:
    fuzz_rules_check(fuzzer, CHECK_EXAMPLES)
    assert sum(fuzzer.checks.values()) >= CHECK_EXAMPLES


@pytest.mark.parametrize("files", FOUND, ids=[f"found-{n}" for n in range(len(FOUND))])
def test_rules_check_command_answers_what_the_fuzzer_found(
    files: dict[str, str], tmp_path: Path
) -> None:
    """The real command, in a process of its own (hypothesis raises the recursion limit of the
    process it runs in, which hides a RecursionError)."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "rules", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
