"""Live error rate and p95 latency of each served version, for the canary's guardrails.

Two sources, one answer ({version: Health}):
  - `Prometheus`: a cluster. PromQL over the predictors' request metrics, by the `version`
    label (the version that answered each request), over the span since the canary began.
  - `Scrape`: predictors reachable directly (a local `ctpipe serve`, tests). Their
    `/metrics` counters are cumulative, so the canary's start is kept as a baseline and
    subtracted.
"""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from ctpipe.errors import CtpipeError

REQUESTS = "ctpipe_predictor_requests_total"
LATENCY = "ctpipe_predictor_request_duration_seconds"
MODEL_INFO = "ctpipe_predictor_model_info"
TIMEOUT_SECONDS = 10.0


class HealthError(CtpipeError):
    """The live metrics could not be read: the canary cannot be judged on them."""


@dataclass(frozen=True)
class Health:
    """One version's traffic over the judged span."""

    requests: int
    errors: int  # 5xx answers
    p95_seconds: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


class HealthSource(Protocol):
    def baseline(self, model: str) -> dict[str, Any]:
        """What to subtract later (cumulative counters now); {} when not needed."""

    def measure(
        self, model: str, since: datetime, now: datetime, baseline: Mapping[str, Any]
    ) -> dict[str, Health]:
        """Each served version's health since `since`."""


@dataclass(frozen=True)
class Counters:
    """Cumulative request counters of one version: totals, errors, latency buckets."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count)

    def __add__(self, other: Counters) -> Counters:
        merged: dict[float, float] = dict(self.buckets)
        for le, count in other.buckets:
            merged[le] = merged.get(le, 0.0) + count
        return Counters(
            self.requests + other.requests,
            self.errors + other.errors,
            tuple(sorted(merged.items())),
        )

    def __sub__(self, other: Counters) -> Counters:
        before = dict(other.buckets)
        return Counters(
            max(0.0, self.requests - other.requests),
            max(0.0, self.errors - other.errors),
            tuple((le, max(0.0, count - before.get(le, 0.0))) for le, count in self.buckets),
        )

    def health(self) -> Health:
        return Health(int(self.requests), int(self.errors), quantile(0.95, self.buckets))

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "buckets": [[_le_text(le), c] for le, c in self.buckets],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Counters:
        return cls(
            float(raw.get("requests", 0)),
            float(raw.get("errors", 0)),
            tuple((float(le), float(c)) for le, c in raw.get("buckets", ())),
        )


def _le_text(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (linear within a bucket)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_bound  # above the largest finite bucket: its bound, as Prometheus
            width = count - lower_count
            return lower_bound + (le - lower_bound) * (
                (rank - lower_count) / width if width else 1.0
            )
        lower_bound, lower_count = le, count
    return lower_bound


# ----------------------------------------------------------------------------- scrape


class Scrape:
    """Predictors' /metrics pages, read directly."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = tuple(urls)

    def _read(self, model: str) -> dict[str, Counters]:
        from prometheus_client.parser import text_string_to_metric_families

        by_version: dict[str, Counters] = {}
        for url in self.urls:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                    text = response.read().decode()
            except OSError as exc:
                raise HealthError(f"cannot read the predictor's metrics at {url}: {exc}") from exc
            seen = False
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = sample.labels
                    if labels.get("model") != model or not labels.get("version"):
                        continue
                    if sample.name == REQUESTS:
                        seen = True
                        error = labels.get("status", "").startswith("5")
                        counters = Counters(sample.value, sample.value if error else 0.0)
                    elif sample.name == f"{LATENCY}_bucket":
                        counters = Counters(buckets=((float(labels["le"]), sample.value),))
                    else:
                        continue
                    version = labels["version"]
                    by_version[version] = by_version.get(version, Counters()) + counters
            if not seen and not any(
                f"{MODEL_INFO}{{" in line and f'model="{model}"' in line
                for line in text.splitlines()
            ):
                raise HealthError(f"{url}: no predictor of model {model!r} answers there")
        return by_version

    def baseline(self, model: str) -> dict[str, Any]:
        return {version: c.to_dict() for version, c in self._read(model).items()}

    def measure(
        self, model: str, since: datetime, now: datetime, baseline: Mapping[str, Any]
    ) -> dict[str, Health]:
        del since, now  # the baseline marks the start
        return {
            version: (counters - Counters.from_dict(baseline.get(version, {}))).health()
            for version, counters in self._read(model).items()
        }


# ------------------------------------------------------------------------- Prometheus


class Prometheus:
    """A Prometheus server's HTTP API (GET /api/v1/query)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def baseline(self, model: str) -> dict[str, Any]:
        del model
        return {}

    def queries(self, model: str, seconds: int) -> dict[str, str]:
        """The three PromQL queries, each by the version that answered."""
        selector = f'model="{model}"'
        window = f"[{max(seconds, 60)}s]"
        return {
            "requests": f"sum by (version) (increase({REQUESTS}{{{selector}}}{window}))",
            "errors": (
                f'sum by (version) (increase({REQUESTS}{{{selector},status=~"5.."}}{window}))'
            ),
            "p95": (
                "histogram_quantile(0.95, sum by (version, le) "
                f"(increase({LATENCY}_bucket{{{selector}}}{window})))"
            ),
        }

    def query(self, promql: str, at: datetime) -> dict[str, float]:
        params = urllib.parse.urlencode({"query": promql, "time": f"{at.timestamp():.3f}"})
        url = f"{self.url}/api/v1/query?{params}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                body = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise HealthError(f"Prometheus at {self.url} did not answer {promql!r}: {exc}") from exc
        if body.get("status") != "success" or body.get("data", {}).get("resultType") != "vector":
            raise HealthError(
                f"Prometheus at {self.url} refused {promql!r}: {body.get('error', body)}"
            )
        values = {}
        for item in body["data"]["result"]:
            version = item["metric"].get("version")
            value = float(item["value"][1])
            if version is not None and math.isfinite(value):
                values[version] = value
        return values

    def measure(
        self, model: str, since: datetime, now: datetime, baseline: Mapping[str, Any]
    ) -> dict[str, Health]:
        del baseline
        queries = self.queries(model, int((now - since).total_seconds()))
        requests = self.query(queries["requests"], now)
        errors = self.query(queries["errors"], now)
        p95 = self.query(queries["p95"], now)
        return {
            version: Health(round(total), round(errors.get(version, 0.0)), p95.get(version))
            for version, total in requests.items()
        }
