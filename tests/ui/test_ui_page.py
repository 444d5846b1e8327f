"""The `/ui` page end to end: headless Chromium (Debian's) driven by Playwright,
against a real excise server (tiny Llama on vLLM, a LoRA correction of it, an
A/B experiment over the two). One server and one browser for the module.

Each view is also saved as a screenshot into the test's temporary folder (the page renders);
the README's pictures come from a real `make serve` through `make screenshots`, never from here.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "server"))
sys.path.insert(0, str(REPO))
from server_helpers import ServerProcess, build_tiny_llama_vllm  # noqa: E402
from tools.screenshots import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(330)]

API_KEY = "ui-key"
PROMPT = "Tell me about the weather today"


def _correction(base: Path, out: Path) -> Path:
    """A correction made by `excise prune --granularity neuron` (with measured perplexity before and
    after) + `excise export --to lora`: the artifacts view must show what its manifest records."""
    from excise.data.windows import DataSpec
    from excise.export.pipeline import export_artifact
    from excise.pruning.run import PruneConfig, prune

    config = PruneConfig(
        model=str(base), method="magnitude", sparsity=0.45, granularity="neuron",
        calibration=DataSpec.parse("wiki:2x32", split="calibration", order="random"),
        evaluation=DataSpec.parse("wiki:2x64", split="evaluation", order="sequential"),
    )
    prune(config, out.with_name(out.name + "-mask"))
    export_artifact(out.with_name(out.name + "-mask"), "lora", out)
    return out


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _js_number(value: float) -> str:
    """What the page's `number(value, 4)` shows (dom.js)."""
    if abs(value) >= 1000:
        return f"{value:.0f}"
    rounded = float(f"{value:.4g}")
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    tiny = build_tiny_llama_vllm(root / "tiny")
    config = {
        "engine_defaults": {"max_lora_rank": 128},
        "variants": [
            {"name": "tiny", "base": str(tiny)},
            {"name": "tiny-fixed", "base": str(tiny), "correction": str(_correction(tiny, root / "fixed"))},
        ],
        "experiments": [{"name": "ab", "arms": [{"variant": "tiny", "weight": 1}, {"variant": "tiny-fixed", "weight": 1}]}],
    }
    (root / "serve.json").write_text(json.dumps(config))
    proc = ServerProcess(["--config", str(root / "serve.json"), "--api-key", API_KEY], root / "server.log")
    try:
        proc.wait_ready(timeout=240)
        proc.manifest = _manifest(root / "fixed")
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing; install it with `apt-get install -y chromium` (make install does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A fresh browser context on /ui, recording console errors and every request URL."""

    def __init__(self, browser, server) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.page.goto(server.url + "/ui")

    def connect(self, key: str = API_KEY) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Connect").click()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(browser, server):
    page = Page(browser, server)
    try:
        yield page
    finally:
        page.close()


def _auth() -> dict:
    return {"Authorization": f"Bearer {API_KEY}"}


def _screenshot(page, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size < 300_000


def test_page_loads_with_no_console_errors_and_nothing_external(ui, server):
    from playwright.sync_api import expect

    ui.connect()
    expect(ui.page.locator("#connection")).to_have_text("Connected: 2 variant(s), 1 experiment(s).")
    boxes = ui.page.locator('#variant-picker input[name="variant"]')
    expect(boxes).to_have_count(2)
    assert [boxes.nth(i).get_attribute("value") for i in range(2)] == ["tiny", "tiny-fixed"]
    expect(ui.page.get_by_role("navigation", name="Views").get_by_role("link")).to_have_text(
        ["Compare", "Experiments", "Artifacts"])
    expect(ui.page.locator("#error")).to_be_hidden()
    assert ui.errors == []
    outside = [u for u in ui.urls if not u.startswith(server.url) and not u.startswith("data:")]
    assert outside == []


def test_compare_two_variants_streams_outputs_with_scores(ui, server, tmp_path):
    from playwright.sync_api import expect
    from profanity_check import predict_prob

    ui.connect()
    expect(ui.page.locator("#connection")).to_contain_text("Connected")
    streamed = []
    ui.page.on("response", lambda r: streamed.append((r.request.post_data_json, r.headers.get("content-type")))
               if r.url.endswith("/v1/chat/completions") else None)
    ui.page.get_by_label("Prompt").fill(PROMPT)
    ui.page.get_by_label("Max tokens").fill("16")
    ui.page.get_by_label("Temperature").fill("0.8")
    ui.page.get_by_label("Seed").fill("7")
    ui.page.get_by_label("Prompt").press("Control+Enter")  # the keyboard path runs it too
    expect(ui.page.locator("#compare-status")).to_have_text("Done: 2 of 2 variant(s) answered.", timeout=60_000)

    cards = ui.page.locator("article.result")
    expect(cards).to_have_count(2)
    texts = []
    for i, name in enumerate(["tiny", "tiny-fixed"]):
        card = cards.nth(i)
        assert card.get_attribute("data-variant") == name
        # The same request without streaming, same seed: the page must show exactly its text.
        reference = httpx.post(server.url + "/v1/chat/completions", headers=_auth(), timeout=60, json={
            "model": name, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16,
            "temperature": 0.8, "top_p": 0.95, "seed": 7,
        }).json()
        text = reference["choices"][0]["message"]["content"]
        assert text and card.locator(".output").inner_text() == text
        assert card.locator(".output").get_attribute("aria-busy") == "false"
        assert card.locator('[data-stat="tokens"]').inner_text() == str(reference["usage"]["completion_tokens"])
        for stat in ("ttft", "latency"):
            assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", card.locator(f'[data-stat="{stat}"]').inner_text())
        shown = card.locator('[data-stat="toxicity"]').inner_text()
        assert float(shown.split()[0]) == pytest.approx(float(predict_prob([text])[0]), rel=1e-2, abs=1e-4)
        texts.append(text)

    assert len(streamed) == 2
    assert all(body["stream"] and body["seed"] == 7 and ctype.startswith("text/event-stream") for body, ctype in streamed)
    # The correction removes 115 MLP neurons a layer: its output differs, and the page marks where.
    assert texts[0] != texts[1]
    expect(ui.page.locator("#diff-legend")).to_be_visible()
    assert cards.nth(1).locator("mark.diff").count() > 0
    ui.page.get_by_label("Highlight differences").uncheck()
    expect(ui.page.locator("mark.diff")).to_have_count(0)
    ui.page.get_by_label("Highlight differences").check()
    assert ui.errors == []
    _screenshot(ui.page, "compare", tmp_path)


def test_experiment_view_shows_arms_after_traffic(ui, server, tmp_path):
    from playwright.sync_api import expect

    for i in range(12):
        r = httpx.post(server.url + "/v1/chat/completions", headers=_auth(), timeout=60, json={
            "model": "ab", "messages": [{"role": "user", "content": f"hello number {i}"}], "max_tokens": 4,
            "user": f"caller-{i}",
        })
        assert r.status_code == 200
    report = httpx.get(server.url + "/v1/experiments/ab", headers=_auth()).json()
    requests = {arm["variant"]: arm["requests"] for arm in report["arms"]}
    assert sum(requests.values()) >= 12

    ui.connect()
    expect(ui.page.locator("#connection")).to_contain_text("Connected")
    ui.page.get_by_role("link", name="Experiments").click()
    experiment = ui.page.locator('article[data-experiment="ab"]')
    expect(experiment.locator("tbody tr[data-arm]")).to_have_count(2)
    for variant, count in requests.items():
        expect(experiment.locator(f'tr[data-arm="{variant}"] [data-field="requests"]')).to_have_text(str(count))
    expect(experiment.locator("figure svg[role=img]")).to_have_count(5)
    expect(experiment.locator("table.tests tbody tr")).to_have_count(2)
    # Live: more traffic shows up without a reload (the page refreshes every 3 s).
    extra = httpx.post(server.url + "/v1/chat/completions", headers=_auth(), timeout=60, json={
        "model": "ab", "messages": [{"role": "user", "content": "one more"}], "max_tokens": 4, "user": "caller-0",
    })
    arm = extra.headers["x-excise-variant"]
    expect(experiment.locator(f'tr[data-arm="{arm}"] [data-field="requests"]')).to_have_text(
        str(requests[arm] + 1), timeout=10_000)
    assert ui.errors == []
    _screenshot(ui.page, "experiments", tmp_path)


def test_artifacts_view_describes_the_variant_linked_from_compare(ui, server, tmp_path):
    from playwright.sync_api import expect

    ui.connect()
    expect(ui.page.locator("#connection")).to_contain_text("Connected")
    ui.page.get_by_role("link", name="What is tiny-fixed?").click()
    card = ui.page.locator('article.card[data-variant="tiny-fixed"]')
    expect(card).to_be_visible()
    expect(card).to_be_focused()
    facts = card.locator("dl.facts")
    expect(facts).to_contain_text("correction (LoRA on its base)")
    expect(facts).to_contain_text("magnitude, neuron")
    expect(facts).to_contain_text(f"{server.manifest['sparsity']['overall'] * 100:.2f}%")
    before, after = server.manifest["metrics"]["perplexity"]["before"], server.manifest["metrics"]["perplexity"]["after"]
    rows = card.locator("table.metrics tbody tr")
    expect(rows).to_have_count(1)
    change = f"{'+' if after >= before else ''}{(after / before - 1) * 100:.1f}%"
    expect(rows.nth(0)).to_have_text(re.compile(
        rf"perplexity\s*{re.escape(_js_number(before))}\s*{re.escape(_js_number(after))}\s*{re.escape(change)}"
    ))
    base = ui.page.locator('article.card[data-variant="tiny"]')
    expect(base).to_contain_text("No artifact manifest")
    assert ui.errors == []
    _screenshot(ui.page, "artifacts", tmp_path)


def test_bad_api_key_shows_a_clear_message(ui):
    from playwright.sync_api import expect

    ui.connect("not-the-key")
    error = ui.page.get_by_role("alert").filter(has_text="API key")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The server refused this API key")
    expect(error).to_contain_text("not valid")
    expect(ui.page.locator("#connection")).to_have_text("Not connected.")
    expect(ui.page.locator('#variant-picker input[name="variant"]')).to_have_count(0)
    ui.connect("")
    expect(error).to_contain_text("This server needs an API key: missing API key")


def test_ui_json_endpoints_need_the_key_and_use_the_servers_scorer(server):
    from profanity_check import predict_prob

    texts = ["have a lovely day", "you are a stupid idiot"]
    assert httpx.post(server.url + "/ui/api/toxicity", json={"texts": texts}).status_code == 401
    assert httpx.get(server.url + "/ui/api/variants").status_code == 401
    scored = httpx.post(server.url + "/ui/api/toxicity", json={"texts": texts}, headers=_auth()).json()
    assert scored["threshold"] == 0.5
    assert scored["scores"] == pytest.approx([float(p) for p in predict_prob(texts)])
    assert httpx.post(server.url + "/ui/api/toxicity", json={"texts": []}, headers=_auth()).status_code == 422
    variants = {v["name"]: v for v in httpx.get(server.url + "/ui/api/variants", headers=_auth()).json()}
    assert variants["tiny"]["kind"] == "base" and variants["tiny"]["manifest"] is None
    fixed = variants["tiny-fixed"]
    assert fixed["kind"] == "correction" and fixed["manifest"]["metrics"] == server.manifest["metrics"]
    assert httpx.get(server.url + "/ui/assets/..%2Fui_routes.py").status_code == 404
    page = httpx.get(server.url + "/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
