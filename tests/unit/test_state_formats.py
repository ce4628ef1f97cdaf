"""Stored states written by earlier releases still load, field for field.

The fixtures under tests/unit/data/ were written by the releases they are named after, with
tests/unit/data/make_states.py run on that release's code (``git archive``): the stored bytes,
and each state as that release held it in memory. cdfb6de wrote format 2 (positional);
5fc2257 wrote format 3 (named fields), as did 943afe3, the last release before format 4 (the
kind of event beside each remembered event id), the format this release writes. A new format
adds a fixture of the release before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from segstream.core.state import dump_state, load_state, seen_record
from tests.unit.data.make_states import fields

DATA = Path(__file__).parent / "data"
RELEASES = ["states-format2-cdfb6de", "states-format3-5fc2257", "states-format3-943afe3"]
#: fields added since an older release wrote its states, and what a state loaded from it holds
SINCE_5FC2257 = {"timeline": [], "entered": {}}  # membership timeline, min_days dwell
ADDED_SINCE = {
    "states-format2-cdfb6de": {"closed_ids": []} | SINCE_5FC2257,
    "states-format3-5fc2257": SINCE_5FC2257,
}


def as_held_now(then: dict[str, Any], release: str) -> dict[str, Any]:
    """A state of an older release as this one holds it: fields added since, and each
    remembered event id's day as ``seen_record(day, 0)`` (kind unknown before format 4)."""
    now = then | ADDED_SINCE.get(release, {})
    return now | {"activity": {k: seen_record(day, 0) for k, day in then["activity"].items()}}


@pytest.mark.parametrize("release", RELEASES)
def test_states_stored_by_an_earlier_release_load_as_it_held_them(release: str) -> None:
    stored = (DATA / f"{release}.jsonl").read_bytes().splitlines()
    held = orjson.loads((DATA / f"{release}.fields.json").read_bytes())
    assert len(stored) == len(held) >= 10
    for raw, then in zip(stored, held, strict=True):
        now = fields(load_state(raw))
        assert now == as_held_now(then, release), then["customer_id"]
        again = load_state(dump_state(load_state(raw)))  # written again in today's format
        assert fields(again) == now


#: fields no state of a release's fixture fills: its default rules declare no min_days dwell
NOT_FILLED = {"states-format3-943afe3": {"entered"}}


def test_the_fixtures_cover_every_stored_field() -> None:
    for release in RELEASES:
        held = orjson.loads((DATA / f"{release}.fields.json").read_bytes())
        empty = (None, 0, "0", [], {})
        unfilled = {f for f in held[0] if all(state[f] in empty for state in held)}
        known = set(ADDED_SINCE.get(release, {})) | NOT_FILLED.get(release, set())
        assert unfilled <= known, (release, unfilled)
