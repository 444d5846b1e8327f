"""Score in a separate (spawned) process, so the caller's process never sees LRP patches.

The worker loads the model itself from its folder, scores, and hands the scores back
through a temporary safetensors file (`Scores.save`) plus a JSON summary; the caller's
model classes, attention registry and memory stay untouched. The reported peak RSS is the
worker's, i.e. loading plus scoring alone.
"""

from __future__ import annotations

import json
import logging
import tempfile
import traceback
from pathlib import Path

import torch.multiprocessing as mp

from excise.errors import ExciseError
from excise.scoring.batches import ReferenceData
from excise.models.loading import load_model, resolve_model_path
from excise.scoring.run import ScoringResult, check_request, score_model
from excise.artifacts.scores import Scores

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"


def _work(folder: str, model: str, load: dict, data, method: str, options: dict) -> None:
    out = Path(folder)
    try:
        loaded = load_model(model, **load)
        result = score_model(loaded.model, data, method, **options)
    except ExciseError as error:
        (out / RESULT_FILE).write_text(json.dumps({"error": str(error), "user_error": True}))
        return
    except Exception:
        (out / RESULT_FILE).write_text(json.dumps({"error": traceback.format_exc(), "user_error": False}))
        raise
    result.scores.save(out)
    (out / RESULT_FILE).write_text(json.dumps(result.summary()))


def score_in_worker(
    model: str | Path,
    data: ReferenceData | None,
    method: str,
    *,
    granularities=("weight",),
    target: str = "next_token",
    batch_size: int = 1,
    progress: bool = True,
    dtype: str = "float32",
    device: str = "cpu",
    device_map: str | dict | None = None,
    recompute: bool = False,
    **params,
) -> ScoringResult:
    """`score_model` in a spawned worker that loads `model` (a folder or embedded name) itself.

    Arguments as for `score_model` and `load_model`. The request and the model folder are
    checked here first, so bad input fails fast with an ExciseError.
    """
    check_request(method, granularities, target, params, recompute)
    resolve_model_path(model)
    load = {"dtype": dtype, "device": device, "device_map": device_map}
    options = {
        "granularities": granularities,
        "target": target,
        "batch_size": batch_size,
        "progress": progress,
        "recompute": recompute,
    }
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="excise-scoring-") as folder:
        args = (folder, str(model), load, data, method, options | params)
        process = context.Process(target=_work, args=args)
        process.start()
        logger.info("scoring with %s in worker process %d", method, process.pid)
        process.join()
        result_path = Path(folder) / RESULT_FILE
        summary = json.loads(result_path.read_text()) if result_path.is_file() else {}
        if "error" in summary:
            if summary["user_error"]:
                raise ExciseError(summary["error"])
            raise RuntimeError(f"the scoring worker failed:\n{summary['error']}")
        if process.exitcode != 0 or not summary:
            raise RuntimeError(f"the scoring worker died (exit code {process.exitcode}); was it out of memory?")
        return ScoringResult(scores=Scores.load(Path(folder)), **summary)
