# The two set-up commands: `make run` (the stack with the demo workflow) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(BIN)/flowrt dev

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# `make bench QUICK=1`: the same sections with smaller counts (under a minute)
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(filter-out 0,$(QUICK)),--quick)

lint: $(STAMP)
	$(BIN)/ruff check flowrt workers tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
