"""The correction benchmark's stage store: computed once per settings, kept across runs, provenance recorded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run_module():
    spec = importlib.util.spec_from_file_location("bench_correction_run", REPO / "benchmarks/correction/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETTINGS = {"model": "tiny", "budgets": "10,20", "validation_samples": 2, "methods": "lrp", "max_minutes": None}
DEPENDS = frozenset({"model", "budgets", "validation_samples"})


def test_a_stage_is_computed_once_and_again_only_for_other_settings(tmp_path):
    run = _run_module()
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    assert run.Stages(tmp_path, SETTINGS, None).get("toxicity/dense", compute, DEPENDS) == {"value": 1}
    # another run (other methods, a time limit: not what the stage depends on) reads the stored one
    again = run.Stages(tmp_path, SETTINGS | {"methods": "lrp,aura", "max_minutes": 5.0}, None)
    assert again.get("toxicity/dense", compute, DEPENDS) == {"value": 1} and len(calls) == 1
    assert set(again.provenance["toxicity/dense"]) == {"commit", "machine", "date", "seconds"}
    stored = json.loads((tmp_path / "toxicity__dense.json").read_text())
    assert stored["settings"] == {"model": "tiny", "budgets": "10,20", "validation_samples": 2}
    # a stage that does not depend on the budgets keeps its value when they change
    assert again.get("toxicity/dense", compute, DEPENDS - {"budgets"}) == {"value": 1}
    # other budgets: computed again and stored in place of the old one
    other = run.Stages(tmp_path, SETTINGS | {"budgets": "5"}, None)
    assert other.get("toxicity/dense", compute, DEPENDS) == {"value": 2}
    assert json.loads((tmp_path / "toxicity__dense.json").read_text())["settings"]["budgets"] == "5"


def test_the_stage_kinds_depend_on_what_they_read():
    run = _run_module()
    # new budgets: only the new variants; neither the references, a ranking, dense nor a chosen budget's test
    assert not {"budgets", "repetition_budgets"} & (run.REFERENCE | run.RANKING | run.DENSE | run.VALIDATION | run.TEST)
    assert "reference_samples" in run.VALIDATION and "test_samples" not in run.VALIDATION
    # how much of its order a ranking stores changes the ranking stage, not the variants measured from it
    assert "ranked" in run.RANKING and "ranked" not in run.VALIDATION


def test_a_methods_variants_come_from_every_stage_that_measured_them(tmp_path):
    run = _run_module()
    stages = run.Stages(tmp_path, SETTINGS, None)
    depends = frozenset({"model", "validation_samples"})
    stages.get("toxicity/validation/lrp", lambda: {"variants": {"lrp/K=50": 1, "lrp/K=100": 2}}, depends)
    stages.get("toxicity/validation/lrp@10", lambda: {"variants": {"lrp/K=10": 3}}, depends)
    stages.get("toxicity/validation/lrp-token", lambda: {"variants": {"lrp-token/K=10": 9}}, depends)  # another method
    parts, missing = stages.stored_parts("toxicity/validation/lrp", ["lrp/K=10", "lrp/K=25", "lrp/K=50"], depends)
    assert [stage for stage, _ in parts] == ["toxicity/validation/lrp", "toxicity/validation/lrp@10"]
    assert missing == ["lrp/K=25"]
    # measured with other settings: not a source
    other = run.Stages(tmp_path, SETTINGS | {"validation_samples": 3}, None)
    assert other.stored_parts("toxicity/validation/lrp", ["lrp/K=10"], depends) == ([], ["lrp/K=10"])


def test_budgets_beyond_what_a_ranking_stores_are_refused(monkeypatch, capsys):
    run = _run_module()
    monkeypatch.setattr("sys.argv", ["run.py", "--budgets", f"10,{run.RANKED + 1}"])
    try:
        run.parse_args()
    except SystemExit as exit:
        assert exit.code == 2
    else:
        raise AssertionError("parse_args accepted a budget beyond RANKED")
    assert f"--budgets must lie in 1..{run.RANKED}" in capsys.readouterr().err


def test_report_only_never_computes(tmp_path):
    run = _run_module()
    stages = run.Stages(tmp_path, SETTINGS, None, report_only=True)
    assert stages.get("toxicity/reference", lambda: 1 / 0, DEPENDS) is None
    assert not list(tmp_path.iterdir())
