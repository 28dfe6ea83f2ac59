"""Where a retraining run goes: a Kubeflow Pipelines API server, or kfp.local here.

This is the one module that talks to the KFP API. Tests run the real `kfp.Client`
against a recording HTTP server on loopback and check the requests it sends. Both
submitters implement ctpipe.monitor.submit.Submitter, the monitor's side of the contract.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from ctpipe.config import Config
from ctpipe.monitor.submit import (
    FAILED_STATES,
    UNKNOWN,
    RunOutcome,
    RunRef,
    SubmitError,
)

HOST_ENV = "KF_PIPELINES_ENDPOINT"  # what kfp.Client itself reads
NAMESPACE_ENV = "CTPIPE_KFP_NAMESPACE"  # the profile namespace in multi-user KFP
TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


class LocalSubmitter:
    """Runs the same pipeline with kfp.local, to completion, before returning."""

    backend = "local"

    def __init__(self, verbose: bool = False, out: Any = None) -> None:
        self.verbose = verbose
        self.out = out
        self._outcomes: dict[str, RunOutcome] = {}

    def submit(self, config: Config, reason: str, run_name: str) -> RunRef:
        from ctpipe.pipelines.local import run_local

        run = run_local(config, reason=reason, verbose=self.verbose, out=self.out or io.StringIO())
        run_id = run.run_dir.name
        if not run.ok:
            step = f"step {run.failed_step}: " if run.failed_step else ""
            error = f"{step}{_join_lines(run.errors) or 'see its log'}"
            self._outcomes[run_id] = RunOutcome(run_id, "FAILED", error)
            return RunRef(
                run_id, run_name, self.backend, str(run.run_dir), failed=True, error=error
            )
        self._outcomes[run_id] = RunOutcome(run_id, "SUCCEEDED")
        return RunRef(
            run_id,
            run_name,
            self.backend,
            str(run.run_dir),
            blessed=run.blessed,
            champion_version=run.registered_version,
        )

    def outcome(self, run_id: str) -> RunOutcome:
        """Local runs end inside submit(); one submitted by another process is UNKNOWN
        here (the monitor recorded its outcome when it was submitted)."""
        return self._outcomes.get(run_id, RunOutcome(run_id, UNKNOWN))

    def is_active(self, run_id: str) -> bool:
        return False  # local runs finish inside submit()


class KfpSubmitter:
    """Submits to a Kubeflow Pipelines API server with `kfp.Client`.

    In a pod, authenticates with the projected ServiceAccount token (audience
    `pipelines.kubeflow.org`). The credentials are passed explicitly: given `host=` and no
    credentials, kfp.Client sends no token at all.
    """

    backend = "kfp"

    def __init__(
        self,
        host: str | None = None,
        *,
        namespace: str | None = None,
        token_path: str | None = None,
        package_path: str | None = None,
        client: Any = None,
    ) -> None:
        self.host = host or os.environ.get(HOST_ENV)
        if not self.host and client is None:
            raise SubmitError(f"no Kubeflow Pipelines endpoint: pass --kfp-host or set {HOST_ENV}")
        self.namespace = namespace or os.environ.get(NAMESPACE_ENV)
        self.token_path = token_path or os.environ.get(TOKEN_ENV) or DEFAULT_TOKEN_PATH
        self.package_path = package_path
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import kfp
            from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

            credentials = (
                ServiceAccountTokenVolumeCredentials(self.token_path)
                if Path(self.token_path).is_file()
                else None
            )
            self._client = kfp.Client(
                host=self.host, namespace=self.namespace or "kubeflow", credentials=credentials
            )
        return self._client

    def version_ref(self, config: Config) -> tuple[str | None, str | None]:
        """(pipeline_id, version_id) of the configured pipeline's version to run."""
        monitor = config.monitor
        pipeline_id = self.client.get_pipeline_id(monitor.pipeline_name)
        if pipeline_id is None:
            raise SubmitError(
                f"no pipeline named {monitor.pipeline_name!r} on {self.host}; upload "
                "pipelines/compiled/continuous_training.yaml first (make cluster does)"
            )
        if monitor.pipeline_version:
            return pipeline_id, monitor.pipeline_version
        versions = self.client.list_pipeline_versions(
            pipeline_id, page_size=1, sort_by="created_at desc"
        )
        newest = (versions.pipeline_versions or [None])[0]
        if newest is None:
            raise SubmitError(f"pipeline {monitor.pipeline_name!r} has no versions")
        return pipeline_id, newest.pipeline_version_id

    def submit(self, config: Config, reason: str, run_name: str) -> RunRef:
        try:
            experiment = self.client.create_experiment(
                config.monitor.experiment, namespace=self.namespace
            )
            params = {"config": config.to_dict(), "reason": reason}
            if self.package_path:
                run = self.client.run_pipeline(
                    experiment.experiment_id,
                    run_name,
                    pipeline_package_path=self.package_path,
                    params=params,
                )
            else:
                pipeline_id, version_id = self.version_ref(config)
                run = self.client.run_pipeline(
                    experiment.experiment_id,
                    run_name,
                    params=params,
                    pipeline_id=pipeline_id,
                    version_id=version_id,
                )
        except SubmitError:
            raise
        except Exception as exc:  # kfp_server_api.ApiException, urllib3 errors, token file errors
            raise SubmitError(f"submitting {run_name} to {self.host} failed: {exc}") from exc
        return RunRef(
            run.run_id, run_name, self.backend, f"{self.host}/#/runs/details/{run.run_id}"
        )

    def upload(
        self,
        package_path: str | Path,
        pipeline_name: str,
        version_name: str,
        description: str | None = None,
    ) -> tuple[str, str]:
        """Upload a compiled pipeline as version `version_name` of `pipeline_name`.

        Creates the pipeline on first use (KFP then also keeps the upload as a version
        named after the pipeline). A version of that name that already exists is reused, so
        naming versions by their content makes this safe to rerun. Returns
        (pipeline_id, version_id).
        """
        package = str(package_path)
        try:
            pipeline_id = self.client.get_pipeline_id(pipeline_name)
            if pipeline_id is None:
                pipeline = self.client.upload_pipeline(
                    package, pipeline_name, description=description, namespace=self.namespace
                )
                pipeline_id = pipeline.pipeline_id
            else:
                existing = self.client.list_pipeline_versions(
                    pipeline_id,
                    page_size=1,
                    filter=_name_filter(version_name),
                )
                found = existing.pipeline_versions or []
                if found:
                    return str(pipeline_id), str(found[0].pipeline_version_id)
            version = self.client.upload_pipeline_version(
                package, version_name, pipeline_id=pipeline_id, description=description
            )
        except Exception as exc:  # kfp_server_api.ApiException, urllib3 errors, a missing file
            raise SubmitError(
                f"uploading {package} as {pipeline_name} {version_name} to {self.host} failed: {exc}"
            ) from exc
        return str(pipeline_id), str(version.pipeline_version_id)

    def recurring_run_id(self, config: Config, name: str) -> str | None:
        """The id of the recurring run called `name` in the configured experiment, if any."""
        try:
            experiment = self.client.create_experiment(
                config.monitor.experiment, namespace=self.namespace
            )
            found = self.client.list_recurring_runs(
                page_size=1,
                experiment_id=experiment.experiment_id,
                filter=_name_filter(name),
            ).recurring_runs
        except Exception as exc:
            raise SubmitError(
                f"listing recurring runs named {name} on {self.host} failed: {exc}"
            ) from exc
        return str(found[0].recurring_run_id) if found else None

    def schedule(self, config: Config, cron: str, name: str, reason: str = "schedule") -> str:
        """Create a recurring run of the newest pipeline version; returns its id.

        `cron` has KFP's six fields (seconds first), e.g. "0 0 3 * * *" for 03:00 daily.
        At most one run at a time, and no backfill after a pause.
        """
        try:
            experiment = self.client.create_experiment(
                config.monitor.experiment, namespace=self.namespace
            )
            pipeline_id, version_id = self.version_ref(config)
            recurring = self.client.create_recurring_run(
                experiment.experiment_id,
                name,
                cron_expression=cron,
                max_concurrency=1,
                no_catchup=True,
                params={"config": config.to_dict(), "reason": reason},
                pipeline_id=pipeline_id,
                version_id=version_id,
            )
        except SubmitError:
            raise
        except Exception as exc:
            raise SubmitError(
                f"creating recurring run {name} on {self.host} failed: {exc}"
            ) from exc
        return str(recurring.recurring_run_id)

    def outcome(self, run_id: str) -> RunOutcome:
        """The run's state from the API server, and for a failed run its error: the run's
        own `error`, else the first failed task's."""
        try:
            run = self.client.get_run(run_id)
        except Exception as exc:
            raise SubmitError(
                f"cannot read the state of run {run_id} on {self.host}: {exc}"
            ) from exc
        state = str(getattr(run, "state", None) or "RUNTIME_STATE_UNSPECIFIED").upper()
        error = _error_text(getattr(run, "error", None))
        if error is None and state in FAILED_STATES:
            details = getattr(run, "run_details", None)
            for task in getattr(details, "task_details", None) or []:
                task_error = _error_text(getattr(task, "error", None))
                if task_error:
                    error = f"step {getattr(task, 'display_name', None) or '?'}: {task_error}"
                    break
        if error is None and state in FAILED_STATES:
            error = f"run ended {state}; see {self.host}/#/runs/details/{run_id}"
        return RunOutcome(run_id, state, error)

    def is_active(self, run_id: str) -> bool:
        return self.outcome(run_id).active


def _join_lines(lines: list[str]) -> str:
    """Error lines as one: "; " between them, a space after a line that ends in ":"."""
    out = ""
    for line in (text.strip() for text in lines):
        if line:
            out += ("" if not out else " " if out.endswith(":") else "; ") + line
    return out


def _error_text(status: Any) -> str | None:
    """The message of a google.rpc.Status (a GoogleRpcStatus model or a plain dict)."""
    if status is None:
        return None
    if isinstance(status, dict):
        message, code = status.get("message"), status.get("code")
    else:
        message, code = getattr(status, "message", None), getattr(status, "code", None)
    if message:
        return str(message)
    return f"error code {code}" if code else None


def _name_filter(name: str) -> str:
    """A KFP API filter on display_name; 1 is EQUALS, as kfp.Client itself sends it."""
    return json.dumps(
        {"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]}
    )
