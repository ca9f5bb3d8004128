"""Waking vLLM from zero: when KEDA has scaled its Deployment to 0 after ``idle_minutes``, hold it at 1 replica
through KEDA's own pause (the ScaledObject annotation ``autoscaling.keda.sh/paused-replicas``), wait for a
ready pod, and hand the count back to KEDA when done.

Why the pause and not a plain scale to 1: KEDA scales an idle target back to 0 at its next poll when the
cooldown since the last activity is over (it is, after an idle spell), which undoes a manual scale before
the model has loaded. While paused, KEDA leaves the count alone; removing the annotation resumes it.
gpuprov marks the pause it set (:data:`WOKEN_BY`) and removes only that one.

:func:`decide` is the rule, on plain data (tested as data); :func:`wake` and :func:`release` ask the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpuprov.infra.clouds.kubernetes.cluster import boundary
from gpuprov.infra.clouds.kubernetes.workloads import VLLM

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"  # KEDA's documented pause: hold the target at N
WOKEN_BY = "gpuprov.dev/woken-by"  # gpuprov's mark on a pause it set, so it removes its own only
POLL_S = 2.0
SAY_EVERY_S = 15.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WakeState:
    """What the cluster says of vLLM, as plain data."""

    replicas: int  # the Deployment's spec.replicas
    ready_pods: int  # pods behind its Service that are Ready
    scaled_object: bool  # KEDA's ScaledObject for it exists
    paused: str | None = None  # the ScaledObject's paused-replicas annotation, when set
    ours: bool = False  # the pause carries gpuprov's mark


AWAKE, WAIT, PAUSE_AT_1, SCALE_TO_1, PAUSED_AT_0 = "awake", "wait", "pause-at-1", "scale-to-1", "paused-at-0"


def decide(state: WakeState) -> str:
    """What to do so that vLLM serves: nothing (awake), wait for the pod that is coming, pause KEDA at 1,
    scale to 1 (no KEDA), or stop: someone paused KEDA at 0 on purpose, and gpuprov does not overrule it."""
    if state.ready_pods > 0:
        return AWAKE
    if state.replicas > 0:
        return WAIT
    if state.paused is not None and not state.ours:
        return PAUSED_AT_0
    return PAUSE_AT_1 if state.scaled_object else SCALE_TO_1


def _state(core: Any, apps: Any, custom: Any, ns: str, ready_pods: Callable[[], int]) -> tuple[WakeState, Any]:
    from kubernetes.client.exceptions import ApiException

    replicas = int(apps.read_namespaced_deployment(VLLM, ns).spec.replicas or 0)
    try:
        so = custom.get_namespaced_custom_object("keda.sh", "v1alpha1", ns, "scaledobjects", VLLM)
    except ApiException as err:
        if err.status != 404:
            raise
        so = None
    annotations = ((so or {}).get("metadata") or {}).get("annotations") or {}
    return WakeState(replicas, ready_pods(), so is not None, annotations.get(PAUSED_REPLICAS),
                     WOKEN_BY in annotations), so


def wake(client: Any, ns: str, ready_pods: Callable[[], int], *, timeout_s: float, by: str,
         progress: Progress) -> bool:
    """Make vLLM serve: wake it when at 0 and wait (with progress) for a ready pod. True when gpuprov set
    a pause (the caller then :func:`release`s it); raises KubernetesError when no pod is ready in time."""
    from kubernetes import client as k

    from gpuprov.infra.clouds.kubernetes.driver import KubernetesError

    core, apps, custom = k.CoreV1Api(client), k.AppsV1Api(client), k.CustomObjectsApi(client)
    paused = False
    with boundary(f"reading vLLM's Deployment and ScaledObject in namespace {ns}"):
        state, _so = _state(core, apps, custom, ns, ready_pods)
    action = decide(state)
    if action == AWAKE:
        return False
    if action == PAUSED_AT_0:
        raise KubernetesError(f"kubernetes: vLLM's ScaledObject in {ns} is paused at {state.paused} replicas "
                              f"({PAUSED_REPLICAS}, not set by gpuprov); remove that annotation to let it scale")
    if action == PAUSE_AT_1:
        progress("vllm: at 0 replicas (KEDA scaled it down while idle); pausing KEDA at 1 replica to wake it")
        with boundary(f"pausing vLLM's ScaledObject at 1 replica in {ns}"):
            custom.patch_namespaced_custom_object("keda.sh", "v1alpha1", ns, "scaledobjects", VLLM, {
                "metadata": {"annotations": {PAUSED_REPLICAS: "1", WOKEN_BY: by}}})
        paused = True
    elif action == SCALE_TO_1:
        progress("vllm: at 0 replicas (no KEDA ScaledObject); scaling it to 1")
        with boundary(f"scaling vLLM's Deployment to 1 in {ns}"):
            # The client would label a dict body json-patch (its first content type); say what it is.
            apps.patch_namespaced_deployment_scale(VLLM, ns, {"spec": {"replicas": 1}},
                                                   _content_type="application/merge-patch+json")
    started, said = time.monotonic(), -SAY_EVERY_S
    try:
        while True:
            with boundary(f"listing vLLM's pods in {ns}"):
                if ready_pods() > 0:
                    progress(f"vllm: a pod is ready after {time.monotonic() - started:.0f}s")
                    return paused
            waited = time.monotonic() - started
            if waited > timeout_s:
                raise KubernetesError(f"kubernetes: vLLM had no ready pod after {timeout_s:.0f}s; see why with "
                                      f"kubectl -n {ns} describe pods -l app.kubernetes.io/name={VLLM} (a GPU node "
                                      "that cannot join, an image pull, the model download)")
            if waited - said >= SAY_EVERY_S:  # a line now and then over a wait of minutes, not one per poll
                said = waited
                progress(f"vllm: waiting for a ready pod ({waited:.0f}s of at most {timeout_s:.0f}s; a GPU node may "
                         "have to join, then the model loads)")
            time.sleep(POLL_S)
    except BaseException:
        if paused:  # nothing to hold up: give KEDA its count back rather than bill for a pod no one reaches
            release(client, ns, progress)
        raise


def release(client: Any, ns: str, progress: Progress) -> bool:
    """Remove the pause gpuprov set (only its own); KEDA then scales vLLM as its rule says. True when removed."""
    from kubernetes import client as k
    from kubernetes.client.exceptions import ApiException

    custom = k.CustomObjectsApi(client)
    with boundary(f"handing vLLM's replica count back to KEDA in {ns}"):
        try:
            so = custom.get_namespaced_custom_object("keda.sh", "v1alpha1", ns, "scaledobjects", VLLM)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        if WOKEN_BY not in ((so.get("metadata") or {}).get("annotations") or {}):
            return False
        custom.patch_namespaced_custom_object("keda.sh", "v1alpha1", ns, "scaledobjects", VLLM, {
            "metadata": {"annotations": {PAUSED_REPLICAS: None, WOKEN_BY: None}}})
    progress("vllm: KEDA's pause removed; KEDA scales it again (to 0 once no request runs or waits)")
    return True
