# `make run` and `make test` each set up what they need in .venv: `run` the package (its Cython
# extensions built in place) with its runtime dependencies, `test` that plus the dev extra.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd ext/*/*.pxd)
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp

.PHONY: install dev build test run bench fuzz clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The package alone: what `make run` (the demo) needs.
$(RUN_STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q -e .
	touch $@

# The package with every extra and the test tools; it satisfies the run stamp too.
$(DEV_STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

dev: $(DEV_STAMP)

# Rebuild the extensions in place after editing ext/ (what pip install -e does, faster; the dev
# extra brings Cython and setuptools into .venv, once: order-only, not redone when ext/ changes).
build: | $(DEV_STAMP)
	$(BIN)/python setup.py -q build_ext --inplace -j 2

# the whole suite, then its 15 slowest tests (what to look at when it grows slow). Many tests
# wait on sockets and timers, not the CPU, so 5 processes beat 2 on 2 cores (measured
# 2026-12-02, the suite's waits shortened: 3 workers 35.6 s, 4 29-31.6 s, 5 24.8-29.2 s, 6
# 26.5-28.7 s; each worker's start costs 2.3 s of CPU, collection of every test module; on a
# faster day of the same machine, 2026-12-02 evening, 3: 26.0 s, 4: 22.0, 5: 19.5-22.6, 6: 19.1);
# TEST_WORKERS=n to try. A test to each worker (loadgroup, with the scheduler of
# tests/conftest.py): a file's tests spread over the workers, except the files in ONE_WORKER
# (the Ray cluster's, the TUI's), whose module-scoped fixtures start once (with a file to a
# worker, loadfile, the workers ended up to 3.6 s apart). Tests must take ephemeral ports (0)
# and tmp_path, never fixed ones. The interop tests (marker interop, the c104 peer) run with the
# others: c104 2.2.1's client at times misses an ActCon that reached it, more often under load,
# and tests/c104_peer.py tells that from a refusal by what c104 received and runs the exchange
# again (it ran alone after the rest before: 45.8 s in all). Files start longest first
# (tests/conftest.py, LONGEST_FIRST; --no-loadscope-reorder keeps that order instead of xdist's
# by number of tests). PYTHONDONTWRITEBYTECODE is cleared for pytest: with it set (as in some CI
# images and shells) every worker rewrote the asserts of every test module again, 2 s of CPU
# each per run; the .pyc files go to __pycache__ (ignored).
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest
TEST_WORKERS ?= 5
test: $(DEV_STAMP)
	$(PYTEST) tests -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=15

run: $(RUN_STAMP)
	$(BIN)/iec104

bench: $(DEV_STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-only

# The extensions built with clang, ASan and libFuzzer's coverage (setup.py, IEC104_FUZZ=1) into
# build/fuzz/iec104 beside a copy of src/iec104/*.py (src/iec104's .so files stay as they are);
# the harness puts build/fuzz first on sys.path and preloads atheris's asan_with_fuzzer.so.
# New inputs go to build/fuzz/corpus, the seeds in tests/fuzz/corpus are only read.
# `make fuzz FUZZ_TIME=600` for longer; IEC104_FUZZ_LIB=none for Python-only coverage.
fuzz: $(DEV_STAMP)
	$(BIN)/python -m pip install -q atheris
	@command -v clang >/dev/null || { echo "make fuzz: needs clang (apt-get install clang)"; exit 1; }
	IEC104_FUZZ=1 $(BIN)/python setup.py -q build_ext --build-lib build/fuzz --build-temp build/fuzz/temp -j 2
	rm -f build/fuzz/iec104/*.py && cp src/iec104/*.py src/iec104/py.typed build/fuzz/iec104/ && cp -r src/iec104/data build/fuzz/iec104/
	mkdir -p build/fuzz/corpus
	$(BIN)/python tests/fuzz/fuzz_codec.py build/fuzz/corpus tests/fuzz/corpus \
		-max_total_time=$(or $(FUZZ_TIME),60) -print_final_stats=1 -artifact_prefix=build/fuzz/

clean:
	rm -rf build dist src/iec104/*.so src/iec104/*.c $(RUN_STAMP) $(DEV_STAMP)
