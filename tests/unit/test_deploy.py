"""The Kubernetes manifests hang together (no cluster here: parse them and follow the refs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
