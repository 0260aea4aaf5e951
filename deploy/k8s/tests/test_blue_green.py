"""The blue-green component (deploy/k8s/components/blue-green): two colours of the request path, one public Service.

Rendered with `kubectl kustomize` on the base (skipped without kubectl). The switch is checked by applying
the very `kubectl patch` commands the component's header documents to the rendered Services.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.k8s import render_envoy
from deploy.k8s.tests.overlays import build_with_component

K8S = Path(__file__).resolve().parents[1]
REPO = K8S.parents[1]
COMPONENT = K8S / "components" / "blue-green"
LIVE_GREEN = COMPONENT / "live-green"
COLOURS = ("blue", "green")
COLOURED = ("envoy", "gateway", "jobs", "storage", "scanner")
SHARED = ("compressor", "clamd")
LIVE, IDLE = "envoy", "envoy-idle"
Doc = dict[str, Any]
# An overlay as production's: each colour's release, the shared processes' one, a size for `jobs`.
RELEASES = {"pdf-smaller-blue": "0.1.0", "pdf-smaller-green": "0.2.0", "pdf-smaller": "0.1.9"}
OVERLAY_FIELDS: dict[str, Any] = {
    "images": [
        {"name": name, "newName": "registry.example.com/pdf-smaller", "newTag": tag} for name, tag in RELEASES.items()
    ],
    "patches": [
        {
            "target": {"kind": "Deployment", "name": "jobs"},
            "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        }
    ],
}


def _render(tmp_path: Path, *more_components: Path) -> list[Doc]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return build_with_component(COMPONENT, tmp_path, *more_components, **OVERLAY_FIELDS)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    return _render(tmp_path_factory.mktemp("blue-green"))


def _of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _pods(docs: list[Doc]) -> dict[str, dict[str, str]]:
    """Pod labels by Deployment name."""
    return {name: d["spec"]["template"]["metadata"]["labels"] for name, d in _of_kind(docs, "Deployment").items()}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _selected(service: Doc, docs: list[Doc]) -> set[str]:
    """The Deployments whose pods a Service selects."""
    return {name for name, labels in _pods(docs).items() if _matches(service["spec"]["selector"], labels)}


def test_each_coloured_deployment_runs_in_both_colours_with_distinct_selectors(docs: list[Doc]) -> None:
    deployments = _of_kind(docs, "Deployment")
    assert set(deployments) == {f"{n}-{c}" for n in COLOURED for c in COLOURS} | set(SHARED)
    for name in COLOURED:
        selectors = {}
        for colour in COLOURS:
            spec = deployments[f"{name}-{colour}"]["spec"]
            selector = spec["selector"]["matchLabels"]
            assert selector == {"app.kubernetes.io/name": name, "colour": colour}
            assert _matches(selector, spec["template"]["metadata"]["labels"])
            selectors[colour] = selector
        # Neither colour's Deployment (nor its PodDisruptionBudget) claims the other's pods.
        for colour, other in (COLOURS, COLOURS[::-1]):
            assert not _matches(
                selectors[colour], deployments[f"{name}-{other}"]["spec"]["template"]["metadata"]["labels"]
            )
        budgets = _of_kind(docs, "PodDisruptionBudget")
        assert {budgets[f"{name}-{c}"]["spec"]["selector"]["matchLabels"]["colour"] for c in COLOURS} == set(COLOURS)
    for name in SHARED:
        assert "colour" not in deployments[name]["spec"]["template"]["metadata"]["labels"]
    autoscalers = _of_kind(docs, "HorizontalPodAutoscaler")
    assert {a["spec"]["scaleTargetRef"]["name"] for a in autoscalers.values()} == {
        "compressor",
        "gateway-blue",
        "gateway-green",
    }


def test_each_colour_runs_its_own_release_at_the_overlays_size(docs: list[Doc]) -> None:
    deployments = _of_kind(docs, "Deployment")
    for name in COLOURED:
        for colour in COLOURS:
            containers = deployments[f"{name}-{colour}"]["spec"]["template"]["spec"]["containers"]
            assert {c["image"] for c in containers} == {
                f"registry.example.com/pdf-smaller:{RELEASES[f'pdf-smaller-{colour}']}"
            }
    assert deployments["compressor"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.9")
    # The overlay's patch on the base name reaches both colours.
    assert [deployments[f"jobs-{c}"]["spec"]["replicas"] for c in COLOURS] == [3, 3]


def test_the_live_service_selects_one_colour_and_the_idle_service_the_other(docs: list[Doc]) -> None:
    services = _of_kind(docs, "Service")
    assert _selected(services[LIVE], docs) == {"envoy-blue"}
    assert _selected(services[IDLE], docs) == {"envoy-green"}
    assert [p["port"] for p in services[IDLE]["spec"]["ports"]] == [8080]


def _address_target(address: str) -> tuple[str, int]:
    """`dns:///jobs-green:8052` or `clamd:3310` -> (Service name, port)."""
    host, _, port = address.removeprefix("dns:///").rpartition(":")
    return host, int(port)


def _addresses_read(service: str) -> set[str]:
    """The *_ADDR variables a service's settings read (the shared ConfigMap gives every process all of them)."""
    settings = REPO / "services" / service / "settings.py"
    return set(re.findall(r'"([A-Z]+_ADDR)"', settings.read_text())) if settings.is_file() else set()


