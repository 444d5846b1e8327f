"""The scoring memory and time benchmark on a GPU: one command for whoever has one for a few minutes.

    python benchmarks/scoring_gpu/run.py [--models tinyllama-1.1b llama2-7b] [--dtype bfloat16] [...]

It is `benchmarks/scoring_memory/run.py` with a GPU's defaults: random-weight TinyLlama-1.1B
and Llama-2-7B shapes (no weights need to reach the machine), bfloat16, cuda, and windows of
512, 1024, 2048 and 4096 tokens; every other flag of that script works here too. It writes
`benchmarks/results/scoring_gpu.{md,json,png}`: peak allocated GPU memory and seconds per 1k
tokens for wanda, gradient and lrp, with and without layer recomputation.
"""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "scoring_memory"), str(Path(__file__).resolve().parents[2])]
from benchmark import main  # noqa: E402

GPU_DEFAULTS = ["--device", "cuda", "--dtype", "bfloat16", "--models", "tinyllama-1.1b", "llama2-7b",
                "--lengths", "512", "1024", "2048", "4096", "--tokens", "8192", "--name", "scoring_gpu"]

if __name__ == "__main__":
    main([*GPU_DEFAULTS, *sys.argv[1:]])  # later flags win in argparse: the caller's override these
