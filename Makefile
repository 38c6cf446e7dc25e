# `make run` and `make test` each set up what they need: a .venv with the package (its
# Cython extensions built in place) and its dev extra.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install build test run bench fuzz clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Rebuild the extensions in place after editing ext/ (what pip install -e does, faster).
build: $(BIN)/python
	$(BIN)/python setup.py -q build_ext --inplace -j 2

test: install
	$(BIN)/python -m pytest tests

run: install
	$(BIN)/iec104

bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-only

fuzz: install
	$(BIN)/python -m pip install -q atheris
	$(BIN)/python tests/fuzz/fuzz_codec.py tests/fuzz/corpus -max_total_time=60

clean:
	rm -rf build src/iec104/*.so src/iec104/*.c $(STAMP)
