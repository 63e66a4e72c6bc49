# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment, install the pinned stack and warm numba's cache first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: setup test test-fast demo bench clean dataflow-image

setup: $(STAMP)

# Reinstall when the pins change. torch==2.13.0 resolves to the CPU build on this machine's disk.
$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,test]'
	# numba compiles librosa's kernels on first use (~14 s); pay it once here, not in each Beam worker.
	$(BIN)/python -m pipelines.warmup
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/mbt demo --output $(DEMO_OUT)

bench: setup
	$(BIN)/mbt bench ingest

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache

# Dataflow worker image (needs a Docker engine; see README "Scaling out").
IMAGE ?= mbt-ingest:latest
dataflow-image:
	docker build -f docker/Dockerfile.dataflow -t $(IMAGE) .
