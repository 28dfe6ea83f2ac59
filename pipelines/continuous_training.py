"""The continuous-training pipeline: data in, a blessed champion out.

ingest -> validate -> split -> train x N (ParallelFor) -> select -> refit (train+validation)
       -> evaluate -> If(blessed): final_refit (the whole window, kept if it agrees)
       -> infra_validate -> register (MLflow alias `champion`) -> deploy
       evaluate -> drift_report (evidently HTML of the champion it judged against, for people;
                                 nothing waits on it)

The graph is written once, in graph.py; here it is built from the KFP components
(`KFP_STEPS`), and pipelines/in_process.py runs the same graph with plain calls.

Two profiles compile from the same graph. `cpu` runs every step on ctpipe/base. `gpu` runs
`train`, `refit` and `final_refit` on ctpipe/trainer-gpu with one `nvidia.com/gpu` and a toleration for GPU nodes. In
both, every step reads its endpoints from the ConfigMap `ctpipe-env` and its S3 credentials
from the Secret `ctpipe-s3` (manifests/ and scripts/cluster-up.sh create them), so nothing
secret is ever written into the compiled YAML. kfp.local ignores these Kubernetes settings:
`ctpipe run` reads the same variables from the local environment.
"""

# No `from __future__ import annotations`: KFP reads the signature types at runtime.

from collections.abc import Callable
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import pipeline_context

from ctpipe import config as config_module
from ctpipe.components import images
from ctpipe.components.deploy import deploy
from ctpipe.components.drift_report import drift_report
from ctpipe.components.evaluate import evaluate
from ctpipe.components.final_refit import final_refit
from ctpipe.components.infra_validate import infra_validate
from ctpipe.components.ingest import ingest
from ctpipe.components.plan import plan
from ctpipe.components.refit import refit
from ctpipe.components.register import register
from ctpipe.components.select import select
from ctpipe.components.split import split
from ctpipe.components.train import train
from ctpipe.components.validate import validate
from ctpipe.deploy import (
    BLESSING_SECRET,
    ENV_CONFIG_MAP,
    MLFLOW_AUTH_SECRET,
    MLFLOW_CLIENT_LABEL,
    S3_SECRET,
)
from ctpipe.pipelines.graph import CPU, PROFILES, Steps, graph

PIPELINE_NAME = "continuous-training"

# What every step gets from the cluster. Both are optional in the pod spec: a cluster with
# workload identity (IRSA, GKE Workload Identity) needs no static keys, and a missing
# MLFLOW_TRACKING_URI with an s3:// state_dir is a clear error in the step itself.
ENV_FROM_CONFIG_MAP = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
ENV_FROM_SECRET = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# MLflow's basic-auth credentials, and the key that signs (and checks) blessings. Optional in
# the pod spec too: a step that needs one and lacks it fails with a message naming the Secret.
ENV_FROM_MLFLOW_AUTH = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
ENV_FROM_BLESSING = ("CTPIPE_BLESSING_KEY",)

GPU_RESOURCE = "nvidia.com/gpu"
GPUS_PER_TRAIN_STEP = 1


def default_config() -> dict[str, Any]:
    """The shipped ctpipe.yaml as a dict, paths left as written (compiles identically anywhere)."""
    import yaml

    return config_module.from_dict(yaml.safe_load(config_module.default_config_text())).to_dict()


def build(profile: str = CPU, registry: str | None = None, tag: str | None = None) -> Any:
    """The pipeline for a profile (`cpu` or `gpu`), with images from `registry` and `tag`
    (default: CTPIPE_IMAGE_REGISTRY / CTPIPE_IMAGE_TAG, then none and the ctpipe version)."""
    if profile not in PROFILES:
        raise ValueError(
            f"unknown pipeline profile {profile!r}; expected one of {', '.join(PROFILES)}"
        )

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="ctpipe: validate new data, train candidates, gate against the champion, promote the winner.",
    )
    def continuous_training(config: dict = default_config(), reason: str = "manual") -> None:  # noqa: B008
        graph(KFP_STEPS, config, reason, profile)
        # Every step, including any added to the graph later, runs on our images from the
        # chosen registry and tag, and gets the cluster's endpoints and credentials.
        for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
            container = getattr(task, "container_spec", None)
            if container is None:
                continue  # not a container step (an importer, say): nothing runs in a pod
            # Every step depends on data or state outside its inputs (files behind a URI, the
            # schema store, the current champion): KFP's cache could only serve stale results.
            task.set_caching_options(False)
            role = images.role_of(container.image)
            if role is not None:
                task.set_container_image(images.image(role, registry, tag))
            _cluster_environment(task)

    return continuous_training


def _cluster_environment(task: dsl.PipelineTask) -> None:
    kubernetes.use_config_map_as_env(
        task, ENV_CONFIG_MAP, {name: name for name in ENV_FROM_CONFIG_MAP}, optional=True
    )
    for secret, names in (
        (S3_SECRET, ENV_FROM_SECRET),
        (MLFLOW_AUTH_SECRET, ENV_FROM_MLFLOW_AUTH),
        (BLESSING_SECRET, ENV_FROM_BLESSING),
    ):
        kubernetes.use_secret_as_env(task, secret, {name: name for name in names}, optional=True)
    kubernetes.add_pod_label(task, *MLFLOW_CLIENT_LABEL)  # MLflow admits labelled pods only


def _on_gpu(task: dsl.PipelineTask) -> None:
    task.set_container_image(images.image(images.TRAINER_GPU))
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(GPUS_PER_TRAIN_STEP)
    # GPU node pools are usually tainted so that only GPU work lands there.
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")


def _parallel_for(items: Any, name: str, body: Callable[[Any], Any]) -> Any:
    with dsl.ParallelFor(items, name=name) as item:
        return body(item)


def _when(flag: Any, name: str, body: Callable[[], None]) -> None:
    with dsl.If(flag == True, name=name):  # noqa: E712 (a KFP expression)
        body()


KFP_STEPS = Steps(
    ingest=ingest,
    validate=validate,
    split=split,
    plan=plan,
    train=train,
    select=select,
    refit=refit,
    evaluate=evaluate,
    drift_report=drift_report,
    final_refit=final_refit,
    infra_validate=infra_validate,
    register=register,
    deploy=deploy,
    parallel_for=_parallel_for,
    collected=dsl.Collected,
    when=_when,
    on_gpu=_on_gpu,
    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
)


continuous_training = build()
