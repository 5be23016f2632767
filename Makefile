# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   create .venv, install adamtune, tune AdamW on the built-in digits-mlp workload
#   make test   create .venv, install adamtune with its test tools, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adamtune-installed

.PHONY: demo test install clean

# --no-compile: Python compiles what is imported on first use; compiling all of torch's files at
# install time doubled a fresh install on a 2-core machine (520 s vs 271 s).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/adamtune tune --workload digits-mlp

# Two test processes on two cores; one thread each so torch's thread pools don't fight.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q

clean:
	rm -rf $(VENV) adamtune.db adamtune-report*.html *-report-*.html
