"""Input-event and segment-change contracts (pydantic v2), and the parser that rejects bad input.

Bad input is never fatal: :func:`parse_event` returns a :class:`Rejection` carrying a typed
:class:`RejectReason` and a human-readable message, so callers can count and dead-letter it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from segstream.core.decode import decode_fields
from segstream.core.timeutil import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    MAX_OCCURRED_AT_MS,
    MIN_OCCURRED_AT_MS,
    occurred_at_bounds,
    parse_timestamp,
    to_rfc3339,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class RejectReason(StrEnum):
    """Why an input message was rejected; the values are stable metric labels and DLQ headers."""

    TOO_LARGE = "too_large"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    WRONG_CURRENCY = "wrong_currency"
    OCCURRED_AT_OUT_OF_RANGE = "occurred_at_out_of_range"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    message: str


@dataclass(frozen=True, slots=True)
class _Accepting:
    """What this deployment accepts at this moment; one value shared by both parse paths, so
    the fast path and pydantic cannot disagree about the currency or the time range."""

    currency: str = "USD"
    min_ms: int = 0
    max_ms: int = 0

    @classmethod
    def at(cls, currency: str, now_ms: int | None, max_future_skew_ms: int) -> _Accepting:
        low, high = occurred_at_bounds(now_ms, max_future_skew_ms)
        return cls(currency, low, high)


_ACCEPT_ANY_TIME = _Accepting.at("USD", None, DEFAULT_MAX_FUTURE_SKEW_MS)
_OUT_OF_RANGE = RejectReason.OCCURRED_AT_OUT_OF_RANGE.value


def _accepting(info: ValidationInfo) -> _Accepting:
    accepting = (info.context or {}).get("accepting")
    return accepting if isinstance(accepting, _Accepting) else _ACCEPT_ANY_TIME


def _occurred_at(value: object, info: ValidationInfo) -> int:
    """A well-formed timestamp can still be implausible; that gets its own reason because it
    usually means a producer's clock or a corrupt record, not a schema mistake."""
    ms = parse_timestamp(value)
    accepting = _accepting(info)
    if not accepting.min_ms <= ms <= accepting.max_ms:
        raise PydanticCustomError(
            _OUT_OF_RANGE,
            "{value} is outside {low} .. {high}",
            {
                "value": str(value)[:64],
                "low": to_rfc3339(accepting.min_ms),
                "high": to_rfc3339(accepting.max_ms),
            },
        )
    return ms


