"""Settings operators write by hand: durations in three spellings, a secret never shown."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from segstream.runtime.settings import TOPIC_OF_TYPE, Settings


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("86400", 86400), ("90.5", 90.5), ("1d", 86400), ("12h", 43200), ("30m", 1800),
     ("45s", 45), ("P1D", 86400), ("PT6H", 21600), (7200, 7200)],
)  # fmt: skip
def test_max_future_skew_takes_seconds_short_units_or_iso_8601(
    monkeypatch: pytest.MonkeyPatch, written: str | int, seconds: float
) -> None:
    monkeypatch.setenv("SEGSTREAM_MAX_FUTURE_SKEW", str(written))
    assert Settings().max_future_skew == timedelta(seconds=seconds)


@pytest.mark.parametrize("written", ["0", "-5", "1w", "soon"])
def test_a_nonsense_or_non_positive_skew_is_refused(
    monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    monkeypatch.setenv("SEGSTREAM_MAX_FUTURE_SKEW", written)
    with pytest.raises(ValidationError, match="max_future_skew"):
        Settings()


def test_defaults_of_the_per_customer_limits() -> None:
    s = Settings()
    assert s.max_future_skew == timedelta(days=1)
    assert (s.max_attributes, s.max_open_tickets, s.event_id_memory_days) == (256, 200, 60)
    assert s.customer_api is True and s.api_token.get_secret_value() == ""


def test_the_api_token_is_masked_when_settings_are_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEGSTREAM_API_TOKEN", "s3cret-token")
    s = Settings()
    assert s.api_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(s) and "s3cret-token" not in str(s.model_dump())


def test_one_table_names_the_input_topic_of_each_event_type() -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS="k:9092", topic_orders="shop-orders")
    assert settings.topic_of_type["order"] == "shop-orders"
    assert {t: k for k, t in settings.topic_of_type.items()} == settings.input_topics
    assert TOPIC_OF_TYPE == {
        "order": "orders",
        "support": "support",
        "survey": "surveys",
        "profile": "profiles",
    }
