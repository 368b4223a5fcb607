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
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from actors.config import EnvConfig, ModelConfig, RolloutConfig
from actors.envs import UnknownEnvError, canonical_env_id, has_penalty_step
from actors.fields import param, section
from learner.config import LEARNER_PRESETS, LearnerConfig
from rewards.config import RewardsConfig


@dataclass
class WandbConfig:
    """Tracking in Weights & Biases (cluster/tracking.py), off by default."""

    mode: Literal["disabled", "offline", "online"] = param(
        "disabled", "disabled: no W&B (wandb is not even imported); offline: write the W&B run "
        "under the run folder, no network or API key needed, `wandb sync` it later; online: "
        "stream it to the W&B server (the API key from WANDB_API_KEY or `wandb login`)"
    )
    project: str = param("oniray", "W&B project the run goes to")
    entity: str | None = param(None, "W&B user or team; null = the API key's default entity")
    group: str | None = param(
        None, "W&B group: runs shown together (a sweep gives all its trials one); null = none"
    )
    tags: list[str] = param(factory=list, doc="W&B tags of the run, e.g. [corridor, baseline]")
    dir: str | None = param(
        None, "folder wandb writes its files under (a wandb/ inside it); null = the run folder"
    )


@dataclass
class RunConfig:
    """The run as a whole: budget, outputs, reporting."""

    name: str = param("", "run folder name under out_dir; empty = <config stem>-<timestamp>")
    out_dir: str = param("runs", "parent folder of run folders")
    seed: int = param(0, "seed of environments, policy initialisation and sampling", ge=0)
    total_env_steps: int = param(2_000_000, "stop after this many environment steps", ge=1)
    max_minutes: float | None = param(
        6.5, "also stop after this much wall-clock time (minutes); null = no limit. 6.5: "
        "with set-up and the random baseline, a run of the default config ends within 10 "
        "minutes on 2 cores", gt=0
    )
    checkpoint_every_updates: int = param(100, "write a checkpoint every K learner updates", ge=1)
    report_every_s: float = param(10.0, "seconds between progress lines and metric rows", gt=0)
    random_baseline_episodes: int = param(
        256, "at least this many episodes of a uniformly random agent are measured before "
        "training (each env plays the same number, its first ones: unbiased); 0 = skip. 256: "
        "the first 4 episodes of each of the default job's 64 envs (~400k steps, ~30 s on "
        "NetHackScore); NetHack returns vary a lot, and 48 episodes measured anywhere from "
        "12.7 to 22.8", ge=0
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
    resume: Literal["never", "auto"] = param(
        "never", "auto: when the run folder (out_dir/name; needs run.name) has a checkpoint, "
        "continue from its newest one instead of refusing to start (a run restarted by Ray "
        "Jobs or a RayJob's retries picks up where it stopped)"
    )
    wandb: WandbConfig = section(WandbConfig)


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


def reserved_cpus(cfg: OniConfig) -> dict[str, float]:
    """The CPUs the run's Ray actors reserve, one term per kind of actor the config starts
    (the term's formula -> its CPUs; 0 for an actor this config does not start). A local Ray
    offers at least their sum (``cluster.ray_setup``); a ``ray.num_cpus`` below it is refused
    at load, since the last actor would wait forever. The one place this sum is written."""
    from rewards.judges.vllm_judge import ENGINE_NUM_CPUS, wants_ray_actor

    annotating = cfg.rewards.annotator.enabled
    judge = cfg.rewards.judge
    # On Ray the vLLM judge's engine is an actor of its own when it asks for GPUs or resources.
    engine = annotating and judge.backend == "vllm" and wants_ray_actor(judge.vllm)
    return {
        "rollout.num_actors * rollout.num_cpus": cfg.rollout.num_actors * cfg.rollout.num_cpus,
        "learner.num_learners * learner.num_cpus":
            cfg.learner.num_learners * cfg.learner.num_cpus,
        "rewards.annotator.num_cpus": cfg.rewards.annotator.num_cpus if annotating else 0.0,
        "the vLLM engine actor": ENGINE_NUM_CPUS if engine else 0.0,
    }


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


# A bound's pydantic error type -> its key in the field's metadata, and its sign.
_BOUND_ERRORS = {
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
}


@functools.cache
def _validator(cls: type, name: str) -> TypeAdapter:
    """The field's type and bounds as a strict pydantic validator: no string turns into a
    number, a bool is no int, an int is accepted for a float (and made one)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    bounds = {k: field.metadata[k] for k in ("ge", "gt", "le", "lt")
              if field.metadata.get(k) is not None}
    tp = typing.get_type_hints(cls)[name]
    return TypeAdapter(Annotated[tp, Field(**bounds)], config=ConfigDict(strict=True))


def _why_invalid(exc: ValidationError, meta: Mapping[str, Any], tp: Any) -> str:
    kind = exc.errors()[0]["type"]
    if kind in _BOUND_ERRORS:
        key, sign = _BOUND_ERRORS[kind]
        return f"is out of range (must be {sign} {meta[key]})"
    return f"is not valid (expected {_type_name(tp)})"


def _moved_into_section(cls: type, key: str) -> list[str]:
    """Where ``key`` lives now if it moved into a section of ``cls``: ``<section>_<name>`` ->
    ``<section>.<name>`` (rewards.judge.embedding_margin -> embedding.margin), else every
    section with a key of that name (rewards.judge.base_url -> openai.base_url)."""
    hints = typing.get_type_hints(cls)
    sections = {f.name: {g.name for g in dataclasses.fields(hints[f.name])}
                for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}
    for name, keys in sections.items():
        rest = key.removeprefix(f"{name}_")
        if rest != key and rest in keys:
            return [f"{name}.{rest}"]
    return [f"{name}.{key}" for name, keys in sections.items() if key in keys]


def _did_you_mean(cls: type, key: str, prefix: str, siblings: Mapping[str, Any]) -> str:
    """The hint after an unknown key: where it moved to (:func:`_moved_into_section`), or the
    closest spelling; "" if nothing is close. ``siblings``: the keys set beside it."""
    candidates = _moved_into_section(cls, key)
    if len(candidates) > 1:
        # A key several sections hold (rewards.judge.model): the section that a key beside it
        # names (backend: vllm -> vllm.model), the defaults counting where nothing is set.
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        values = list((defaults | dict(siblings)).values())
        named = [c for c in candidates if c.partition(".")[0] in values]
        candidates = named or candidates
    if not candidates:
        names = [f.name for f in dataclasses.fields(cls)]
        candidates = difflib.get_close_matches(key, names, n=1)
    if not candidates:
        return ""
    quoted = [f"'{prefix}{c}'" for c in candidates]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f" (did you mean {listed}?)"


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
            hint = _did_you_mean(cls, str(key), prefix, {**target, **layer})
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
        try:
            target[key] = _validator(cls, key).validate_python(value)
        except ValidationError as exc:
            why = _why_invalid(exc, fields[key].metadata, tp)
            problems.append(f"{source}: '{full}' = {value!r} {why}")
            continue
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
    # Only a floor someone set: the default floor (1.0) simply goes unused with whitening off.
    if ("learner.advantage_std_floor" in sources and cfg.learner.advantage_std_floor > 0
            and not cfg.learner.normalize_advantages):
        problems.append(
            f"{where('learner.advantage_std_floor')}: 'learner.advantage_std_floor' = "
            f"{cfg.learner.advantage_std_floor} needs learner.normalize_advantages = true "
            f"(it floors the whitening's std)"
        )
    if cfg.env.crop_size % 2 == 0:
        problems.append(
            f"{where('env.crop_size')}: 'env.crop_size' = {cfg.env.crop_size} must be odd "
            f"(the agent sits at the centre)"
        )
    # Checked here, not in an actor: a typo would otherwise surface minutes later as a
    # RayActorError deep in the rollout actors' construction.
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
        terms = reserved_cpus(cfg)
        needed = sum(terms.values())
        if cfg.ray.num_cpus < needed:
            sum_of = " + ".join(f"{formula} ({cpus:g})" for formula, cpus in terms.items()
                                if cpus)
            problems.append(
                f"{where('ray.num_cpus')}: 'ray.num_cpus' = {cfg.ray.num_cpus} is less than the "
                f"{needed:g} CPUs the actors reserve ({sum_of}): the last actor would wait "
                f"forever"
            )
    rewards = cfg.rewards
    from rewards.models import needs_labels  # here, not on top: it imports torch (seconds)

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
    if cfg.run.resume == "auto" and not cfg.run.name:
        problems.append(
            f"{where('run.resume')}: 'run.resume' = 'auto' needs a fixed run.name (a restarted "
            f"run finds its folder by name)"
        )
    problems += _wandb_problems(cfg.run.wandb, where)
    return problems


def _apply_learner_preset(merged: dict, sources: dict[str, str]) -> None:
    """``learner.preset``'s keys over the files' values; a command-line key still wins."""
    learner = merged.setdefault("learner", {})
    name = learner.get("preset", "none")
    for key, value in LEARNER_PRESETS[name].items():
        if sources.get(f"learner.{key}") != "command line":
            learner[key] = value
            sources[f"learner.{key}"] = f"learner.preset={name}"


# Characters W&B refuses in a project, entity or group name (its server answers 400).
_WANDB_FORBIDDEN = set("/\\#?%:")


def _wandb_problems(wb: WandbConfig, where: Callable[[str], str]) -> list[str]:
    """Names W&B would refuse, caught at load rather than when the run starts logging."""
    problems = []
    names = {"project": wb.project, "entity": wb.entity, "group": wb.group}
    for key, value in names.items():
        if value is not None and (not value or len(value) > 128
                                  or _WANDB_FORBIDDEN.intersection(value)):
            problems.append(
                f"{where(f'run.wandb.{key}')}: 'run.wandb.{key}' = {value!r} must be 1 to 128 "
                f"characters, none of / \\ # ? % :"
            )
    for tag in wb.tags:
        if not 1 <= len(tag) <= 64:
            problems.append(f"{where('run.wandb.tags')}: 'run.wandb.tags' has {tag!r}: a W&B "
                            f"tag is 1 to 64 characters")
    return problems


def load_config(path: str | Path, overrides: list[str] | None = None) -> OniConfig:
    """Load, merge and validate a run config; raise :class:`ConfigError` listing every problem."""
    return resolve_config(path, overrides)[0]


def resolve_config(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[OniConfig, dict[str, str]]:
    """:func:`load_config`, and where each value came from: dotted key -> the YAML file (the
    last one of the inherit chain that set it), ``command line`` or the preset that set it;
    a key absent from it has its default (the config classes'), for ``oniray config``."""
    layers = _read_yaml(Path(path))
    layers.append((_parse_overrides(list(overrides or [])), "command line"))
    merged: dict = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for layer, source in layers:
        _merge_layer(merged, layer, OniConfig, source, "", sources, problems)
    if problems:
        raise ConfigError(problems)
    _apply_learner_preset(merged, sources)
    try:
        cfg = _build(OniConfig, merged)
    except (TypeError, ValueError) as exc:  # defensive: a schema bug, not a user error
        raise ConfigError([f"{path}: {exc}"]) from None
    problems = _cross_checks(cfg, sources)
    if problems:
        raise ConfigError(problems)
    return cfg, sources


def to_yaml(cfg: OniConfig) -> str:
    """The resolved config, as saved in the run folder (holds no secrets by construction)."""
    return OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))


def default_config() -> Path:
    """configs/default.yaml, the default job every config inherits: the working directory's,
    else that of the checkout this package runs from."""
    local = Path("configs/default.yaml")
    return local if local.is_file() else Path(__file__).resolve().parents[1] / local


def _shown(source: str) -> str:
    """A source as ``oniray config`` prints it: a file under the working directory relative."""
    path = Path(source)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return source


def describe(
    cfg: Any = None, sources: Mapping[str, str] | None = None, prefix: str = ""
) -> list[str]:
    """Every key of ``cfg`` (default ``OniConfig()``, the config classes' defaults) with its
    type, value, where the value came from and its documentation, for ``oniray config``.
    ``sources``: as :func:`resolve_config` returns them; a key not in them shows [default]."""
    cfg = OniConfig() if cfg is None else cfg
    sources = sources or {}
    lines = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, doc, value = f"{prefix}{f.name}", f.metadata.get("doc", ""), getattr(cfg, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{key}:  # {doc}")
            lines += describe(value, sources, f"{key}.")
            continue
        source = _shown(sources.get(key, "default"))
        lines.append(f"  {key} ({_type_name(hints[f.name])}) = {value!r}  [{source}]  # {doc}")
    return lines
