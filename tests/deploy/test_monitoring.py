"""Alerts, dashboard and autoscaler rule against the server's metrics registry and promtool:
every metric and label they name exists in the code; the rules pass `promtool check rules`;
the alerts fire (and stay quiet) on synthetic series (`promtool test rules`); every dashboard
query is valid PromQL."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import (
    adapter_rules,
    alert_rules,
    dashboard,
    dashboard_queries,
    family,
    label_uses,
    metric_names,
    of_kind,
    promtool,
    render,
)


@pytest.fixture(scope="module")
def resources():
    return render("cpu")


@pytest.fixture(scope="module")
def registry() -> dict[str, set[str]]:
    """excise metric family -> label names, from the server's own registry."""
    from prometheus_client.metrics import MetricWrapperBase

    from server.metrics import Metrics

    metrics = Metrics()
    found = {m._name: set(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    assert set(found) == set(metrics.metric_names())
    return found


@pytest.fixture(scope="module")
def vllm_metric_names() -> set[str]:
    """The `vllm:` metric names vLLM's Prometheus logger defines (its source, not a copied list)."""
    import vllm.v1.metrics.loggers as loggers

    source = inspect.getsource(loggers)
    return set(metric_names(source))


@pytest.fixture(scope="module")
def target_labels(resources) -> set[str]:
    """Labels Prometheus adds to every scraped series: the Prometheus Operator's target labels
    for a ServiceMonitor endpoint, plus the pod labels the ServiceMonitor copies."""
    (monitor,) = of_kind(resources, "ServiceMonitor")
    return {"namespace", "service", "pod", "container", "endpoint", "job", "instance", *monitor["spec"]["podTargetLabels"]}


def _queries(resources) -> list[tuple[str, str]]:
    """(where, PromQL) for alerts, dashboard and the autoscaler's adapter rule."""
    found = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules(resources)]
    found += [(f"panel {title}", expr) for title, expr in dashboard_queries()]
    found += [("prometheus-adapter", rule["seriesQuery"]) for rule in adapter_rules()]
    return found


def test_every_metric_named_exists_in_the_code(resources, registry, vllm_metric_names):
    used = set()
    for where, expr in _queries(resources):
        names = metric_names(expr)
        assert names or "up{" in expr, f"{where}: names no excise or vLLM metric (nor Prometheus' own `up`)"
        for name in names:
            used.add(name)
            if name.startswith("vllm:"):
                assert name in vllm_metric_names, f"{where}: {name} is not a vLLM metric"
            else:
                assert family(name) in registry, f"{where}: {name} is not in server.metrics ({sorted(registry)})"
    # The alerts and dashboard cover latency, TTFT, tokens, toxicity and readiness.
    assert {"excise_request_latency_seconds", "excise_time_to_first_token_seconds", "excise_output_tokens",
            "excise_output_toxicity", "excise_toxic_outputs", "excise_engines_ready"} <= {family(n) for n in used}


def test_every_label_named_exists_on_its_metric(resources, registry, target_labels):
    for where, expr in _queries(resources):
        expr_labels = set(target_labels)
        for name in metric_names(expr):
            expr_labels |= registry.get(family(name), set()) | ({"le"} if name.endswith("_bucket") else set())
        for series, label in label_uses(expr):
            if series is None:  # by (...) / without (...): a label of some metric in the expression
                assert label in expr_labels, f"{where}: groups by {label!r}, which no metric in it has"
                continue
            allowed = set(target_labels) | ({"le"} if series.endswith("_bucket") else set())
            allowed |= registry.get(family(series), set())
            assert label in allowed, f"{where}: {series} has no label {label!r} (it has {sorted(allowed)})"


def test_label_check_catches_a_wrong_label(registry, target_labels):
    """The parser above sees labels in selectors and grouping clauses (the check is not vacuous)."""
    uses = label_uses('sum by (arm, model) (rate(excise_toxic_outputs_total{variant="a", colour!="b"}[5m]))')
    assert (None, "model") in uses and ("excise_toxic_outputs_total", "colour") in uses
    assert "colour" not in registry["excise_toxic_outputs"] | target_labels


def _rules_file(resources, tmp_path: Path) -> Path:
    (rule,) = of_kind(resources, "PrometheusRule")
    path = tmp_path / "excise.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_alert_rules_pass_promtool_check(resources, tmp_path):
    result = subprocess.run([promtool(), "check", "rules", str(_rules_file(resources, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every query (as a recording rule); Grafana's variables substituted first."""
    rules = [{"record": f"dashboard:query{i}", "expr": expr} for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules) >= 15


def test_dashboard_shows_latency_ttft_tokens_toxicity_and_ab_arms():
    titles = " | ".join(p["title"] for p in dashboard()["panels"]).lower()
    for topic in ("latency", "time to first token", "tokens / s", "toxic-output rate", "per arm", "experiments"):
        assert topic in titles, topic
    assert {v["name"] for v in dashboard()["templating"]["list"]} == {"datasource", "namespace"}


def _annotations(resources, alert: str, labels: dict[str, str], value: str) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them, for the labels and value given."""
    (rule,) = [r for r in alert_rules(resources) if r.get("alert") == alert]
    rendered = {}
    for key, text in rule["annotations"].items():
        text = re.sub(r"\{\{ \$value[^}]*\}\}", value, text)
        rendered[key] = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    return rendered


def _series(labels: dict[str, str], values: str) -> dict:
    return {"series": "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


def test_alerts_fire_on_synthetic_series(resources, tmp_path):
    """promtool's rule unit tests: a variant at 10% toxic outputs fires, one at 1% does not; p95
    latency of 20 s fires; a pod whose engines stay unloaded fires; a scrape that fails fires."""
    base = {"namespace": "excise", "arm": "stable", "experiment": "", "job": "excise-stable"}
    series = []
    for variant, toxic_per_min in (("detox", 1), ("dense", 0.1)):
        labels = {**base, "variant": variant}
        series.append(_series({"__name__": "excise_toxic_outputs_total", **labels}, f"0+{toxic_per_min}x40"))
        series.append(_series({"__name__": "excise_output_toxicity_count", **labels}, "0+10x40"))
    slow = {**base, "variant": "dense", "endpoint": "chat", "status": "200"}
    for le, per_min in (("1", 0), ("10", 1), ("20", 10), ("+Inf", 10)):
        series.append(_series({"__name__": "excise_request_latency_seconds_bucket", **slow, "le": le}, f"0+{per_min}x40"))
    series.append(_series({"__name__": "excise_engines_ready", "namespace": "excise", "pod": "p1"}, "0x40"))
    series.append(_series({"__name__": "excise_engines_ready", "namespace": "excise", "pod": "p2"}, "1x40"))
    series.append(_series({"__name__": "up", "namespace": "excise", "service": "excise-stable", "pod": "p3"}, "0x40"))
    alert = {"namespace": "excise", "arm": "stable", "severity": "warning"}
    toxic = {**alert, "variant": "detox"}
    slow_alert = {**alert, "variant": "dense"}
    not_ready = {"namespace": "excise", "pod": "p1", "severity": "critical"}
    down = {"namespace": "excise", "service": "excise-stable", "pod": "p3", "severity": "critical"}
    tests = {
        "rule_files": [str(_rules_file(resources, tmp_path))],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                # 1 toxic of 10 scored a minute: 10% > 5%; `dense` at 1% stays quiet.
                {"eval_time": "30m", "alertname": "ExciseToxicOutputRateHigh",
                 "exp_alerts": [{"exp_labels": toxic,
                                 "exp_annotations": _annotations(resources, "ExciseToxicOutputRateHigh", toxic, "10%")}]},
                # All requests between 10 and 20 s: p95 interpolates to 19.44 s.
                {"eval_time": "30m", "alertname": "ExciseLatencyP95High",
                 "exp_alerts": [{"exp_labels": slow_alert,
                                 "exp_annotations": _annotations(resources, "ExciseLatencyP95High", slow_alert, "19.44s")}]},
                {"eval_time": "30m", "alertname": "ExciseServerNotReady",
                 "exp_alerts": [{"exp_labels": not_ready,
                                 "exp_annotations": _annotations(resources, "ExciseServerNotReady", not_ready, "0")}]},
                {"eval_time": "30m", "alertname": "ExciseServerDown",
                 "exp_alerts": [{"exp_labels": down,
                                 "exp_annotations": _annotations(resources, "ExciseServerDown", down, "0")}]},
                # Not before its `for:` has passed.
                {"eval_time": "5m", "alertname": "ExciseServerNotReady", "exp_alerts": []},
            ],
        }],
    }
    path = tmp_path / "alerts.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
