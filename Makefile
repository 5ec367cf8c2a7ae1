# The two set-up commands of the README: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint venv clean gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/acbench run protocols/demo.yaml

# Test files are spread over TEST_WORKERS processes of one thread each (a file stays on one worker, so its
# module fixtures are built once); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# After installing on a GPU machine: every registered method, metric and detector once (full-size
# random networks, one line each, about 5 minutes on one GPU); exit code 1 if any failed.
gpu-check: $(STAMP)
	$(BIN)/acbench selftest --device cuda

lint: $(STAMP)
	$(BIN)/ruff check acbench methods tests benchmarks

clean:
	rm -rf $(VENV) runs
