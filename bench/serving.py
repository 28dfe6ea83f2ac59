"""The predictor against in-process predict, with and without the prediction log.

Trains a champion in-process, starts `python -m ctpipe.serving` on loopback (once with
the prediction log on, once off), and drives it with N concurrent keep-alive clients:
single-row requests and batches of 100. Prints p50/p99 latency and throughput, and
compares them with the same model's in-process predict_proba measured in this run.

The single-row overhead is measured in pairs: each served request right after the same
row's in-process predict, so both see the same machine (a shared VM drifts by +-30% over
seconds), and each prediction, served or not, starts in a process that has just waited
about as long as one predict takes, as with requests that arrive one at a time. It uses a
lean keep-alive client, as a load generator would: http.client's response parsing alone
costs 0.2-0.4 ms here, and that is the client's, not the server's. The same pairs against a
bare kserve.Model that only spins for the in-process time show what KServe and HTTP alone
cost, and so ctpipe's own share. (In pairs that share can read below zero: a spin costs the
same cold or warm, while the served predict starts a little warmer than the in-process one,
right after the server built its DataFrame with pandas.) For information it also measures
back to back (single-stream): runs of in-process predicts and runs of requests, taking
turns. That figure swings between runs with how fast the model itself computes in the
server's process.

Shadow overhead: a second version of the same kind of model is named `challenger`, and one
predictor (logging, its champion pinned, its shadow following the challenger alias) takes
the same single-row load from one client with and without a shadow: the alias is set and
removed between phases, taking turns (ABBA). One process for both sides, since two
processes of the same predictor differ by up to 20% on a small VM. It compares their p50
latency, and their process CPU time per request (net of the server's idle CPU) beyond
what the shadow model's own predict costs, measured in-process on batches of the size
its worker scores (it gathers what arrives over its linger time into one call).

Targets: single-row p50 overhead <= 2 ms over in-process predict; logging costs <= 10%
of throughput; shadow adds <= 10% to the champion's p50 latency, and <= 10% to its CPU
time per request beyond the shadow model's own predict.

    python bench/serving.py [--clients 4] [--seconds 2] [--rounds 8] [--single 600]
                            [--shadow-requests 400] [--shadow-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctpipe import config as config_module
from ctpipe import registry
from ctpipe.data import synthetic
from ctpipe.infra_validation import v2_request
from ctpipe.pipelines.in_process import run_in_process

OVERHEAD_TARGET_MS = 2.0
LOGGING_TARGET = 0.10
SHADOW_LATENCY_TARGET = 1.10  # p50 with shadow / p50 alone
SHADOW_CPU_TARGET = 0.10  # CPU per request beyond the shadow's own predict, over alone


def train(work: Path) -> Any:
    raw = config_module.load().to_dict()
    raw.update(model_name="bench-model", state_dir=str(work / "state"))
    raw["search"]["candidates"] = [
        {"family": "hist_gradient_boosting", "params": {"max_iter": 100}}
    ]
    config = config_module.from_dict(raw)
    run_in_process(config, work / "run", infra=False)
    return config


def train_challenger(config: Any, work: Path) -> str:
    """A second version of the same kind (another seed) named `challenger`; the first
    version stays the champion, whatever registration named the second."""
    champion = registry.champion(config)
    assert champion is not None, "no champion to shadow"
    synthetic_settings = dataclasses.replace(
        config.data.synthetic, seed=config.data.synthetic.seed + 1
    )
    second = config.replace(data=dataclasses.replace(config.data, synthetic=synthetic_settings))
    run = run_in_process(second, work / "run-challenger", infra=False)
    if run.registration is None:
        raise SystemExit(f"the challenger was not registered: {run.evaluation.summary()}")
    version = run.registration.version
    client = registry.client(config)
    client.set_registered_model_alias(config.model_name, registry.CHAMPION, champion.version)
    client.set_registered_model_alias(config.model_name, "challenger", version)
    return str(version)


def start(
    config: Any,
    port: int,
    log_dir: Path | None,
    *,
    shadow: bool = False,
    extra: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "ctpipe.serving", "--model_name", config.model_name, "--http_port", str(port),
        "--host", "127.0.0.1", "--enable_grpc", "false", "--reload-seconds", "0",
        "--enable_latency_logging", "false",
    ]  # fmt: skip
    if not shadow:
        command += ["--shadow-model-uri", "none"]
    command += extra or []
    if log_dir is not None:
        command += ["--predictions-uri", str(log_dir)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri(config.state_dir)}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_ready(process, port, config.model_name)
    return process


def _wait_ready(process: subprocess.Popen[bytes], port: int, model: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", f"/v2/models/{model}/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server for {model} did not start")


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


class LeanClient:
    """One keep-alive HTTP/1.1 connection: a pre-built request, the answer read by its
    Content-Length. No header parsing beyond that, so the latency is the server's."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def post(self, path: str, body: bytes) -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        data = self.pending
        while b"\r\n\r\n" not in data:
            data += self._recv()
        header, _, data = data.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        length = next(
            (int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")),
            None,
        )  # fmt: skip
        if length is None:
            raise SystemExit(f"{path}: the answer has no Content-Length: {header!r}")
        while len(data) < length:
            data += self._recv()
        self.pending = data[length:]
        if lines[0].split()[1] != b"200":
            raise SystemExit(f"{path} answered {lines[0].decode()}: {data[:length]!r}")
        return data[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def timed(call: Any, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def single_stream(
    port: int, path: str, bodies: list[bytes], local: Any, chunks: int, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """(in-process ms, served ms): each back to back, in alternating runs of `chunk`."""
    client = LeanClient(port)
    rows = itertools.count()
    here: list[float] = []
    there: list[float] = []
    for _ in range(chunks):
        here += timed(lambda: local(next(rows) % len(bodies)), chunk)
        there += timed(lambda: client.post(path, bodies[next(rows) % len(bodies)]), chunk)
    client.close()
    return np.asarray(here), np.asarray(there)


def paired(
    port: int, path: str, bodies: list[bytes], local: Any, pairs: int
) -> tuple[np.ndarray, np.ndarray]:
    """(in-process ms, served ms) per pair: local(i), then the same row over HTTP."""
    client = LeanClient(port)
    here, there = [], []
    for i in range(pairs):
        row = i % len(bodies)
        started = time.perf_counter()
        local(row)
        middle = time.perf_counter()
        client.post(path, bodies[row])
        here.append((middle - started) * 1000)
        there.append((time.perf_counter() - middle) * 1000)
    client.close()
    return np.asarray(here), np.asarray(there)


def alternate(items: list[Any], round_: int) -> list[Any]:
    """The sides in order on even rounds, reversed on odd ones (ABBA)."""
    return items if round_ % 2 == 0 else items[::-1]


def _spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def serve_floor(port: int, spin_ms: float) -> None:
    """KServe as ctpipe's predictor runs it, with a model that does nothing but spin: the
    stack's own cost, so the difference to the predictor is ctpipe's code alone."""
    import kserve

    from ctpipe.serving.__main__ import customize_rest_server

    customize_rest_server("127.0.0.1")

    class Floor(kserve.Model):
        def __init__(self) -> None:
            super().__init__("floor")
            self.ready = True

        def predict(self, payload: Any, headers: Any = None) -> Any:
            _spin(spin_ms)
            return {"predictions": [0]}

    kserve.ModelServer(
        http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False
    ).start([Floor()])


def start_floor(port: int, spin_ms: float) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--floor-server", str(port), str(spin_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_ready(process, port, "floor")
    return process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu(pid: int) -> float:
    """Seconds of CPU the process has used, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scraped(port: int, family: str, model: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    for found in text_string_to_metric_families(text):
        for sample in found.samples:
            if sample.name == family and sample.labels.get("model") == model:
                return float(sample.value)
    return float("nan")


@dataclasses.dataclass
class Phases:
    """One side of the shadow measurement, summed over its phases."""

    latencies: list[np.ndarray] = dataclasses.field(default_factory=list)
    cpu: float = 0.0
    wall: float = 0.0
    requests: int = 0

    def add(self, times: np.ndarray, cpu: float, wall: float) -> None:
        self.latencies.append(times)
        self.cpu += cpu
        self.wall += wall
        self.requests += len(times)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.concatenate(self.latencies), q))

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.requests


def shadow_phase(
    process: subprocess.Popen[bytes], port: int, path: str, bodies: list[bytes], count: int
) -> tuple[np.ndarray, float, float]:
    """`count` single-row requests from one lean client, back to back: (latencies ms, the
    server's CPU seconds, wall seconds). The CPU is read once the shadow's queue has
    drained (it lingers before scoring), so its work lands in the phase that caused it."""
    from ctpipe.serving.shadow import LINGER_SECONDS

    client = LeanClient(port)
    rows = itertools.count()
    before = process_cpu(process.pid)
    started = time.perf_counter()
    times = timed(lambda: client.post(path, bodies[next(rows) % len(bodies)]), count)
    client.close()
    time.sleep(LINGER_SECONDS + 0.3)
    return np.asarray(times), process_cpu(process.pid) - before, time.perf_counter() - started


def shadow_versions(port: int, model: str) -> set[str]:
    """The versions the server's /metrics says are scoring in shadow."""
    from prometheus_client.parser import text_string_to_metric_families

    from ctpipe.serving import metrics

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return {
        sample.labels["version"]
        for family in text_string_to_metric_families(text)
        if family.name == metrics.SHADOW_INFO
        for sample in family.samples
        if sample.labels.get("model") == model and sample.value == 1
    }


def set_shadow(config: Any, port: int, version: str | None) -> None:
    """Point the challenger alias at `version` (None: remove it) and wait until the
    server's shadow follows, then a little longer for the load's garbage to go."""
    client = registry.client(config)
    if version is None:
        client.delete_registered_model_alias(config.model_name, "challenger")
    else:
        client.set_registered_model_alias(config.model_name, "challenger", version)
    wanted = set() if version is None else {version}
    deadline = time.monotonic() + 120
    while shadow_versions(port, config.model_name) != wanted:
        if time.monotonic() > deadline:
            raise SystemExit(f"the predictor's shadow did not follow the alias to {version}")
        time.sleep(0.1)
    time.sleep(0.5)


def shadow_overhead(
    config: Any, work: Path, frame: Any, single: list[bytes], rounds: int, per_phase: int
) -> None:
    """The champion alone vs the champion with a shadow, under one client's single-row
    load, in ONE predictor process: the challenger alias is set and removed between
    phases, and the predictor follows it. (Two processes of the same predictor differ by
    up to 20% here with nothing else different: where each runs, and how its memory
    lies.) Sides take turns, ABBA. The server's CPU is net of what it spends idle (the
    alias check, the log's journal), measured with no load."""
    from ctpipe.serving import metrics
    from ctpipe.serving.shadow import BATCH_ROWS, LINGER_SECONDS

    print("training a challenger of the same kind for the shadow measurement ...", flush=True)
    version = train_challenger(config, work)
    champion = registry.champion(config)
    assert champion is not None
    shadow_model = registry.load_model(
        registry.version_ref(registry.client(config), config.model_name, version)
    )
    port = free_port()
    # The champion pinned, the shadow following the alias: one alias check per interval.
    server = start(
        config,
        port,
        work / "log-shadow",
        shadow=True,
        extra=[
            "--model-uri", f"models:/{config.model_name}/{champion.version}",
            "--shadow-model-uri", f"models:/{config.model_name}@challenger",
            "--reload-seconds", "0.5",
        ],
    )  # fmt: skip
    path = f"/v1/models/{config.model_name}:predict"
    sides = {"alone": None, "shadow": version}
    measured = {name: Phases() for name in sides}
    try:
        print(
            f"shadow overhead: one client, single rows, {rounds} rounds x {per_phase} requests "
            "per side, one predictor with and without the challenger in shadow, taking turns ...",
            flush=True,
        )
        set_shadow(config, port, version)
        shadow_phase(server, port, path, single, min(per_phase, 100))  # warm up, both models
        set_shadow(config, port, None)
        idle_before, idle_started = process_cpu(server.pid), time.perf_counter()
        time.sleep(5.0)
        idle = (process_cpu(server.pid) - idle_before) / (time.perf_counter() - idle_started)
        for round_ in range(rounds):
            for name, shadow in alternate(list(sides.items()), round_):
                if (name == "shadow") != bool(shadow_versions(port, config.model_name)):
                    set_shadow(config, port, shadow)
                times, cpu, wall = shadow_phase(server, port, path, single, per_phase)
                measured[name].add(times, cpu - idle * wall, wall)
        scored, dropped, failed = (
            scraped(port, family, config.model_name)
            for family in (metrics.SHADOW_ROWS, metrics.SHADOW_DROPPED, metrics.SHADOW_FAILED)
        )
    finally:
        server.terminate()
        server.wait(timeout=60)

    alone, shadowed = measured["alone"], measured["shadow"]
    # The shadow model's own predict, as the worker calls it: what arrives over its linger
    # time, in one call. (OpenMP was loaded with the models, after main()'s limit: again.)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    rate = shadowed.requests / sum(len(t) * float(np.mean(t)) / 1000 for t in shadowed.latencies)
    per_call = max(1, min(BATCH_ROWS, round(rate * LINGER_SECONDS), per_phase, len(frame)))
    own_ms = predict_cpu_ms(shadow_model, frame.head(per_call))
    single_ms = predict_cpu_ms(shadow_model, frame.head(1))

    p50_alone, p50_shadow = alone.percentile(50), shadowed.percentile(50)
    p99_alone, p99_shadow = alone.percentile(99), shadowed.percentile(99)
    latency_ratio = p50_shadow / p50_alone
    beyond = shadowed.cpu_ms - alone.cpu_ms - own_ms
    cpu_share = beyond / alone.cpu_ms
    print(
        f"\nshadow overhead, single rows, one client ({shadowed.requests} requests per side, "
        f"{rate:.0f} requests/s; challenger v{version} in shadow of v{champion.version}):"
    )
    print(f"  the shadow scored {scored:.0f} rows, dropped {dropped:.0f}, failed {failed:.0f}")
    print(
        f"  p50 latency: alone {p50_alone:.2f} ms, with shadow {p50_shadow:.2f} ms: ratio "
        f"{latency_ratio:.3f} {_verdict(latency_ratio <= SHADOW_LATENCY_TARGET, f'<= {SHADOW_LATENCY_TARGET:.2f}')}"
        f"; p99 {p99_alone:.2f} vs {p99_shadow:.2f} ms (for information)"
    )
    print(
        f"  server CPU per request (net of {1000 * idle:.0f} ms/s idle): alone {alone.cpu_ms:.3f} ms, "
        f"with shadow {shadowed.cpu_ms:.3f} ms; the shadow model's own predict {own_ms:.3f} ms "
        f"a row in calls of ~{per_call} rows, as its worker calls it (a single row alone: "
        f"{single_ms:.3f} ms)"
    )
    print(
        f"  CPU beyond the shadow's own predict: {beyond:+.3f} ms a request, {cpu_share:+.1%} of "
        f"the champion's {_verdict(cpu_share <= SHADOW_CPU_TARGET, f'<= {SHADOW_CPU_TARGET:.0%}')}"
    )
    if not scored or math.isnan(scored):
        print("  FAIL: the shadow scored nothing; the measurement does not show its cost")


def predict_cpu_ms(model: Any, rows: Any) -> float:
    """CPU ms per row of model.predict_proba on `rows`, in calls of that many rows."""
    model.predict_proba(rows)
    calls = max(30, math.ceil(3000 / len(rows)))
    started = time.process_time()
    for _ in range(calls):
        model.predict_proba(rows)
    return 1000 * (time.process_time() - started) / (calls * len(rows))


def _verdict(ok: bool, target: str) -> str:
    return f"(PASS: meets the target {target})" if ok else f"(FAIL: MISSES the target {target})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="each throughput phase")
    parser.add_argument("--rounds", type=int, default=8, help="phases per side, interleaved")
    parser.add_argument(
        "--single", type=int, default=600, help="single-row requests per side and measure"
    )
    parser.add_argument(
        "--shadow-requests",
        type=int,
        default=400,
        help="single-row requests per side and round of the shadow measurement",
    )
    parser.add_argument(
        "--shadow-only", action="store_true", help="only the shadow overhead measurement"
    )
    parser.add_argument(
        "--floor-server", nargs=2, metavar=("PORT", "SPIN_MS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.floor_server:
        serve_floor(int(args.floor_server[0]), float(args.floor_server[1]))
        return

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # as the predictor runs (its --threads default)
    work = Path(tempfile.mkdtemp(prefix="ctpipe-bench-serving-"))
    config = train(work)
    champion = registry.champion(config)
    assert champion is not None, "the in-process run registered no champion"
    model = registry.load_model(champion)
    # OpenMP came with the model, after the limit above: limit it too (the predictor's
    # OMP_NUM_THREADS does the same for its process).
    threadpool_limits(limits=1)
    table = synthetic.generate(2000, seed=3)
    features = [c for c in table.column_names if c not in ("request_id", "event_time", "label")]
    frame = table.select(features).to_pandas()
    # JSON has no NaN: a missing value goes as null (the server refuses NaN with a 400).
    records = frame.head(200).astype(object).where(frame.head(200).notna(), None)
    single = [
        json.dumps({"instances": [row]}, allow_nan=False).encode()
        for row in records.to_dict("records")
    ]
    if args.shadow_only:
        shadow_overhead(config, work, frame, single, args.rounds, args.shadow_requests)
        return
    # No request id: the predictor makes one per request (a repeated id is a 409 while
    # the prediction log is on).
    batches = [
        json.dumps({"inputs": v2_request(frame.iloc[i : i + 100], "")["inputs"]}).encode()
        for i in range(0, 1000, 100)
    ]
    hundred, one = frame.head(100), frame.head(1)
    base_batch = timed(lambda: model.predict_proba(hundred), 100)
    print(f"in-process predict_proba: 100 rows p50 {np.median(base_batch):.2f} ms")

    # Both servers run side by side and take turns in short phases, the order flipping each
    # round (ABBA): on a small, busy machine a one-off phase of each is mostly noise.
    # Throughput is all rows over all phases.
    # The bare KServe model spins as long as one in-process single-row predict takes.
    spin_ms = float(np.median(timed(lambda: model.predict_proba(one), 200)))
    floor_port = 18002
    floor_server = start_floor(floor_port, spin_ms)
    servers = {logging: (18000 + logging, start(config, 18000 + logging, work / "log" if logging else None))
               for logging in (False, True)}  # fmt: skip
    latencies: dict[tuple[str, bool], list[np.ndarray]] = {}
    throughputs: dict[tuple[str, bool], list[float]] = {}
    errors: dict[tuple[str, bool], int] = {}
    try:
        print(
            f"throughput: {args.clients} clients, {args.rounds} rounds x {args.seconds:g} s per "
            "side, single rows then batches of 100 ...",
            flush=True,
        )
        for kind, path, bodies, rows in (
            ("single", f"/v1/models/{config.model_name}:predict", single, 1),
            ("batch100", f"/v2/models/{config.model_name}/infer", batches, 100),
        ):
            for port, _ in servers.values():
                drive(port, path, bodies, args.clients, 1.0)  # warm up
            for round_ in range(args.rounds):
                for logging, (port, _) in alternate(list(servers.items()), round_):
                    times, failed = drive(port, path, bodies, args.clients, args.seconds)
                    key = (kind, logging)
                    latencies.setdefault(key, []).append(times)
                    throughputs.setdefault(key, []).append(len(times) * rows / args.seconds)
                    errors[key] = errors.get(key, 0) + failed
        # The overhead with one client (no queueing behind others), taking turns with the
        # bare KServe model so that both see the same stretch of machine time.
        path = f"/v1/models/{config.model_name}:predict"
        one_row = [frame.iloc[i : i + 1] for i in range(len(single))]
        sides = {
            "ctpipe": (servers[False][0], path, lambda i: model.predict_proba(one_row[i])),
            "floor": (floor_port, "/v1/models/floor:predict", lambda i: _spin(spin_ms)),
        }
        per_round = max(1, args.single // args.rounds)
        chunk = 25
        print(
            f"single-row overhead: one client, {args.rounds} rounds, the predictor and a bare "
            "KServe model taking turns ...",
            flush=True,
        )
        measured: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        for round_ in range(args.rounds):
            for name, (port, route, local) in alternate(list(sides.items()), round_):
                measured.setdefault((name, "stream"), []).append(
                    single_stream(port, route, single, local, max(1, per_round // chunk), chunk)
                )
                measured.setdefault((name, "paired"), []).append(
                    paired(port, route, single, local, per_round)
                )
    finally:
        for _, server in (*servers.values(), (floor_port, floor_server)):
            server.terminate()
            server.wait(timeout=60)
    medians = {
        key: tuple(float(np.median(np.concatenate([p[side] for p in runs]))) for side in (0, 1))
        for key, runs in measured.items()
    }
    print(
        f"\n{args.clients} concurrent clients, {args.rounds} rounds x {args.seconds:g}s each, "
        "keep-alive, loopback"
    )
    print(f"{'requests':<10} {'log':<4} {'p50 ms':>8} {'p99 ms':>8} {'rows/s':>10} {'errors':>7}")
    for key, chunks in latencies.items():
        p50, p99 = np.percentile(np.concatenate(chunks), [50, 99])
        kind, logging = key
        print(
            f"{kind:<10} {'on' if logging else 'off':<4} {p50:8.2f} {p99:8.2f} "
            f"{float(np.mean(throughputs[key])):10.0f} {errors[key]:7d}"
        )
    for mode, title in (
        ("paired", "in pairs (each request right after the same row's in-process predict)"),
        ("stream", "back to back, for information"),
    ):
        base, alone = medians[("ctpipe", mode)]
        overhead = alone - base
        spun, floor = medians[("floor", mode)]
        kserve_floor = floor - spun
        verdict = "meets" if overhead <= OVERHEAD_TARGET_MS else "MISSES"
        target = f" ({verdict} the target <= {OVERHEAD_TARGET_MS} ms)" if mode == "paired" else ""
        print(
            f"\nsingle row, one client, {title}: served p50 {alone:.2f} ms vs in-process "
            f"{base:.2f} ms: ratio {alone / base:.2f}, overhead {overhead:.2f} ms{target}"
        )
        print(
            f"  KServe + HTTP alone (the predictor's REST server, a model spinning {spin_ms:.2f} ms): "
            f"overhead {kserve_floor:.2f} ms; ctpipe's share (parse, checks, DataFrame, metrics): "
            f"{overhead - kserve_floor:.2f} ms"
        )
    for kind in ("single", "batch100"):
        on = float(np.mean(throughputs[(kind, True)]))
        off = float(np.mean(throughputs[(kind, False)]))
        cost = 1.0 - on / off
        verdict = "meets" if cost <= LOGGING_TARGET else "MISSES"
        print(
            f"logging cost, {kind}: {cost:+.1%} of throughput ({verdict} the target <= {LOGGING_TARGET:.0%})"
        )
    shadow_overhead(config, work, frame, single, args.rounds, args.shadow_requests)


if __name__ == "__main__":
    main()
