# The two commands of the README. Each creates .venv and installs recslm into it on first use.
#   make demo   run configs/demo.yaml: the whole pipeline on the bundled MovieLens data, on the CPU
#   make test   run the test suite
#   (make teacher rebuilds the demo's shipped teacher, models/demo-teacher)
# Variables: PYTHON (an interpreter >= 3.11), TORCH_SPEC (the torch requirement installed first,
# so pip never pulls a multi-GB CUDA build on a CPU machine), ARGS (extra arguments).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.installed
DS_STAMP := $(VENV)/.installed-deepspeed
SGL_STAMP := $(VENV)/.installed-sglang-parser

.PHONY: demo demo-generative smoke smoke-generative test install clean slurm chromium teacher gpu-check

demo: $(STAMP)
	$(VENV)/bin/recslm run configs/demo.yaml $(ARGS)

# The teacher the demo starts from (models/demo-teacher, committed): configs/teacher.yaml trains it
# (about 75 minutes on 2 CPU cores), then `recslm teacher export` copies it out of the store with its
# card (command, commit, data key, val and test AUC beside the baselines).
teacher: $(STAMP)
	$(VENV)/bin/recslm run configs/teacher.yaml --run-id demo-teacher
	$(VENV)/bin/recslm teacher export configs/teacher.yaml runs/demo-teacher --out models/demo-teacher

# On a CUDA machine: the smoke config in bf16 on the GPU against fp32 on the CPU (AUC), bf16 vs fp32
# distill throughput, and whether SGLang's own server loads the pruned and FP8 models (README, Running on GPUs).
gpu-check: $(STAMP) $(DS_STAMP)
	$(VENV)/bin/python benchmarks/gpu_check.py $(ARGS)

smoke: $(STAMP)
	$(VENV)/bin/recslm run configs/smoke.yaml $(ARGS)

demo-generative: $(STAMP)
	$(VENV)/bin/recslm run configs/demo-generative.yaml $(ARGS)

smoke-generative: $(STAMP)
	$(VENV)/bin/recslm run configs/smoke-generative.yaml $(ARGS)

test: $(STAMP) $(DS_STAMP) $(SGL_STAMP) slurm chromium
	$(VENV)/bin/python -m pytest $(ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# The tests run DeepSpeed ZeRO for real, so `make test` adds the deepspeed extra (an sdist).
# Its setup.py imports torch: --no-build-isolation builds it against the torch installed above
# (an isolated build sees no torch and records torch 0.0). DS_BUILD_OPS=0: no C++ kernels at
# install (Linux's default, made explicit; pre-building the CPU op took 4+ min); the one op a
# CPU run needs is JIT-built on first use into ~/.cache/torch_extensions (2-3 min, once) and
# reused. setuptools>=70.1 builds wheels without the `wheel` package.
$(DS_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet "setuptools>=70.1"
	DS_BUILD_OPS=0 $(VENV)/bin/python -m pip install --quiet --no-build-isolation -e ".[test,deepspeed]"
	touch $(DS_STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache

# The fleet tests validate launch arguments with SGLang's own parser and run the router (setproctitle: its launcher imports it).
# Their wheels pin CUDA torch and GPU kernels: install them without dependencies, then the
# few modules the argument parsers import (triton only as an import, no GPU needed).
$(SGL_STAMP): $(DS_STAMP)
	$(VENV)/bin/python -m pip install --quiet --no-deps "sglang==0.5.23" "sglang-router==0.3.2"
	$(VENV)/bin/python -m pip install --quiet pybase64 triton msgspec pyzmq IPython setproctitle
	touch $(SGL_STAMP)

# The UI tests render the Prefect and MLflow pages in Debian's headless Chromium (and save the
# README's pictures); as root with apt, this installs it when missing.
chromium:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "make: the UI tests need Debian's chromium (install it as root)"; fi

# The Slurm backend's tests start a one-node cluster (infra/slurm/local-cluster.sh) from Debian's
# packages. As root with apt, this installs them when missing; otherwise it says what is needed
# (those tests then skip locally, and fail under CI=true, where they must run).
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
slurm:
	@if command -v sbatch >/dev/null && test -x /usr/sbin/slurmctld -a -x /usr/sbin/slurmd -a -x /usr/sbin/munged; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(SLURM_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES) >/dev/null; \
	else echo "make: the Slurm tests need Debian's $(SLURM_PACKAGES) (install them as root)"; fi
