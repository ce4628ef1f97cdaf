"""docs/asyncapi.yaml, generated: every topic the worker reads and writes, as AsyncAPI 3.0.

The payload schemas come from the pydantic contracts (``model_json_schema``), so the document
cannot describe a field the service does not parse. ``python -m segstream.asyncapi`` rewrites
the document; ``--check`` exits 1 when the committed one differs (tests/unit/test_asyncapi.py
does the same and also runs the official AsyncAPI parser on it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from segstream.core.contracts import (
    GroupSnapshot,
    OrderEvent,
    ProfileEvent,
    RejectReason,
    SegmentChange,
    SupportEvent,
    SurveyEvent,
)
from segstream.core.engine import LANE_FORMAT
from segstream.runtime.settings import Settings

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
_REF = "#/components/schemas/{model}"
_KAFKA = {"bindingVersion": "0.5.0"}

#: (model, JSON schema mode, input topic setting or None)
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode, str | None]] = [
    (OrderEvent, "validation", "topic_orders"),
    (SupportEvent, "validation", "topic_support"),
    (SurveyEvent, "validation", "topic_surveys"),
    (ProfileEvent, "validation", "topic_profiles"),
    (SegmentChange, "serialization", None),
    (GroupSnapshot, "serialization", None),
]


def _topic(setting: str) -> str:
    default = Settings.model_fields[setting].default
    assert isinstance(default, str)
    return default


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, mode) for m, mode, _ in _MODELS], ref_template=_REF)
    schemas: dict[str, Any] = dict(sorted(top["$defs"].items()))
    for model, _, _ in _MODELS[:4]:
        # parse_event rejects a message without `type` (missing_type) before the model, whose
        # default only serves Python callers, sees it.
        schema = schemas[model.__name__]
        schema["required"] = ["type", *schema["required"]]
    return schemas


_STRING = {"type": "string"}


def _headers(description: str, names: dict[str, str], *, more: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": {name: {**_STRING, "description": text} for name, text in names.items()},
        "additionalProperties": more,
    }


CLOUDEVENT_HEADERS = {
    "ce_specversion": "CloudEvents version, always 1.0",
    "ce_id": "the change's event_id",
    "ce_source": "SEGSTREAM_SOURCE (default urn:segstream)",
    "ce_type": "segstream.segment.<change>: entered, exited, upgraded or downgraded",
    "ce_subject": "the customer_id",
    "ce_time": "the change's `at` (RFC 3339)",
    "content-type": "application/json",
}

SNAPSHOT_HEADERS = {
    "ce_specversion": "CloudEvents version, always 1.0",
    "ce_id": "the snapshot's event_id",
    "ce_source": "SEGSTREAM_SOURCE (default urn:segstream)",
    "ce_type": "segstream.group.snapshot",
    "ce_subject": "`<group>:<value>`",
    "content-type": "application/json",
}

DLQ_HEADERS = {
    "segstream.error.reason": "the reject reason: " + ", ".join(r.value for r in RejectReason),
    "segstream.error.message": "human-readable reason, at most 1000 characters",
    "segstream.source.topic": "the input topic the message was read from",
    "segstream.source.partition": "its partition (decimal)",
    "segstream.source.offset": "its offset (decimal)",
}

_CUSTOMER_KEY = {
    "type": "string",
    "description": "customer_id (UTF-8); records of one customer share a partition",
}


def _message(name: str, title: str, summary: str, payload: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": extra.pop("content_type", "application/json"),
        **({"headers": extra.pop("headers")} if "headers" in extra else {}),
        "payload": payload,
        "bindings": {"kafka": {"key": extra.pop("key", _CUSTOMER_KEY), **_KAFKA}},
        **extra,
    }


def _messages() -> dict[str, Any]:
    messages = {}
    for model, _, setting in _MODELS[:4]:
        assert setting is not None
        kind = model.model_fields["type"].default
        messages[model.__name__] = _message(
            model.__name__,
            f"{kind} event",
            f"One {kind} event; invalid ones go to segstream-dlq with a reject reason"
            " (docs/contracts.md, Input events).",
            {"$ref": _REF.format(model=model.__name__)},
        )
    messages["SegmentChange"] = _message(
        "SegmentChange",
        "segment change",
        "One membership change; de-duplicate on event_id (docs/contracts.md).",
        {"$ref": _REF.format(model="SegmentChange")},
        headers=_headers("CloudEvents 1.0 binary mode", CLOUDEVENT_HEADERS),
    )
    messages["GroupSnapshot"] = _message(
        "GroupSnapshot",
        "group snapshot",
        "A closed quarter's figures of one group value; de-duplicate on event_id"
        " (docs/contracts.md, Group snapshots).",
        {"$ref": _REF.format(model="GroupSnapshot")},
        headers=_headers("CloudEvents 1.0 binary mode", SNAPSHOT_HEADERS),
        key={**_STRING, "description": "`<group>:<value>`"},
    )
    messages["GroupPartial"] = _message(
        "GroupPartial",
        "partition's group figures",
        "One partition's partial group figures, published by the worker that owns it and"
        " read by every worker: opaque, versioned JSON written only by the workers.",
        {
            "type": "object",
            "required": ["format", "partition", "groups"],
            "properties": {
                "format": {"type": "integer", "const": 1},
                "partition": {"type": "integer", "minimum": 0},
                "groups": {"type": "object"},
            },
            "additionalProperties": True,
        },
        key={**_STRING, "description": "the partition number (the topic is compacted)"},
    )
    messages["RejectedEvent"] = _message(
        "RejectedEvent",
        "rejected input",
        "An invalid input message, unchanged (key, value, original headers), plus error"
        " headers as in Kafka Connect's dead-letter queue.",
        {"description": "the rejected message's bytes, as read (not necessarily JSON)"},
        content_type="application/octet-stream",
        headers=_headers("the original headers, then these", DLQ_HEADERS, more=True),
        key={"description": "the original key, unchanged (may be absent)"},
    )
    messages["RuleSet"] = _message(
        "RuleSet",
        "rule set",
        "A rule set; every worker reads the topic whole and runs the newest valid one.",
        {
            "type": "object",
            "required": ["version", "files"],
            "properties": {
                "version": {**_STRING, "description": "hash of the rule set"},
                "shadow": {
                    "type": "boolean",
                    "description": "a shadow rule set: evaluated beside the live one, emitting"
                    " nothing (absent: false)",
                },
                "files": {
                    "type": "object",
                    "description": "file name (e.g. segments.yaml) to YAML text",
                    "additionalProperties": _STRING,
                },
            },
        },
        key={**_STRING, "description": "the rule set's version (the topic is compacted)"},
    )
    messages["CustomerStateRecord"] = _message(
        "CustomerStateRecord",
        "customer state",
        "A customer's state: opaque, versioned JSON (`format`, currently 3) written only by"
        " the worker; a null value (tombstone) means the customer was erased.",
        {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["format", "customer_id"],
                    "properties": {"format": {"type": "integer"}, "customer_id": _STRING},
                    "additionalProperties": True,
                },
                {"type": "null", "description": "tombstone: the customer was erased"},
            ]
        },
    )
    messages["LaneRecord"] = _message(
        "LaneRecord",
        "partition lane",
        "Per-partition bookkeeping (clock, rules version, cut points, unconfirmed changes,"
        " erasure digests): opaque, versioned JSON.",
        {
            "type": "object",
            "required": ["format", "partition"],
            "properties": {
                "format": {"type": "integer", "const": LANE_FORMAT},
                "partition": {"type": "integer", "minimum": 0},
            },
            "additionalProperties": True,
        },
        key={
            "description": "the byte 0xFF, then `segstream-lane:<partition>` in ASCII (never"
            " valid UTF-8, so never a customer id)",
        },
    )
    return messages


def _channel(address: str, description: str, messages: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in messages},
        **extra,
    }


def _channels() -> dict[str, Any]:
    channels = {}
    for model, _, setting in _MODELS[:4]:
        assert setting is not None
        name = _topic(setting)
        channels[name] = _channel(
            name,
            f"Input: {model.__name__} messages keyed by customer_id (setting"
            f" SEGSTREAM_{setting.upper()}). SEGSTREAM_PARTITIONS partitions, like every"
            " co-partitioned topic. A null value is skipped (counted, not dead-lettered).",
            [model.__name__],
        )
    channels["segment-changes"] = _channel(
        _topic("topic_changes"),
        "Output: segment changes keyed by customer_id (SEGSTREAM_TOPIC_CHANGES).",
        ["SegmentChange"],
    )
    channels["segstream-dlq"] = _channel(
        _topic("topic_dlq"),
        "Output: invalid input messages (SEGSTREAM_TOPIC_DLQ).",
        ["RejectedEvent"],
    )
    channels["segment-rules"] = _channel(
        _topic("topic_rules"),
        "Control: rule sets (SEGSTREAM_TOPIC_RULES); one partition, compacted, keyed by"
        " version. Anyone may write it: an invalid record is refused (a metric and a log"
        " line) and the workers keep the newest valid rule set.",
        ["RuleSet"],
    )
    channels["segment-group-snapshots"] = _channel(
        _topic("topic_group_snapshots"),
        "Output: one group snapshot per group value when a calendar quarter closes"
        " (SEGSTREAM_TOPIC_GROUP_SNAPSHOTS); one partition, keyed by `<group>:<value>`.",
        ["GroupSnapshot"],
    )
    channels["segstream-groups"] = _channel(
        _topic("topic_groups"),
        "Control: each partition's partial group figures (SEGSTREAM_TOPIC_GROUPS); one"
        " partition, compacted, keyed by partition; every worker reads it whole to answer"
        " GET /groups/{name} for all partitions.",
        ["GroupPartial"],
    )
    channels["customers-changelog"] = _channel(
        "{app_id}-customers-changelog",
        "State: the customers table's changelog (faust), compacted, one partition per input"
        " partition. Written and read (on recovery) only by the workers. Keys: a customer's"
        " state record is keyed by its customer_id (UTF-8), with a null value (tombstone) once"
        " the customer is erased; each partition's lane record by the byte 0xFF followed by"
        " `segstream-lane:<partition>`.",
        ["CustomerStateRecord", "LaneRecord"],
        parameters={
            "app_id": {
                "description": "SEGSTREAM_APP_ID, also the consumer group",
                "default": Settings.model_fields["app_id"].default,
            }
        },
    )
    return channels


def _operation(action: str, channel: str, summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
    }


def _operations() -> dict[str, Any]:
    ops = {}
    for model, _, setting in _MODELS[:4]:
        assert setting is not None
        name = _topic(setting)
        ops[f"consume-{name}"] = _operation("receive", name, f"Apply {model.__name__}s")
    ops["emit-segment-changes"] = _operation(
        "send", "segment-changes", "Publish membership changes"
    )
    ops["emit-group-snapshots"] = _operation(
        "send", "segment-group-snapshots", "Publish a closed quarter's group figures"
    )
    ops["share-group-figures"] = _operation(
        "send", "segstream-groups", "Share the owned partitions' group figures"
    )
    ops["read-group-figures"] = _operation(
        "receive", "segstream-groups", "Read every partition's group figures"
    )
    ops["dead-letter"] = _operation("send", "segstream-dlq", "Dead-letter invalid input")
    ops["read-rules"] = _operation("receive", "segment-rules", "Switch to the newest valid rules")
    ops["write-state"] = _operation(
        "send", "customers-changelog", "Commit customer state and lane records"
    )
    ops["recover-state"] = _operation(
        "receive", "customers-changelog", "Restore state on assignment"
    )
    return ops


def build() -> dict[str, Any]:
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "segstream",
            "version": "1",
            "description": "Event-driven customer segmentation: the topics a segstream worker"
            " reads and writes. Generated by `python -m segstream.asyncapi` from the pydantic"
            " contracts; docs/contracts.md explains the semantics. Topic names are the"
            " defaults (SEGSTREAM_TOPIC_*). segstream-population is retired: no longer read"
            " or written.",
        },
        "defaultContentType": "application/json",
        "channels": _channels(),
        "operations": _operations(),
        "components": {"messages": _messages(), "schemas": _schemas()},
    }


class _Dumper(yaml.SafeDumper):
    """Writes shared objects out in full: no anchors and aliases for a reader to resolve."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = (
        "# Generated by `python -m segstream.asyncapi` from the pydantic contracts: do not edit.\n"
    )
    return header + yaml.dump(
        build(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segstream.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m segstream.asyncapi", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
