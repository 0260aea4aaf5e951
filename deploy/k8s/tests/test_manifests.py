"""Checks over the Kubernetes manifests in deploy/k8s, against the services' real code.

The base is read straight from its files (the generated ConfigMaps are built here from
the same inputs kustomize uses), so these tests need no tool. When `kubectl` is installed,
the base and both overlays are also rendered with `kubectl kustomize` and the same
invariants are checked on the output.

Health names come from the generated descriptors, required variables from each service's
own `Settings.from_env`, Envoy's config from a fresh render: a change in the code that
the manifests do not follow fails here.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pdfsmaller.gateway.v1 import gateway_service_pb2
from pdfsmaller.jobs.v1 import jobs_service_pb2
from pdfsmaller.scanner.v1 import scanner_service_pb2
from pdfsmaller.storage.v1 import storage_service_pb2

from libs.grpc_server import ServerSpec
from libs.settings import SettingsError
from services.compressor.app import HEALTH_NAME as COMPRESSOR_HEALTH_NAME
from services.compressor.settings import CompressorSettings
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from services.scanner.settings import ScannerSettings
from services.storage.settings import StorageSettings

K8S = Path(__file__).resolve().parents[1]
BASE = K8S / "base"
OVERLAYS = ("dev", "production")
REPO_ROOT = K8S.parents[1]
SECRET_TEMPLATE = BASE / "secret.template.yaml"
SECRET_NAME = "pdf-smaller-secrets"
SETTINGS_CONFIGMAP = "pdf-smaller-settings"
MIB = 1024 * 1024

Doc = dict[str, Any]


def _full_name(module: ModuleType, service: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


# name -> (settings class, readiness health name, the Python module the container runs)
SERVICES: dict[str, tuple[Callable[[Mapping[str, str]], Any], str]] = {
    "gateway": (GatewaySettings.from_env, _full_name(gateway_service_pb2, "GatewayService")),
    "jobs": (JobsSettings.from_env, _full_name(jobs_service_pb2, "JobsService")),
    "storage": (StorageSettings.from_env, _full_name(storage_service_pb2, "StorageService")),
    "scanner": (ScannerSettings.from_env, _full_name(scanner_service_pb2, "ScannerService")),
    "compressor": (CompressorSettings.from_env, COMPRESSOR_HEALTH_NAME),
}
AUTOSCALED = ("gateway", "compressor")


# ---------------------------------------------------------------- loading


def _load_yaml_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not NAME=VALUE"
        values[name] = value
    return values


def _kustomization(directory: Path) -> Doc:
    docs = _load_yaml_docs(directory / "kustomization.yaml")
    assert len(docs) == 1
    return docs[0]


def _base_docs() -> list[Doc]:
    """The base as kustomize would build it, minus name hashes and the image tag rewrite."""
    kustomization = _kustomization(BASE)
    docs: list[Doc] = []
    for resource in kustomization["resources"]:
        docs.extend(_load_yaml_docs(BASE / resource))
    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env_file in generator.get("envs", []):
            data.update(_parse_env_file(BASE / env_file))
        for entry in generator.get("files", []):
            key, _, source = entry.rpartition("=")
            data[key or Path(source).name] = (BASE / source).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    return docs


def _kubectl() -> str | None:
    return shutil.which("kubectl")


def _kustomize_build(directory: Path) -> list[Doc]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# ---------------------------------------------------------------- helpers


def _of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def _named(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    matches = [doc for doc in _of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _workloads(docs: Iterable[Doc]) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "Job")]


def _pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def _all_containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _main_container(workload: Doc) -> Doc:
    container: Doc = _pod_spec(workload)["containers"][0]
    return container


def _container_port(container: Doc, name: str) -> int:
    ports = [port["containerPort"] for port in container.get("ports", []) if port["name"] == name]
    assert len(ports) == 1, f"container {container['name']} has no single port named {name!r}"
    return int(ports[0])


def _quantity_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "K": 1000, "M": 1000**2, "G": 1000**3}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity))
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def _secret_values(docs: Iterable[Doc], name: str) -> dict[str, str]:
    """Values of a Secret rendered in the docs (dev), else the template's placeholders."""
    for doc in _of_kind(docs, "Secret"):
        if doc["metadata"]["name"] == name:
            values = {key: base64.b64decode(value).decode() for key, value in doc.get("data", {}).items()}
            values.update(doc.get("stringData", {}))
            return values
    template = _load_yaml_docs(SECRET_TEMPLATE)[0]
    assert template["metadata"]["name"] == SECRET_NAME
    assert name.startswith(SECRET_NAME), f"container reads unknown Secret {name}"
    return {key: str(value) for key, value in template["stringData"].items()}


