"""oniray's config: one typed, documented dataclass per component, loaded from YAML.

``load_config(path, overrides)`` reads an OmegaConf YAML file (which may ``inherit:`` another
file), applies ``key=value`` overrides, and validates every key against the schema below
before anything starts. Every problem (unknown key, wrong type, value out of range, bad
combination) is collected and reported as one line naming the key, the value and where it
came from; :class:`ConfigError` carries them all. Nothing downstream changes the config.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cluster.fields import bounds_error, param, section
from rewards.config import RewardsConfig


@dataclass
class RunConfig:
    """The run as a whole: budget, outputs, reporting."""

    name: str = param("", "run folder name under out_dir; empty = <config stem>-<timestamp>")
    out_dir: str = param("runs", "parent folder of run folders")
    seed: int = param(0, "seed of environments, policy initialisation and sampling", ge=0)
    total_env_steps: int = param(1_000_000, "stop after this many environment steps", ge=1)
    max_minutes: float | None = param(
        None, "also stop after this much wall-clock time (minutes); null = no limit", gt=0
    )
    checkpoint_every_updates: int = param(100, "write a checkpoint every K learner updates", ge=1)
    report_every_s: float = param(10.0, "seconds between progress lines and metric rows", gt=0)
    random_baseline_episodes: int = param(
        16, "at least this many episodes of a uniformly random agent are measured before "
        "training (each env plays the same number, its first ones: unbiased); 0 = skip", ge=0
    )
    random_baseline_min_steps: int = param(
        0, "and at least this many of its environment steps (more episodes per env until "
        "reached): a trustworthy baseline on tasks with short episodes", ge=0
    )
    summary_window_episodes: int = param(
        100, "the final mean return is over the last this many episodes", ge=1
    )
    stop_timeout_s: float = param(
        60.0, "on SIGINT/SIGTERM, wait at most this long for the update in progress before "
        "the final checkpoint (updates queued behind it are skipped)", gt=0
    )


@dataclass
class RayConfig:
    """Where Ray runs."""

    address: str | None = param(
        None, "Ray cluster to join ('auto' or host:port); null = start a local Ray"
    )
    num_cpus: int | None = param(
        None, "CPUs a local Ray offers; null = as many as the machine has", ge=1
    )
    object_store_mb: int | None = param(
        512, "object-store size of a local Ray, MiB; null = Ray's default", ge=64
    )
    namespace: str = param("oniray", "Ray namespace of the run's actors")
    include_dashboard: bool = param(False, "start Ray's dashboard with a local Ray")
    dashboard_host: str = param("127.0.0.1", "address the local dashboard binds to")


@dataclass
class EnvConfig:
    """The environments the rollout actors step."""

    id: str = param(
        "NetHackScore-v0", "NLE task id (NetHackScore-v0, NetHackStaircase-v0, ...), any id "
        "the minihack package registers (MiniHack-Room-5x5-v0, MiniHack-KeyRoom-S15-v0, ...) "
        "or oniray/Corridor-v0, the small test environment"
    )
    crop_size: int = param(9, "side of the glyph crop around the agent (odd)", ge=3)
    max_episode_steps: int | None = param(
        None, "truncate episodes after this many steps; null = the task's default", ge=1
    )
    penalty_step: float | None = param(
        None, "NLE and MiniHack tasks: reward for each step that does not advance the game "
        "clock (menus, walking into walls); null = NLE's default -0.01, 0 = no penalty", le=0
    )


@dataclass
class RolloutConfig:
    """Rollout actors: who steps the environments and how fragments are shaped."""

    num_actors: int = param(2, "rollout actors (Ray actors)", ge=1)
    envs_per_actor: int = param(8, "E: environments stepped together by one actor", ge=1)
    fragment_length: int = param(32, "T: steps per fragment", ge=1)
    max_policy_lag: int = param(
        8, "drop fragments acted by a policy this many versions older than the learner's", ge=0
    )
    fragments_in_flight: int = param(
        1, "sample calls outstanding per actor; bounds object-store use", ge=1
    )
    num_cpus: float = param(1.0, "CPUs Ray reserves per rollout actor", ge=0)
    resources: dict[str, float] = param(
        factory=dict, doc="custom Ray resources per rollout actor (cluster placement)"
    )
    torch_threads: int = param(1, "torch intra-op threads in a rollout actor", ge=1)
    max_restarts: int = param(
        3, "rollout actors restarted after dying, in total per session; one more death stops "
        "the run with a checkpoint", ge=0
    )


@dataclass
class ModelConfig:
    """The policy network (defaults: the reference network of the benchmarks, ~1M params)."""

    glyph_embedding_dim: int = param(32, "size of a glyph id's embedding", ge=1)
    crop_channels: int = param(16, "channels of the crop's convolutions", ge=1)
    crop_conv_layers: int = param(2, "3x3 convolutions over the crop", ge=1)
    blstats_hidden: int = param(64, "units of the bottom-line stats layer", ge=1)
    message_hidden: int = param(64, "units of the message-bytes layer; 0 = ignore messages", ge=0)
    fused_hidden: int = param(256, "units after concatenating the encoders", ge=1)
    core_hidden: int = param(256, "GRU state size", ge=1)


@dataclass
class LearnerConfig:
    """APPO with V-trace targets, data-parallel over num_learners."""

    num_learners: int = param(1, "learners in the group (torch.distributed data parallel)", ge=1)
    batch_size: int = param(
        1024, "environment steps per update, summed over learners; a multiple of T * E", ge=1
    )
    epochs: int = param(1, "passes over each batch", ge=1)
    lr: float = param(4e-4, "Adam learning rate", gt=0)
    adam_eps: float = param(1e-6, "Adam epsilon", gt=0)
    gamma: float = param(0.999, "discount", ge=0, le=1)
    clip_ratio: float = param(0.1, "PPO clip: ratios outside [1-eps, 1+eps] get no gradient", gt=0)
    value_coef: float = param(0.5, "weight of the value loss", ge=0)
    entropy_coef: float = param(0.001, "weight of the entropy bonus", ge=0)
    max_grad_norm: float = param(4.0, "clip the global gradient norm to this", gt=0)
    vtrace_rho_clip: float = param(1.0, "V-trace rho-bar", gt=0)
    vtrace_c_clip: float = param(1.0, "V-trace c-bar", gt=0)
    max_queued_batches: int = param(
        2, "batches waiting for the learner; rollouts pause beyond it (backpressure)", ge=1
    )
    backend: Literal["auto", "gloo", "nccl"] = param(
        "auto", "torch.distributed backend; auto = nccl with GPUs, else gloo"
    )
    num_cpus: float = param(1.0, "CPUs Ray reserves per learner", ge=0)
    num_gpus: float = param(0.0, "GPUs per learner", ge=0)
    resources: dict[str, float] = param(factory=dict, doc="custom Ray resources per learner")
    torch_threads: int = param(1, "torch intra-op threads in a learner", ge=1)


@dataclass
class MetricsConfig:
    """The Prometheus endpoint of the run (the driver serves every component's metrics)."""

    enabled: bool = param(True, "serve Prometheus metrics")
    host: str = param("127.0.0.1", "bind address; 0.0.0.0 exposes it to the network")
    port: int = param(0, "port; 0 = a free port, printed at start", ge=0, le=65535)
    scrape_every_s: float = param(5.0, "seconds between collections from the components", gt=0)


@dataclass
class OniConfig:
    """An oniray run."""

    run: RunConfig = section(RunConfig)
    ray: RayConfig = section(RayConfig)
    env: EnvConfig = section(EnvConfig)
    rollout: RolloutConfig = section(RolloutConfig)
    model: ModelConfig = section(ModelConfig)
    learner: LearnerConfig = section(LearnerConfig)
    rewards: RewardsConfig = section(RewardsConfig)
    metrics: MetricsConfig = section(MetricsConfig)

    # ---- derived values, computed once ------------------------------------------------
    @property
    def fragment_steps(self) -> int:
        """Environment steps in one fragment (T * E)."""
        return self.rollout.fragment_length * self.rollout.envs_per_actor

    @property
    def fragments_per_batch(self) -> int:
        return self.learner.batch_size // self.fragment_steps


class ConfigError(ValueError):
    """One or more config problems, one line each: key, value, source, what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# ---- loading ------------------------------------------------------------------------------

_INHERIT_KEY = "inherit"


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[dict, str]]:
    """The YAML file and those it inherits from, as (plain dict, source name), base first."""
    if path in chain:
        raise ConfigError([f"{path}: 'inherit' loops back to itself"])
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"])
    import yaml  # pyyaml comes with omegaconf

    try:
        loaded = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        reason = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise ConfigError([f"{path}: not valid YAML{line}: {reason}"]) from None
    data = OmegaConf.to_container(loaded, resolve=False)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    layers: list[tuple[dict, str]] = []
    parent = data.pop(_INHERIT_KEY, None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError([f"{path}: 'inherit' must be a path, got {parent!r}"])
        layers += _read_yaml((path.parent / parent).resolve(), (*chain, path))
    layers.append((data, str(path)))
    return layers


def _parse_overrides(overrides: list[str]) -> dict:
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"command line: override {item!r} is not key=value"])
        key, _, text = item.partition("=")
        try:
            value = _yaml_scalar(text)
        except Exception:  # unparseable YAML: keep the text, the type check will name it
            value = text
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def _yaml_scalar(text: str) -> Any:
    """Interpret an override's value as YAML would (numbers, booleans, null, lists)."""
    import yaml  # pyyaml comes with omegaconf

    for number in (int, float):  # YAML 1.1 would read "1e-3" as a string
        try:
            return number(text)
        except ValueError:
            pass
    return yaml.safe_load(text) if text.strip() else ""


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp)


