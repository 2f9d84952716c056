# Two commands for a newcomer: `make run` and `make test`. Both create the virtual environment in
# $(VENV) when it is missing or older than pyproject.toml, and skip set-up when it is current.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint setup bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The main job: adversarial DRO with the 2-step L2L follower on the embedded mnist5k digits.
run: $(STAMP)
	$(PY) cli.py solve adversarial-dro --follower 2-step --out runs/make-run-$$(date +%Y%m%d-%H%M%S)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) cli.py bench dro --reuse --json runs/bench-dro.json

clean:
	rm -rf runs
