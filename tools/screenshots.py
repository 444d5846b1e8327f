"""The README's screenshots of the compare page, from a real `make serve` (`make screenshots`).

    python tools/screenshots.py [--port 8000] [--out docs/screenshots]

1. Runs `make serve` itself (it builds the default artifacts first if they are missing, as `make serve`
   always does), waits for `/ready`, and in headless Chromium asks every variant the same question
   (compare.png) and opens the artifacts view with the metrics their manifests recorded (artifacts.png).
2. `make serve` configures no A/B experiment, so for experiments.png it serves the same artifacts
   (`excise serve --config`, the variants `--artifacts` finds in make serve's folder) with one
   experiment between the dense model and its correction, sends it toxic test-split prompts with the
   correction protocol's sampling settings, and opens the experiments view.

Each server is stopped (SIGINT to its process group) when its step ends, on Ctrl-C and on failure.
The pictures are written to a temporary folder and moved into `--out` only when all three exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools.serve_process import HOST, ServeError, ServerProcess, port_free  # noqa: E402

logger = logging.getLogger("tools.screenshots")

CHROMIUM = Path("/usr/bin/chromium")
# As root on a closed network: no sandbox, no GPU, and no background connections
# (Chromium's refused connections to Google's hosts otherwise flood the log).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
VIEWS = ("compare", "artifacts", "experiments")
EXPERIMENT = "assistant"


class CaptureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    port: int = Field(8000, ge=1, le=65535)
    out: Path = REPO / "docs" / "screenshots"
    timeout_s: float = Field(3600, gt=0, description="how long to wait for /ready; a first build takes minutes")
    prompt: str = Field("What is the capital of France?", min_length=1)
    max_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int = Field(0, ge=0)
    traffic: int = Field(40, ge=2, description="requests sent to the experiment before its screenshot")


def parse_args(argv: list[str] | None = None) -> CaptureConfig:
    """The command line as a CaptureConfig; a bad value is one line and exit 2, before any server starts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fields = CaptureConfig.model_fields
    parser.add_argument("--port", type=int, default=fields["port"].default, help="make serve's PORT")
    parser.add_argument("--out", type=Path, default=fields["out"].default)
    parser.add_argument("--timeout", dest="timeout_s", type=float, default=fields["timeout_s"].default)
    parser.add_argument("--traffic", type=int, default=fields["traffic"].default)
    args = parser.parse_args(argv)
    try:
        config = CaptureConfig(**vars(args))
    except ValueError as error:
        first = error.errors()[0]
        parser.error(f"--{first['loc'][0].removesuffix('_s')}: {first['msg']}")
    if not CHROMIUM.is_file():
        parser.error(f"{CHROMIUM} is missing; `make install` installs Debian's chromium")
    if not port_free(config.port):
        parser.error(f"--port {config.port} is in use; stop what listens there or pass another port")
    parent = config.out if config.out.exists() else config.out.parent
    if not parent.is_dir() or not _writable(parent):
        parser.error(f"--out {config.out}: {parent} is not a writable folder")
    return config


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def with_experiment(config, name: str = EXPERIMENT):
    """`config` (a ServingConfig) plus one experiment: every base variant against its corrections."""
    from server.config import ArmConfig, ExperimentConfig

    bases = {v.base for v in config.variants if v.correction is not None}
    arms = [v.name for v in config.variants if v.base in bases and v.weights is None]
    if len(arms) < 2:
        raise ServeError("make serve's artifacts have no correction to compare with its base; rebuild them")
    experiment = ExperimentConfig(name=name, arms=[ArmConfig(variant=arm) for arm in arms])
    return config.model_copy(update={"experiments": [experiment]})


def launch(playwright, profile: Path):
    """Debian's Chromium with a fresh profile; one page of VIEWPORT."""
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
    context.set_default_timeout(60_000)
    return context


def connect(page, url: str) -> None:
    """Open /ui and connect without a key (make serve binds loopback and needs none)."""
    from playwright.sync_api import expect

    page.goto(url + "/ui")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#connection")).to_contain_text("Connected")


