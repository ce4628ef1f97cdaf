"""Stored states written by earlier releases still load, field for field.

The fixtures under tests/unit/data/ were written by the releases they are named after, with
tests/unit/data/make_states.py run on that release's code (``git archive``): the stored bytes,
and each state as that release held it in memory. cdfb6de wrote format 2 (positional);
5fc2257 wrote format 3 (named fields), the format this release writes. A new format adds a
fixture of the release before it.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from segstream.core.state import dump_state, load_state
from tests.unit.data.make_states import fields

DATA = Path(__file__).parent / "data"
RELEASES = ["states-format2-cdfb6de", "states-format3-5fc2257"]
#: fields added since an older release wrote its states, and what a state loaded from it holds
SINCE_5FC2257 = {"timeline": [], "entered": {}}  # membership timeline, min_days dwell
ADDED_SINCE = {
    "states-format2-cdfb6de": {"closed_ids": []} | SINCE_5FC2257,
    "states-format3-5fc2257": SINCE_5FC2257,
}


@pytest.mark.parametrize("release", RELEASES)
def test_states_stored_by_an_earlier_release_load_as_it_held_them(release: str) -> None:
    stored = (DATA / f"{release}.jsonl").read_bytes().splitlines()
    held = orjson.loads((DATA / f"{release}.fields.json").read_bytes())
    assert len(stored) == len(held) >= 10
    added = ADDED_SINCE.get(release, {})
    for raw, then in zip(stored, held, strict=True):
        now = fields(load_state(raw))
        assert now == then | added, then["customer_id"]
        again = load_state(dump_state(load_state(raw)))  # written again in today's format
        assert fields(again) == now


def test_the_fixtures_cover_every_stored_field() -> None:
    for release in RELEASES:
        held = orjson.loads((DATA / f"{release}.fields.json").read_bytes())
        empty = (None, 0, "0", [], {})
        unfilled = {f for f in held[0] if all(state[f] in empty for state in held)}
        assert unfilled <= set(ADDED_SINCE.get(release, {})), (release, unfilled)
