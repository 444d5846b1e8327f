"""benchmarks/serve_startup's breakdown of `make serve` into phases, from a log in excise's format."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.serve_startup.run import phases  # noqa: E402

LOG = """.venv/bin/excise serve --default --host 127.0.0.1 --port 8000
23:59:50 INFO excise.defaults: 50% LRP row-wise pruning: building /tmp/home/default/v2/pipeline/lrp50-mask
23:59:50 INFO excise.models.embedded: converting smollm2 from /x/y/SmolLM2.gguf (once; ~30 s)
Converting and de-quantizing GGUF tensors...:   0%|          | 0/272 [00:00<?, ?it/s]
00:00:20 INFO excise.models.embedded: prepared smollm2 at /tmp/home/models/smollm2
00:03:00 INFO excise.scoring.run: lrp scores from 16 samples in 145.3 s
00:04:10 INFO excise.defaults: pruned model for vLLM: building /tmp/home/default/v2/serve/smollm2-lrp50
00:04:30 INFO server.engines: starting engine 'smollm2' on /tmp/home/models/smollm2 (lora=True)
00:05:01 INFO server.engines: all 2 engine(s) ready: smollm2, smollm2-lrp50
00:05:02 INFO server.engines: after ready: not a step
00:05:03 INFO vllm.engine: not excise's
"""


def test_steps_run_from_line_to_line_until_every_engine_is_ready():
    got = phases(LOG)
    assert [p["seconds"] for p in got] == [0, 30, 160, 70, 20, 31]  # across midnight: 00:00:20 - 23:59:50 = 30 s
    assert [p["start"] for p in got] == ["23:59:50", "23:59:50", "00:00:20", "00:03:00", "00:04:10", "00:04:30"]
    assert got[1]["phase"] == "prepared smollm2 at smollm2"  # named by the line that ends it, no machine paths
    assert got[2]["phase"] == "lrp scores from 16 samples in 145.3 s"
    assert got[4]["phase"] == "starting engine 'smollm2' on smollm2 (lora=True)"
    assert got[5]["phase"] == "all 2 engine(s) ready: smollm2, smollm2-lrp50"  # and nothing after it


def test_a_log_without_phase_lines_has_no_phases():
    assert phases("make: *** [Makefile:40: serve] Error 2\n") == []