def _container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The environment the container gets: envFrom ConfigMaps, then env entries."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = _named(docs, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            values = _secret_values(docs, ref["name"])
            assert ref["key"] in values, f"Secret {ref['name']} has no key {ref['key']}"
            env[entry["name"]] = values[ref["key"]]
        elif "configMapKeyRef" in source:
            env[entry["name"]] = _named(docs, "ConfigMap", source["configMapKeyRef"]["name"])["data"][
                source["configMapKeyRef"]["key"]
            ]
        else:  # fieldRef / resourceFieldRef: a value the kubelet fills in
            env[entry["name"]] = "filled-in-by-kubelet"
    return env


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("dns:///").rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------- invariants (base and overlays)


def check_pod_security(docs: list[Doc]) -> None:
    """The restricted Pod Security Standard, plus read-only roots with a writable /tmp."""
    workloads = _workloads(docs)
    assert workloads
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod.get("automountServiceAccountToken") is False, name
        empty_dirs = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
        for container in _all_containers(pod):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert context.get("privileged", False) is False, where
            tmp = [mount for mount in container.get("volumeMounts", []) if mount["mountPath"] == "/tmp"]
            assert len(tmp) == 1, f"{where}: /tmp must be mounted"
            assert tmp[0]["name"] in empty_dirs, f"{where}: /tmp must be an emptyDir"


def check_resources(docs: list[Doc]) -> None:
    for workload in _workloads(docs):
        for container in _all_containers(_pod_spec(workload)):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind} needs cpu and memory"
            assert _quantity_bytes(resources["requests"]["memory"]) <= _quantity_bytes(resources["limits"]["memory"])


def check_service_accounts(docs: list[Doc]) -> None:
    accounts = {doc["metadata"]["name"]: doc for doc in _of_kind(docs, "ServiceAccount")}
    for workload in _workloads(docs):
        account = _pod_spec(workload).get("serviceAccountName")
        assert account in accounts, f"{workload['metadata']['name']}: no ServiceAccount {account!r}"
        assert accounts[account]["automountServiceAccountToken"] is False


def check_python_services(docs: list[Doc]) -> None:
    """Command, probes, ports, Services and a complete environment for each service."""
    deployments = {doc["metadata"]["name"]: doc for doc in _of_kind(docs, "Deployment")}
    services = {doc["metadata"]["name"]: doc for doc in _of_kind(docs, "Service")}
    for name, (from_env, health_name) in SERVICES.items():
        deployment = deployments[name]
        container = _main_container(deployment)
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert importlib.util.find_spec(f"services.{name}.__main__") is not None
        assert container["image"].split("@")[0].rsplit(":", 1)[0].endswith("pdf-smaller")

        env = _container_env(docs, container)
        try:
            settings = from_env(env)
        except SettingsError as error:
            pytest.fail(f"{name}: the manifests leave its settings invalid: {error.problems}")

        # Probes: distinct health names, the readiness one being the service's real name.
        grpc_port = _container_port(container, "grpc")
        readiness, liveness = container["readinessProbe"]["grpc"], container["livenessProbe"]["grpc"]
        assert readiness == {"port": grpc_port, "service": health_name}, name
        assert liveness.get("service", "") == "", name
        assert liveness["port"] == grpc_port, name
        # The server listens where the probes and the Service look, on every interface.
        host, port = _host_port(settings.listen)
        assert (host, port) == ("0.0.0.0", grpc_port), f"{name}: listens on {settings.listen}"
        assert settings.metrics_port == _container_port(container, "metrics"), name

        service = services[name]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        ports = {port["name"]: port for port in service["spec"]["ports"]}
        assert ports["grpc"]["port"] == grpc_port, name
        assert ports["grpc"]["targetPort"] == "grpc", name
        assert ports["metrics"]["targetPort"] == "metrics", name

        # Addresses of other services point at a Service and its grpc port.
        for attribute in ("jobs_addr", "storage_addr", "scanner_addr"):
            address = getattr(settings, attribute, None)
            if address is None:
                continue
            target_host, target_port = _host_port(address)
            target = services.get(target_host)
            assert target is not None, f"{name}.{attribute}={address}: no such Service"
            assert target_port in [port["port"] for port in target["spec"]["ports"] if port["name"] == "grpc"]


