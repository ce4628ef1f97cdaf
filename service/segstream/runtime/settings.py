"""Worker configuration: environment variables (``SEGSTREAM_*``) and an optional TOML file.

Every key is documented in docs/configuration.md; ``Settings.model_json_schema()`` is the
machine-readable version.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from segstream.core.rulelang.errors import did_you_mean
from segstream.core.state import Limits

CONFIG_FILE_ENV = "SEGSTREAM_CONFIG_FILE"
#: ``SEGSTREAM_*`` variables that are not settings: read before the settings are (the log
#: format, the config file) or by the embedded broker only.
OTHER_ENV = frozenset({CONFIG_FILE_ENV, "SEGSTREAM_LOG_FORMAT", "SEGSTREAM_TANSU_BIN"})

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SHORT_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def _duration(value: object) -> object:
    """Seconds as a number, ``1d``/``12h``/``30m``/``45s``, or ISO 8601 (``P1D``, ``PT12H``,
    left to pydantic): operators write durations all three ways."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return timedelta(seconds=float(text))
        short = _SHORT_DURATION.fullmatch(text)
        if short:
            return timedelta(seconds=float(short[1]) * _UNIT_SECONDS[short[2]])
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Settings(BaseSettings):
    """What a ``segstream worker`` needs to know."""

    # hide_input_in_errors: a model-level error would otherwise quote every input, secrets too
    model_config = SettingsConfigDict(
        env_prefix="SEGSTREAM_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    bootstrap_servers: str = Field(
        "",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "SEGSTREAM_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]; empty starts the embedded broker in demo mode",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr = Field(SecretStr(""), description="a secret: masked when printed")
    sasl_password_file: Path | None = Field(
        None,
        description="file holding the SASL password (a mounted Kubernetes Secret); read at"
        " start, trailing newline dropped; instead of SEGSTREAM_SASL_PASSWORD",
    )
    ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) that signed the brokers' certificates; none: system CAs"
    )
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM), for mTLS")
    ssl_keyfile: Path | None = Field(None, description="the client certificate's private key")
    ssl_check_hostname: bool = Field(
        True,
        description="check that a broker's certificate names the host it is reached by"
        " (the certificate chain is verified whatever this says)",
    )

    app_id: str = Field("segstream", description="consumer group and changelog topic prefix")
    topic_orders: str = "orders"
    topic_support: str = "support"
    topic_surveys: str = "surveys"
    topic_profiles: str = "profiles"
    topic_changes: str = "segment-changes"
    topic_dlq: str = "segstream-dlq"
    topic_rules: str = "segment-rules"
    topic_groups: str = Field(
        "segstream-groups",
        description="compacted: each partition's partial group figures, read by every worker",
    )
    topic_group_snapshots: str = Field(
        "segment-group-snapshots",
        description="one group-snapshot event per group value when a quarter closes",
    )
    topic_population: str = Field(
        "segstream-population",
        description="retired: cut points are kept per partition and no longer shared; accepted"
        " so existing configurations still load",
    )
    partitions: int = Field(8, ge=1, le=4096, description="partitions of every input topic")
    replication_factor: int = Field(1, ge=1)

    rules_dir: Path = Path("rules")
    clock: Literal["wall", "event"] = "wall"
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    max_message_bytes: int = Field(64 * 1024, ge=256)

    store: str = Field("memory://", description="memory:// or rocksdb:// (RocksDB via rocksdict)")
    data_dir: Path = Path("data")
    standby_replicas: int = Field(0, ge=0)
    web_host: str = Field("127.0.0.1", description="interface the HTTP server binds to")
    web_port: int = Field(6066, ge=1, le=65535)
    advertised_host: str = Field("", description="host other workers use to reach this one")

    commit_interval_seconds: float = Field(1.0, gt=0)
    fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        le=10_000,
        description="longest a fetch waits for data: Tansu may hold a fetch that long although"
        " data arrived, and very short waits flood it with fetches (p99 rose 3-5x at 5 ms)",
    )
    session_timeout_seconds: float = Field(10.0, gt=0)
    clock_tick_seconds: float = Field(1.0, gt=0, description="wall-clock re-evaluation period")
    population_refresh_seconds: float = Field(2.0, gt=0)
    shadow_refresh_seconds: float = Field(
        60.0,
        gt=0,
        description="how often every customer is compared with the shadow rule set again"
        " (its time-driven conditions move customers with no event)",
    )
    groups_publish_seconds: float = Field(
        2.0, gt=0, description="how often a worker shares its partitions' group figures"
    )
    rules_chunk_size: int = Field(2000, ge=1, description="customers re-evaluated per step")
    commit_max_items: int = Field(
        400,
        ge=1,
        description="customers written plus changes decided after which a partition commits"
        " (one changelog record batch) within a fetched batch",
    )
    hot_customers: int | None = Field(
        None,
        ge=0,
        description="customers held as objects; the others are held as their stored bytes"
        " and decoded when needed (memory for CPU: docs/performance.md, The hot set);"
        " unset: every customer is held as an object",
    )
    commit_max_bytes: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        description="largest record batch a commit is written as; at most the changelog"
        " topic's max.message.bytes",
    )
    source: str = Field("urn:segstream", description="CloudEvents ce_source of change events")

    customer_api: bool = Field(True, description="serve /customers/{id} (customer data)")
    api_token: SecretStr = Field(
        SecretStr(""),
        description="bearer token required by /customers/{id} and /segments; empty: open",
    )

    max_future_skew: Duration = Field(
        timedelta(days=1),
        gt=timedelta(0),
        description="events dated further than this ahead of the clock are rejected",
    )
    max_attributes: int = Field(256, ge=1, description="profile attributes kept per customer")
    max_open_tickets: int = Field(200, ge=1, description="open support tickets kept per customer")
    max_closed_ticket_ids: int = Field(
        1024, ge=1, description="digests of compacted closed tickets kept per customer"
    )
    max_folded_ids: int = Field(
        4096, ge=1, description="digests of folded (past-horizon) orders kept per customer"
    )
    event_id_memory_days: int = Field(
        60,
        ge=60,
        description="days a customer's event ids are remembered to drop duplicates (at least"
        " the 60 days activity windows look back)",
    )
    timeline_length: int = Field(
        16, ge=0, description="transitions kept per customer for its timeline (0: none)"
    )
    timeline_days: int = Field(
        400, ge=0, description="days a transition stays in a customer's timeline"
    )
    demo_events_per_second: float = Field(200.0, gt=0)
    broker_wait_seconds: float = Field(
        30.0,
        ge=0,
        description="how long a starting worker retries an unreachable cluster before it exits",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _read_password_file(cls, data: object) -> object:
        if not isinstance(data, dict) or not data.get("sasl_password_file"):
            return data
        path = Path(str(data["sasl_password_file"]))
        if data.get("sasl_password"):
            raise ValueError(
                "set SEGSTREAM_SASL_PASSWORD or SEGSTREAM_SASL_PASSWORD_FILE, not both"
            )
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(
                f"SEGSTREAM_SASL_PASSWORD_FILE={path}: cannot read it ({exc.strerror})"
            ) from None
        return data | {"sasl_password": password}

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        problems = _security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        if self.security_protocol.endswith("SSL"):
            try:
                self.ssl_context()
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"cannot load the TLS files: {exc}") from None
        return self

    @property
    def input_topics(self) -> dict[str, str]:
        """Input topic name -> the event type it is expected to carry."""
        return {getattr(self, field): kind for kind, field in INPUT_TOPIC_FIELDS.items()}

    @property
    def topic_of_type(self) -> dict[str, str]:
        """Event type -> the input topic that carries it."""
        return {kind: getattr(self, field) for kind, field in INPUT_TOPIC_FIELDS.items()}

    def limits(self) -> Limits:
        return Limits(
            max_attributes=self.max_attributes,
            max_open_tickets=self.max_open_tickets,
            max_closed_ticket_ids=self.max_closed_ticket_ids,
            max_folded_ids=self.max_folded_ids,
            event_id_memory_days=self.event_id_memory_days,
            timeline_length=self.timeline_length,
            timeline_days=self.timeline_days,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the brokers' certificates (as aiokafka's
        ``create_ssl_context``), with ``ssl_check_hostname``."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile and self.ssl_keyfile:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return context

    def kafka_client_options(self) -> dict[str, object]:
        """Security options in aiokafka's vocabulary: every Kafka client of the service is
        created with them (faust's through ``worker._credentials``)."""
        options: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value(),
            }
        if self.security_protocol.endswith("SSL"):
            options["ssl_context"] = self.ssl_context()
        return options


