"""The topic layout rules, without a broker."""

from __future__ import annotations

from types import SimpleNamespace

from segstream.runtime.settings import Settings
from segstream.runtime.topics import (
    COMPACT,
    changelog_topic,
    creation_errors,
    partition_mismatches,
    wanted_topics,
)

SETTINGS = Settings(partitions=4)


def test_control_topics_and_the_changelog_are_compacted_and_data_topics_are_not() -> None:
    wanted = wanted_topics(SETTINGS)
    compacted = {name for name, spec in wanted.items() if spec.configs == COMPACT}
    assert compacted == {"segment-rules", "segstream-groups", "segstream-customers-changelog"}
    assert wanted["segment-rules"].partitions == 1
    assert "segstream-population" not in wanted  # retired: cut points are kept per partition
    assert wanted["orders"].partitions == wanted[changelog_topic(SETTINGS)].partitions == 4


def test_a_topic_created_meanwhile_is_no_error_but_others_are() -> None:
    response = SimpleNamespace(
        topic_errors=[
            ("orders", 0, None),
            ("support", 36, "Topic with this name already exists."),
            ("surveys", 29, "Authorization failed."),
        ]
    )
    assert creation_errors(response) == ["surveys: Authorization failed."]


def test_every_copartitioned_topic_must_match_the_setting() -> None:
    counts = dict.fromkeys(["orders", "support", "surveys", "profiles", "segment-changes"], 4)
    assert partition_mismatches(SETTINGS, counts | {changelog_topic(SETTINGS): 4}) is None
    line = partition_mismatches(SETTINGS, counts | {"orders": 4, changelog_topic(SETTINGS): 2})
    assert line is not None and "\n" not in line
    assert "segstream-customers-changelog=2" in line and "orders=" not in line
    # the DLQ is not co-partitioned: its count is free
    assert partition_mismatches(SETTINGS, counts | {"segstream-dlq": 1}) is None
