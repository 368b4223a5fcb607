"""A tiny, untrained Llama causal LM with a locally trained tokenizer, for judge tests.

``build_tiny_causal_lm(dir)`` writes a Hugging Face model directory that ``transformers``
(AutoTokenizer / AutoModelForCausalLM) and vLLM can load offline: LlamaForCausalLM, float32,
a small byte-level BPE vocabulary trained with ``tokenizers`` on NetHack-like text and the
judge's own prompts, special tokens, and a ``chat_template``. Nothing is downloaded.
"""

from __future__ import annotations

import itertools
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_MONSTERS = ["newt", "jackal", "grid bug", "goblin", "kobold", "sewer rat", "gnome", "fox"]
_ITEMS = ["food ration", "key", "dagger", "apple", "scroll", "wand", "ring", "potion"]
_LINES = [
    "You kill the {m}!", "The {m} bites!", "You miss the {m}.", "You hit the {m}.",
    "You see here a {i}.", "You see a {i} here.", "You pick up a {i}.", "You unlock the door.",
    "It's solid stone.", "You bump into a wall.", "You hear a door open.", "{n} gold pieces.",
    "There is a staircase down here.", "Welcome to experience level {n}.",
    "<knowledge> NetHack is a roguelike. </knowledge> <analysis> The {m} died. </analysis>",
    "<label> FOO </label>", "<label> BAR </label>", "<best_description> {n} </best_description>",
]


def corpus() -> list[str]:
    """A few hundred NetHack-like lines plus every prompt the judges render."""
    from rewards.prompts import load_prompts

    lines = [
        template.format(m=m, i=i, n=n)
        for template, m, i, n in itertools.product(_LINES, _MONSTERS, _ITEMS[:3], (1, 2))
    ]
    prompts = load_prompts()
    for task in prompts.tasks:
        lines.append(prompts.render_label_prompt("You kill the newt!", task=task))
        lines.append(prompts.render_compare_prompt("You see a key here.", ":", task=task))
    lines += [e.text for e in prompts.examples]
    return lines


def build_tiny_causal_lm(
    directory: str | Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    max_positions: int = 2048,
    seed: int = 0,
) -> Path:
    """Write the tiny model and tokenizer into ``directory`` and return it.

    The head size (hidden_size / num_heads = 32) is one that vLLM's attention kernels accept.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text encodes, no <unk>
        show_progress=False,
    )
    raw.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
        model_max_length=max_positions,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.config.torch_dtype = torch.float32
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out
