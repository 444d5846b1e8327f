"""excise inference server: dense, pruned and corrected variants on vLLM behind
an OpenAI-compatible API, with A/B experiments and Prometheus metrics."""

import os

# vLLM reads these when its modules load and its engines start, so they are set
# here, before any module of this package imports vllm. Values already in the
# environment win. Measured on CPU machines: without the KV-cache
# size the engine asks for most of the RAM and refuses to start.
VLLM_ENVIRONMENT = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1",
}
for _key, _value in VLLM_ENVIRONMENT.items():
    os.environ.setdefault(_key, _value)
