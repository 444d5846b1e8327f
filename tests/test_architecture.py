"""The shape of the code: import contracts (pyproject.toml's [tool.importlinter]) and a light artifact contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
#: what the artifact contract must not pull in: model code, LoRA and LRP libraries, excise's heavy layers
HEAVY = ("transformers", "peft", "lxt", "vllm", "excise.models", "excise.scoring", "excise.export")


def _run(*command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _contract_ids() -> list[str]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return [contract["id"] for contract in config["contracts"]]


@pytest.mark.parametrize("contract", _contract_ids())
def test_import_contract_is_kept(contract):
    result = _run(str(LINT_IMPORTS), "--no-cache", "--contract", contract)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_artifact_contract_is_light_to_import():
    modules = sorted(f"excise.artifacts.{path.stem}" for path in (ROOT / "excise" / "artifacts").glob("*.py"))
    code = "\n".join(
        [f"import {module}" for module in modules]
        + ["import sys", f"print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {HEAVY!r})))"]
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing the artifact contract loaded: {result.stdout}"
