"""The `ctpipe` command.

ctpipe run        run the continuous-training pipeline locally (kfp.local)
ctpipe compile    write the pipeline YAML for the Kubeflow dashboard
ctpipe init       write the documented default ctpipe.yaml here
ctpipe generate   write the built-in synthetic dataset to a file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctpipe import __version__
from ctpipe.config import DEFAULT_CONFIG_NAME, Config, load
from ctpipe.errors import CtpipeError


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
    run = run_local(config, reason=args.reason, verbose=args.verbose)
    print(summary(run, config))
    return 0 if run.ok else 1


def cmd_compile(args: argparse.Namespace) -> int:
    from ctpipe.pipelines.compile import COMPILED_PATH, compile_pipeline

    target = compile_pipeline(args.output or COMPILED_PATH)
    print(f"wrote {target}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctpipe",
        description="Continuous training for tabular models on Kubeflow Pipelines.",
        epilog="Endpoints and credentials come from the environment: MLFLOW_TRACKING_URI, AWS_*, AWS_ENDPOINT_URL_S3.",
    )
    parser.add_argument("--version", action="version", version=f"ctpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the pipeline locally with kfp.local",
        description="Run the continuous-training pipeline on this machine (kfp.local, one process per step): "
        "ingest, validate, split, train every candidate, select, evaluate against the champion, and register "
        "the winner when the gate blesses it. Exits non-zero when a step fails; the champion is then unchanged.",
    )
    run.add_argument(
        "--config",
        help=f"config file (default: ./{DEFAULT_CONFIG_NAME} if present, else the embedded default)",
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
    run.set_defaults(func=cmd_run)

    comp = commands.add_parser(
        "compile", help="compile the pipeline to YAML for the Kubeflow dashboard"
    )
    comp.add_argument(
        "--output", help="where to write (default: pipelines/compiled/continuous_training.yaml)"
    )
    comp.set_defaults(func=cmd_compile)

    init = commands.add_parser("init", help=f"write the documented default {DEFAULT_CONFIG_NAME}")
    init.add_argument("path", nargs="?", default=DEFAULT_CONFIG_NAME)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=cmd_init)

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
    schema = commands.add_parser(
        "schema",
        help="show the stored data schema, or accept the current data as its next version",
        description="Validation checks new data against the newest stored schema version. 'show' prints it; "
        "'infer' reads the configured data (or --data) and stores what it finds as the next version, "
        "for when the data changed on purpose (a new category, a new column).",
    )
    schema.add_argument("action", choices=("show", "infer"))
    schema.add_argument(
        "--config", help=f"config file (default: ./{DEFAULT_CONFIG_NAME} if present)"
    )
    schema.add_argument("--data", help="override data.uri")
    schema.set_defaults(func=cmd_schema)
    return parser


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