def _amount(value: object) -> Decimal:
    """JSON number or decimal string to an exact Decimal (floats go through their shortest repr)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("amount must be a JSON number or a decimal string")
    try:
        amount = Decimal(str(value)) if not isinstance(value, str) else Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"amount is not a decimal number: {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount > Decimal("1e15"):
        raise ValueError("amount must be finite, >= 0 and <= 1e15")
    return amount


# The JSON schemas say what the wire accepts (docs/asyncapi.yaml is generated from them), not
# the Python types the validators produce.
EpochMs = Annotated[
    int,
    BeforeValidator(_occurred_at),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {
                    "type": "integer",
                    "minimum": MIN_OCCURRED_AT_MS,
                    "maximum": MAX_OCCURRED_AT_MS,
                },
            ]
        }
    ),
]
Id = Annotated[str, Field(min_length=1, max_length=128)]
Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1e15},
                {"type": "string", "description": 'a decimal number, e.g. "19.90"'},
            ]
        }
    ),
]
AttributeValue = str | bool | int | float | None


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    event_id: Id
    customer_id: Id
    occurred_at: EpochMs = Field(description="RFC 3339 with offset, or epoch ms; held as epoch ms")


class OrderEvent(_Event):
    type: Literal["order"] = "order"
    order_id: Id
    amount: Amount
    currency: str | None = None
    status: Literal["completed", "refunded", "cancelled"] = "completed"

    @field_validator("currency")
    @classmethod
    def _one_currency(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not _CURRENCY.match(value):
            raise ValueError("currency must be an ISO 4217 code such as USD")
        expected = _accepting(info).currency
        if value != expected:
            raise ValueError(f"wrong_currency: {value} (this deployment uses {expected})")
        return value


class SupportEvent(_Event):
    type: Literal["support"] = "support"
    ticket_id: Id
    status: Literal["opened", "closed", "reopened"]
    priority: Literal["low", "normal", "high", "urgent"] | None = None


class SurveyEvent(_Event):
    type: Literal["survey"] = "survey"
    score: Annotated[int, Field(ge=0, le=10, strict=True)]
    survey_id: Id | None = None


class ProfileEvent(_Event):
    type: Literal["profile"] = "profile"
    attributes: Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=64)], AttributeValue],
        Field(max_length=256, default_factory=dict),
    ]
    erase: bool = Field(
        False,
        description="GDPR erasure: forget everything about the customer (attributes may be"
        " omitted); the customer exits every segment with cause 'erasure'",
    )

    @model_validator(mode="after")
    def _attributes_or_erase(self) -> ProfileEvent:
        if not self.erase and "attributes" not in self.model_fields_set:
            raise PydanticCustomError(
                "missing", "attributes: required unless the event erases the customer"
            )
        return self

    @field_validator("attributes")
    @classmethod
    def _bounded_strings(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        for name, item in value.items():
            if isinstance(item, str) and len(item) > 1024:
                raise ValueError(f"attribute {name!r} is longer than 1024 characters")
        return value


Event = OrderEvent | SupportEvent | SurveyEvent | ProfileEvent

EVENT_MODELS: dict[str, type[_Event]] = {
    "order": OrderEvent,
    "support": SupportEvent,
    "survey": SurveyEvent,
    "profile": ProfileEvent,
}
_VALIDATORS = {name: model.__pydantic_validator__ for name, model in EVENT_MODELS.items()}


# -- fast path ------------------------------------------------------------------------------
# pydantic validation is most of the parse cost. Well-formed order, support and survey events
# (nearly all traffic) are checked here in plain Python and built without re-validation; anything
# this path does not accept goes to pydantic, which stays the reference for every error.
# tests/unit/test_contracts.py proves with hypothesis that both give the same events.

_ORDER_STATUS = frozenset({"completed", "refunded", "cancelled"})
_TICKET_STATUS = frozenset({"opened", "closed", "reopened"})
_PRIORITY = frozenset({"low", "normal", "high", "urgent"})


def _is_id(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= 128


# BaseModel's four slots, set straight through their descriptors (half the time of four
# object.__setattr__ calls; the frozen models' own __setattr__ would refuse)
_NEW = object.__new__
_SET_DICT = vars(BaseModel)["__dict__"].__set__
_SET_FIELDS_SET = vars(BaseModel)["__pydantic_fields_set__"].__set__
_SET_EXTRA = vars(BaseModel)["__pydantic_extra__"].__set__
_SET_PRIVATE = vars(BaseModel)["__pydantic_private__"].__set__


def _built(model: type[_Event], fields: dict[str, Any], given: set[str]) -> Any:
    """What ``model_validate`` returns, without validating again (as ``model_construct`` does):
    ``fields`` in the model's field order, ``given`` the fields the message set."""
    event = _NEW(model)
    _SET_DICT(event, fields)
    _SET_FIELDS_SET(event, given)
    _SET_EXTRA(event, None)
    _SET_PRIVATE(event, None)
    return event


def _common(obj: dict[str, Any], kind: str, accepting: _Accepting) -> dict[str, Any] | None:
    """The fields every event has, in the models' field order, or None to let pydantic decide."""
    event_id, customer_id = obj.get("event_id"), obj.get("customer_id")
    if not (_is_id(event_id) and _is_id(customer_id)):
        return None
    try:
        occurred_at = parse_timestamp(obj.get("occurred_at"))
    except ValueError:
        return None
    if not accepting.min_ms <= occurred_at <= accepting.max_ms:
        return None
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "occurred_at": occurred_at,
        "type": kind,
    }