def _calls(docs: list[Doc]) -> list[tuple[str, str, int]]:
    """(calling Deployment, Service, port) for every address a Deployment's process reads, and Envoy's upstream."""
    settings = next(
        d["data"] for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("pdf-smaller-settings")
    )
    calls = []
    for name, deployment in _of_kind(docs, "Deployment").items():
        reads = _addresses_read(deployment["metadata"]["labels"]["app.kubernetes.io/name"])
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = dict(settings) if container.get("envFrom") else {}
            env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
            calls += [(name, *_address_target(value)) for key, value in env.items() if key in reads]
    for colour in COLOURS:
        calls.append((f"envoy-{colour}", *_envoy_upstream(docs, colour)))
    return calls


def _envoy_upstream(docs: list[Doc], colour: str) -> tuple[str, int]:
    volumes = _of_kind(docs, "Deployment")[f"envoy-{colour}"]["spec"]["template"]["spec"]["volumes"]
    config_map = next(v["configMap"]["name"] for v in volumes if v["name"] == "config")
    config = yaml.safe_load(_of_kind(docs, "ConfigMap")[config_map]["data"]["envoy.yaml"])
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "gateway")
    socket = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    return socket["address"], socket["port_value"]


def test_each_colour_calls_its_own_colours_peers_and_the_workers_call_both(docs: list[Doc]) -> None:
    services = _of_kind(docs, "Service")
    calls = _calls(docs)
    for caller, service, _port in calls:
        assert service in services, (caller, service)
        targets = _selected(services[service], docs)
        assert targets, (caller, service)
        colour = caller.rpartition("-")[2]
        if colour in COLOURS:
            if service != "clamd":
                assert {t.rpartition("-")[2] for t in targets} == {colour}, (caller, service, targets)
        elif service in {"jobs", "storage"}:
            assert {t.rpartition("-")[2] for t in targets} == set(COLOURS), (caller, service, targets)
    assert ("gateway-green", "jobs-green", 8052) in calls
    assert ("envoy-green", "gateway-headless-green", 8051) in calls
    assert ("compressor", "jobs", 8052) in calls


def _peer_allows(peers: list[Doc] | None, labels: dict[str, str]) -> bool:
    """Whether a rule's `to`/`from` reaches pods with `labels` of this namespace (absent: anywhere)."""
    if peers is None:
        return True
    return any(
        "namespaceSelector" not in p and _matches(p.get("podSelector", {}).get("matchLabels", {}), labels)
        for p in peers
    )


def _port_allows(ports: list[Doc] | None, port: int) -> bool:
    return ports is None or any(p.get("port") == port for p in ports)


def _allowed(policies: list[Doc], source: dict[str, str], target: dict[str, str], port: int) -> bool:
    """Egress from `source` pods and ingress to `target` pods both allowed at `port` (policies are additive)."""

    def rules(pod: dict[str, str], direction: str) -> list[Doc]:
        selecting = [p["spec"] for p in policies if _matches(p["spec"]["podSelector"].get("matchLabels", {}), pod)]
        return [
            rule for spec in selecting for rule in spec.get(direction.lower(), []) if direction in spec["policyTypes"]
        ]

    egress = any(
        _peer_allows(r.get("to"), target) and _port_allows(r.get("ports"), port) for r in rules(source, "Egress")
    )
    ingress = any(
        _peer_allows(r.get("from"), source) and _port_allows(r.get("ports"), port) for r in rules(target, "Ingress")
    )
    return egress and ingress


def _container_port(service: Doc, port: int, pod: Doc) -> int:
    target = next(p.get("targetPort", port) for p in service["spec"]["ports"] if p["port"] == port)
    if isinstance(target, int):
        return target
    return next(
        p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if p["name"] == target
    )


