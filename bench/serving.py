"""The predictor against in-process predict, with and without the prediction log.

Trains a champion in-process, starts `python -m ctpipe.serving` on loopback (once with
the prediction log on, once off), and drives it with N concurrent keep-alive clients:
single-row requests and batches of 100. Prints p50/p99 latency and throughput, and
compares them with the same model's in-process predict_proba measured in this run.

Targets: single-row p50 overhead <= 2 ms over in-process predict; logging costs <= 10%
of throughput.

    python bench/serving.py [--clients 4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctpipe import config as config_module
from ctpipe import registry, stages
from ctpipe.data import synthetic
from ctpipe.infra_validation import v2_request

OVERHEAD_TARGET_MS = 2.0
LOGGING_TARGET = 0.10


def train(work: Path) -> Any:
    raw = config_module.load().to_dict()
    raw.update(model_name="bench-model", state_dir=str(work / "state"))
    raw["search"]["candidates"] = [
        {"family": "hist_gradient_boosting", "params": {"max_iter": 100}}
    ]
    config = config_module.from_dict(raw)
    stages.run_in_process(config, work / "run", infra=False)
    return config


def in_process_ms(model: Any, frame: Any, repeats: int) -> np.ndarray:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict_proba(frame)
        times.append((time.perf_counter() - started) * 1000)
    return np.asarray(times)


def start(config: Any, port: int, log_dir: Path | None) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "ctpipe.serving", "--model_name", config.model_name, "--http_port", str(port),
        "--host", "127.0.0.1", "--enable_grpc", "false", "--reload-seconds", "0",
        "--enable_latency_logging", "false",
    ]  # fmt: skip
    if log_dir is not None:
        command += ["--predictions-uri", str(log_dir)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri(config.state_dir)}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", f"/v2/models/{config.model_name}/ready")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the predictor did not start")


def drive(
    port: int, path: str, bodies: list[bytes], clients: int, seconds: float
) -> tuple[np.ndarray, int]:
    """Keep-alive clients posting round-robin for `seconds`; per-request latencies (ms)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0]
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = index
        while time.monotonic() < stop:
            body = bodies[i % len(bodies)]
            started = time.perf_counter()
            connection.request(
                "POST", path, body=body, headers={"content-type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
            latencies[index].append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                errors[0] += 1
            i += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.concatenate([np.asarray(x) for x in latencies]), errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # as the predictor runs (its --threads default)
    work = Path(tempfile.mkdtemp(prefix="ctpipe-bench-serving-"))
    config = train(work)
    champion = registry.champion(config)
    assert champion is not None, "the in-process run registered no champion"
    model = registry.load_model(champion)
    table = synthetic.generate(2000, seed=3)
    features = [c for c in table.column_names if c not in ("request_id", "event_time", "label")]
    frame = table.select(features).to_pandas()
    single = [
        json.dumps({"instances": [row]}).encode() for row in frame.head(200).to_dict("records")
    ]
    batches = [
        json.dumps(v2_request(frame.iloc[i : i + 100], f"b{i}")).encode()
        for i in range(0, 1000, 100)
    ]
    base_single = in_process_ms(model, frame.head(1), 300)
    base_batch = in_process_ms(model, frame.head(100), 100)
    print(
        f"in-process predict_proba: 1 row p50 {np.median(base_single):.2f} ms; 100 rows p50 {np.median(base_batch):.2f} ms"
    )

    results: dict[tuple[str, bool], tuple[np.ndarray, int, float]] = {}
    for logging in (False, True):
        port = 18000 + (1 if logging else 0)
        server = start(config, port, work / "log" if logging else None)
        try:
            for kind, path, bodies, rows in (
                ("single", f"/v1/models/{config.model_name}:predict", single, 1),
                ("batch100", f"/v2/models/{config.model_name}/infer", batches, 100),
            ):
                drive(port, path, bodies, args.clients, 1.0)  # warm up
                latencies, errors = drive(port, path, bodies, args.clients, args.seconds)
                results[(kind, logging)] = (latencies, errors, len(latencies) * rows / args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=60)

    print(f"\n{args.clients} concurrent clients, {args.seconds:g}s each, keep-alive, loopback")
    print(f"{'requests':<10} {'log':<4} {'p50 ms':>8} {'p99 ms':>8} {'rows/s':>10} {'errors':>7}")
    for (kind, logging), (latencies, errors, throughput) in results.items():
        p50, p99 = np.percentile(latencies, [50, 99])
        print(
            f"{kind:<10} {'on' if logging else 'off':<4} {p50:8.2f} {p99:8.2f} {throughput:10.0f} {errors:7d}"
        )

    # The overhead is measured with one client, so queueing behind other clients does not count.
    server = start(config, 18002, work / "log-single")
    try:
        drive(18002, f"/v1/models/{config.model_name}:predict", single, 1, 1.0)
        alone, _ = drive(18002, f"/v1/models/{config.model_name}:predict", single, 1, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=60)
    overhead = float(np.median(alone) - np.median(base_single))
    ratio = float(np.median(alone) / np.median(base_single))
    verdict = "meets" if overhead <= OVERHEAD_TARGET_MS else "MISSES"
    print(
        f"\nsingle row, one client: served p50 {np.median(alone):.2f} ms vs in-process {np.median(base_single):.2f} ms: "
        f"ratio {ratio:.2f}, overhead {overhead:.2f} ms ({verdict} the target <= {OVERHEAD_TARGET_MS} ms)"
    )
    for kind in ("single", "batch100"):
        cost = 1.0 - results[(kind, True)][2] / results[(kind, False)][2]
        verdict = "meets" if cost <= LOGGING_TARGET else "MISSES"
        print(
            f"logging cost, {kind}: {cost:+.1%} of throughput ({verdict} the target <= {LOGGING_TARGET:.0%})"
        )


if __name__ == "__main__":
    main()
