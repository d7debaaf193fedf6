"""The deployment files agree with the code they deploy.

deploy/compose.yaml, deploy/haproxy.cfg, deploy/Dockerfile and the Kubernetes base in deploy/k8s/
name subcommands, ports and environment variables; these tests hold them to `services.cli`,
`shared.settings.SETTINGS` and the ports the services really listen on, so that a renamed
setting or subcommand breaks here rather than in production.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli import build_parser
from shared.settings import SETTINGS, read_dotenv

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

SETTING = {s.env: s for s in SETTINGS}
INGRESS_PORT = int(SETTING["DESKLEDGER_HTTP_PORT"].default)
WORKER_PORT = int(SETTING["DESKLEDGER_WORKER_METRICS_PORT"].default)
SECRET_SETTINGS = {"DATABASE_URL", "AMQP_URL", "DESKLEDGER_SECRETS", "USEDESK_API_TOKEN"}
# Settings the Kubernetes ConfigMap sets to something other than their default, and why.
CONFIGMAP_DEVIATIONS = {"DESKLEDGER_LOG_FORMAT": "json, since the default depends on a terminal"}
# `urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VAR', 'PORT'))`
# Seconds the grace period keeps beyond what the settings add up to, for the process to exit.
MARGIN = 5
HEALTHCHECK_PORT = re.compile(r"environ\.get\('(\w+)', '(\d+)'\)")


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def deskledger_services() -> dict[str, dict[str, Any]]:
    """Compose services that run the DeskLedger image (the others are PostgreSQL, RabbitMQ, LB)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def compose_ingresses() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in deskledger_services().items() if s["command"][0] == "ingress"}


@cache
def k8s_documents() -> tuple[dict[str, Any], ...]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return tuple(documents)


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] == kind]


