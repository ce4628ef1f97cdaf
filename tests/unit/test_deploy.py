"""The Kubernetes manifests hang together (no cluster here: parse them and follow the refs)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from segstream.runtime.settings import Settings

KUBE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def worker_container() -> dict[str, Any]:
    spec = manifests()[("StatefulSet", "segstream")]["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)
    kinds = {kind for kind, _ in manifests()}
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds


def test_the_rules_config_map_is_the_default_rule_set() -> None:
    """The workers' bootstrap rules are rules/ as it is, not as it was (README.md may be in it:
    the worker reads only *.yaml)."""
    data = manifests()[("ConfigMap", "segstream-rules")]["data"]
    rules = KUBE.parents[1] / "rules"
    expected = {p.name: p.read_text() for p in sorted(rules.glob("*.yaml"))}
    assert {name: text for name, text in data.items() if name.endswith(".yaml")} == expected


def test_the_api_token_comes_from_the_secret() -> None:
    env = {e["name"]: e for e in worker_container()["env"]}
    ref = env["SEGSTREAM_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = manifests()[("Secret", ref["name"])]
    assert ref["key"] in secret["stringData"]
    assert "value" not in env["SEGSTREAM_API_TOKEN"]  # never inline in the pod spec


def test_the_sasl_password_is_a_mounted_secret_file() -> None:
    env = {e["name"]: e for e in worker_container()["env"]}
    assert env["SEGSTREAM_SECURITY_PROTOCOL"]["value"].startswith("SASL")
    assert "SEGSTREAM_SASL_PASSWORD" not in env  # neither inline nor in the environment
    path = Path(env["SEGSTREAM_SASL_PASSWORD_FILE"]["value"])
    (mount,) = [m for m in worker_container()["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount["readOnly"] is True
    spec = manifests()[("StatefulSet", "segstream")]["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert path.name in manifests()[("Secret", volume["secret"]["secretName"])]["stringData"]


def test_the_network_policy_guards_the_worker_web_port() -> None:
    policy = manifests()[("NetworkPolicy", "segstream-web")]["spec"]
    labels = worker_container_labels()
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    ports = {p["name"] for p in worker_container()["ports"]}
    (rule,) = policy["ingress"]
    assert {p["port"] for p in rule["ports"]} <= ports
    peers = rule["from"]
    assert any(p.get("podSelector", {}).get("matchLabels", {}) == labels for p in peers)
    assert any("namespaceSelector" in p for p in peers)  # Prometheus


def worker_container_labels() -> dict[str, str]:
    template = manifests()[("StatefulSet", "segstream")]["spec"]["template"]
    labels: dict[str, str] = template["metadata"]["labels"]
    return labels


ROOT = KUBE.parents[1]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def compose_workers() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    return {name: s for name, s in services.items() if s.get("image") == "segstream:dev"}


def test_each_compose_worker_advertises_its_own_host() -> None:
    """/customers/{id} forwards to the owner's advertised host: 0.0.0.0 (the bind address)
    or one name shared by all replicas would send it to the wrong worker, or nowhere."""
    workers = compose_workers()
    assert len(workers) >= 2
    hosts = []
    for name, service in workers.items():
        env = service["environment"]
        assert env["SEGSTREAM_WEB_HOST"] == "0.0.0.0"  # reachable from the other containers
        assert env["SEGSTREAM_ADVERTISED_HOST"] == service["hostname"] == name
        assert "replicas" not in service.get("deploy", {})  # one environment per worker
        hosts.append(env["SEGSTREAM_ADVERTISED_HOST"])
    assert len(set(hosts)) == len(hosts)
    envs = [
        {k: v for k, v in w["environment"].items() if "ADVERTISED" not in k}
        for w in workers.values()
    ]
    assert all(env == envs[0] for env in envs)  # otherwise the same worker
    ports = [p.split(":")[1] for w in workers.values() for p in w["ports"]]
    assert len(set(ports)) == len(ports)


def test_prometheus_in_compose_finds_every_worker() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "segstream"]
    (names,) = [sd["names"] for sd in job["dns_sd_configs"]]
    for service in compose_workers().values():
        assert set(names) <= set(service["networks"]["default"]["aliases"])
    assert set(compose_workers()) <= set(compose()["services"]["prometheus"]["depends_on"])


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make tools` installs Debian's docker-compose"
    checked = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_image_serves_http_on_every_interface_and_the_default_stays_loopback() -> None:
    """`docker run -p 6066:6066` reaches the worker only if it binds beyond the container's
    loopback; a worker run outside the image keeps the safe default."""
    text = (ROOT / "Dockerfile").read_text()
    runtime_stage = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"\bSEGSTREAM_WEB_HOST=0\.0\.0\.0\b", runtime_stage)
    assert Settings.model_fields["web_host"].default == "127.0.0.1"


def test_kubernetes_sets_the_replication_factor_and_says_to_edit_it() -> None:
    env = {e["name"]: e for e in worker_container()["env"]}
    assert int(env["SEGSTREAM_REPLICATION_FACTOR"]["value"]) >= 3
    before = (KUBE / "README.md").read_text().split("Before applying", 1)[1].split("\n\n", 1)[0]
    assert "SEGSTREAM_REPLICATION_FACTOR" in before
