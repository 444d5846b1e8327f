"""Scoring memory and time: wanda, gradient and lrp, with and without layer recomputation, by window length.

    python benchmarks/scoring_memory/run.py [--models smollm2 tinyllama-1.1b] [--lengths 512 1024 2048]
        [--tokens 2048] [--device cpu] [--dtype float32] [--memory-limit-gb 20] [--report-only]

What is measured and how: `benchmark.py` beside this file.
"""

import sys
from pathlib import Path

# this folder (`benchmark`, `report`; spawned workers inherit the path) and the repository root (`benchmarks`)
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]
from benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