def check_termination_grace(docs: list[Doc]) -> None:
    server_grace = ServerSpec(name="x", listen="x", register=lambda server: None, service_names=[]).grace_seconds
    for name in SERVICES:
        pod = _pod_spec(_named(docs, "Deployment", name))
        container = pod["containers"][0]
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_seconds = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        assert pod["terminationGracePeriodSeconds"] > pre_stop_seconds + server_grace, name
    compressor = _named(docs, "Deployment", "compressor")
    settings = CompressorSettings.from_env(_container_env(docs, _main_container(compressor)))
    engine_wall_seconds = 2 * settings.engine_cpu_seconds + 30  # Limits.wall_timeout() default
    longest_job = settings.lease_seconds + engine_wall_seconds
    assert _pod_spec(compressor)["terminationGracePeriodSeconds"] > longest_job


def check_compressor_memory(docs: list[Doc]) -> None:
    compressor = _named(docs, "Deployment", "compressor")
    container = _main_container(compressor)
    settings = CompressorSettings.from_env(_container_env(docs, container))
    limit = _quantity_bytes(container["resources"]["limits"]["memory"])
    needed = settings.concurrency * settings.engine_memory_bytes + 256 * MIB
    assert limit >= needed, f"compressor memory limit {limit} < {needed} (engines + parent)"
    # Its scratch directory is on the writable emptyDir.
    assert str(settings.work_dir).startswith("/tmp"), settings.work_dir


def check_compressor_reports_its_node(docs: list[Doc]) -> None:
    """ListWorkers shows each worker's node, so on-call knows which workers a node drain takes."""
    env = {entry["name"]: entry for entry in _main_container(_named(docs, "Deployment", "compressor"))["env"]}
    assert env["WORKER_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def check_disruption_and_scaling(docs: list[Doc]) -> None:
    budgets = {doc["metadata"]["name"]: doc for doc in _of_kind(docs, "PodDisruptionBudget")}
    for deployment in _of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        assert budgets[name]["spec"]["selector"] == deployment["spec"]["selector"], name
    autoscalers = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in _of_kind(docs, "HorizontalPodAutoscaler")}
    assert set(autoscalers) == set(AUTOSCALED)
    for name, autoscaler in autoscalers.items():
        assert "replicas" not in _named(docs, "Deployment", name)["spec"], f"{name}: the HPA owns replicas"
        assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
        assert [metric["resource"]["name"] for metric in autoscaler["spec"]["metrics"]] == ["cpu"]


def check_network_policies(docs: list[Doc]) -> None:
    policies = _of_kind(docs, "NetworkPolicy")
    deny = [
        policy
        for policy in policies
        if policy["spec"]["podSelector"] == {}
        and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]
    assert deny, "no deny-all NetworkPolicy"
    selected = {
        policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") for policy in policies
    }
    for workload in _workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] in selected, f"no allow-list for {workload['metadata']['name']}"


def check_secrets_complete(docs: list[Doc]) -> None:
    """Every Secret key a container reads exists in the template (and in a generated Secret)."""
    template_keys = set(_load_yaml_docs(SECRET_TEMPLATE)[0]["stringData"])
    for workload in _workloads(docs):
        for container in _all_containers(_pod_spec(workload)):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["key"] in template_keys, f"{ref['key']} missing from {SECRET_TEMPLATE.name}"
                    assert ref["key"] in _secret_values(docs, ref["name"])