def _check_value(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the annotation ``tp``; ints are accepted (and kept) as floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return (type(None) in args), None
        for arg in args:
            if arg is type(None):
                continue
            ok, coerced = _check_value(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is Literal:
        return (value in args), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        item_tp = args[0] if args else Any
        out = []
        for item in value:
            ok, coerced = _check_value(item, item_tp)
            if not ok:
                return False, value
            out.append(coerced)
        return True, out
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        key_tp, val_tp = args if args else (Any, Any)
        out_d = {}
        for k, v in value.items():
            ok_k, _ = _check_value(k, key_tp)
            ok_v, coerced = _check_value(v, val_tp)
            if not (ok_k and ok_v):
                return False, value
            out_d[k] = coerced
        return True, out_d
    return isinstance(value, tp), value


def _merge_layer(
    target: dict, layer: dict, cls: type, source: str, prefix: str, sources: dict,
    problems: list[str],
) -> None:
    """Merge one layer into ``target`` (plain dict mirroring ``cls``), validating each key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            problems.append(f"{source}: unknown key '{full}' = {value!r}{hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                problems.append(
                    f"{source}: '{full}' = {value!r} must be a section (a mapping of keys)"
                )
                continue
            _merge_layer(target.setdefault(key, {}), value, tp, source, f"{full}.", sources,
                         problems)
            continue
        ok, coerced = _check_value(value, tp)
        if not ok:
            problems.append(
                f"{source}: '{full}' = {value!r} is not valid (expected {_type_name(tp)})"
            )
            continue
        why = bounds_error(coerced, fields[key].metadata)
        if why:
            problems.append(f"{source}: '{full}' = {value!r} is out of range ({why})")
            continue
        target[key] = coerced
        sources[full] = source


def _build(cls: type, values: dict) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values[f.name])
        else:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def _cross_checks(cfg: OniConfig, sources: dict[str, str]) -> list[str]:
    """Rules that involve more than one key."""

    def where(key: str) -> str:
        return sources.get(key, "defaults")

    problems = []
    steps = cfg.fragment_steps
    if cfg.learner.batch_size % steps:
        problems.append(
            f"{where('learner.batch_size')}: 'learner.batch_size' = {cfg.learner.batch_size} "
            f"must be a multiple of rollout.fragment_length * rollout.envs_per_actor = {steps}"
        )
    elif cfg.fragments_per_batch % cfg.learner.num_learners:
        problems.append(
            f"{where('learner.num_learners')}: 'learner.num_learners' = "
            f"{cfg.learner.num_learners} must divide the {cfg.fragments_per_batch} fragments "
            f"of a batch"
        )
    if cfg.env.crop_size % 2 == 0:
        problems.append(
            f"{where('env.crop_size')}: 'env.crop_size' = {cfg.env.crop_size} must be odd "
            f"(the agent sits at the centre)"
        )
    # Checked here, not in an actor: a typo would otherwise surface minutes later as a
    # RayActorError deep in the rollout actors' construction.
    from actors.envs import UnknownEnvError, canonical_env_id, has_penalty_step  # imports this

    try:
        env_id = canonical_env_id(cfg.env.id)
    except UnknownEnvError as exc:
        problems.append(f"{where('env.id')}: 'env.id' = {cfg.env.id!r}: {exc}")
    else:
        if cfg.env.penalty_step is not None and not has_penalty_step(env_id):
            problems.append(
                f"{where('env.penalty_step')}: 'env.penalty_step' = {cfg.env.penalty_step} is "
                f"for NLE and MiniHack tasks; {cfg.env.id!r} has no time penalty"
            )
    if cfg.ray.address is None and cfg.ray.num_cpus is not None:
        # Ray would wait forever for the CPUs of the last actor that does not fit.
        needed = (
            cfg.rollout.num_actors * cfg.rollout.num_cpus
            + cfg.learner.num_learners * cfg.learner.num_cpus
            + (cfg.rewards.annotator.num_cpus if cfg.rewards.annotator.enabled else 0)
        )
        if cfg.ray.num_cpus < needed:
            problems.append(
                f"{where('ray.num_cpus')}: 'ray.num_cpus' = {cfg.ray.num_cpus} is less than the "
                f"{needed:g} CPUs the actors reserve (rollout.num_actors * rollout.num_cpus + "
                f"learner.num_learners * learner.num_cpus + rewards.annotator.num_cpus): "
                f"the last actor would wait forever"
            )
    rewards = cfg.rewards
    from rewards.models import needs_labels

    if needs_labels(rewards.model.kind) and not rewards.annotator.enabled:
        problems.append(
            f"{where('rewards.model.kind')}: 'rewards.model.kind' = {rewards.model.kind!r} "
            f"needs rewards.annotator.enabled = true (the labels come from the annotator)"
        )
    if rewards.intrinsic_coef > 0 and rewards.model.kind == "none":
        problems.append(
            f"{where('rewards.intrinsic_coef')}: 'rewards.intrinsic_coef' = "
            f"{rewards.intrinsic_coef} needs a reward model (rewards.model.kind)"
        )
    return problems


def load_config(path: str | Path, overrides: list[str] | None = None) -> OniConfig:
    """Load, merge and validate a run config; raise :class:`ConfigError` listing every problem."""
    layers = _read_yaml(Path(path))
    layers.append((_parse_overrides(list(overrides or [])), "command line"))
    merged: dict = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for layer, source in layers:
        _merge_layer(merged, layer, OniConfig, source, "", sources, problems)
    if problems:
        raise ConfigError(problems)
    try:
        cfg = _build(OniConfig, merged)
    except (TypeError, ValueError) as exc:  # defensive: a schema bug, not a user error
        raise ConfigError([f"{path}: {exc}"]) from None
    problems = _cross_checks(cfg, sources)
    if problems:
        raise ConfigError(problems)
    return cfg


def to_yaml(cfg: OniConfig) -> str:
    """The resolved config, as saved in the run folder (holds no secrets by construction)."""
    return OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))


def describe(cls: type = OniConfig, prefix: str = "") -> list[str]:
    """Every key with its type, default and documentation, for ``oniray config``."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{prefix}{f.name}:  # {f.metadata.get('doc', '')}")
            lines += describe(tp, f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}) = {default!r}  "
                     f"# {f.metadata.get('doc', '')}")
    return lines
