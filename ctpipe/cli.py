"""The `ctpipe` command.

ctpipe run        run the continuous-training pipeline locally (kfp.local)
ctpipe compile    write the pipeline YAML for the Kubeflow dashboard
ctpipe init       write the documented default ctpipe.yaml here
ctpipe generate   write the built-in synthetic dataset to a file
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import IO, Any

from ctpipe import __version__
from ctpipe import config as config_module
from ctpipe.config import DEFAULT_CONFIG_NAME, Config, load
from ctpipe.errors import ConfigError, CtpipeError


def _config(path: str | None) -> tuple[Config, str]:
    if path is None and Path(DEFAULT_CONFIG_NAME).is_file():
        path = DEFAULT_CONFIG_NAME
    return load(path), path or f"embedded default {DEFAULT_CONFIG_NAME}"


def cmd_run(args: argparse.Namespace) -> int:
    from ctpipe.pipelines.local import run_local, summary

    config, source = _config(args.config)
    if args.data:
        import dataclasses

        config = config.replace(
            data=dataclasses.replace(config.data, uri=str(Path(args.data).resolve()))
        )
    print(f"ctpipe {__version__}: running pipeline 'continuous-training' locally with kfp.local")
    print(f"  config  {source}")
    print(f"  data    {config.data.uri or 'built-in synthetic data'}")
    print(f"  state   {config.state_dir}  (schemas, MLflow)")
    print("")
    containers = None
    if args.containers:
        from ctpipe.pipelines.local import Containers

        containers = Containers(registry=args.image_registry, tag=args.image_tag)
    run = run_local(config, reason=args.reason, verbose=args.verbose, containers=containers)
    print(summary(run, config))
    return 0 if run.ok else 1


def cmd_compile(args: argparse.Namespace) -> int:
    from ctpipe.pipelines.compile import main as compile_main

    argv = ["--profile", args.profile]
    for flag, value in (
        ("--registry", args.registry),
        ("--tag", args.tag),
        ("--output", args.output),
    ):
        if value:
            argv += [flag, value]
    return compile_main(argv)


def cmd_init(args: argparse.Namespace) -> int:
    from ctpipe.config import default_config_text

    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"{target} exists; use --force to overwrite", file=sys.stderr)
        return 1
    target.write_text(default_config_text())
    print(f"wrote {target}; edit it, then: ctpipe run --config {target}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ctpipe.data import synthetic

    drifts: tuple[synthetic.Drift, ...] = ()
    if args.drift_at is not None:
        drifts = (
            synthetic.Drift(at=args.drift_at, covariate=args.covariate, concept=args.concept),
        )
    table = synthetic.generate(
        args.rows,
        args.seed,
        task=args.task,
        numeric=args.numeric,
        categorical=args.categorical,
        drifts=drifts,
        label_noise=args.label_noise,
    )
    synthetic.write(table, args.output)
    print(f"wrote {table.num_rows:,} rows x {table.num_columns} columns to {args.output}")
    return 0


def _with_data(config: Config, data: str | None) -> Config:
    if not data:
        return config
    import dataclasses

    uri = data if "://" in data else str(Path(data).resolve())
    return config.replace(data=dataclasses.replace(config.data, uri=uri))


def cmd_schema(args: argparse.Namespace) -> int:
    import tempfile

    from ctpipe import stages
    from ctpipe.data import schema as schema_module
    from ctpipe.data import tables

    config = _with_data(_config(args.config)[0], args.data)
    store = schema_module.SchemaStore(config.state_dir, config.model_name)
    if args.action == "show":
        current = store.latest()
        if current is None:
            print(
                f"no schema stored for {config.model_name!r} under {store.root} yet; the first run infers v1"
            )
            return 0
        print(current.markdown())
        for change in store.pending():
            print(f"\nwaiting for approval: {change.describe()}\n  accept: {change.accept_command}")
        return 0
    if args.action == "accept":
        stored, cleared = store.accept(args.run)
        print(
            f"stored schema v{stored.version} at {store.uri(stored.version)} "
            f"(from v{stored.parent_version}: {'; '.join(stored.changes)})"
        )
        others = [c.run_id for c in cleared if c.run_id != args.run]
        if args.run and others:
            print(f"cleared the older proposals of runs {', '.join(others)}")
        print("the monitor submits runs again; later runs validate against this version")
        return 0
    with tempfile.TemporaryDirectory() as work:
        path = str(Path(work) / "data.parquet")
        ingested = stages.ingest(config, path)
        inferred = schema_module.infer(tables.read(path), config, source_hash=ingested.content_hash)
    saved = store.save_next(inferred)
    print(
        f"stored schema v{saved.version} at {store.uri(saved.version)}; later runs validate against it\n"
    )
    print(saved.markdown())
    return 0


def _submitter(args: argparse.Namespace) -> Any:
    from ctpipe.pipelines.submit import KfpSubmitter, LocalSubmitter

    backend = args.submit or os.environ.get("CTPIPE_SUBMIT", "local")
    if backend == "kfp":
        return KfpSubmitter(args.kfp_host, namespace=args.namespace, package_path=args.package)
    if backend == "local":
        return LocalSubmitter(verbose=False, out=sys.stdout if args.verbose else None)
    raise ConfigError(f"--submit: expected local or kfp, got {backend!r}")


def _replay_submitter(log: IO[str]) -> Any:
    """A replay's retraining runs: kfp.local, their output into the replay's log file."""
    from ctpipe.pipelines.submit import LocalSubmitter

    return LocalSubmitter(out=log)


def cmd_monitor(args: argparse.Namespace) -> int:
    from ctpipe.config import parse_timestamp
    from ctpipe.monitor.runner import run_monitor

    config = _config(args.config)[0]
    try:
        now = parse_timestamp(args.now) if args.now else None
    except ValueError as exc:
        raise ConfigError(
            f"--now: {args.now!r} is not an ISO 8601 time; give one like 2026-07-21T06:00:00Z "
            "(a date alone, 2026-07-21, is midnight UTC)"
        ) from exc
    outcome = run_monitor(
        config,
        _submitter(args),
        now=now,
        manual=args.manual,
        note=args.note or "",
        pushgateway=args.pushgateway or os.environ.get("CTPIPE_PUSHGATEWAY_URL"),
        report=not args.no_report,
        dry_run=args.dry_run,
        say=lambda line: print(f"monitor: {line}", flush=True),
        health=_health(args.predictor_metrics),
    )
    print(outcome.summary())
    if outcome.decision.action == "blocked":  # exit 0 all the same: a CronJob would only retry
        for reason in outcome.decision.blocked_by:
            print(f"ctpipe: monitor {reason}", file=sys.stderr)
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from ctpipe.monitor.runner import predictions_root
    from ctpipe.predlog import compact

    config = _config(args.config)[0]
    try:
        result = compact.compact(
            predictions_root(config),
            config.model_name,
            days=args.days,
            small_bytes=int(args.small_mb * 2**20),
        )
    except CtpipeError as exc:
        if not args.best_effort:
            raise
        print(f"ctpipe: log compact: {exc}", file=sys.stderr)
        return 0
    print(result.summary())
    return 1 if result.errors and not args.best_effort else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ctpipe import policy_comparison, simulate

    # Checked before anything is read or written: a typo in the list costs nothing.
    several = "," in args.policy
    policies = policy_comparison.parse_policies(args.policy) if several else []
    if not several:
        simulate.ReplayStrategy.parse(args.policy)
    base = _config(args.config)[0]
    base = base.replace(
        target=args.target, timestamp=args.time, model_name=args.model_name or base.model_name
    )
    if args.task:
        base = base.replace(task=args.task)
    base = config_module.from_dict(base.to_dict(), source="simulate options")
    if several:
        return _simulate_policies(args, base, policies)
    out = Path(
        args.out or f"ctpipe-simulate/{Path(args.data).stem}-{args.policy.replace(':', '')}"
    ).resolve()
    _fresh(out, args.force)
    stream = simulate.load_stream(args.data, args.time)
    sim = simulate.run(
        stream,
        base,
        out_dir=out,
        batch=args.batch,
        label_delay=args.label_delay,
        policy=args.policy,
        initial_batches=args.initial_batches,
        train_window=args.train_window,
        submitter_for=_replay_submitter,
        title=f"ctpipe simulate: {Path(args.data).name} ({args.policy})",
    )
    _report_simulation(sim)
    return 0


def _simulate_policies(args: argparse.Namespace, base: Config, policies: list[str]) -> int:
    """`simulate --policy a,b,c`: each policy replays the same stream into out/<policy>,
    then one comparison table and plot go to out."""
    from ctpipe import policy_comparison, simulate

    folders = [policy_comparison.slug(p) for p in policies]
    joined = "-".join(p.replace(":", "") for p in policies)
    out = Path(args.out or f"ctpipe-simulate/{Path(args.data).stem}-compare-{joined}").resolve()
    _fresh(out, args.force)
    stream = simulate.load_stream(args.data, args.time)
    summaries: list[dict[str, Any]] = []
    metric = None
    for number, (policy, folder) in enumerate(zip(policies, folders, strict=True), start=1):
        print(f"\n=== policy {policy} ({number} of {len(policies)}) -> {out / folder}")
        # Its own model name too, so replays stay apart on a shared MLFLOW_TRACKING_URI.
        sim = simulate.run(
            stream,
            base.replace(model_name=f"{base.model_name}-{folder}"),
            out_dir=out / folder,
            batch=args.batch,
            label_delay=args.label_delay,
            policy=policy,
            initial_batches=args.initial_batches,
            train_window=args.train_window,
            submitter_for=_replay_submitter,
            title=f"ctpipe simulate: {Path(args.data).name} ({policy})",
        )
        _report_simulation(sim)
        summaries.append(sim.summary())
        metric = sim.metric_name
    comparison = policy_comparison.build(summaries, metric=metric, folders=folders)
    markdown, document, picture = policy_comparison.write(
        comparison, out, f"ctpipe simulate: {Path(args.data).name}, policies compared"
    )
    print(
        f"\n{len(policies)} policies on the same stream ({stream.num_rows:,} rows, "
        f"batches of {args.batch}, labels {args.label_delay} batch(es) late):\n"
    )
    print(comparison.text())
    print(f"\ntable: {markdown} and {document}, plot: {picture}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ctpipe import simulate
    from ctpipe.data import scenarios

    out = Path(args.out).resolve()
    _fresh(out, force=True)
    print("ctpipe demo: a stream of 30 batches x 1,000 rows with three changes in it:")
    print("  - an abrupt change at batch 9 (features shift, and the labelling rule moves)")
    print("  - a gradual change from batch 17 to 21")
    print("  - a transient one: the old labelling rule is back for batches 24 and 25")
    print("The champion predicts each batch before its labels arrive (one batch later); the")
    print("monitor checks every batch and submits the real pipeline (kfp.local) when it must.")
    print("A blessed challenger is rolled out on live traffic: in shadow, then as a canary on")
    print(
        "25% of the rows; it becomes the champion only if it wins there, else it is rolled back.\n"
    )
    stream = scenarios.demo_stream()
    base = config_module.from_dict(
        {
            "model_name": "ctpipe-demo-stream",
            "task": "classification",
            "target": "label",
            "timestamp": "event_time",
            "id_column": "request_id",
            "sensitive_columns": ["region"],
            "search": {"candidates": scenarios.DEMO_SEARCH},
            "gate": {"thresholds": {"roc_auc": 0.6}, "bootstrap_samples": 300},
            # Abrupt concept drift: rows from before a change only teach the old world, and
            # a backtest on the newest labelled rows says when that is.
            "train": {"window": "auto"},
            # A blessed challenger earns the champion's place on live traffic (the default
            # progressive rollout): shadow, then a quarter of the rows as the canary, so a
            # 30-batch replay reaches verdicts.
            "deploy": {"canary_traffic_percent": 25},
        },
        source="demo",
    )
    sim = simulate.run(
        stream,
        base,
        out_dir=out,
        batch=1000,
        label_delay=1,
        policy="auto",
        initial_batches=4,
        submitter_for=_replay_submitter,
        title="ctpipe demo",
    )
    _report_simulation(sim)
    return 0


def _fresh(out: Path, force: bool) -> None:
    import shutil

    if out.exists() and any(out.iterdir()):
        if not force:
            raise ConfigError(
                f"{out} is not empty; pass --force to replace it, or --out for another folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _report_simulation(sim: Any) -> None:
    summary = sim.summary()
    scores = ", ".join(f"{k} {v:.4f}" for k, v in summary["prequential"].items())
    failed = summary.get("failed_runs", 0)

    def count(number: int, noun: str) -> str:
        return f"{number} {noun}{'' if number == 1 else 's'}"

    rollbacks = f"{count(sim.rollbacks, 'rollback')}, " if sim.rollbacks else ""
    print(
        f"\nprequential {scores}; {count(sim.retrains, 'retrain')}, "
        f"{count(sim.promotions, 'promotion')}, {rollbacks}{count(failed, 'failed run')}"
    )
    seconds = summary["compute_seconds"]
    print(
        f"compute: {seconds['total']:.0f}s in all, {seconds['pipeline']:.0f}s in pipeline runs, "
        f"{seconds['monitor']:.0f}s in monitor checks"
    )
    print(f"report: {sim.out_dir}/summary.json, plot: {sim.out_dir}/timeline.png")
    print(f"everything is in {sim.out_dir}")


def cmd_serve(args: argparse.Namespace) -> int:
    from ctpipe import registry
    from ctpipe.monitor.runner import predictions_root
    from ctpipe.serving.__main__ import main as serving_main

    config, _ = _config(args.config)
    argv = [
        "--model_name", config.model_name,
        "--http_port", str(args.port),
        "--host", args.host,
        "--enable_grpc", "false",
        "--reload-seconds", str(args.reload_seconds),
    ]  # fmt: skip
    if args.model_uri:
        argv += ["--model-uri", args.model_uri]
    if not args.no_log:
        argv += ["--predictions-uri", predictions_root(config)]
    if config.deploy.rollout.strategy == "progressive" and not args.model_uri:
        # Follow the rollout as the InferenceService does: shadow, then the canary's share.
        from ctpipe.rollout.state import RolloutStore

        argv += ["--rollout-state", RolloutStore(config.state_dir, config.model_name).uri]
    if not config.deploy.rollout.shadow:
        argv += ["--shadow-model-uri", "none"]
    os.environ.setdefault(registry.TRACKING_ENV, registry.tracking_uri(config.state_dir))
    print(
        f"serving {config.model_name} on http://{args.host}:{args.port} (v1 and v2 REST); Ctrl-C stops it"
    )
    return serving_main(argv)


def cmd_deploy(args: argparse.Namespace) -> int:
    import dataclasses
    import tempfile

    from ctpipe import registry, stages

    config, _ = _config(args.config)
    if args.base:
        return _deploy_base(args, config)
    if args.apply:
        config = config.replace(deploy=dataclasses.replace(config.deploy, apply="always"))
    version = args.version
    if args.action == "rollback":
        version, demoted = registry.rollback(config)
        print(f"champion is v{version} again (v{demoted} is now 'previous')")
    traffic = None if args.action == "render" else 100
    target = (
        Path(args.output) if args.output else Path(tempfile.mkdtemp()) / "inferenceservice.yaml"
    )
    result = stages.deploy(config, str(target), version=version, traffic_percent=traffic)
    if args.output:
        print(f"wrote {target}")
    else:
        print(target.read_text(), end="")
    print(result.describe(), file=sys.stderr)
    return 0


def _deploy_base(args: argparse.Namespace, config: Config) -> int:
    """`ctpipe deploy render --base`: the alias-following InferenceService that
    manifests/base ships (and an overlay that changes the predictor), from the config alone."""
    from ctpipe import deploy

    if args.action != "render" or args.version or args.apply:
        raise CtpipeError("--base goes with `render` only, without --version or --apply")
    text = deploy.to_yaml(deploy.render_following(config), deploy.FOLLOWING_HEADER)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctpipe",
        description="Continuous training for tabular models on Kubeflow Pipelines.",
        epilog="Endpoints and credentials come from the environment: MLFLOW_TRACKING_URI, AWS_*, AWS_ENDPOINT_URL_S3.",
    )
    parser.add_argument("--version", action="version", version=f"ctpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One --config for every command that reads the config (argparse parents).
    config_option = argparse.ArgumentParser(add_help=False)
    config_option.add_argument(
        "--config",
        help=f"config file (default: ./{DEFAULT_CONFIG_NAME} if present, else the embedded default)",
    )
    _run_command(commands, config_option)
    _compile_command(commands)
    _init_command(commands)
    _generate_command(commands)
    _schema_command(commands, config_option)
    _monitor_command(commands, config_option)
    _log_command(commands, config_option)
    _simulate_command(commands, config_option)
    _serve_command(commands, config_option)
    _deploy_command(commands, config_option)
    _rollout_command(commands, config_option)
    _demo_command(commands)
    return parser


def _run_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[config_option],
        help="run the pipeline locally with kfp.local",
        description="Run the continuous-training pipeline on this machine (kfp.local, one process per step): "
        "ingest, validate, split, train every candidate, select, evaluate against the champion, and register "
        "the winner when the gate blesses it. Exits non-zero when a step fails; the champion is then unchanged.",
    )
    run.add_argument("--data", help="override data.uri: a file, directory, glob or s3:// prefix")
    run.add_argument(
        "--reason",
        default="manual",
        help="why this run happens; recorded in MLflow (default: manual)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="show kfp.local's full log instead of the progress view",
    )
    run.add_argument(
        "--containers",
        action="store_true",
        help="run each step in its image (kfp.local DockerRunner: Docker, or podman's socket "
        "through DOCKER_HOST); needs state_dir and data.uri on s3:// and MLFLOW_TRACKING_URI "
        "on an MLflow server",
    )
    run.add_argument(
        "--image-registry",
        default=os.environ.get("CTPIPE_IMAGE_REGISTRY"),
        help="with --containers: registry in front of ctpipe/<role>:<tag> (podman's local "
        "builds: localhost; default: $CTPIPE_IMAGE_REGISTRY)",
    )
    run.add_argument(
        "--image-tag",
        default=os.environ.get("CTPIPE_IMAGE_TAG"),
        help="with --containers: image tag (default: $CTPIPE_IMAGE_TAG, else the ctpipe version)",
    )
    run.set_defaults(func=cmd_run)


def _compile_command(commands: Any) -> None:
    comp = commands.add_parser(
        "compile",
        help="compile the pipeline to YAML for the Kubeflow dashboard",
        description="Writes pipelines/compiled/continuous_training.yaml (cpu) and continuous_training-gpu.yaml "
        "(gpu: train on ctpipe/trainer-gpu with one nvidia.com/gpu). Image names are ctpipe/<role>:<tag>, "
        "with an optional registry in front.",
    )
    comp.add_argument(
        "--profile", choices=("cpu", "gpu", "all"), default="all", help="default: both"
    )
    comp.add_argument("--registry", help="image registry (default: $CTPIPE_IMAGE_REGISTRY, none)")
    comp.add_argument(
        "--tag", help="image tag (default: $CTPIPE_IMAGE_TAG, else the ctpipe version)"
    )
    comp.add_argument("--output", help="write here instead (with --profile cpu or gpu)")
    comp.set_defaults(func=cmd_compile)


def _init_command(commands: Any) -> None:
    init = commands.add_parser("init", help=f"write the documented default {DEFAULT_CONFIG_NAME}")
    init.add_argument("path", nargs="?", default=DEFAULT_CONFIG_NAME)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)


def _generate_command(commands: Any) -> None:
    gen = commands.add_parser(
        "generate", help="write the built-in synthetic dataset (CSV, Parquet or JSON Lines)"
    )
    gen.add_argument(
        "output", help="target file; the extension picks the format (.csv, .parquet, .jsonl)"
    )
    gen.add_argument("--rows", type=int, default=20_000)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--task", choices=("classification", "regression"), default="classification")
    gen.add_argument("--numeric", type=int, default=8, help="numeric feature columns")
    gen.add_argument("--categorical", type=int, default=3, help="categorical feature columns")
    gen.add_argument("--label-noise", type=float, default=0.0, help="share of labels to flip")
    gen.add_argument(
        "--drift-at", type=float, help="add an abrupt drift at this fraction of the rows"
    )
    gen.add_argument(
        "--covariate", type=float, default=1.0, help="drift: feature shift in standard deviations"
    )
    gen.add_argument(
        "--concept", type=float, default=0.0, help="drift: how far the labelling rule moves (0..1)"
    )
    gen.set_defaults(func=cmd_generate)


def _schema_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    schema = commands.add_parser(
        "schema",
        parents=[config_option],
        help="show the stored data schema, accept a proposed change, or infer a new version",
        description="Validation checks new data against the newest stored schema version. 'show' prints it "
        "and any change waiting for approval; 'accept' stores the change a run proposed under "
        "validation.evolution: manual (--run names the run when several wait); 'infer' reads the configured "
        "data (or --data) and stores what it finds as the next version, for when the data changed on purpose "
        "(a new column, a changed type).",
    )
    schema.add_argument("action", choices=("show", "accept", "infer"))
    schema.add_argument("--run", help="with accept: the run whose proposed change to store")
    schema.add_argument("--data", help="override data.uri")
    schema.set_defaults(func=cmd_schema)


def _monitor_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    monitor = commands.add_parser(
        "monitor",
        parents=[config_option],
        help="judge the champion's recent traffic; submit a retraining run when a trigger fires",
        description="The CronJob entry point. Reads the prediction log and delayed labels, runs the drift "
        "engine against the champion's training profile, evaluates the triggers (schedule, data drift, "
        "performance, concept drift, manual), applies the policy (cooldown, minimum new rows, one active "
        "run, claims against racing monitors, backoff after failed runs) and submits the pipeline when "
        "warranted. After policy.max_failed_runs failed runs in a row it is blocked: it submits nothing "
        "until a run ends (--manual submits one anyway). Writes a JSON record of every decision. Exits 0 "
        "for 'no action', 'held back', 'submitted' (even when the run failed: it is recorded) and "
        "'blocked'; non-zero only on error. Safe to rerun.",
    )
    monitor.add_argument(
        "--submit",
        choices=("local", "kfp"),
        help="where runs go: kfp.local here, or a KFP API server (default: $CTPIPE_SUBMIT or local)",
    )
    monitor.add_argument("--kfp-host", help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT)")
    monitor.add_argument(
        "--namespace",
        help="KFP profile namespace in multi-user mode (default: $CTPIPE_KFP_NAMESPACE)",
    )
    monitor.add_argument(
        "--package",
        help="submit this compiled pipeline file instead of the uploaded pipeline's newest version",
    )
    monitor.add_argument(
        "--manual",
        action="store_true",
        help="fire the manual trigger (skips cooldown and new-rows minimum)",
    )
    monitor.add_argument("--note", help="why, for a manual trigger; recorded with the decision")
    monitor.add_argument(
        "--pushgateway", help="push decision metrics here (default: $CTPIPE_PUSHGATEWAY_URL)"
    )
    monitor.add_argument("--no-report", action="store_true", help="skip the evidently HTML report")
    monitor.add_argument(
        "--dry-run", action="store_true", help="decide and record, but submit nothing"
    )
    monitor.add_argument(
        "--now", help="judge as of this ISO 8601 time instead of the clock (replays, tests)"
    )
    monitor.add_argument(
        "--verbose", action="store_true", help="show the pipeline's log when submitting locally"
    )
    monitor.add_argument(
        "--predictor-metrics",
        action="append",
        metavar="URL",
        help="a predictor's /metrics (repeat for each revision): the canary's error rate and "
        "latency where no Prometheus is configured (deploy.rollout.prometheus)",
    )
    monitor.set_defaults(func=cmd_monitor)


def _health(urls: list[str] | None) -> Any:
    if not urls:
        return None
    from ctpipe.rollout.health import Scrape

    return Scrape(urls)


def cmd_rollout(args: argparse.Namespace) -> int:
    from ctpipe.rollout import status

    config = _config(args.config)[0]
    print(status.describe(config, records=args.records))
    return 0


def _rollout_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    rollout = commands.add_parser(
        "rollout",
        parents=[config_option],
        help="show where the challenger is on its way to champion",
        description="status: the aliases (champion, challenger, previous), the rollout's phase "
        "(shadow, canary, promoted, rolled_back) and traffic share, the latest live evidence, "
        "what the next monitor visit decides on, and the latest alias moves with who made them "
        "and why. The monitor (ctpipe monitor, a CronJob in a cluster) advances the rollout.",
    )
    rollout.add_argument("action", choices=("status",))
    rollout.add_argument(
        "--records", type=int, default=5, help="how many recent decisions and alias moves to show"
    )
    rollout.set_defaults(func=cmd_rollout)


def _log_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    log = commands.add_parser(
        "log",
        parents=[config_option],
        help="maintain the prediction log: merge each date's small files into one",
        description="compact: in every date= folder of the prediction log (monitor.predictions), merge the "
        "files smaller than --small-mb into one file, then delete them. Readers see the old files or the "
        "new one, never both or neither, and predictors may keep writing meanwhile. One compaction runs "
        "at a time per model (a lock next to the log). The monitor's CronJob runs it before each check.",
    )
    log.add_argument("action", choices=("compact",))
    log.add_argument(
        "--days",
        type=int,
        help="only the folders of the last N UTC dates, today included (default: all)",
    )
    log.add_argument(
        "--small-mb",
        type=float,
        default=64.0,
        help="files below this size are merged (default: 64)",
    )
    log.add_argument(
        "--best-effort",
        action="store_true",
        help="report errors but exit 0 (a CronJob whose check must run anyway)",
    )
    log.set_defaults(func=cmd_log)


def _simulate_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    sim = commands.add_parser(
        "simulate",
        parents=[config_option],
        help="replay a time-ordered dataset as a stream to compare retraining policies",
        description="Replays DATA in time order: trains a first champion, then for each batch predicts it "
        "(before its labels are known), logs the predictions, reveals labels LABEL_DELAY batches late, runs "
        "the monitor, and runs the real pipeline when a trigger fires. Prints a timeline and writes "
        "summary.json (prequential metric, retrains, compute time) and timeline.png. With several "
        "policies (--policy never,schedule:4,auto) it replays each and writes one comparison table "
        "and plot. The search space and the gate come from --config.",
    )
    sim.add_argument(
        "--data",
        required=True,
        help="CSV, Parquet or JSON Lines file (or folder) with a timestamp column",
    )
    sim.add_argument("--target", required=True, help="the label column")
    sim.add_argument("--time", required=True, help="the timestamp column")
    sim.add_argument("--batch", type=int, default=1000, help="rows per batch (default: 1000)")
    sim.add_argument(
        "--label-delay",
        type=int,
        default=1,
        help="batches until a batch's labels are known (default: 1)",
    )
    sim.add_argument(
        "--policy",
        default="auto",
        help="never | schedule:K (every K batches) | drift | performance | auto (default: auto); "
        "or a comma-separated list (never,schedule:4,auto) to replay each on the same stream into "
        "OUT/<policy> and write OUT/comparison.md, comparison.json and comparison.png",
    )
    sim.add_argument(
        "--task", choices=("classification", "regression"), help="default: the config's task"
    )
    sim.add_argument(
        "--initial-batches",
        type=int,
        default=4,
        help="batches the first champion trains on (default: 4)",
    )
    sim.add_argument(
        "--train-window",
        type=int,
        help="the newest labelled rows each retraining uses (default: all labelled so far, as a "
        "config without data.window trains on; a short window suits abrupt concept drift)",
    )
    sim.add_argument(
        "--model-name", help="registered model name for the replay (default: the config's)"
    )
    sim.add_argument(
        "--out",
        help="output folder (default: ctpipe-simulate/<data>-<policy>, or <data>-compare-<policies>)",
    )
    sim.add_argument("--force", action="store_true", help="replace an existing output folder")
    sim.set_defaults(func=cmd_simulate)


def _serve_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[config_option],
        help="serve the champion locally (KServe v1/v2 REST), logging every request for the monitor",
        description="Runs the same predictor as the serving image: loads models:/<model_name>@champion from "
        "the config's MLflow store, follows the alias when it moves (hot reload), validates requests against "
        "the model's signature, logs every request to the prediction log, and exposes /metrics.",
    )
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback only)"
    )
    serve.add_argument("--model-uri", help="default: models:/<model_name>@champion")
    serve.add_argument(
        "--reload-seconds", type=float, default=5.0, help="how often to check the champion alias"
    )
    serve.add_argument("--no-log", action="store_true", help="do not write the prediction log")
    serve.set_defaults(func=cmd_serve)


def _deploy_command(commands: Any, config_option: argparse.ArgumentParser) -> None:
    dep = commands.add_parser(
        "deploy",
        parents=[config_option],
        help="render, promote or roll back the champion's KServe InferenceService",
        description="render: the InferenceService for the champion (or --version) at deploy.canary_traffic_percent. "
        "promote: the champion at 100%% of traffic. rollback: make the 'previous' version the champion again and "
        "serve it at 100%%. In a cluster (or with --apply) the manifest is applied by server-side apply; "
        "otherwise it is printed.",
    )
    dep.add_argument("action", choices=("render", "promote", "rollback"))
    dep.add_argument(
        "--version", help="a registered version instead of the champion (render, promote)"
    )
    dep.add_argument("--output", help="write the manifest here instead of printing it")
    dep.add_argument(
        "--apply", action="store_true", help="apply even outside a cluster (uses your kubeconfig)"
    )
    dep.add_argument(
        "--base",
        action="store_true",
        help="render: the alias-following InferenceService of manifests/base (serves @champion, "
        "shadows @challenger), from the config alone; no registry, never applied",
    )
    dep.set_defaults(func=cmd_deploy)


def _demo_command(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="simulate the built-in stream (an abrupt, a gradual and a transient change) with "
        "progressive rollouts",
    )
    demo.add_argument(
        "--out",
        default="ctpipe-demo",
        help="output folder, replaced on each run (default: ./ctpipe-demo)",
    )
    demo.set_defaults(func=cmd_demo)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CtpipeError as exc:
        print(f"ctpipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
