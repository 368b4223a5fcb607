"""The ``oniray`` command.

    oniray train CONFIG [key=value ...]        start a run (runs/<name>/)
    oniray train --resume RUN_DIR [key=value]  continue a run from its newest valid checkpoint
    oniray train --local CONFIG [key=value]    the same run in one process, without Ray (debug)
    oniray report RUN_DIR                      plots and a markdown summary of a run
    oniray config [CONFIG] [key=value ...]     every key's value (configs/default.yaml's without
                                               CONFIG), type, meaning and where it came from
    oniray submit CONFIG [key=value ...] --address http://HEAD:8265 [--pip PKG ...] [--no-wait]
                                               the run as a Ray job on a cluster (cluster/submit.py)
    oniray submit --address URL --sweep --env ENV_ID --steps N [bench args ...]
                                               the arms bench's grid as Ray Tune trials, as a job
    oniray job status|logs|stop JOB_ID --address http://HEAD:8265
    oniray judge label "caption" ... [key=value ...]   the judge's verdict on each caption
    oniray judge eval LABELS.tsv [--out RESULT.json] [key=value ...]
                                               the judge against hand labels (cluster/judge_cmd.py)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.config import ConfigError, default_config, describe, load_config, resolve_config
from cluster.submit import EXIT_CLUSTER, ClusterError, default_address

if TYPE_CHECKING:
    from cluster.run_dir import RunDir


def _train(args: argparse.Namespace) -> int:
    from cluster.run_dir import RunDir

    if args.local:  # imports no Ray, here or below
        from cluster.local_runtime import train_in_process as train
    else:
        from cluster.driver import train_on_ray as train

    resume_state = None
    if args.resume:
        run_dir = RunDir(Path(args.resume))
        if not run_dir.config.exists():
            print(f"oniray: {args.resume} is not a run folder (no config.yaml)", file=sys.stderr)
            return 2
        overrides = ([args.config] if args.config else []) + args.overrides
        cfg = load_config(run_dir.config, overrides)
        resume_state = _newest_checkpoint(run_dir, args.resume)
        if resume_state is None:
            return 2
    else:
        if not args.config:
            print("oniray train: give a CONFIG file or --resume RUN_DIR", file=sys.stderr)
            return 2
        cfg = load_config(args.config, args.overrides)
        name = cfg.run.name or f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        existing = RunDir(Path(cfg.run.out_dir) / name)
        if cfg.run.resume == "auto" and existing.newest_checkpoint_name() is not None:
            # Restarted by Ray Jobs or a RayJob's retries: continue, do not start over.
            run_dir = existing
            resume_state = _newest_checkpoint(run_dir, str(run_dir.root))
            if resume_state is None:
                return 2
        else:
            run_dir = RunDir.create(cfg.run.out_dir, name)
    print(f"run folder: {run_dir.root}", flush=True)
    summary = train(cfg, run_dir, resume_state=resume_state)
    print(f"report: {run_dir.root / 'report.md'}", flush=True)  # the run loop wrote it
    return 1 if summary.get("failed") else 0  # a failure stopped it (the summary says which)


def _newest_checkpoint(run_dir: RunDir, shown: str) -> dict | None:
    """The state to resume from, or None after saying why there is none."""
    from cluster.run_dir import IncompatibleCheckpointError

    try:
        loaded = run_dir.load_latest_checkpoint()
    except IncompatibleCheckpointError as exc:
        print(f"oniray: cannot resume: {exc}", file=sys.stderr)
        return None
    if loaded is None:
        print(f"oniray: {shown} has no valid checkpoint to resume from", file=sys.stderr)
        return None
    state, path = loaded
    print(f"resuming {run_dir.root} from {path.name}", flush=True)
    return state


def _report(args: argparse.Namespace) -> int:
    from cluster.report import write_report

    print(write_report(Path(args.run_dir)))
    return 0


def _config(args: argparse.Namespace) -> int:
    overrides = args.overrides
    if args.config and "=" in args.config:  # `oniray config key=value`: the default config's
        args.config, overrides = None, [args.config, *overrides]
    path = args.config or default_config()
    cfg, sources = resolve_config(path, overrides)
    print(f"# {path}{' with the overrides' if overrides else ''}, resolved: each key's "
          f"type, value, [where the value comes from: default = the key's default in the config "
          f"classes, else the YAML file or the command line that set it] and meaning")
    print("\n".join(describe(cfg, sources)))
    return 0


def _submit(args: argparse.Namespace) -> int:
    from cluster.submit import submit, submit_sweep

    if args.sweep is not None:
        if args.config:
            print("oniray submit: --sweep takes the bench's arguments, not a CONFIG",
                  file=sys.stderr)
            return 2
        return submit_sweep(args.sweep, address=args.address, pip=args.pip,
                            wait=not args.no_wait, submission_id=args.job_id)
    if not args.config:
        print("oniray submit: give a CONFIG file, or --sweep and the bench's arguments",
              file=sys.stderr)
        return 2
    return submit(args.config, args.overrides, address=args.address, pip=args.pip,
                  wait=not args.no_wait, submission_id=args.job_id)


def _job(args: argparse.Namespace) -> int:
    from cluster.submit import job_command

    return job_command(args.action, args.job_id, address=args.address, follow_logs=args.follow)


def _judge(args: argparse.Namespace) -> int:
    from cluster.judge_cmd import run_eval, run_label

    if args.action == "label":
        return run_label(args.config, args.args)
    return run_eval(args.config, args.labels, args.overrides, args.out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oniray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Each subcommand takes its options and positionals in any order (_AnyOrderParser).
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_AnyOrderParser)
    train = sub.add_parser("train", help="train an agent")
    train.add_argument("config", nargs="?", help="YAML config (configs/default.yaml)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner.lr=1e-4")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run")
    train.add_argument("--local", action="store_true", help="run every component in this "
                       "process, without Ray: the way to debug (one learner, no telemetry)")
    train.set_defaults(func=_train)
    report = sub.add_parser("report", help="plots and summary of a run folder")
    report.add_argument("run_dir")
    report.set_defaults(func=_report)
    config = sub.add_parser("config", help="every config key: its value, type, meaning and "
                            "where the value came from")
    config.add_argument("config", nargs="?", help="YAML config to resolve (default "
                        "configs/default.yaml)")
    config.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner.lr=1e-4")
    config.set_defaults(func=_config)
    address_help = "Ray job server (dashboard) URL; $RAY_API_SERVER_ADDRESS or %(default)s"
    submit = sub.add_parser("submit", help="run training as a Ray job on a running cluster")
    submit.add_argument("config", nargs="?", help="YAML config inside this checkout")
    submit.add_argument("overrides", nargs="*", help="key=value overrides (ray.address is forced "
                        "to auto so the job joins the cluster)")
    submit.add_argument("--address", default=default_address(), help=address_help)
    submit.add_argument("--pip", nargs="+", metavar="PKG", help="extra pip packages for the job")
    submit.add_argument("--no-wait", action="store_true", help="submit and return at once")
    submit.add_argument("--job-id", help="submission id; default oniray-<config>-<time>")
    submit.add_argument("--sweep", nargs=argparse.REMAINDER, metavar="BENCH_ARGS",
                        help="submit the arms bench's grid as Ray Tune trials instead: every "
                             "argument after it is bench/learning.py's (--env ENV_ID --steps N "
                             "--arms ... --seeds N --out /shared/path --storage /shared/path); "
                             "give the other options before it")
    submit.set_defaults(func=_submit)
    job = sub.add_parser("job", help="status, logs or stop of a submitted job")
    job.add_argument("action", choices=["status", "logs", "stop"])
    job.add_argument("job_id")
    job.add_argument("--address", default=default_address(), help=address_help)
    job.add_argument("--follow", action="store_true", help="logs: follow until the job ends")
    job.set_defaults(func=_job)

    judge = sub.add_parser("judge", help="try a judge on captions or against hand labels")
    actions = judge.add_subparsers(dest="action", required=True)
    config_help = "YAML config the overrides apply to (default configs/default.yaml)"
    label = actions.add_parser("label", help="label captions")
    label.add_argument("args", nargs="+", metavar="CAPTION|key=value",
                       help="captions, and rewards.judge.* / env.id overrides (a dotted key=)")
    label.add_argument("--config", help=config_help)
    label.set_defaults(func=_judge)
    evaluate = actions.add_parser("eval", help="accuracy, canary FPR, labels/s on a labels file")
    evaluate.add_argument("labels", help="TSV with the header label<TAB>message (1 = helpful)")
    evaluate.add_argument("overrides", nargs="*", help="rewards.judge.* and env.id overrides")
    evaluate.add_argument("--out", metavar="RESULT.json", help="also write the result as JSON")
    evaluate.add_argument("--config", help=config_help)
    evaluate.set_defaults(func=_judge)

    # Known-args parsing: a caption may look like an option (NetHack's "--More--"); the
    # judge's leftovers are its captions or overrides.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "judge":
        (args.args if args.action == "label" else args.overrides).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("train", "submit") and args.config and "=" in args.config \
            and not getattr(args, "resume", None):
        parser.error(f"the first argument of {args.command} is the CONFIG file, then key=value "
                     f"overrides")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except ClusterError as exc:
        print(f"oniray {args.command}: {exc}", file=sys.stderr)
        return EXIT_CLUSTER


class _AnyOrderParser(argparse.ArgumentParser):
    """A subcommand's parser that takes options between its positionals (`oniray train CONFIG
    --local key=value`): argparse's intermixed parsing, which argparse's subcommand dispatch
    never uses (it calls parse_known_args). A parser with subcommands of its own (judge)
    parses as argparse does; its subcommands' parsers are of this class again."""

    _intermixing = False  # parse_known_intermixed_args calls parse_known_args (Python < 3.13)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


if __name__ == "__main__":
    sys.exit(main())
