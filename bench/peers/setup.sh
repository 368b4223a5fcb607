#!/usr/bin/env bash
# Create the peers' virtualenvs for bench/peers/compare.py, idempotently (one stamp per venv).
#
#   bash bench/peers/setup.sh            # both: bench/peers/.venv-sf and bench/peers/.venv-rllib
#   bash bench/peers/setup.sh sf         # only Sample Factory
#   bash bench/peers/setup.sh rllib      # only RLlib
#
# Why venvs of their own: the peers are benchmark-only dependencies, and each pins things
# oniray does not (Sample Factory 2.1.1 wants gymnasium<1.0 and numpy<2, wandb, opencv;
# RLlib pins gymnasium 1.2.2). Nothing here touches .venv or `make train`.
# torch==2.13.0 goes in first and stays pinned (a constraints file): a dependency asking for
# plain `torch` would otherwise pull a multi-GB CUDA build.
# Install times go to <venv>/.install-seconds, read by compare.py for its report.
# Both venvs also get pyarrow: bench/peers/common.py builds the peers' networks from the
# checkout's actors/model.py, whose constants live beside the Arrow schema (actors/fragment.py).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"
NLE="nle==1.3.0"
SF_VERSION="2.1.1"
RAY_VERSION="2.60.0"
REVISION=2  # of the package lists below: a venv stamped with an older one is topped up

log() { echo "peers/setup: $*" >&2; }

make_venv() {  # name, stamp-tag, install-function
  local venv="$HERE/.venv-$1" stamp="$HERE/.venv-$1/.oniray-peer-$2-r$REVISION"
  if [[ -f "$stamp" ]]; then
    log "$1: ready ($venv)"
    return 0
  fi
  local start
  start=$(date +%s)
  local fresh=0
  [[ -x "$venv/bin/python" ]] || { "$PYTHON" -m venv "$venv"; fresh=1; }
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "$TORCH"
  echo "$TORCH" > "$venv/constraints.txt"
  "$3" "$venv/bin/python" "$venv/constraints.txt"
  # A top-up of an older venv keeps its first install's time (what compare.py reports).
  if (( fresh )) || [[ ! -f "$venv/.install-seconds" ]]; then
    echo $(( $(date +%s) - start )) > "$venv/.install-seconds"
  fi
  touch "$stamp"
  log "$1: installed ($(( $(date +%s) - start )) s)"
}

install_sf() {  # python, constraints
  # sample-factory 2.1.1 declares gymnasium<1.0, and nle 1.3.0 pins gymnasium==1.2.0; the
  # two cannot be resolved together, so SF goes in without its declared deps and they are
  # listed here (its runtime imports), with gymnasium left at nle's 1.2.0. The script
  # bench/peers/sample_factory_nethack.py patches the one gymnasium-1.x difference it meets.
  "$1" -m pip install --quiet -c "$2" "$NLE" "numpy<2" pyarrow psutil threadpoolctl colorlog \
    "faster-fifo>=1.4.2,<2.0" "signal-slot-mp>=1.0.3,<2.0" filelock tensorboardx tensorboard \
    opencv-python-headless
  "$1" -m pip install --quiet --no-deps "sample-factory==$SF_VERSION"
  "$1" -c "import sample_factory, nle, pyarrow, torch; assert torch.__version__.startswith('2.13')"
}

install_rllib() {  # python, constraints
  # ray[rllib] 2.60.0 pins gymnasium==1.2.2 and nle 1.3.0 pins gymnasium==1.2.0 (pip:
  # ResolutionImpossible). A patch release apart, so nle goes in without its deps on RLlib's
  # gymnasium; its other deps (numpy, pybind11) are met explicitly.
  "$1" -m pip install --quiet -c "$2" "ray[rllib]==$RAY_VERSION" pybind11 pyarrow
  "$1" -m pip install --quiet --no-deps "$NLE"
  "$1" -c "import ray.rllib, nle, pyarrow, torch; assert torch.__version__.startswith('2.13')"
}

which="${1:-all}"
[[ "$which" == all || "$which" == sf ]] && make_venv sf "sample-factory-$SF_VERSION" install_sf
[[ "$which" == all || "$which" == rllib ]] && make_venv rllib "ray-$RAY_VERSION" install_rllib
exit 0
