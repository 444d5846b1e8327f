"""The kustomize overlays render (real kustomize), core resources validate against the
Kubernetes schemas, custom resources have the fields their controllers need, and every name
that crosses from the manifests into the server (probe paths, ports, settings, serve config,
CLI flags of the pipeline Job) exists in the server's and CLI's code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    ADAPTER_VALUES,
    DEPLOY,
    OVERLAYS,
    configmap_by_prefix,
    container,
    image_user,
    named,
    of_kind,
    render,
    server_deployments,
)

# The Kubernetes version whose schemas validate the core resources (bundled, offline).
K8S_VERSION = "1.33.0"
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[dict, ...]:
    return render(request.param)


def test_every_overlay_renders_every_component(rendered):
    kinds = {r["kind"] for r in rendered}
    assert {"Namespace", "PersistentVolumeClaim", "Job", "Deployment", "Service", "HorizontalPodAutoscaler",
            "ConfigMap", "HTTPRoute", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert {d["metadata"]["name"] for d in server_deployments(rendered)} == {"excise-stable", "excise-candidate"}
    assert {r["metadata"].get("namespace") for r in rendered if r["kind"] != "Namespace"} == {"excise"}


def test_core_resources_match_the_kubernetes_schemas(rendered):
    core = [r for r in rendered if r["kind"] not in CUSTOM_KINDS]
    for resource in core:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    # The validator does reject a bad resource (so the loop above is not vacuous).
    broken = {**core[0], "spec": {"nonsense": 1}} if "spec" in core[0] else {**core[0], "metadata": {"name": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_custom_resources_have_the_fields_their_controllers_read(rendered):
    for kind, api in CUSTOM_KINDS.items():
        (resource,) = of_kind(rendered, kind)
        assert resource["apiVersion"] == api
    (monitor,) = of_kind(rendered, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    services = [s for s in of_kind(rendered, "Service")
                if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in services} == {"excise-stable", "excise-candidate"}
    assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in services)
    # The operator would rename excise's own `endpoint` label without this.
    assert endpoint["honorLabels"] is True
    for deployment in server_deployments(rendered):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(label in labels for label in monitor["spec"]["podTargetLabels"])

    (rule,) = of_kind(rendered, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"} and r["alert"] and r["expr"]

    (route,) = of_kind(rendered, "HTTPRoute")
    assert route["spec"]["parentRefs"]
    (rule,) = route["spec"]["rules"]
    weights = {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}
    assert set(weights) == {"excise-stable", "excise-candidate"} and sum(weights.values()) > 0
    for ref in rule["backendRefs"]:
        service = named(rendered, "Service", ref["name"])
        assert ref["port"] in {p["port"] for p in service["spec"]["ports"]}


def test_routed_paths_exist_in_the_server(rendered, routes):
    (route,) = of_kind(rendered, "HTTPRoute")
    for match in route["spec"]["rules"][0]["matches"]:
        path = match["path"]
        if path["type"] == "Exact":
            assert path["value"] in routes, path
        else:
            assert any(p.startswith(path["value"]) for p in routes), path


def test_server_probes_and_ports_exist_in_the_server(rendered, routes):
    for deployment in server_deployments(rendered):
        server = container(deployment, "server")
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        settings = _settings_env(rendered, server)
        assert ports["http"] == int(settings["EXCISE_PORT"])
        assert settings["EXCISE_HOST"] == "0.0.0.0"
        probes = {kind: server[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert probes["readinessProbe"]["path"] == probes["startupProbe"]["path"] == "/ready"
        assert probes["livenessProbe"]["path"] == "/health"
        for probe in probes.values():
            assert "GET" in routes[probe["path"]] and probe["port"] in ports
        # Generous for a model load: at least 10 minutes before the first restart.
        startup = server["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        selector = deployment["spec"]["selector"]["matchLabels"]
        service = named(rendered, "Service", deployment["metadata"]["name"])
        assert service["spec"]["selector"] == selector
        assert service["spec"]["ports"][0]["targetPort"] == "http"


def _settings_env(rendered, server: dict) -> dict[str, str]:
    env = {}
    for source in server.get("envFrom", []):
        env |= named(rendered, "ConfigMap", source["configMapRef"]["name"])["data"]
    return env


def test_settings_and_secrets_are_server_settings(rendered):
    from server.settings import ServerSettings

    for deployment in server_deployments(rendered):
        server = container(deployment, "server")
        env = _settings_env(rendered, server)
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "valueFrom" in e}
        assert set(secrets) == {"EXCISE_API_KEYS", "EXCISE_ADMIN_KEY"}
        assert {ref["name"] for ref in secrets.values()} == {"excise-keys"}
        values = {name.removeprefix("EXCISE_").lower(): value for name, value in env.items()}
        values |= {"api_keys": "k1,k2", "admin_key": "admin"}  # what the Secret holds
        settings = ServerSettings(**values)  # extra="forbid": an unknown setting fails here
        assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]
        # The keys are required: a pod bound to 0.0.0.0 without them refuses to start open.
        assert not secrets["EXCISE_API_KEYS"].get("optional", False)
        with pytest.raises(ValueError, match="allow-unauthenticated"):
            ServerSettings(**{k: v for k, v in values.items() if k not in ("api_keys", "admin_key")})
        mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
        assert settings.config.parent == Path(mounts["config"])


def test_serve_configs_are_valid_and_name_what_the_pipeline_builds(rendered):
    from server.config import parse_config

    built = _pipeline_outputs(rendered)
    for deployment in server_deployments(rendered):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        config_map = named(rendered, "ConfigMap", volumes["config"]["configMap"]["name"])
        config = parse_config(yaml.safe_load(config_map["data"]["serve.yaml"]), origin=deployment["metadata"]["name"])
        for variant in config.variants:
            if variant.correction is not None:
                assert built[str(variant.correction)] == "lora"
            if variant.weights is not None:
                assert built[str(variant.weights)] in ("hf", "shrunk")
        assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "excise-artifacts"


def test_image_default_config_is_valid():
    from server.config import load_config

    assert [v.name for v in load_config(DEPLOY / "docker" / "embedded.yaml").variants] == ["smollm2"]


def _pipeline_commands(rendered) -> list[list[str]]:
    """The `excise ...` command lines of the Job's script, with its variables filled in."""
    (config_map,) = configmap_by_prefix(rendered, "excise-pipeline")
    data = config_map["data"]
    script = data["pipeline.sh"].replace("\\\n", " ")
    variables = {k: v for k, v in data.items() if k != "pipeline.sh"}
    for line in script.splitlines():
        if "=" in line and not line.strip().startswith(("#", "step")) and " " not in line.strip():
            key, value = line.strip().split("=", 1)
            variables[key] = value
    commands = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["step"]:
            argv = words[2:]
            assert argv[0] == "excise", line
            commands.append([_fill(w, variables) for w in argv[1:]])
    return commands


