"""End to end: a real Prometheus (Debian's `prometheus`) scrapes a running excise server the
way the ServiceMonitor tells the Prometheus Operator to, with the alert rules loaded; after a
few completions every dashboard query returns data, latency and toxicity queries return
numbers, and every alert rule evaluates without error. Both processes are killed at the end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from deploy_support import REPO, alert_rules, dashboard_queries, metric_names, of_kind, render, tool

sys.path.insert(0, str(REPO / "tests" / "server"))
from server_helpers import ServerProcess, build_tiny_llama_vllm, free_port  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NAMESPACE = "excise"
SCRAPE_S = 1


def _scrape_config(monitor: dict, port: int) -> dict:
    """The scrape job the Prometheus Operator makes of the ServiceMonitor, for one local pod:
    its path and label handling, and the target labels the operator adds."""
    (endpoint,) = monitor["spec"]["endpoints"]
    target_labels = {"namespace": NAMESPACE, "service": "excise-stable", "pod": "excise-stable-0",
                     "container": "server", "endpoint": endpoint["port"], "job": "excise-stable"}
    target_labels |= {label: "stable" for label in monitor["spec"]["podTargetLabels"]}
    return {
        "job_name": "excise", "scrape_interval": f"{SCRAPE_S}s", "metrics_path": endpoint["path"],
        "honor_labels": endpoint["honorLabels"],
        "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": target_labels}],
    }


class Prometheus:
    def __init__(self, tmp_path, scrape: dict, rules: dict) -> None:
        binary = tool("prometheus", "apt-get install -y --no-install-recommends prometheus (Debian package)")
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {"global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
                  "rule_files": [str(tmp_path / "rules.yaml")], "scrape_configs": [scrape]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = open(tmp_path / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def query(self, promql: str) -> list[dict]:
        body = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10).json()
        assert body["status"] == "success", (promql, body)
        return body["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30, ready=bool) -> list[dict]:
        """The query's result once `ready(result)` holds (default: any data). Scrapes and rule evaluations
        land when they land on a starved machine, so the test waits for them instead of guessing a sleep."""
        deadline = time.monotonic() + timeout
        result = []
        while time.monotonic() < deadline:
            try:
                result = self.query(promql)
            except httpx.HTTPError:
                result = []
            if ready(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"no data for {promql} after {timeout} s (last: {result})")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    tiny = build_tiny_llama_vllm(tmp / "tiny")
    config = {"engine_defaults": {"dtype": "float32"},
              "variants": [{"name": "a", "base": str(tiny)}, {"name": "b", "base": str(tiny)}],
              "experiments": [{"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}]}]}
    (tmp / "serve.json").write_text(json.dumps(config))
    server = ServerProcess(["--config", str(tmp / "serve.json")], tmp / "server.log")
    resources = render("cpu")
    (monitor,) = of_kind(resources, "ServiceMonitor")
    (rule,) = of_kind(resources, "PrometheusRule")
    prometheus = Prometheus(tmp, _scrape_config(monitor, server.port), {"groups": rule["spec"]["groups"]})
    try:
        server.wait_ready(timeout=150)
        yield server, prometheus
    finally:
        prometheus.stop()
        server.stop(timeout=20)


def _traffic(server, batch: int) -> None:
    for i in range(3):
        body = {"model": "ab", "prompt": f"Request {i} of batch {batch}:", "max_tokens": 8, "user": f"caller-{i}"}
        assert httpx.post(server.url + "/v1/completions", json=body, timeout=60).status_code == 200
    chat = {"model": "a", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
    assert httpx.post(server.url + "/v1/chat/completions", json=chat, timeout=60).status_code == 200
    assert httpx.post(server.url + "/v1/completions", json={"model": "nope", "prompt": "x"}, timeout=10).status_code == 404


@pytest.fixture(scope="module")
def scraped(stack):
    """Two batches of requests with a scrape between them, so every counter has grown in range."""
    server, prometheus = stack
    _traffic(server, 1)
    prometheus.wait_for('excise_requests_rejected_total')
    prometheus.wait_for('excise_output_toxicity_count > 0')
    before = prometheus.query('sum(excise_output_toxicity_count)')[0]["value"][1]
    latency = 'sum by (variant) (excise_request_latency_seconds_count{status="200"})'
    counts = {r["metric"]["variant"]: float(r["value"][1]) for r in prometheus.wait_for(
        latency, ready=lambda r: {x["metric"]["variant"] for x in r} == {"a", "b"})}
    _traffic(server, 2)
    prometheus.wait_for(f'sum(excise_output_toxicity_count) > {before}')
    # each variant's latency counter seen growing (not just any counter): otherwise a rate over the
    # window can still be 0/0 for the variant the A/B arms sent fewer requests to
    prometheus.wait_for(latency, timeout=60, ready=lambda r: {x["metric"]["variant"] for x in r
                                                               if float(x["value"][1]) > counts[x["metric"]["variant"]]} == {"a", "b"})
    time.sleep(2 * SCRAPE_S)
    return server, prometheus


def test_latency_and_toxicity_queries_return_numbers(scraped):
    _, prometheus = scraped
    # 10m, not 1m: on a slow machine the traffic can be over a minute old by now, and a rate of 0/0 is NaN
    for promql in (
        'histogram_quantile(0.95, sum by (variant, le) (rate(excise_request_latency_seconds_bucket{status="200"}[10m])))',
        'histogram_quantile(0.5, sum by (variant, le) (rate(excise_time_to_first_token_seconds_bucket[10m])))',
        'sum by (variant) (rate(excise_output_toxicity_sum[10m])) / sum by (variant) (rate(excise_output_toxicity_count[10m]))',
    ):
        # both variants with a number: a rate is NaN until a scrape has seen a variant's counters grow
        result = prometheus.wait_for(promql, timeout=60, ready=lambda r: {
            x["metric"]["variant"] for x in r if math.isfinite(float(x["value"][1]))} == {"a", "b"})
        values = [float(r["value"][1]) for r in result]
        assert all(math.isfinite(v) and v >= 0 for v in values), (promql, values)
        if "toxicity" not in promql:
            assert all(0 < v < 160 for v in values), (promql, values)


def test_every_dashboard_query_returns_data(scraped):
    _, prometheus = scraped
    empty = [title for title, expr in dashboard_queries() if not prometheus.query(expr)]
    assert not empty, f"panels without data: {empty}"


def test_scraped_labels_are_the_servers_own(scraped):
    """honorLabels keeps excise's `endpoint` label instead of the operator's port name."""
    _, prometheus = scraped
    assert not prometheus.query('count({exported_endpoint!=""})')
    endpoints = {r["metric"]["endpoint"] for r in prometheus.query('sum by (endpoint) (excise_requests_total)')}
    assert endpoints == {"completions", "chat"}
    arms = prometheus.query('sum by (arm, experiment, variant) (excise_requests_total{experiment="ab"})')
    assert {(r["metric"]["arm"], r["metric"]["variant"]) for r in arms} <= {("stable", "a"), ("stable", "b")}


def test_vllm_metrics_named_in_deploy_files_are_exposed(scraped):
    server, _ = scraped
    exposed = httpx.get(server.url + "/metrics", timeout=10).text
    named = set()
    for _, expr in dashboard_queries():
        named |= {n for n in metric_names(expr) if n.startswith("vllm:")}
    assert "vllm:num_requests_waiting" in named
    for name in named:
        assert f"\n{name}{{" in exposed, f"{name} is not on the server's /metrics"


def test_alert_rules_evaluate_without_errors(scraped):
    _, prometheus = scraped
    deadline = time.monotonic() + 10
    while True:
        groups = httpx.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if all(r.get("lastEvaluation", "").startswith("2") and not r["lastEvaluation"].startswith("0001") for r in rules) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules(render("cpu"))}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