def _fast_order(obj: dict[str, Any], accepting: _Accepting) -> OrderEvent | None:
    fields, order_id = _common(obj, "order", accepting), obj.get("order_id")
    if fields is None or not _is_id(order_id):
        return None
    try:
        amount = _amount(obj.get("amount"))
    except ValueError:
        return None
    code = obj.get("currency")
    if code is not None and not (
        type(code) is str and code == accepting.currency and _CURRENCY.match(code)
    ):
        return None
    status = obj.get("status", "completed")
    if type(status) is not str or status not in _ORDER_STATUS:
        return None
    fields.update(order_id=order_id, amount=amount, currency=code, status=status)
    return _built(OrderEvent, fields, obj.keys() & fields.keys())  # type: ignore[no-any-return]


def _fast_support(obj: dict[str, Any], accepting: _Accepting) -> SupportEvent | None:
    fields, ticket_id = _common(obj, "support", accepting), obj.get("ticket_id")
    status, priority = obj.get("status"), obj.get("priority")
    if (
        fields is None
        or not _is_id(ticket_id)
        or type(status) is not str
        or status not in _TICKET_STATUS
        or not (priority is None or (type(priority) is str and priority in _PRIORITY))
    ):
        return None
    fields.update(ticket_id=ticket_id, status=status, priority=priority)
    return _built(SupportEvent, fields, obj.keys() & fields.keys())  # type: ignore[no-any-return]


def _fast_survey(obj: dict[str, Any], accepting: _Accepting) -> SurveyEvent | None:
    fields = _common(obj, "survey", accepting)
    score, survey_id = obj.get("score"), obj.get("survey_id")
    if (
        fields is None
        or type(score) is not int
        or not 0 <= score <= 10
        or not (survey_id is None or _is_id(survey_id))
    ):
        return None
    fields.update(score=score, survey_id=survey_id)
    return _built(SurveyEvent, fields, obj.keys() & fields.keys())  # type: ignore[no-any-return]


