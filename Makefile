# The two commands of the README. Each creates .venv and installs recslm into it on first use.
#   make demo   run configs/demo.yaml: the whole pipeline on the bundled MovieLens data, on the CPU
#   make test   run the test suite
# Variables: PYTHON (an interpreter >= 3.11), TORCH_SPEC (the torch requirement installed first,
# so pip never pulls a multi-GB CUDA build on a CPU machine), ARGS (extra arguments).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo smoke test install clean

demo: $(STAMP)
	$(VENV)/bin/recslm run configs/demo.yaml $(ARGS)

smoke: $(STAMP)
	$(VENV)/bin/recslm run configs/smoke.yaml $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
