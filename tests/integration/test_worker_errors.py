"""`segstream worker` as an operator runs it: every mistake is one log line naming what to
change and a non-zero exit, local mistakes before any network; its log is JSON lines; Ctrl-C
stops it gracefully with one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from segstream.runtime.broker import free_port
from tests.integration.conftest import ROOT, Deployment

UNREACHABLE = "127.0.0.1:1"


def worker(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SEGSTREAM_", "KAFKA_"))}
    return subprocess.run(
        [sys.executable, "-m", "segstream.cli", "worker", *args],
        env=base | {"SEGSTREAM_RULES_DIR": str(ROOT / "rules")} | env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def one_log_line(done: subprocess.CompletedProcess[str], code: int) -> dict[str, Any]:
    lines = done.stderr.splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1, lines
    assert done.stdout == ""
    record: dict[str, Any] = orjson.loads(lines[0])
    assert record["level"] == "error"
    return record


def test_a_setting_of_the_wrong_type() -> None:
    done = worker({"SEGSTREAM_WEB_PORT": "abc", "KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE})
    message = one_log_line(done, 2)["message"]
    assert "SEGSTREAM_WEB_PORT='abc'" in message and "valid integer" in message


def test_a_misspelled_setting_is_refused_with_a_suggestion() -> None:
    done = worker({"SEGSTREAM_WEBPORT": "7000", "KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE})
    message = one_log_line(done, 2)["message"]
    assert "unknown setting SEGSTREAM_WEBPORT; did you mean 'SEGSTREAM_WEB_PORT'?" in message


def test_an_unknown_key_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "segstream.toml"
    config.write_text("webport = 7000\n")
    env = {"SEGSTREAM_CONFIG_FILE": str(config), "KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE}
    message = one_log_line(worker(env), 2)["message"]
    assert "unknown key 'webport'" in message and "did you mean 'web_port'" in message
    env["SEGSTREAM_CONFIG_FILE"] = str(tmp_path / "missing.toml")
    assert "No such file" in one_log_line(worker(env), 2)["message"]


def test_the_rules_are_checked_before_the_network(tmp_path: Path) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE, "SEGSTREAM_BROKER_WAIT_SECONDS": "30"}
    started = time.monotonic()
    missing = one_log_line(worker(env | {"SEGSTREAM_RULES_DIR": str(tmp_path / "no")}), 2)
    assert "SEGSTREAM_RULES_DIR" in missing["message"] and "no such file" in missing["message"]
    (tmp_path / "bad.yaml").write_text('version: 1\nflags:\n  x: "recency_dayz > 3"\n')
    broken = one_log_line(worker(env | {"SEGSTREAM_RULES_DIR": str(tmp_path)}), 2)
    assert f"{tmp_path / 'bad.yaml'}:3:" in broken["message"]
    assert "did you mean 'recency_days'" in broken["message"]
    assert time.monotonic() - started < 30  # no broker was waited for


def test_an_unreachable_cluster_is_retried_for_a_bounded_time() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE, "SEGSTREAM_BROKER_WAIT_SECONDS": "0"}
    message = one_log_line(worker(env), 1)["message"]
    assert f"cannot reach the Kafka cluster at {UNREACHABLE}" in message
    started = time.monotonic()
    done = worker(env | {"SEGSTREAM_BROKER_WAIT_SECONDS": "2"})
    assert done.returncode == 1 and time.monotonic() - started >= 2
    levels = [orjson.loads(line)["level"] for line in done.stderr.splitlines()]
    assert levels == ["warning", "error"]  # "retrying", then the verdict


def test_the_http_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"SEGSTREAM_WEB_PORT": str(port), "KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE}
        message = one_log_line(worker(env), 2)["message"]
    assert f"127.0.0.1:{port}" in message and "SEGSTREAM_WEB_PORT" in message


def test_other_local_mistakes(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    env = {"KAFKA_BOOTSTRAP_SERVERS": UNREACHABLE, "SEGSTREAM_DATA_DIR": str(tmp_path / "data")}
    assert "SEGSTREAM_DATA_DIR" in one_log_line(worker(env), 2)["message"]
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in one_log_line(worker({}), 2)["message"]
    done = worker({"SEGSTREAM_LOG_FORMAT": "xml"})
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "segstream worker: SEGSTREAM_LOG_FORMAT='xml': use json or console"
    ]


# the worker with faust-streaming's version lookup answering an older release
OLDER_FAUST = """
import sys
from segstream.runtime import faust_compat
real = faust_compat.installed_version
faust_compat.installed_version = lambda p: "0.15.1" if p == "faust-streaming" else real(p)
from segstream.cli import main
sys.exit(main(["worker"]))
"""


def test_an_unsupported_faust_stops_the_worker_before_anything_else() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SEGSTREAM_", "KAFKA_"))}
    done = subprocess.run(
        [sys.executable, "-c", OLDER_FAUST],
        env=base | {"SEGSTREAM_WEB_PORT": "not checked yet"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    message = one_log_line(done, 2)["message"]
    assert "faust-streaming 0.15.1 is not supported (>=0.15.3,<0.16)" in message


def test_console_format_on_request() -> None:
    done = worker({"SEGSTREAM_LOG_FORMAT": "console", "SEGSTREAM_WEB_PORT": "x"})
    assert done.returncode == 2
    assert " ERROR segstream.main: invalid configuration: SEGSTREAM_WEB_PORT='x'" in done.stderr


def test_the_log_is_json_lines_with_the_workers_context(deployment: Deployment) -> None:
    running = deployment.start_worker()
    running.wait_ready()
    running.stop()
    assert running.proc.returncode == 0
    records = [orjson.loads(line) for line in running.log.read_text().splitlines()]
    assert records
    for record in records:
        assert {"level", "logger", "message", "time"} <= set(record), record
    loggers = {record["logger"].split(".")[0] for record in records}
    assert {"segstream", "faust"} <= loggers  # faust's own records, same formatter
    ready = next(r for r in records if r["message"].startswith("ready: partitions"))
    assert ready["partitions"] == [0, 1, 2, 3] and ready["rules_version"]
    assert ready["worker"].endswith(f":{running.url.rsplit(':', 1)[1]}")


def run_then_interrupt(
    args: list[str], env: dict[str, str], ready: str, tmp_path: Path, timeout: float = 60
) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SEGSTREAM_", "KAFKA_"))}
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segstream.cli", "worker", *args],
            env=base | env,
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while ready not in out.read_text() + err.read_text():
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal sends it to the whole group
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, out.read_text(), err.read_text()


def test_ctrl_c_stops_the_worker_with_one_line(deployment: Deployment, tmp_path: Path) -> None:
    env = deployment.env(web_port=str(free_port()), data_dir=str(tmp_path / "data"))
    code, out, err = run_then_interrupt([], env, "ready: partitions", tmp_path)
    assert code == 0, err[-3000:]
    assert out == "" and "-INT-" not in err and "Traceback" not in err
    stops = [line for line in err.splitlines() if "interrupted" in line]
    assert len(stops) == 1 and orjson.loads(stops[0])["message"] == "interrupted (SIGINT): stopping"


def test_the_demo_reads_as_text_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {
        "SEGSTREAM_WEB_PORT": str(free_port()),
        "SEGSTREAM_RULES_DIR": str(ROOT / "rules"),
        "SEGSTREAM_DATA_DIR": str(tmp_path / "data"),
        "SEGSTREAM_DEMO_EVENTS_PER_SECOND": "2000",
    }
    code, out, err = run_then_interrupt(["--demo"], env, " -> ", tmp_path, timeout=90)
    assert code == 0, err[-3000:]
    changes = [line for line in out.splitlines() if " -> " in line]
    assert changes and all("None" not in line and "False" not in line for line in changes)
    assert "-INT-" not in err and "Traceback" not in err and "\x1b" not in out + err
    assert sum("interrupted (SIGINT): stopping" in line for line in err.splitlines()) == 1