def _security_problems(s: Settings) -> list[str]:
    """Combinations that cannot work, or would silently not do what the operator wrote."""
    protocol = f"SEGSTREAM_SECURITY_PROTOCOL={s.security_protocol}"
    sasl, tls = s.security_protocol.startswith("SASL"), s.security_protocol.endswith("SSL")
    problems = []
    if sasl and not (s.sasl_username and s.sasl_password.get_secret_value()):
        problems.append(
            f"{protocol} needs SEGSTREAM_SASL_USERNAME and SEGSTREAM_SASL_PASSWORD"
            " (or SEGSTREAM_SASL_PASSWORD_FILE)"
        )
    if not sasl and (s.sasl_username or s.sasl_password.get_secret_value()):
        problems.append(
            f"SASL credentials are set but {protocol} does not use them;"
            " use SASL_SSL (or SASL_PLAINTEXT)"
        )
    files = {
        "SEGSTREAM_SSL_CAFILE": s.ssl_cafile,
        "SEGSTREAM_SSL_CERTFILE": s.ssl_certfile,
        "SEGSTREAM_SSL_KEYFILE": s.ssl_keyfile,
    }
    given = [name for name, path in files.items() if path is not None]
    if given and not tls:
        problems.append(
            f"{', '.join(given)} set but {protocol} does not use TLS; use SSL or SASL_SSL"
        )
    problems += [
        f"{name}={path}: no such file"
        for name, path in files.items()
        if path is not None and not path.is_file()
    ]
    if (s.ssl_certfile is None) != (s.ssl_keyfile is None):
        problems.append(
            "SEGSTREAM_SSL_CERTFILE and SEGSTREAM_SSL_KEYFILE go together"
            " (a client certificate and its private key)"
        )
    return problems