def test_network_policies_let_each_colours_pods_reach_what_they_call(docs: list[Doc]) -> None:
    policies = list(_of_kind(docs, "NetworkPolicy").values())
    deployments, services, pods = _of_kind(docs, "Deployment"), _of_kind(docs, "Service"), _pods(docs)
    checked = 0
    for caller, service, port in _calls(docs):
        for target in _selected(services[service], docs):
            pod = deployments[target]["spec"]["template"]
            assert _allowed(policies, pods[caller], pods[target], _container_port(services[service], port, pod)), (
                caller,
                target,
                port,
            )
            checked += 1
    assert checked >= 2 * 6  # every colour's arrows, and the workers' to both colours
    # The public edge: any client reaches both colours' Envoy (the live Service chooses, not the policy).
    for colour in COLOURS:
        assert _allowed([*policies, _any_client_policy()], {"client": "outside"}, pods[f"envoy-{colour}"], 8080)


def _any_client_policy() -> Doc:
    """A client outside the namespace: its own egress is not this namespace's to govern."""
    return {"spec": {"podSelector": {"matchLabels": {"client": "outside"}}, "policyTypes": ["Egress"], "egress": [{}]}}


def _switch_commands(colour_from: str, colour_to: str) -> list[tuple[str, dict[str, Any]]]:
    """The component header's `kubectl patch service` commands (green goes live), colours exchanged for a rollback."""
    header = (COMPONENT / "kustomization.yaml").read_text()
    commands = []
    for line in header.splitlines():
        if "kubectl" not in line or " patch service " not in line:
            continue
        argv = shlex.split(line.lstrip("# "))
        patch = json.loads(argv[argv.index("-p") + 1])
        if (colour_from, colour_to) != ("blue", "green"):
            patch = json.loads(
                re.sub(r"\b(blue|green)\b", lambda m: {"blue": "green", "green": "blue"}[m[1]], json.dumps(patch))
            )
        assert argv[argv.index("--type") + 1] == "merge", line
        commands.append((argv[argv.index("service") + 1], patch))
    return commands


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def test_the_documented_switch_flips_both_services_and_the_rollback_flips_them_back(
    docs: list[Doc], tmp_path: Path
) -> None:
    services = _of_kind(docs, "Service")
    switch = _switch_commands("blue", "green")
    assert [name for name, _ in switch] == [LIVE, IDLE]  # the public Service first: that is the switch
    switched = {name: _merge_patch(services[name], patch) for name, patch in switch}
    assert _selected(switched[LIVE], docs) == {"envoy-green"}
    assert _selected(switched[IDLE], docs) == {"envoy-blue"}
    back = {name: _merge_patch(switched[name], patch) for name, patch in _switch_commands("green", "blue")}
    assert {name: s["spec"] for name, s in back.items()} == {name: services[name]["spec"] for name in (LIVE, IDLE)}

    # Recording the switch in the overlay renders the same Services, so `kubectl apply -k` keeps it.
    recorded = _of_kind(_render(tmp_path, LIVE_GREEN), "Service")
    assert {name: recorded[name]["spec"] for name in (LIVE, IDLE)} == {name: s["spec"] for name, s in switched.items()}


def test_blue_is_green_with_the_colours_exchanged() -> None:
    green = (COMPONENT / "green" / "kustomization.yaml").read_text()
    green_body = green.split("apiVersion:", 1)[1]
    blue_body = (COMPONENT / "blue" / "kustomization.yaml").read_text().split("apiVersion:", 1)[1]
    assert blue_body == green_body.replace("green", "blue")


@pytest.mark.parametrize("colour", COLOURS)
def test_each_colours_envoy_config_is_the_base_render_with_its_own_upstream(colour: str) -> None:
    path = COMPONENT / colour / "envoy.yaml"
    argv = ["--check", "--no-validate", "--set", f"GATEWAY_ADDR=gateway-headless-{colour}:8051", "--out", str(path)]
    assert render_envoy.main(argv) == 0, f"stale: .venv/bin/python deploy/k8s/render_envoy.py {shlex.join(argv[2:])}"


def test_every_deployment_has_a_progress_deadline_beyond_its_slowest_start(docs: list[Doc]) -> None:
    """`kubectl rollout status` (and so rollout-guard) reports a failed rollout after it; both colours keep it."""
    base = [
        doc for path in sorted((K8S / "base").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc
    ]
    deployments = {d["metadata"]["name"]: d for d in base if d.get("kind") == "Deployment"}
    assert set(deployments) == set(COLOURED) | set(SHARED)
    for name, deployment in deployments.items():
        deadline = deployment["spec"].get("progressDeadlineSeconds")
        assert isinstance(deadline, int), name
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            startup = container.get("startupProbe")
            if startup:  # a pod may take this long to start before it can be ready at all
                assert deadline > startup["periodSeconds"] * startup["failureThreshold"], name
        assert deadline >= 120, name  # an image pull and a start, at least
    rendered = _of_kind(docs, "Deployment")
    for name in COLOURED:
        for colour in COLOURS:
            assert (
                rendered[f"{name}-{colour}"]["spec"]["progressDeadlineSeconds"]
                == deployments[name]["spec"]["progressDeadlineSeconds"]
            )
