"""Config loading: every kind of error names the key, the value and the file, up front."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import cli
from cluster.config import (
    ConfigError,
    OniConfig,
    describe,
    load_config,
    resolve_config,
    to_yaml,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.problems


def test_every_shipped_config_loads() -> None:
    paths = sorted((REPO / "configs").rglob("*.yaml"))
    paths = [p for p in paths if "prompts" not in p.parts]
    assert paths
    for path in paths:
        assert isinstance(load_config(path), OniConfig), path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "{}"), ["learner.lr=1e-3", "rollout.num_actors=3",
                                              "run.max_minutes=null", "learner.lr=2e-3"])
    assert cfg.learner.lr == 2e-3  # the last override wins
    assert cfg.rollout.num_actors == 3 and cfg.run.max_minutes is None
    assert cfg.fragment_steps == 32 * 32 and cfg.fragments_per_batch == 1  # T * E; 1024 / it


def test_int_is_accepted_for_a_float_and_kept_as_float(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "learner:\n  lr: 1\n"))
    assert cfg.learner.lr == 1.0 and isinstance(cfg.learner.lr, float)


def test_unknown_key_names_key_value_file_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "learner:\n  lrr: 0.1\n")
    (line,) = problems(path)
    assert str(path) in line and "'learner.lrr'" in line and "0.1" in line
    assert "did you mean 'learner.lr'" in line


def test_unknown_section(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "lerner:\n  lr: 0.1\n"))
    assert "unknown key 'lerner'" in line and "did you mean 'learner'" in line


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "rollout:\n  num_actors: two\n")
    (line,) = problems(path)
    assert str(path) in line and "'rollout.num_actors' = 'two'" in line and "expected int" in line


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "rollout:\n  num_actors: true\n"))
    assert "is not valid" in line


def test_literal_choices(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "rewards:\n  judge:\n    backend: gpt\n"))
    assert "'rewards.judge.backend' = 'gpt'" in line and "embedding" in line


def test_out_of_range(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "learner:\n  gamma: 1.5\n"))
    assert "'learner.gamma' = 1.5" in line and "<= 1" in line


def test_section_given_a_scalar(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "learner: 3\n"))
    assert "'learner' = 3 must be a section" in line


def test_all_problems_are_collected(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "learner:\n  lr: x\n  gamma: 2\nfoo: 1\n"))
    assert len(found) == 3


def test_override_errors_name_the_command_line(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "{}"), ["learner.lr=fast"])
    assert line.startswith("command line:") and "'learner.lr' = 'fast'" in line
    (line,) = problems(write(tmp_path, "{}"), ["learner.nope=1"])
    assert "command line: unknown key 'learner.nope'" in line
    (line,) = problems(write(tmp_path, "{}"), ["learner.lr"])
    assert "not key=value" in line


def test_cross_field_rules(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "learner:\n  batch_size: 1000\n"))
    assert "'learner.batch_size' = 1000" in line and "multiple of" in line
    (line,) = problems(write(tmp_path, "env:\n  crop_size: 8\n"))
    assert "'env.crop_size' = 8 must be odd" in line
    # The default reward model, retrieval, learns from the annotator's labels.
    (line,) = problems(write(tmp_path, "rewards:\n  annotator:\n    enabled: false\n"))
    assert "'rewards.model.kind' = 'retrieval'" in line and "rewards.annotator.enabled" in line
    (line,) = problems(write(tmp_path, "env:\n  id: oniray/Corridor-v0\n  penalty_step: 0\n"))
    assert "'env.penalty_step' = 0" in line and "NLE and MiniHack tasks" in line
    (line,) = problems(write(tmp_path, "env:\n  penalty_step: 0.5\n"))
    assert "'env.penalty_step' = 0.5" in line


def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "learner: [unclosed\n"))
    assert "not valid YAML" in line
    (line,) = problems(tmp_path / "absent.yaml")
    assert "not found" in line


def test_inherit_and_loops(tmp_path: Path) -> None:
    write(tmp_path, "learner:\n  lr: 0.01\n  gamma: 0.9\n", "base.yaml")
    cfg = load_config(write(tmp_path, "inherit: base.yaml\nlearner:\n  lr: 0.02\n"))
    assert cfg.learner.lr == 0.02 and cfg.learner.gamma == 0.9
    write(tmp_path, "inherit: b.yaml\n", "a.yaml")
    write(tmp_path, "inherit: a.yaml\n", "b.yaml")
    (line,) = problems(tmp_path / "a.yaml")
    assert "loops" in line
    # An error in the parent names the parent file.
    write(tmp_path, "learner:\n  bogus: 1\n", "bad_base.yaml")
    (line,) = problems(write(tmp_path, "inherit: bad_base.yaml\n", "child.yaml"))
    assert "bad_base.yaml" in line


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "{}"), ["rewards.judge.rules.positive=[kill, gold]"])
    saved = write(tmp_path, to_yaml(cfg), "saved.yaml")
    assert load_config(saved) == cfg


def test_judge_settings_sit_in_their_backends_sections(tmp_path: Path) -> None:
    text = ("rewards:\n  judge:\n    backend: vllm\n    vllm:\n      model: /m\n"
            "      cpu_kv_cache_gib: 2\n    embedding:\n      goal_sentences: true\n")
    cfg = load_config(write(tmp_path, text), ["rewards.judge.openai.timeout_s=5"])
    judge = cfg.rewards.judge
    assert judge.vllm.model == "/m" and judge.vllm.cpu_kv_cache_gib == 2
    assert judge.embedding.goal_sentences and judge.openai.timeout_s == 5.0
    listed = "\n".join(describe())
    assert "rewards.judge.vllm.cpu_kv_cache_gib (int) = 1" in listed
    assert "rewards.judge.embedding.goal_sentences (bool) = False" in listed


@pytest.mark.parametrize(("old", "value", "new"), [
    ("embedding_goal_sentences", "true", "embedding.goal_sentences"),
    ("embedding_negatives", "all", "embedding.negatives"),
    ("cpu_kv_cache_gib", "2", "vllm.cpu_kv_cache_gib"),
    ("vllm_python", "py", "vllm.python"),
    ("num_gpus", "1", "vllm.num_gpus"),
    ("base_url", "http://h/v1", "openai.base_url"),
    ("breaker_failures", "3", "openai.breaker_failures"),
    ("rules_positive", "[kill]", "rules.positive"),
])
def test_a_flat_judge_key_names_its_new_place(tmp_path: Path, old: str, value: str,
                                              new: str) -> None:
    path = write(tmp_path, f"rewards:\n  judge:\n    {old}: {value}\n")
    (line,) = problems(path)
    assert line.startswith(f"{path}: unknown key 'rewards.judge.{old}' = ")
    assert line.endswith(f"(did you mean 'rewards.judge.{new}'?)")
    (line,) = problems(write(tmp_path, "{}"), [f"rewards.judge.{old}={value}"])
    assert line.startswith("command line: unknown key") and f"'rewards.judge.{new}'" in line


def test_a_flat_judge_model_points_to_the_backends_section(tmp_path: Path) -> None:
    (line,) = problems(write(tmp_path, "{}"), ["rewards.judge.model=/m"])
    # No backend set: the default one's (embedding).
    assert line == ("command line: unknown key 'rewards.judge.model' = '/m' "
                    "(did you mean 'rewards.judge.embedding.model'?)")
    path = write(tmp_path, "rewards:\n  judge:\n    backend: vllm\n    model: /m\n")
    (line,) = problems(path)
    assert line == (f"{path}: unknown key 'rewards.judge.model' = '/m' "
                    "(did you mean 'rewards.judge.vllm.model'?)")


def test_every_field_is_documented() -> None:
    undocumented = [line for line in describe() if line.rstrip().endswith("#")]
    assert not undocumented, undocumented


@pytest.mark.system
def test_cli_stops_before_anything_starts(tmp_path: Path) -> None:
    path = write(tmp_path, f"run:\n  out_dir: {tmp_path / 'runs'}\nlearner:\n  lrr: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "train", str(path), "learner.gamma=7"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("config error:")]
    assert len(lines) == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, no run folder


def test_the_count_model_needs_no_annotator_but_the_judge_based_ones_do() -> None:
    cfg = load_config(REPO / "configs" / "corridor.yaml",
                      ["rewards.model.kind=count", "rewards.intrinsic_coef=0.4"])
    assert cfg.rewards.model.kind == "count" and not cfg.rewards.annotator.enabled
    with pytest.raises(ConfigError, match=r"needs rewards\.annotator\.enabled"):
        load_config(REPO / "configs" / "corridor.yaml", ["rewards.model.kind=retrieval"])


def _flat(cfg: object, prefix: str = "") -> dict[str, object]:
    """Every key of a config (a dataclass) with its value, dotted."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out |= _flat(value, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def test_every_class_default_is_what_the_default_config_resolves_to() -> None:
    """A key's default is written once, in its config class: configs/default.yaml, which every
    shipped config inherits, sets nothing, so `oniray config` tells what a run uses."""
    cfg, sources = resolve_config(REPO / "configs" / "default.yaml")
    assert sources == {}, f"configs/default.yaml sets {sorted(sources)}: move the values into " \
                          f"the class defaults"
    resolved, defaults = _flat(cfg), _flat(OniConfig())
    assert resolved.keys() == defaults.keys()
    differ = {k: (defaults[k], resolved[k]) for k in defaults if defaults[k] != resolved[k]}
    assert not differ, differ
    assert defaults["rollout.envs_per_actor"] == 32  # the value the issue found stated twice