def _selects(selector: Doc, labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def check_operator_apis_stay_internal(docs: list[Doc]) -> None:
    """The operator APIs (OperatorService, ApiKeyService) are served on the jobs port: its tokens come
    from the Secret to the jobs pod only, and no Service, Ingress, Envoy cluster or NetworkPolicy
    opens that port to the edge (operators use kubectl port-forward, secret.template.yaml)."""
    readers = []
    for workload in _workloads(docs):
        for container in _all_containers(_pod_spec(workload)):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert not [s for s in container.get("envFrom", []) if "secretRef" in s], f"{where}: a whole Secret"
            readers += [(where, entry) for entry in container.get("env", []) if entry["name"] == "OPERATOR_TOKENS"]
    assert [reader for reader, _ in readers] == ["jobs/jobs"]
    entry = readers[0][1]
    assert set(entry.get("valueFrom", {})) == {"secretKeyRef"}  # never a value in the manifest
    ref = entry["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "OPERATOR_TOKENS"
    assert ref["name"].startswith(SECRET_NAME)  # the dev overlay's generated Secret has a hash suffix
    assert not [doc for doc in _of_kind(docs, "ConfigMap") if "OPERATOR_TOKENS" in doc.get("data", {})]

    jobs = _named(docs, "Deployment", "jobs")
    jobs_labels = jobs["spec"]["template"]["metadata"]["labels"]
    grpc_port = _container_port(_main_container(jobs), "grpc")
    assert not [doc for doc in docs if doc["kind"] in ("Ingress", "Gateway", "HTTPRoute", "GRPCRoute")]
    for service in _of_kind(docs, "Service"):
        selector = service["spec"].get("selector")
        if selector and _selects({"matchLabels": selector}, jobs_labels):
            assert service["metadata"]["name"] == "jobs", f"Service {service['metadata']['name']} selects jobs"
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    for config_map in _of_kind(docs, "ConfigMap"):
        for text in config_map.get("data", {}).values():
            if "static_resources" not in text:
                continue
            for cluster in yaml.safe_load(text)["static_resources"]["clusters"]:
                for endpoint in cluster.get("load_assignment", {}).get("endpoints", []):
                    for lb in endpoint["lb_endpoints"]:
                        address = lb["endpoint"]["address"]["socket_address"]
                        assert address["address"].split(".")[0] not in ("jobs", "jobs-headless"), cluster["name"]
                        assert address["port_value"] != grpc_port, cluster["name"]
    # Who may open a connection to the jobs grpc port: the gateway and the workers, nothing else.
    for policy in _of_kind(docs, "NetworkPolicy"):
        if not _selects(policy["spec"]["podSelector"], jobs_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = [port["port"] for port in rule.get("ports", [])]
            if ports and grpc_port not in ports and "grpc" not in ports:
                continue
            peers = rule.get("from", [])
            assert peers, f"NetworkPolicy {policy['metadata']['name']} opens the jobs port to anyone"
            for peer in peers:
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: {peer}"
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in ("gateway", "compressor")


INVARIANTS = [
    check_pod_security,
    check_resources,
    check_service_accounts,
    check_python_services,
    check_termination_grace,
    check_compressor_memory,
    check_compressor_reports_its_node,
    check_disruption_and_scaling,
    check_network_policies,
    check_secrets_complete,
    check_operator_apis_stay_internal,
]


@pytest.mark.parametrize("check", INVARIANTS, ids=lambda check: check.__name__)
def test_base(check: Callable[[list[Doc]], None]) -> None:
    check(_base_docs())


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_kustomize_build(target: str) -> None:
    """Rendered by kustomize itself (skipped without kubectl); every invariant holds there too."""
    directory = BASE if target == "base" else K8S / "overlays" / target
    docs = _kustomize_build(directory)
    for check in INVARIANTS:
        check(docs)
    if target != "base":
        namespaces = {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"}
        assert len(namespaces) == 1, namespaces
        assert None not in namespaces


# ---------------------------------------------------------------- base-only checks


def test_kustomization_lists_every_file() -> None:
    kustomization = _kustomization(BASE)
    listed = set(kustomization["resources"])
    for generator in kustomization.get("configMapGenerator", []):
        listed.update(generator.get("envs", []))
        listed.update(entry.rpartition("=")[2] for entry in generator.get("files", []))
    present = {
        str(path.relative_to(BASE)) for path in BASE.rglob("*") if path.is_file() and path.name != "kustomization.yaml"
    }
    # The Secret template is documentation: listing it would apply placeholder credentials.
    assert SECRET_TEMPLATE.name not in listed
    assert present - {SECRET_TEMPLATE.name} == listed


def test_overlays_list_their_files() -> None:
    for overlay in OVERLAYS:
        directory = K8S / "overlays" / overlay
        kustomization = _kustomization(directory)
        listed = {entry for entry in kustomization["resources"] if not entry.startswith("..")}
        for generator in [*kustomization.get("configMapGenerator", []), *kustomization.get("secretGenerator", [])]:
            listed.update(generator.get("envs", []))
        present = {path.name for path in directory.iterdir() if path.name != "kustomization.yaml"}
        assert present == listed, overlay


def test_dev_secret_has_every_key() -> None:
    template_keys = set(_load_yaml_docs(SECRET_TEMPLATE)[0]["stringData"])
    assert set(_parse_env_file(K8S / "overlays" / "dev" / "secrets.dev.env")) == template_keys


def test_migrations_job_runs_the_real_migrate_module() -> None:
    docs = _base_docs()
    job = _named(docs, "Job", "jobs-migrate")
    container = _main_container(job)
    assert container["command"] == ["python", "-m", "services.jobs.migrate"]
    assert importlib.util.find_spec("services.jobs.migrate") is not None
    assert _pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert _container_env(docs, container)["DATABASE_URL"]


def test_images_are_set_by_kustomize() -> None:
    """Containers name bare images; the kustomization's `images:` (and overlays) set the tags."""
    names = {image["name"] for image in _kustomization(BASE)["images"]}
    for workload in _workloads(_base_docs()):
        for container in _all_containers(_pod_spec(workload)):
            assert ":" not in container["image"], container["image"]
            assert container["image"] in names, container["image"]


def _render_envoy_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_envoy", K8S / "render_envoy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_envoy", module)
    spec.loader.exec_module(module)
    return module


def test_envoy_config_is_freshly_rendered() -> None:
    render_envoy = _render_envoy_module()
    committed = (BASE / "envoy" / "envoy.yaml").read_text()
    assert committed == render_envoy.dump(render_envoy.render()), "stale: run deploy/k8s/render_envoy.py"


def test_envoy_deployment_matches_its_config() -> None:
    render_envoy = _render_envoy_module()
    docs = _base_docs()
    config = yaml.safe_load(_named(docs, "ConfigMap", "envoy-config")["data"]["envoy.yaml"])
    listeners = {
        listener["name"]: listener["address"]["socket_address"] for listener in config["static_resources"]["listeners"]
    }
    container = _main_container(_named(docs, "Deployment", "envoy"))
    assert listeners["public"] == {"address": "0.0.0.0", "port_value": _container_port(container, "http")}
    assert listeners["stats"]["port_value"] == _container_port(container, "metrics")
    assert "--config-path=/etc/envoy/envoy.yaml" in container["command"]
    # The gateway cluster points at the headless Service's grpc port.
    gateway_host, gateway_port = _host_port(render_envoy.K8S_ENV["GATEWAY_ADDR"])
    headless = _named(docs, "Service", gateway_host)
    assert headless["spec"]["clusterIP"] == "None"
    assert gateway_port in [port["port"] for port in headless["spec"]["ports"] if port["name"] == "grpc"]
    # The image generates the descriptor where the config expects it.
    dockerfile = (REPO_ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert render_envoy.IMAGE_DESCRIPTOR == "/app/gen/gateway_descriptor.pb"
    assert "WORKDIR /app" in dockerfile
    assert "--descriptor_set_out=gen/gateway_descriptor.pb" in dockerfile


def test_envoy_accepts_the_config() -> None:
    """`envoy --mode validate` on the rendered config (with this checkout's descriptor)."""
    render_envoy = _render_envoy_module()
    if not render_envoy.DEFAULT_DESCRIPTOR.exists():
        pytest.skip("no generated descriptor (make gen)")
    render_envoy.validate_with_local_descriptor()


def test_dockerfile_generates_code_like_make_gen() -> None:
    """The image's protoc steps are the Makefile's, with the same inputs."""
    dockerfile = (REPO_ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for flag in ("--python_out", "--pyi_out", "--grpc_python_out", "--include_imports", "--include_source_info"):
        assert flag in makefile, flag
        assert flag in dockerfile, flag
    for proto in ("google/rpc/status.proto", "google/rpc/error_details.proto"):
        assert (proto in makefile) == (proto in dockerfile), proto
    assert "requirements.in -c constraints.txt" in dockerfile
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    # The user the pods run as is the image's.
    for workload in _workloads(_base_docs()):
        container = _main_container(workload)
        if container["image"] == "pdf-smaller":
            assert _pod_spec(workload)["securityContext"]["runAsUser"] == 10001
