# lamina: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LAMINA := $(BIN)/lamina
DEMO := demo

.PHONY: setup deps testdata demo test test-fast typecheck bench fuzz clean

# A venv with lamina (editable) and the test tools; redone when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m compileall -q src >/dev/null
	touch $@

setup: $(VENV)/.installed

# Debian packages the tests and the demo need (docker.io, skopeo, umoci, golang-go, ...).
deps:
	bash scripts/ensure-deps.sh

testdata: deps
	$(MAKE) -C testdata all

# Build the built-in example (scratch + static Go hello + CA bundle), inspect it, and run it
# when a Docker daemon is reachable.
demo: setup testdata
	mkdir -p $(DEMO)
	$(LAMINA) build examples/hello/lamina.toml
	$(LAMINA) inspect $(DEMO)/hello.tar
	@if docker info >/dev/null 2>&1; then \
	  docker load -i $(DEMO)/hello.tar && docker run --pull never --rm lamina-demo/hello:latest; \
	else \
	  echo "(no Docker daemon reachable: load it elsewhere with 'docker load -i $(DEMO)/hello.tar')"; \
	fi

# Everything, end to end: installs what is missing, starts its own dockerd, runs pytest.
test: setup testdata typecheck
	$(BIN)/pytest

# The quick loop: every test not marked e2e or slow, across the whole tree. No daemon;
# tests that need a Debian tool or testdata/ skip without it (CI=true makes them fail).
test-fast: setup typecheck
	$(BIN)/pytest -m 'not e2e and not slow'

# The package ships py.typed: its types are part of what it promises.
typecheck: setup
	$(BIN)/mypy --strict src/lamina

# Peers and floors to measure against: buildah, igzip (ISA-L's CLI) and zstd, besides the test tools.
# lamina is timed as users run it: installed from a wheel into its own venv and byte-compiled
# (the editable install would byte-compile lamina on every run, which the machines here forbid).
BENCH_VENV ?= build/bench-venv
bench: setup testdata
	@command -v buildah >/dev/null && command -v igzip >/dev/null && command -v zstd >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah isal zstd >/dev/null)
	rm -rf $(BENCH_VENV) && $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check .
	$(BENCH_VENV)/bin/python -m compileall -q $(BENCH_VENV)/lib >/dev/null
	LAMINA_BENCH_LAMINA=$(abspath $(BENCH_VENV))/bin/lamina $(BIN)/python bench/run.py

# Coverage-guided fuzzing (atheris): each target for FUZZ_SECONDS, niced; findings land in
# fuzz/crashes/<target>/ and `make test` replays them (tests/hostile/test_fuzz_replay.py).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= tar image spec
fuzz: setup
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/pip install --quiet --disable-pip-version-check -e '.[fuzz]'
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $$t for $(FUZZ_SECONDS) s (log: fuzz/work/$$t.log)"; \
	  mkdir -p fuzz/work; nice $(BIN)/python fuzz/run.py $$t $(FUZZ_SECONDS) > fuzz/work/$$t.log 2>&1 || exit 1; \
	  grep -E '^(stat::number_of_executed_units|== finding)' fuzz/work/$$t.log || true; \
	done

clean:
	rm -rf $(DEMO) testdata/out