_FAST_PATHS: dict[str, Callable[[dict[str, Any], _Accepting], Event | None]] = {
    "order": _fast_order,
    "support": _fast_support,
    "survey": _fast_survey,
}


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_event(
    raw: bytes | str,
    *,
    currency: str = "USD",
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    now_ms: int | None = None,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> Event | Rejection:
    """Parse one JSON message into an event, or say exactly why not.

    ``now_ms`` is the caller's wall clock (time is a parameter): with it, an ``occurred_at``
    more than ``max_future_skew_ms`` ahead is rejected; without it only the absolute range
    (1970-01-01 .. 2199-12-31) applies.

    The msgspec decoder (:mod:`segstream.core.decode`) answers for the well-formed events it
    can check completely; everything else, every rejection included, is decided by
    :func:`parse_event_reference`, with the same result as if it had decided alone.
    """
    if len(raw) > max_bytes:
        return Rejection(RejectReason.TOO_LARGE, f"message is {len(raw)} bytes, limit {max_bytes}")
    low, high = occurred_at_bounds(now_ms, max_future_skew_ms)
    decoded = decode_fields(raw, currency, low, high)
    if decoded is not None:
        kind, fields, given = decoded
        return _built(EVENT_MODELS[kind], fields, given)  # type: ignore[no-any-return]
    return parse_event_reference(
        raw,
        currency=currency,
        max_bytes=max_bytes,
        now_ms=now_ms,
        max_future_skew_ms=max_future_skew_ms,
    )


def parse_event_reference(
    raw: bytes | str,
    *,
    currency: str = "USD",
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    now_ms: int | None = None,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> Event | Rejection:
    """:func:`parse_event` without the msgspec decoder: orjson, then the models (through the
    plain-Python fast path for the common types). The reference the decoder is tested against."""
    if len(raw) > max_bytes:
        return Rejection(RejectReason.TOO_LARGE, f"message is {len(raw)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection(RejectReason.BAD_JSON, f"not valid JSON: {exc}")
    return validate_event(
        obj, currency=currency, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms
    )


def validate_event(
    obj: Any,
    *,
    currency: str = "USD",
    now_ms: int | None = None,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
) -> Event | Rejection:
    if not isinstance(obj, dict):
        return Rejection(RejectReason.NOT_AN_OBJECT, "an event must be a JSON object")
    kind = obj.get("type")
    if kind is None:
        return Rejection(RejectReason.MISSING_TYPE, "field 'type' is missing")
    validator = _VALIDATORS.get(kind) if isinstance(kind, str) else None
    if validator is None:
        return Rejection(
            RejectReason.UNKNOWN_TYPE,
            f"unknown type {str(kind)[:40]!r}; expected one of {', '.join(EVENT_MODELS)}",
        )
    accepting = _Accepting.at(currency, now_ms, max_future_skew_ms)
    fast = _FAST_PATHS.get(kind)
    if fast is not None:
        parsed = fast(obj, accepting)
        if parsed is not None:
            return parsed
    try:
        event: Event = validator.validate_python(obj, context={"accepting": accepting})
    except ValidationError as exc:
        return Rejection(_reason(exc), _describe(exc))
    return event


def _reason(error: ValidationError) -> RejectReason:
    """A specific reason only when it is the sole problem; anything mixed is invalid_field."""
    errors = error.errors(include_url=False)
    if all(item["type"] == _OUT_OF_RANGE for item in errors):
        return RejectReason.OCCURRED_AT_OUT_OF_RANGE
    if all("wrong_currency" in str(item["msg"]) for item in errors):
        return RejectReason.WRONG_CURRENCY
    return RejectReason.INVALID_FIELD


ChangeKind = Literal["entered", "exited", "upgraded", "downgraded"]
CauseKind = Literal["event", "clock", "rules", "population", "erasure"]


class Cause(BaseModel):
    kind: CauseKind
    event_id: str | None
    rules_version: str


class Reason(BaseModel):
    matched: str | None
    failed: str | None


class SegmentChange(BaseModel):
    """One membership change; the JSON produced by the engine validates against this model."""

    model_config = ConfigDict(populate_by_name=True)

    event_id: str
    customer_id: str
    family: str
    segment: str
    from_: str | bool | None = Field(alias="from")
    to: str | bool | None
    change: ChangeKind
    seq: int
    at: str
    cause: Cause
    reason: Reason
    state: dict[str, Any]
    action: str | None = Field(None, description="what to do: the tier's or flag's `action`")
    owner: str | None = Field(None, description="who does it: one of the rule set's `owners`")
    touch: Literal["high", "low", "tech"] | None = Field(
        None, description="touch model: high-touch, low-touch or tech-touch"
    )


SEGMENT_CHANGE_ADAPTER = TypeAdapter(SegmentChange)


class GroupMetrics(BaseModel):
    """A group value's figures in a period; only the group's declared ``metrics`` appear."""

    csi: float | None = Field(
        None,
        description="promoters (answers 8-10) over max(detractors (1-3), 1), over ALL the"
        " answers of the value's customers in the period; null without any answer",
    )
    nps: float | None = Field(
        None, description="Net Promoter Score, -100..100 (answers 9-10 minus 0-6); null without"
    )
    promoters: int | None = None
    detractors: int | None = None
    responses: int | None = None
    members: int | None = Field(None, description="customers with this value at the close")
    revenue: float | None = Field(None, description="orders dated in the period, refunds removed")
    orders: int | None = None


class GroupSnapshot(BaseModel):
    """A closed quarter of one group value, emitted once the quarter closed in every
    partition. ``event_id`` depends only on group, value and period: a re-emission after a
    crash carries the same id."""

    event_id: str = Field(description="blake2b-128 hex of group, value and period")
    type: Literal["group_snapshot"] = "group_snapshot"
    group: str = Field(description="the group's name in the rules (`groups:`)")
    by: str = Field(description="the attribute or family the group is by")
    value: str = Field(description="the value of `by`; `(other)` adds up values beyond max_values")
    period: str = Field(description="the calendar quarter in UTC, e.g. 2026-Q1")
    start: str = Field(description="first day of the quarter (YYYY-MM-DD)")
    end: str = Field(description="last day of the quarter (YYYY-MM-DD)")
    metrics: GroupMetrics
    rules_version: str
