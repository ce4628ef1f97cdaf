"""Kafka security settings: what every client receives, combinations refused at load with one
line, and secrets that never show."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from segstream.runtime.settings import Settings, SettingsError, load_settings
from segstream.runtime.worker import SegmentWorker
from tests.certs import TlsFiles, make_certificates

SERVICE = Path(__file__).resolve().parents[2] / "service" / "segstream"
ROOT = SERVICE.parents[1]
SECRET = "pw-0b7e4c2d-secret"
PROTOCOLS = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def secure(protocol: str, mechanism: str, tls: TlsFiles, **more: object) -> Settings:
    values: dict[str, object] = {"security_protocol": protocol, "sasl_mechanism": mechanism}
    if protocol.startswith("SASL"):
        values |= {"sasl_username": "seg", "sasl_password": SECRET}
    if protocol.endswith("SSL"):
        values["ssl_cafile"] = tls.ca
    return Settings(**(values | more))  # type: ignore[arg-type]


def comparable(options: dict[str, object]) -> dict[str, object]:
    """The options, with the SSL context replaced by what it checks."""
    shown = {k: v for k, v in options.items() if v is not None}
    context = shown.pop("ssl_context", None)
    if isinstance(context, ssl.SSLContext):
        shown["tls"] = (context.verify_mode, context.check_hostname)
    return shown


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_aiokafka_and_faust_receive_the_same_security_options(
    protocol: str, mechanism: str, tls: TlsFiles
) -> None:
    s = secure(protocol, mechanism, tls)
    ours = s.kafka_client_options()
    expected: dict[str, object] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        expected |= {
            "sasl_mechanism": mechanism,
            "sasl_plain_username": "seg",
            "sasl_plain_password": SECRET,
        }
    if protocol.endswith("SSL"):
        expected["tls"] = (ssl.CERT_REQUIRED, True)
    assert comparable(ours) == expected
    faust_side = credentials_to_aiokafka_auth(
        SegmentWorker._credentials(SimpleNamespace(settings=s))
    )  # type: ignore[arg-type]
    assert comparable(dict(faust_side)) == expected


def test_the_faust_app_and_the_highwater_consumer_get_them(tls: TlsFiles) -> None:
    s = secure("SASL_SSL", "SCRAM-SHA-512", tls, rules_dir=ROOT / "rules")
    app = SegmentWorker(s).app
    expected = comparable(s.kafka_client_options())
    assert comparable(dict(app.producer._settings_auth())) == expected  # producer, topic admin
    consumer = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert comparable(dict(consumer)) == expected  # the worker's consumer (health probes too)
    assert comparable(app.conf.segstream_client_options) == expected  # fetch_true_highwaters


KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
#: the embedded broker's readiness probe: loopback, plaintext, our own Tansu
EXEMPT = {("runtime/broker.py", "_metadata_ok")}


def _gets_security_options(call: ast.Call) -> bool:
    return any(
        kw.arg is None
        and (
            "kafka_client_options" in ast.unparse(kw.value)
            or "segstream_client_options" in ast.unparse(kw.value)
        )
        for kw in call.keywords
    ) or any(kw.arg == "broker_credentials" for kw in call.keywords)


def test_every_kafka_client_the_service_creates_gets_the_security_options() -> None:
    missing, seen = [], 0
    for path in sorted(SERVICE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for func in [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]:
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                name = ast.unparse(call.func).rsplit(".", 1)[-1]
                if name not in KAFKA_CLIENTS | {"App"}:
                    continue
                where = (str(path.relative_to(SERVICE)), func.name)
                seen += 1
                if where not in EXEMPT and not _gets_security_options(call):
                    missing.append(f"{where[0]}:{call.lineno} {name} in {where[1]}")
    assert not missing, missing
    assert seen >= 8  # faust app, rules reader and follower, publish, topics, demo feed, ...


def test_the_password_is_read_from_a_file_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(SECRET + "\n")
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="seg", sasl_password_file=path)
    assert s.sasl_password.get_secret_value() == SECRET
    assert s.kafka_client_options()["sasl_plain_password"] == SECRET


def test_hostname_check_can_be_turned_off_but_the_chain_is_still_verified(tls: TlsFiles) -> None:
    s = secure("SSL", "PLAIN", tls, ssl_check_hostname=False)
    context = s.kafka_client_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)


def test_a_client_certificate_is_loaded(tls: TlsFiles) -> None:
    s = secure("SSL", "PLAIN", tls, ssl_certfile=tls.cert, ssl_keyfile=tls.key)
    assert isinstance(s.ssl_context(), ssl.SSLContext)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_SSL needs SEGSTREAM_SASL_USERNAME"),
        ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u"}, "needs SEGSTREAM_SASL_USERNAME"),
        ({"SASL_USERNAME": "seg", "SASL_PASSWORD": SECRET}, "PLAINTEXT does not use them"),
        ({"SECURITY_PROTOCOL": "SSL", "SSL_CAFILE": "/no/ca.pem"}, "/no/ca.pem: no such file"),
        ({"SECURITY_PROTOCOL": "SSL", "SSL_CERTFILE": "{cert}"}, "and SEGSTREAM_SSL_KEYFILE"),
        ({"SECURITY_PROTOCOL": "SSL", "SSL_KEYFILE": "{key}"}, "go together"),
        ({"SSL_CAFILE": "{ca}"}, "PLAINTEXT does not use TLS"),
        ({"SECURITY_PROTOCOL": "SSL", "SSL_CAFILE": "{key}"}, "cannot load the TLS files"),
        ({"SASL_PASSWORD_FILE": "/nonexistent/pw"}, "FILE=/nonexistent/pw: cannot read"),
        ({"SASL_PASSWORD_FILE": "{ca}", "SASL_PASSWORD": SECRET}, "not both"),
        ({"SECURITY_PROTOCOL": "TLS", "SASL_PASSWORD": SECRET}, "PROTOCOL='TLS': Input should be"),
    ],
)  # fmt: skip
def test_a_wrong_combination_stops_at_load_with_one_line_and_no_secret(
    monkeypatch: pytest.MonkeyPatch, tls: TlsFiles, env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"SEGSTREAM_{key}", value.format(ca=tls.ca, cert=tls.cert, key=tls.key))
    with pytest.raises(SettingsError) as stopped:
        load_settings()
    shown = str(stopped.value)
    assert message in shown and "\n" not in shown
    assert SECRET not in shown


def test_the_password_never_shows_in_repr_dumps_schema_or_errors(tmp_path: Path) -> None:
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="seg", sasl_password=SECRET)
    for shown in (
        repr(s),
        str(s),
        str(s.model_dump()),
        s.model_dump_json(),
        str(Settings.model_json_schema()),
    ):
        assert SECRET not in shown
    with pytest.raises(ValidationError) as failed:  # a model-level error: inputs are hidden
        Settings(security_protocol="SASL_PLAINTEXT", sasl_password=SECRET)
    assert SECRET not in str(failed.value)  # .errors() keeps inputs: load_settings shows msgs
    with pytest.raises(ValidationError) as failed:  # a field error next to the secret
        Settings(
            security_protocol="SASL_PLAINTEXT",
            sasl_username="seg",
            sasl_password=SECRET,
            partitions=0,
        )  # type: ignore[arg-type]
    assert SECRET not in str(failed.value)
