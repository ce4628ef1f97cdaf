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
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_fromisoformat = datetime.fromisoformat


def _ms(value: str) -> int | None:
    """timeutil.parse_timestamp for a string, None where it raises (inlined for the hot path:
    the checks around ``fromisoformat`` cost more than the call itself)."""
    if len(value) > 64:
        return None
    try:
        parsed = _fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    ms: int = (parsed - _EPOCH) // _ONE_MS
    return ms


# Amounts seen lately, each text or float to its Decimal (Decimal(str) costs more than the rest
# of an order; prices repeat). Decimals are immutable, so events may share one. Never a zero
# float: -0.0 == 0.0 would share a key, and Decimal("-0.0") is not Decimal("0.0").
_TEXT_AMOUNTS: dict[str, Decimal] = {}
_FLOAT_AMOUNTS: dict[float, Decimal] = {}
_AMOUNTS_KEPT = 1 << 16


def _text_amount(value: str) -> Decimal | None:
    """contracts._amount for a string."""
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0 or amount > _MAX_AMOUNT:
        return None
    if len(_TEXT_AMOUNTS) >= _AMOUNTS_KEPT:
        _TEXT_AMOUNTS.clear()
    _TEXT_AMOUNTS[value] = amount
    return amount


def _float_amount(value: float) -> Decimal:
    """contracts._amount for a float msgspec has already range-checked."""
    amount = Decimal(repr(value))  # repr is str for a float: the shortest round trip
    if value:
        if len(_FLOAT_AMOUNTS) >= _AMOUNTS_KEPT:
            _FLOAT_AMOUNTS.clear()
        _FLOAT_AMOUNTS[value] = amount
    return amount


# model_fields_set of each event type, by which of its optional fields the message gave;
# every event gets its own copy (pydantic updates it in place, in model_copy)
_GIVEN = frozenset({"event_id", "customer_id", "occurred_at", "type"})
_ORDER_GIVEN = _GIVEN | {"order_id", "amount"}
_ORDER_GIVENS = {  # (currency given, status given)
    (False, False): _ORDER_GIVEN,
    (True, False): _ORDER_GIVEN | {"currency"},
    (False, True): _ORDER_GIVEN | {"status"},
    (True, True): _ORDER_GIVEN | {"currency", "status"},
}
_SUPPORT_GIVEN = _GIVEN | {"ticket_id", "status"}
_SUPPORT_GIVEN_PRIORITY = _SUPPORT_GIVEN | {"priority"}
_SURVEY_GIVEN = _GIVEN | {"score"}
_SURVEY_GIVEN_ID = _SURVEY_GIVEN | {"survey_id"}
_PROFILE_GIVENS = {  # (attributes given, erase given)
    (False, False): _GIVEN,
    (True, False): _GIVEN | {"attributes"},
    (False, True): _GIVEN | {"erase"},
    (True, True): _GIVEN | {"attributes", "erase"},
}


def _order(msg: _Order, currency: str, low: int, high: int) -> Fields | None:
    at = msg.occurred_at
    occurred_at = _ms(at) if isinstance(at, str) else at
    if occurred_at is None or occurred_at < low or occurred_at > high:
        return None
    value = msg.amount  # msgspec has range-checked a number, not a string
    amount: Decimal | None
    if isinstance(value, str):
        amount = _TEXT_AMOUNTS.get(value) or _text_amount(value)
        if amount is None:
            return None
    elif isinstance(value, float):
        amount = _FLOAT_AMOUNTS.get(value) or _float_amount(value)
    else:
        amount = Decimal(value)
    code, status = msg.currency, msg.status
    given = (code is not UNSET, status is not UNSET)
    if code is UNSET:
        code = None
    elif code is not None and code != currency:
        return None
    if status is UNSET:
        status = "completed"
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
    return "order", fields, set(_ORDER_GIVENS[given])


def _support(msg: _Support, currency: str, low: int, high: int) -> Fields | None:
    at = msg.occurred_at
    occurred_at = _ms(at) if isinstance(at, str) else at
    if occurred_at is None or occurred_at < low or occurred_at > high:
        return None
    priority = msg.priority
    if priority is UNSET:
        priority, given = None, _SUPPORT_GIVEN
    else:
        given = _SUPPORT_GIVEN_PRIORITY
    fields = {
        "event_id": msg.event_id,
        "customer_id": msg.customer_id,
        "occurred_at": occurred_at,
        "type": "support",
        "ticket_id": msg.ticket_id,
        "status": msg.status,
        "priority": priority,
    }
    return "support", fields, set(given)


def _survey(msg: _Survey, currency: str, low: int, high: int) -> Fields | None:
    at = msg.occurred_at
    occurred_at = _ms(at) if isinstance(at, str) else at
    if occurred_at is None or occurred_at < low or occurred_at > high:
        return None
    survey_id = msg.survey_id
    if survey_id is UNSET:
        survey_id, given = None, _SURVEY_GIVEN
    else:
        given = _SURVEY_GIVEN_ID
    fields = {
        "event_id": msg.event_id,
        "customer_id": msg.customer_id,
        "occurred_at": occurred_at,
        "type": "survey",
        "score": msg.score,
        "survey_id": survey_id,
    }
    return "survey", fields, set(given)


def _profile(msg: _Profile, currency: str, low: int, high: int) -> Fields | None:
    at = msg.occurred_at
    occurred_at = _ms(at) if isinstance(at, str) else at
    if occurred_at is None or occurred_at < low or occurred_at > high:
        return None
    attributes, erase = msg.attributes, msg.erase
    given = (attributes is not UNSET, erase is not UNSET)
    if erase is UNSET:
        erase = False
    if attributes is UNSET:
        if not erase:  # attributes are required unless the event erases the customer
            return None
        attributes = {}
    fields = {
        "event_id": msg.event_id,
        "customer_id": msg.customer_id,
        "occurred_at": occurred_at,
        "type": "profile",
        "attributes": attributes,
        "erase": erase,
    }
    return "profile", fields, set(_PROFILE_GIVENS[given])


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
