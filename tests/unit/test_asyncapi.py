"""docs/asyncapi.yaml is what the models say, covers every topic, and the official parser
accepts it (node + @asyncapi/parser, installed by `make tools` into tools/asyncapi)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import yaml

from segstream import asyncapi
from segstream.runtime.handler import cloudevent_headers, dlq_headers
from segstream.runtime.settings import Settings
from segstream.runtime.topics import changelog_topic, wanted_topics

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "tools" / "asyncapi" / "check.mjs"


def committed() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(asyncapi.DOCUMENT.read_text())  # type: ignore[no-any-return]


def test_the_committed_document_is_the_generated_one() -> None:
    assert asyncapi.DOCUMENT.read_text() == asyncapi.render(), (
        "docs/asyncapi.yaml is stale: run `make asyncapi` (python -m segstream.asyncapi)"
    )
    assert "&id0" not in asyncapi.render()  # no YAML anchors: readable without resolving


def test_every_topic_the_worker_creates_is_a_channel() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    channels = committed()["channels"].values()
    addresses = {c["address"].replace("{app_id}", settings.app_id) for c in channels}
    assert addresses == set(wanted_topics(settings))
    assert changelog_topic(settings) in addresses
    assert "segstream-population" not in addresses  # retired


def test_the_schemas_carry_erasure_and_the_wire_format() -> None:
    schemas = committed()["components"]["schemas"]
    assert schemas["ProfileEvent"]["properties"]["erase"]["type"] == "boolean"
    assert "erasure" in schemas["Cause"]["properties"]["kind"]["enum"]
    assert "from" in schemas["SegmentChange"]["required"]
    for name in ("OrderEvent", "SupportEvent", "SurveyEvent", "ProfileEvent"):
        assert "type" in schemas[name]["required"]
        kinds = {s["type"] for s in schemas[name]["properties"]["occurred_at"]["anyOf"]}
        assert kinds == {"string", "integer"}


def test_the_documented_headers_are_the_ones_sent() -> None:
    messages = committed()["components"]["messages"]
    change = {"event_id": "e", "customer_id": "c", "change": "entered", "at": "t"}
    sent = {name for name, _ in cloudevent_headers(change, "urn:x")}  # type: ignore[arg-type]
    assert sent == set(messages["SegmentChange"]["headers"]["properties"])
    record = SimpleNamespace(headers=[], topic="orders", partition=0, offset=1)
    sent = {name for name, _ in dlq_headers(record, "bad_json", "m")}  # type: ignore[arg-type]
    assert sent == set(messages["RejectedEvent"]["headers"]["properties"])


def test_the_official_asyncapi_parser_accepts_it() -> None:
    node = shutil.which("node")
    assert node, "node is missing: `make tools` installs it"
    assert (CHECKER.parent / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "@asyncapi/parser is missing: `make tools` runs npm ci in tools/asyncapi"
    )
    run = subprocess.run(
        [node, str(CHECKER), str(asyncapi.DOCUMENT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result == {"ok": True, "asyncapi": "3.0.0", "channels": 10}


def test_the_parser_check_fails_on_an_invalid_document(tmp_path: Path) -> None:
    broken = committed()
    del broken["info"]["version"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    node = shutil.which("node")
    assert node
    run = subprocess.run(
        [node, str(CHECKER), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 1
    assert '"severity":"error"' in run.stdout
