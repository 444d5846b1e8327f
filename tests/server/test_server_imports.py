"""The server tower leans on the library only through the artifact contract.

Each check imports the server in a fresh interpreter and reads its `sys.modules`: the excise
modules there must be the contract (`excise.artifacts.*`), `excise.errors` and the two leaves
the contract itself stands on, and none of the torch-heavy model code may have come in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from server_helpers import REPO, build_tiny_llama_vllm, peft_lora

#: the library modules the server may load: the contract and what it is built from
ALLOWED = ("excise.artifacts", "excise.errors", "excise.home")
#: model code the server must never load (transformers' per-architecture modeling modules too)
HEAVY = ("excise.models", "excise.scoring", "excise.export", "excise.evaluation", "excise.lrp", "excise.cli", "peft", "lxt")


def _modules_after(code: str) -> list[str]:
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _library_modules(modules: list[str]) -> list[str]:
    return [m for m in modules if m == "excise" or m.startswith("excise.")]


def _check(modules: list[str]) -> None:
    outside = [m for m in _library_modules(modules) if m != "excise" and not m.startswith(ALLOWED)]
    assert outside == [], f"the server imported library modules outside the artifact contract: {outside}"
    heavy = [m for m in modules if m.startswith(HEAVY)]
    assert heavy == [], f"the server imported model code: {heavy}"
    # vLLM brings transformers' shared utilities; a family's modeling code comes only with a model.
    modeling = [m for m in modules if m.startswith("transformers.models.") and ".modeling_" in m
                and not m.startswith("transformers.models.auto.")]
    assert modeling == [], modeling


def test_importing_the_server_loads_only_the_artifact_contract():
    modules = _modules_after("import server, server.app, server.main, server.corrections, server.ui_routes")
    assert {"server.app", "excise.artifacts.validation", "excise.artifacts.lora"} <= set(modules)
    _check(modules)


def test_validating_what_the_server_serves_stays_inside_the_contract(tmp_path):
    """Not only at import: planning a model and an unverified correction pulls in no model code."""
    base = build_tiny_llama_vllm(tmp_path / "tiny")
    lora = peft_lora(base, tmp_path / "peft", {0: [1, 2]})
    modules = _modules_after(f"""
        from server.config import parse_config
        from server.variants import plan
        config = parse_config({{"variants": [{{"name": "t", "base": {str(base)!r}}},
            {{"name": "fix", "base": {str(base)!r}, "correction": {str(lora)!r}, "verify": False}}]}}, origin="t")
        assert plan(config, runtime_corrections=False).variants["fix"].lora is not None
    """)
    _check(modules)
