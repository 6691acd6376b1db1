# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install test lint pytest demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

# pytest exits 5 when it collected no test: that is a failure here, as is any other non-zero code.
pytest: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15 -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: lint pytest

demo: install
	$(BIN)/python -m sarclip_train.demo --out demo-output

bench: install
	$(BIN)/python benchmarks/bench_convert.py

clean:
	rm -rf demo-output .pytest_cache build *.egg-info
