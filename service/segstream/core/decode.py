"""The hot-path decoder: one JSON message straight to an event's field values, checked in C.

The pydantic models in :mod:`segstream.core.contracts` stay the contract of record (schemas,
docs, every rejection and its reason). This decoder only ever *accepts*: msgspec decodes and
type-checks the message against the structs below in one pass, a few checks msgspec cannot
express run in Python, and the result is exactly the field values pydantic would have built.
Anything it is not sure of, every malformed message included, makes :func:`decode_fields`
return None, and the caller takes the reference path (orjson, then pydantic), which decides.

So the structs are deliberately stricter than the models; being stricter only costs a trip
down the reference path. Where msgspec and orjson disagree the structs rule the case out:

- Unknown fields are forbidden: msgspec skips an unknown field's value without checking it the
  way orjson does (invalid UTF-8 inside a string, a number that overflows to infinity), so a
  message with extra fields goes down the reference path.
- Integers beyond 64 bits: msgspec gives a Python int, orjson a float. Every integer the
  structs keep is bounded to int64 or less, where both give the same int.
- pydantic's lax coercions (``"erase": 1``, ``"score": true``) are not attempted.

tests/unit/test_decode.py proves with hypothesis that ``parse_event`` (this decoder first) and
``parse_event_reference`` (orjson then pydantic) give equal events and equal rejections.
The core stays pure: this module imports no streaming library.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from segstream.core.timeutil import parse_timestamp

# what the models accept, restated for the structs (contracts.py is the reference)
_Id = Annotated[str, Meta(min_length=1, max_length=128)]
_INT64 = Meta(ge=-(2**63), le=2**63 - 1)
_MAX_AMOUNT = Decimal("1e15")
# contracts._CURRENCY; msgspec applies it with re.search, the same as match for "^..."
_Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
_AttributeValue = (
    Annotated[str, Meta(max_length=1024)] | bool | Annotated[int, _INT64] | float | None
)

Fields = tuple[str, dict[str, Any], set[str]]


class _Message(Struct, tag_field="type", forbid_unknown_fields=True, gc=False):
    event_id: _Id
    customer_id: _Id
    occurred_at: Annotated[int, _INT64] | str  # a string goes through parse_timestamp


class _Order(_Message, tag="order", gc=False):
    order_id: _Id
    amount: Annotated[int, Meta(ge=0, le=10**15)] | Annotated[float, Meta(ge=0, le=1e15)] | str
    currency: _Currency | UnsetType | None = UNSET
    status: Literal["completed", "refunded", "cancelled"] | UnsetType = UNSET


class _Support(_Message, tag="support", gc=False):
    ticket_id: _Id
    status: Literal["opened", "closed", "reopened"]
    priority: Literal["low", "normal", "high", "urgent"] | UnsetType | None = UNSET


class _Survey(_Message, tag="survey", gc=False):
    score: Annotated[int, Meta(ge=0, le=10)]
    survey_id: _Id | UnsetType | None = UNSET


class _Profile(_Message, tag="profile", gc=False):
    attributes: (
        Annotated[
            dict[Annotated[str, Meta(min_length=1, max_length=64)], _AttributeValue],
            Meta(max_length=256),
        ]
        | UnsetType
    ) = UNSET
    erase: bool | UnsetType = UNSET


_DECODER = msgspec.json.Decoder(_Order | _Support | _Survey | _Profile)


def _occurred_at(value: int | str, low: int, high: int) -> int | None:
    if isinstance(value, str):
        try:
            ms = parse_timestamp(value)
        except ValueError:
            return None
    else:
        ms = value
    return ms if low <= ms <= high else None


def _amount(value: int | float | str) -> Decimal | None:
    """contracts._amount, for values msgspec has already typed (numbers already in range)."""
    if type(value) is not str:
        return Decimal(str(value)) if type(value) is float else Decimal(value)
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0 or amount > _MAX_AMOUNT:
        return None
    return amount


def _order(msg: _Order, currency: str, low: int, high: int) -> Fields | None:
    occurred_at, amount = _occurred_at(msg.occurred_at, low, high), _amount(msg.amount)
    if occurred_at is None or amount is None:
        return None
    given = {"event_id", "customer_id", "occurred_at", "type", "order_id", "amount"}
    code, status = msg.currency, msg.status
    if code is UNSET:
        code = None
    else:
        given.add("currency")
        if code is not None and code != currency:
            return None
    if status is UNSET:
        status = "completed"
    else:
        given.add("status")
    fields = {
        "event_id": msg.event_id,
        "customer_id": msg.customer_id,
        "occurred_at": occurred_at,
        "type": "order",
        "order_id": msg.order_id,
        "amount": amount,
        "currency": code,
        "status": status,
    }
    return "order", fields, given


def _support(msg: _Support, currency: str, low: int, high: int) -> Fields | None:
    occurred_at = _occurred_at(msg.occurred_at, low, high)
    if occurred_at is None:
        return None
    given = {"event_id", "customer_id", "occurred_at", "type", "ticket_id", "status"}
    priority = msg.priority
    if priority is UNSET:
        priority = None
    else:
        given.add("priority")
    fields = {
        "event_id": msg.event_id,
        "customer_id": msg.customer_id,
        "occurred_at": occurred_at,
        "type": "support",
        "ticket_id": msg.ticket_id,
        "status": msg.status,
        "priority": priority,
    }
    return "support", fields, given


def _survey(msg: _Survey, currency: str, low: int, high: int) -> Fields | None:
    occurred_at = _occurred_at(msg.occurred_at, low, high)
    if occurred_at is None:
        return None
    given = {"event_id", "customer_id", "occurred_at", "type", "score"}
    survey_id = msg.survey_id
    if survey_id is UNSET:
        survey_id = None
    else:
        given.add("survey_id")
    fields = {
        "event_id": msg.event_id,
        "customer_id": msg.customer_id,
        "occurred_at": occurred_at,
        "type": "survey",
        "score": msg.score,
        "survey_id": survey_id,
    }
    return "survey", fields, given


def _profile(msg: _Profile, currency: str, low: int, high: int) -> Fields | None:
    occurred_at = _occurred_at(msg.occurred_at, low, high)
    if occurred_at is None:
        return None
    given = {"event_id", "customer_id", "occurred_at", "type"}
    attributes, erase = msg.attributes, msg.erase
    if erase is UNSET:
        erase = False
    else:
        given.add("erase")
    if attributes is UNSET:
        if not erase:  # attributes are required unless the event erases the customer
            return None
        attributes = {}
    else:
        given.add("attributes")
    fields = {
        "event_id": msg.event_id,
        "customer_id": msg.customer_id,
        "occurred_at": occurred_at,
        "type": "profile",
        "attributes": attributes,
        "erase": erase,
    }
    return "profile", fields, given


_FINISH: dict[type[_Message], Callable[[Any, str, int, int], Fields | None]] = {
    _Order: _order,
    _Support: _support,
    _Survey: _survey,
    _Profile: _profile,
}


def decode_fields(raw: bytes | str, currency: str, low: int, high: int) -> Fields | None:
    """The event type, its field values in the model's field order, and which fields the
    message gave; or None when the reference path must decide.

    ``currency`` is the one this deployment accepts, ``low`` .. ``high`` the accepted range
    of ``occurred_at`` in epoch ms (inclusive).
    """
    try:
        msg = _DECODER.decode(raw)
    except (ValueError, RecursionError):  # msgspec's errors; a str with a lone surrogate
        return None
    return _FINISH[type(msg)](msg, currency, low, high)
