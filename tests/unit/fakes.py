"""In-memory stand-ins for the handler's interfaces (StateLog, Outbox): they keep what they were
given, in one shared journal, so a test can read both what was written and in which order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segstream.core.engine import Commit
from segstream.runtime.produce import OutRecord


@dataclass(frozen=True)
class FakeRecord:
    """A consumed record: what aiokafka's ConsumerRecord carries and the handler reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Journal:
    """Everything written and sent, in order: ("state", Commit) and ("sent", OutRecord)."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    def commits(self) -> list[Commit]:
        return [e for kind, e in self.entries if kind == "state"]

    def sent(self, topic: str | None = None) -> list[OutRecord]:
        return [e for kind, e in self.entries if kind == "sent" and topic in (None, e[0])]


@dataclass
class MemoryStateLog:
    journal: Journal
    fail: bool = False  # the broker refuses the write

    async def write(self, commits: list[Commit]) -> None:
        if self.fail:
            raise ConnectionError("changelog write refused")
        self.journal.entries += [("state", c) for c in commits]


@dataclass
class MemoryOutbox:
    journal: Journal

    async def send(self, records: list[OutRecord]) -> None:
        self.journal.entries += [("sent", r) for r in records]