def _fill(word: str, variables: dict[str, str]) -> str:
    for key, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        word = word.replace(f"${key}", value)
    assert "$" not in word, f"unknown variable in {word!r}"
    return word


def _pipeline_outputs(rendered) -> dict[str, str]:
    """--out folder -> export format of the Job's `excise export` steps."""
    outputs = {}
    for argv in _pipeline_commands(rendered):
        if argv[0] == "export":
            outputs[argv[argv.index("--out") + 1]] = argv[argv.index("--to") + 1]
    return outputs


def test_pipeline_job_runs_prune_correct_export_with_real_cli_flags(rendered):
    from excise.cli.main import build_parser

    commands = _pipeline_commands(rendered)
    assert [c[0] for c in commands] == ["prune", "export", "correct", "export"]
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # exits (fails the test) on an unknown subcommand or flag
    (job,) = of_kind(rendered, "Job")
    (config_map,) = configmap_by_prefix(rendered, "excise-pipeline")
    done = re.search(r'touch "\$serve/([^"]+)"', config_map["data"]["pipeline.sh"]).group(1)
    for deployment in server_deployments(rendered):
        (wait,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert f"/artifacts/serve/{done} ]" in wait["args"][0]
    pipeline = container(job, "pipeline")
    mounts = {m["name"]: m["mountPath"] for m in pipeline["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "excise-artifacts"
    assert all(argv[argv.index("--out") + 1].startswith(mounts["artifacts"] + "/") for argv in commands)


def test_gpu_overlay_requests_gpus_and_cpu_overlay_does_not():
    for overlay, gpus in (("gpu", "1"), ("cpu", None)):
        rendered = render(overlay)
        workloads = server_deployments(rendered) + of_kind(rendered, "Job")
        for workload in workloads:
            (main,) = workload["spec"]["template"]["spec"]["containers"]
            assert main["resources"]["limits"].get("nvidia.com/gpu") == gpus, (overlay, workload["metadata"]["name"])
        device = configmap_by_prefix(rendered, "excise-pipeline")[0]["data"]["DEVICE"]
        assert device == ("cuda" if gpus else "cpu")


def test_autoscaler_scales_each_arm_on_the_adapters_metric(rendered):
    published = {rule["name"]["as"] for rule in yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]}
    hpas = of_kind(rendered, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {"excise-stable", "excise-candidate"}
    for hpa in hpas:
        named(rendered, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in published
    for deployment in server_deployments(rendered):
        assert "replicas" not in deployment["spec"]  # owned by the autoscaler


def test_containers_run_as_the_images_non_root_user(rendered):
    uid = image_user()
    for workload in server_deployments(rendered) + of_kind(rendered, "Job"):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
