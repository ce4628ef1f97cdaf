"""Shared pytest fixtures for segstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from segstream.runtime.broker import EmbeddedBroker

# --- Kafka broker -------------------------------------------------------------
# One embedded Tansu broker (in-memory storage) for the whole test session.
# Tests must use unique topic / group names since the broker is shared.


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap string ("127.0.0.1:PORT") of a session-wide embedded broker."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


# --- other fixtures below -----------------------------------------------------