def shoot_compare_and_artifacts(page, config: CaptureConfig, out: Path) -> None:
    from playwright.sync_api import expect

    boxes = page.locator('#variant-picker input[name="variant"]')
    variants = boxes.count()
    for i in range(variants):  # the page ticks the first two; the picture shows them all
        boxes.nth(i).check()
    page.get_by_label("Prompt").fill(config.prompt)
    page.get_by_label("Max tokens").fill(str(config.max_tokens))
    page.get_by_label("Temperature").fill(str(config.temperature))
    page.get_by_label("Seed").fill(str(config.seed))
    page.get_by_role("button", name="Compare").click()
    logger.info("comparing %d variants on %r", variants, config.prompt)
    expect(page.locator("#compare-status")).to_have_text(
        f"Done: {variants} of {variants} variant(s) answered.", timeout=300_000)
    page.screenshot(path=str(out / "compare.png"), full_page=True)
    page.get_by_role("link", name="Artifacts").click()
    expect(page.locator("#artifacts article.card")).to_have_count(variants)
    page.screenshot(path=str(out / "artifacts.png"), full_page=True)


def send_traffic(url: str, count: int) -> None:
    """`count` toxic test-split prompts to the experiment, one caller each, sampled as the correction
    protocol samples them; then wait until the server has scored every output."""
    from excise.behaviours import get_behaviour
    from excise.behaviours.base import EvaluationSettings

    toxicity = get_behaviour("toxicity")
    sampling = toxicity.sampling(EvaluationSettings())
    prompts = toxicity.prompts("test", count)
    with httpx.Client(base_url=url, timeout=300) as client:
        for i, prompt in enumerate(prompts):
            response = client.post("/v1/completions", json={
                "model": EXPERIMENT, "prompt": prompt, "user": f"caller-{i}", "seed": sampling.seed + i,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens,
            })
            response.raise_for_status()
        logger.info("sent %d requests to experiment %s (one %d-token continuation each, temperature %s, top-p %s)",
                    len(prompts), EXPERIMENT, sampling.max_new_tokens, sampling.temperature, sampling.top_p)
        for _ in range(60):  # toxicity is scored off the request path
            arms = client.get(f"/v1/experiments/{EXPERIMENT}").json()["arms"]
            if sum(arm["scored"] or 0 for arm in arms) >= len(prompts):
                return
            time.sleep(1)
        logger.warning("not every output was scored within 60 s; the experiments view shows what was")


def shoot_experiments(page, out: Path) -> None:
    from playwright.sync_api import expect

    page.get_by_role("link", name="Experiments").click()
    experiment = page.locator(f'article[data-experiment="{EXPERIMENT}"]')
    expect(experiment.locator("table.tests tbody tr")).to_have_count(2)
    page.screenshot(path=str(out / "experiments.png"), full_page=True)


def capture(config: CaptureConfig, work: Path) -> None:
    from playwright.sync_api import sync_playwright

    from excise.defaults import build_default_artifacts
    from server.config import discover_artifacts

    shots = work / "shots"
    shots.mkdir()
    make_serve = ["make", "serve", f"HOST={HOST}", f"PORT={config.port}"]
    with sync_playwright() as playwright:
        browser = launch(playwright, work / "profile")
        page = browser.new_page()
        with ServerProcess(make_serve, cwd=REPO, port=config.port, log=work / "make-serve.log",
                           timeout=config.timeout_s) as server:
            connect(page, server.url)
            shoot_compare_and_artifacts(page, config, shots)
        served = with_experiment(discover_artifacts(build_default_artifacts()))  # built by make serve above
        (work / "serve.json").write_text(json.dumps(served.model_dump(mode="json")))
        with_ab = [sys.executable, "-m", "excise.cli.main", "serve", "--config", str(work / "serve.json"),
                   "--host", HOST, "--port", str(config.port)]
        with ServerProcess(with_ab, cwd=REPO, port=config.port, log=work / "experiment-serve.log",
                           timeout=config.timeout_s) as server:
            send_traffic(server.url, config.traffic)
            connect(page, server.url)
            shoot_experiments(page, shots)
        browser.close()
    config.out.mkdir(parents=True, exist_ok=True)
    for view in VIEWS:
        shutil.move(str(shots / f"{view}.png"), config.out / f"{view}.png")
        logger.info("wrote %s", config.out / f"{view}.png")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the servers' cleanup, like Ctrl-C
    work = Path(tempfile.mkdtemp(prefix="excise-screenshots-"))
    try:
        capture(config, work)
    except KeyboardInterrupt:
        print(f"screenshots: interrupted; nothing written to {config.out}", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line for the user; the servers' logs stay in `work`
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"screenshots: {message} (server logs in {work})", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
