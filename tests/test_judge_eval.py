"""`oniray judge`: the scores by hand, the labels file's errors, and the real CLI end to end
(rules and embedding backends) in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.judge_cmd import split_overrides
from rewards.canary import CANARY_CAPTIONS
from rewards.judge_eval import LabelsError, read_labels, score

REPO = Path(__file__).resolve().parents[1]
# For the score task's default rules (kill, experience level, gold pieces, staircase down):
# one true positive, one false negative, one false positive, two true negatives.
SMALL_TSV = (
    "label\tmessage\n"
    "1\tYou kill the newt!\n"  # TP
    "1\tYou hear someone counting money.\n"  # FN: no rule for it
    "0\tThere is a staircase down here.\n"  # FP (labelled 0 on purpose)
    "0\tIt's a wall.\n"  # TN
    "0\tThat door is closed.\n"  # TN
)


def oniray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


# ---- scores, by hand ---------------------------------------------------------------------


def test_scores_match_hand_computed_values_with_unparseable_verdicts() -> None:
    truth = [True, True, True, False, False, False]
    predicted = [True, False, None, True, False, None]
    s = score(truth, predicted)
    assert (s.true_positives, s.false_negatives, s.false_positives, s.true_negatives) == (
        1, 1, 1, 1)
    assert s.unparseable == 2
    assert s.accuracy == pytest.approx(2 / 6)  # an unparseable verdict is wrong
    assert s.precision == pytest.approx(1 / 2)  # TP / (TP + FP); None is no prediction
    assert s.recall == pytest.approx(1 / 3)  # TP / 3 helpful; the None one is a miss


def test_precision_and_recall_are_undefined_not_zero_without_a_denominator() -> None:
    s = score([True, False], [False, False])
    assert s.precision is None and s.recall == 0.0 and s.accuracy == 0.5
    assert score([False, False], [True, False]).recall is None


# ---- the labels file ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), [
    ("message\tlabel\n1\tx\n", ":1: the header must be 'label<TAB>message'"),
    ("label\tmessage\n1\tok\nyes\tYou kill the newt!\n", ":3: label must be 1 (helpful) or 0"),
    ("label\tmessage\n1 You kill the newt!\n", ":2: expected 2 tab-separated fields"),
    ("label\tmessage\n0\ta\tb\n", ":2: expected 2 tab-separated fields"),
    ("label\tmessage\n1\t  \n", ":2: the message is empty"),
    ("label\tmessage\n", ": no labelled messages after the header"),
])
def test_a_malformed_labels_file_names_file_line_and_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(LabelsError) as err:
        read_labels(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_the_shipped_labelled_sets_read_and_have_both_classes() -> None:
    for name, at_least in (("nethack_score.tsv", 150), ("minihack_keyroom.tsv", 100)):
        rows = read_labels(REPO / "configs/judge_eval" / name)
        assert len(rows) >= at_least and len({r.message for r in rows}) == len(rows)
        assert any(r.helpful for r in rows) and not all(r.helpful for r in rows)


def test_captions_with_an_equals_sign_are_captions_not_overrides() -> None:
    captions, overrides = split_overrides(
        ["Unknown direction: '=' (use 'h')", "rewards.judge.backend=rules", "a=b", "env.id=X"])
    assert captions == ["Unknown direction: '=' (use 'h')", "a=b"]
    assert overrides == ["rewards.judge.backend=rules", "env.id=X"]


# ---- the CLI end to end --------------------------------------------------------------------


def test_eval_on_the_rules_backend_prints_and_writes_the_figures(tmp_path: Path) -> None:
    labels, out = tmp_path / "small.tsv", tmp_path / "result.json"
    labels.write_text(SMALL_TSV)
    done = oniray("judge", "eval", str(labels), "--out", str(out),
                  "rewards.judge.backend=rules", "env.id=NetHackScore-v0")
    assert done.returncode == 0, done.stderr
    assert "accuracy: 0.600  precision: 0.500  recall: 0.500" in done.stdout
    assert "TP 1 FP 1 TN 2 FN 1" in done.stdout
    assert f"canary false-positive rate: 0.000 (0 of {len(CANARY_CAPTIONS)}" in done.stdout
    result = json.loads(out.read_text())
    assert result["task"] == "score" and result["judge"] == "rules"
    assert result["metrics"]["accuracy"] == pytest.approx(0.6)
    assert result["metrics"]["labels_per_s"] > 0
    assert [(c["caption"], c["label"], c["verdict"]) for c in result["captions"]] == [
        ("You kill the newt!", 1, "helpful"),
        ("You hear someone counting money.", 1, "not helpful"),
        ("There is a staircase down here.", 0, "helpful"),
        ("It's a wall.", 0, "not helpful"),
        ("That door is closed.", 0, "not helpful"),
    ]
    assert all("probability" in c for c in result["captions"])
    assert [c["caption"] for c in result["canary"]["captions"]] == list(CANARY_CAPTIONS)
    assert result["canary"]["fpr"] == 0.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_label_and_eval_on_the_embedding_backend(tmp_path: Path) -> None:
    done = oniray("judge", "label", "You kill the newt!", "It's a wall.",
                  "rewards.judge.backend=embedding")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "judge: embedding, task: score" in lines[0]
    assert lines[1].startswith("helpful") and lines[1].endswith("You kill the newt!")
    assert lines[2].startswith("not helpful") and lines[2].endswith("It's a wall.")
    labels = tmp_path / "small.tsv"
    labels.write_text(SMALL_TSV)
    done = oniray("judge", "eval", str(labels), "rewards.judge.task=score")
    assert done.returncode == 0, done.stderr
    assert "messages: 5 (2 labelled helpful)" in done.stdout and "labels/s:" in done.stdout


def test_a_malformed_labels_file_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    labels = tmp_path / "bad.tsv"
    labels.write_text("label\tmessage\n1\tYou kill the newt!\n2\tIt's a wall.\n")
    done = oniray("judge", "eval", str(labels), "rewards.judge.backend=rules")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"oniray judge: {labels}:3: label must be 1 (helpful) or 0 "
                                   f"(not), got '2'")


def test_a_bad_override_is_the_train_commands_config_error(tmp_path: Path) -> None:
    done = oniray("judge", "label", "You kill the newt!", "rewards.judge.backnd=rules")
    assert done.returncode == 2
    assert done.stderr.strip() == ("config error: command line: unknown key "
                                   "'rewards.judge.backnd' = 'rules' (did you mean "
                                   "'rewards.judge.backend'?)")
    done = oniray("judge", "label", "You kill the newt!", "learner.lr=0.1")
    assert done.returncode == 2
    assert "'learner.lr'" in done.stderr and "reads only rewards.judge.* and env.id" in done.stderr


def test_unparseable_answers_are_counted_never_labels() -> None:
    """A text judge whose answers never hold a label tag (a fault injected in ``generate``):
    every verdict is unparseable, the parse failures come from the judge's own counters, and
    the canary rate is undefined rather than 0."""
    from rewards.config import JudgeConfig
    from rewards.judge_eval import LabelledMessage, evaluate
    from rewards.judges.text import TextJudge

    class Rambling(TextJudge):
        name = "rambling"

        def generate(self, prompts, *, max_new_tokens=None, stop=None):
            return ["<knowledge> NetHack is a game and FOO is" for _ in prompts]

    judge = Rambling(JudgeConfig(max_retries=1, constrained=False), "score")
    rows = [LabelledMessage("You kill the newt!", True), LabelledMessage("It's a wall.", False)]
    result = evaluate(judge, rows, batch_size=1)
    m = result["metrics"]
    assert (m["unparseable"], m["label_unparseable"], m["label_parse_failures"]) == (2, 2, 4)
    assert m["accuracy"] == 0.0 and m["precision"] is None and m["recall"] == 0.0
    assert [c["verdict"] for c in result["captions"]] == ["unparseable", "unparseable"]
    assert result["canary"]["unparseable"] == len(CANARY_CAPTIONS)
    assert result["canary"]["fpr"] is None