def test_oniray_config_prints_each_value_and_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    base = write(tmp_path, "learner:\n  lr: 0.01\n  gamma: 0.9\n", "base.yaml")
    child = write(tmp_path, "inherit: base.yaml\nlearner:\n  lr: 0.02\n", "child.yaml")
    assert cli.main(["config", str(child), "learner.epochs=2"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def line(key: str) -> str:
        (found,) = [ln for ln in lines if ln.startswith(f"  {key} (")]
        return found.partition("  #")[0].strip()

    assert line("learner.lr") == f"learner.lr (float) = 0.02  [{child}]"
    assert line("learner.gamma") == f"learner.gamma (float) = 0.9  [{base}]"  # inherited
    assert line("learner.epochs") == "learner.epochs (int) = 2  [command line]"
    assert line("learner.clip_ratio") == "learner.clip_ratio (float) = 0.1  [default]"
    # No CONFIG: configs/default.yaml, the values a run of it uses; overrides still apply.
    assert cli.main(["config", "run.seed=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert line("rollout.envs_per_actor") == "rollout.envs_per_actor (int) = 32  [default]"
    assert line("rewards.annotator.enabled") == "rewards.annotator.enabled (bool) = True  [default]"
    assert line("run.seed") == "run.seed (int) = 3  [command line]"


@pytest.mark.system
@pytest.mark.parametrize("args", [
    ["train", "--local", "configs/corridor.yaml", "learner.gamma=7"],
    ["train", "configs/corridor.yaml", "--local", "learner.gamma=7"],
    ["train", "configs/corridor.yaml", "learner.gamma=7", "--local"],
    ["submit", "configs/corridor.yaml", "--no-wait", "learner.gamma=7"],
])
def test_options_and_overrides_parse_in_any_order(args: list[str]) -> None:
    """The real CLI: the override after an option still reaches the config loader (whose
    range check stops the command before anything starts), never "unrecognized arguments"."""
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "unrecognized arguments" not in proc.stderr
    assert "config error: command line: 'learner.gamma' = 7 is out of range" in proc.stderr