def pod_spec(document: dict[str, Any]) -> dict[str, Any]:
    spec = document["spec"]
    if document["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]["spec"]
    return template


def k8s_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for document in k8s_documents():
        if document["kind"] in {"Deployment", "Job", "CronJob"}:
            spec = pod_spec(document)
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield document, container


def deployment_container(name: str) -> dict[str, Any]:
    (deployment,) = [d for d in k8s_kind("Deployment") if d["metadata"]["name"] == name]
    containers: list[dict[str, Any]] = pod_spec(deployment)["containers"]
    (container,) = containers
    return container


def config_map() -> dict[str, str]:
    return read_dotenv(K8S / "config.env")


def example_secret() -> dict[str, str]:
    secret: dict[str, str] = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    return secret


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


# --- subcommands -------------------------------------------------------------------------------


def test_compose_and_k8s_run_the_image_through_its_entrypoint() -> None:
    for name, service in deskledger_services().items():
        assert "entrypoint" not in service, f"compose service {name} bypasses `deskledger`"
        assert isinstance(service["command"], list), f"compose service {name}: command as a list"
    for document, container in k8s_containers():
        where = f"{document['kind']}/{document['metadata']['name']}"
        assert container["image"] == "deskledger", f"{where}: image set by kustomization.yaml"
        assert "command" not in container, f"{where} bypasses the `deskledger` entrypoint"


def invoked_commands() -> list[tuple[str, list[str]]]:
    """Every `deskledger` command line that compose and the Kubernetes base run."""
    invoked = [(f"compose:{name}", s["command"]) for name, s in deskledger_services().items()]
    invoked += [
        (f"k8s:{d['kind']}/{d['metadata']['name']}", c["args"]) for d, c in k8s_containers()
    ]
    return invoked


@pytest.mark.parametrize(
    ("where", "argv"), invoked_commands(), ids=[where for where, _ in invoked_commands()]
)
def test_every_invoked_command_is_accepted_by_the_cli(where: str, argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where} runs `deskledger {' '.join(argv)}`, which services.cli rejects")


# --- ports -------------------------------------------------------------------------------------


def test_dockerfile_exposes_the_real_ports_and_checks_the_ingress() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (exposed,) = re.findall(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE)
    assert {int(port) for port in exposed.split()} == {INGRESS_PORT, WORKER_PORT}
    (healthcheck,) = re.findall(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile, re.M | re.S)
    assert "/healthz" in healthcheck
    assert HEALTHCHECK_PORT.findall(healthcheck) == [("DESKLEDGER_HTTP_PORT", str(INGRESS_PORT))]


def test_compose_health_checks_use_the_real_ports() -> None:
    worker_check = " ".join(deskledger_services()["worker"]["healthcheck"]["test"])
    assert "/healthz" in worker_check
    assert HEALTHCHECK_PORT.findall(worker_check) == [
        ("DESKLEDGER_WORKER_METRICS_PORT", str(WORKER_PORT))
    ]
    # The ingress keeps the image's own HEALTHCHECK; one-shot commands switch it off.
    for service in compose_ingresses().values():
        assert "healthcheck" not in service
    for name in ("migrate", "status", "replay"):
        assert deskledger_services()[name]["healthcheck"] == {"disable": True}


def test_only_the_load_balancer_is_published_and_it_targets_the_ingress_port() -> None:
    services = compose()["services"]
    published = {name for name, s in services.items() if "ports" in s}
    # The monitoring profile's Prometheus and Grafana listen on loopback only.
    monitoring = {name for name in published if "monitoring" in services[name].get("profiles", ())}
    assert published - monitoring == {"lb"}
    for name in monitoring:
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    (public,) = compose()["services"]["lb"]["ports"]
    assert f"bind :{public.rsplit(':', 1)[1]}" in haproxy
    servers = re.findall(r"^\s*server \S+ ([\w-]+):(\d+)", haproxy, re.M)
    assert len(compose_ingresses()) == 2
    assert servers == [(name, str(INGRESS_PORT)) for name in sorted(compose_ingresses())]
    assert "http-check send meth GET uri /readyz" in haproxy


def test_k8s_ports_are_the_real_ones_and_agree_with_the_configmap() -> None:
    ingress = deployment_container("deskledger-ingress")
    worker = deployment_container("deskledger-worker")
    assert container_ports(ingress) == {"http": INGRESS_PORT}
    assert container_ports(worker) == {"metrics": WORKER_PORT}
    assert int(config_map()["DESKLEDGER_HTTP_PORT"]) == INGRESS_PORT
    assert int(config_map()["DESKLEDGER_WORKER_METRICS_PORT"]) == WORKER_PORT
    for document, container in k8s_containers():
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                port = container[probe]["httpGet"]["port"]
                assert port in container_ports(container), f"{container['name']} {probe}: {port}"
        annotations = document["spec"].get("template", {}).get("metadata", {}).get("annotations")
        if annotations:
            assert int(annotations["prometheus.io/port"]) in container_ports(container).values()
    (service,) = k8s_kind("Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "ingress"


def test_k8s_probes_readiness_and_liveness() -> None:
    ingress = deployment_container("deskledger-ingress")
    assert ingress["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ingress["livenessProbe"]["httpGet"]["path"] == "/healthz"
    worker = deployment_container("deskledger-worker")
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"


# --- environment variables ---------------------------------------------------------------------


def test_compose_sets_known_settings_only() -> None:
    for name, service in deskledger_services().items():
        unknown = set(service.get("environment", {})) - set(SETTING)
        assert not unknown, f"compose service {name} sets {unknown}: not in shared.settings"


def test_compose_takes_the_usedesk_secret_from_the_environment_or_stops() -> None:
    for name, service in deskledger_services().items():
        value = service.get("environment", {}).get("DESKLEDGER_SECRETS")
        assert value is None or value.startswith("${DESKLEDGER_SECRETS:?"), name
    for service in compose_ingresses().values():
        assert "DESKLEDGER_SECRETS" in service["environment"]


def test_k8s_sets_known_settings_only_and_refers_to_real_keys() -> None:
    for document, container in k8s_containers():
        where = f"{document['kind']}/{document['metadata']['name']}"
        for variable in container.get("env", []):
            assert variable["name"] in SETTING, f"{where}: {variable['name']} is no setting"
            secret = variable["valueFrom"]["secretKeyRef"]
            assert (secret["name"], secret["key"]) == ("deskledger-secrets", variable["name"])
            assert secret["key"] in example_secret(), where
        for source in container["envFrom"]:
            assert source == {"configMapRef": {"name": "deskledger-config"}}, where


def test_every_setting_is_in_the_k8s_configmap_or_secret_and_none_twice() -> None:
    config, secret = set(config_map()), set(example_secret())
    assert not config & secret
    assert set(secret) == SECRET_SETTINGS
    assert config | secret == set(SETTING), f"missing {set(SETTING) - config - secret}"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert (generator["name"], generator["envs"]) == ("deskledger-config", ["config.env"])
    assert "secret.example.yaml" not in kustomization["resources"]


@pytest.mark.parametrize("name", sorted(set(SETTING) - SECRET_SETTINGS))
def test_k8s_configmap_values_parse_and_match_the_defaults(name: str) -> None:
    value = config_map()[name]
    SETTING[name].parse(name, value)
    if name not in CONFIGMAP_DEVIATIONS:
        assert value == SETTING[name].default, f"{name}: default is {SETTING[name].default!r}"


# --- draining, body size and start order -------------------------------------------------------


def test_k8s_ingress_drains_before_it_is_killed() -> None:
    (deployment,) = [d for d in k8s_kind("Deployment") if "ingress" in d["metadata"]["name"]]
    pre_stop = deployment_container("deskledger-ingress")["lifecycle"]["preStop"]["exec"]
    assert re.fullmatch(r'sleep "\$\{DESKLEDGER_DRAIN_SECONDS(:-\d+)?\}"', pre_stop["command"][-1])
    drain = float(config_map()["DESKLEDGER_DRAIN_SECONDS"])
    read = float(config_map()["DESKLEDGER_READ_TIMEOUT"])
    publish = float(config_map()["DESKLEDGER_PUBLISH_TIMEOUT"])
    # preStop sleep, the ingress's own drain after SIGTERM, the longest in-flight request (its
    # body's deadline, then the publish's, + 1 s: services/ingress/server.py `_grace`), the
    # spool's last forwarding (the publish timeout), and a margin to exit.
    needed = drain + drain + (read + publish + 1) + publish + MARGIN
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= needed, f"terminationGracePeriodSeconds {grace} < {needed}"
    comment = (K8S / "ingress.yaml").read_text()
    assert f"terminationGracePeriodSeconds: {grace}" in comment
    assert "DESKLEDGER_READ_TIMEOUT" in comment.split("terminationGracePeriodSeconds")[0]


def test_every_disruption_budget_lets_unhealthy_pods_be_evicted() -> None:
    budgets = k8s_kind("PodDisruptionBudget")
    assert budgets
    for budget in budgets:
        name = budget["metadata"]["name"]
        assert budget["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow", name


def test_compose_ingress_drains_before_it_is_killed() -> None:
    read = float(SETTING["DESKLEDGER_READ_TIMEOUT"].default)
    publish = float(SETTING["DESKLEDGER_PUBLISH_TIMEOUT"].default)
    for service in compose_ingresses().values():
        drain = float(service["environment"]["DESKLEDGER_DRAIN_SECONDS"])
        # No preStop in compose: drain, the longest request, the spool's last forwarding.
        needed = drain + (read + publish + 1) + publish
        assert int(service["stop_grace_period"].removesuffix("s")) > needed


def test_k8s_ingress_has_a_disruption_budget_and_an_autoscaler() -> None:
    (budget,) = [d for d in k8s_kind("PodDisruptionBudget") if "ingress" in d["metadata"]["name"]]
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "ingress"
    (autoscaler,) = k8s_kind("HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "deskledger-ingress"
    assert autoscaler["spec"]["minReplicas"] >= 2
    for _, container in k8s_containers():
        assert {"requests", "limits"} <= set(container["resources"]), container["name"]


def test_the_load_balancer_limits_bodies_like_the_ingress() -> None:
    default = SETTING["DESKLEDGER_MAX_BODY_BYTES"].default
    expected = f"${{DESKLEDGER_MAX_BODY_BYTES:-{default}}}"
    assert compose()["services"]["lb"]["environment"]["DESKLEDGER_MAX_BODY_BYTES"] == expected
    for service in compose_ingresses().values():
        assert service["environment"]["DESKLEDGER_MAX_BODY_BYTES"] == expected
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    assert 'req.hdr_val(content-length) gt "${DESKLEDGER_MAX_BODY_BYTES}"' in haproxy
    assert re.search(r"^\s*timeout http-request \d+s$", haproxy, re.M)
    assert re.search(r"^\s*option http-buffer-request$", haproxy, re.M)


def test_services_start_after_a_successful_migrate() -> None:
    services = deskledger_services()
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in [*compose_ingresses(), "worker"]:
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    assert services["worker"]["deploy"]["replicas"] == 2
    spools = {f"spool-{name.removeprefix('ingress-')}" for name in compose_ingresses()}
    assert set(compose()["volumes"]) == {"postgres-data", "rabbitmq-data", *spools}


def test_every_ingress_keeps_its_spool_on_a_volume_of_its_own() -> None:
    """The spool holds webhooks answered 200: it must outlive the container, one per replica."""
    spool = f"/app/{SETTING['DESKLEDGER_SPOOL_DIR'].default}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR /app$", dockerfile, re.M)
    assert f"install -d -o 10001 -g 10001 {spool}" in dockerfile  # writable by the image's user
    for name, service in compose_ingresses().items():
        volume = f"spool-{name.removeprefix('ingress-')}"
        assert service["volumes"] == [f"{volume}:{spool}"], name
    ingress = deployment_container("deskledger-ingress")
    assert {"name": "spool", "mountPath": spool} in ingress["volumeMounts"]


def test_the_image_builds_from_the_lock_as_a_non_root_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.count("FROM ${BASE}") == 2
    assert re.search(r"^ARG BASE=python:3\.11-slim$", dockerfile, re.M)
    assert "uv sync --frozen --no-dev" in dockerfile
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user.split(":")[0] not in {"0", "root"}
    assert 'ENTRYPOINT ["deskledger"]' in dockerfile
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore starts from nothing and lists what the image needs"
    assert "**/.env" in patterns