class SettingsError(ValueError):
    """The configuration cannot be used; the message is one line naming the variable."""


def _env_names(name: str) -> list[str]:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"SEGSTREAM_{name.upper()}"]


def known_env() -> set[str]:
    return {env for name in Settings.model_fields for env in _env_names(name)} | OTHER_ENV


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """A misspelled variable would be ignored and its default used instead: refuse it."""
    known = known_env()
    return [
        f"unknown setting {name}{did_you_mean(name.upper(), known)}"
        for name in sorted(environ)
        if name.upper().startswith("SEGSTREAM_") and name.upper() not in known
    ]


def _check_config_file(path: str) -> None:
    try:
        with open(path, "rb") as handle:
            tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"{CONFIG_FILE_ENV}={path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_FILE_ENV}={path}: not valid TOML: {exc}") from None


def _describe(error: Mapping[str, object], environ: Mapping[str, str], config: str | None) -> str:
    loc = error.get("loc")
    if not loc:  # a problem of several settings together: its message names them
        return str(error.get("msg")).removeprefix("Value error, ")
    name = str(loc[0]).lower() if isinstance(loc, tuple) else "?"
    if error.get("type") == "extra_forbidden":
        return f"unknown key {name!r} in {config}{did_you_mean(name, Settings.model_fields)}"
    upper = {key.upper(): key for key in environ}
    names = _env_names(name) if name in Settings.model_fields else [f"SEGSTREAM_{name.upper()}"]
    where = next((n for n in names if n in upper), None)
    field = Settings.model_fields.get(name)
    secret = field is not None and field.annotation is SecretStr
    shown = f"{name} in {config}" if where is None and config else where or names[0]
    if not secret and "input" in error:
        shown += f"={error['input']!r}"
    return f"{shown}: {error.get('msg')}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings, or SettingsError with one line naming every wrong variable or key."""
    environ = os.environ if environ is None else environ
    problems = unknown_env(environ)
    if problems:
        raise SettingsError("; ".join(problems))
    config = environ.get(CONFIG_FILE_ENV) or None
    if config:
        _check_config_file(config)
    try:
        return Settings()
    except ValidationError as exc:
        lines = [_describe(error, environ, config) for error in exc.errors()]
        raise SettingsError("; ".join(lines)) from None


#: event type -> the setting that names its input topic
INPUT_TOPIC_FIELDS = {
    "order": "topic_orders",
    "support": "topic_support",
    "survey": "topic_surveys",
    "profile": "topic_profiles",
}
#: event type -> its input topic under the default names (tests and benchmarks prefix them)
TOPIC_OF_TYPE = {
    kind: str(Settings.model_fields[field].default) for kind, field in INPUT_TOPIC_FIELDS.items()
}


def isolated_env(prefix: str, bootstrap: str, **settings: str) -> dict[str, str]:
    """Environment for a worker whose app id and topics all carry ``prefix``: several isolated
    deployments (tests, benchmarks) on one cluster. Extra settings are given by field name."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SEGSTREAM_APP_ID": f"{prefix}app"}
    for name, field in Settings.model_fields.items():
        if name.startswith("topic_"):
            env[f"SEGSTREAM_{name.upper()}"] = f"{prefix}{field.default}"
    env |= {f"SEGSTREAM_{name.upper()}": value for name, value in settings.items()}
    return env
