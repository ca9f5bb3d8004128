"""``make bench-idle``: replay the usage traces through the REAL idle agent logic at accelerated time.

Each trace is checked once a minute (the agent's timer) for its whole horizon.
The agent's own ``decide()`` (loaded from ``gpuprov/remote/idle-agent``) gets
the signals the host would show at that minute; a jobs-and-SSH rule (how SkyPilot's
autostop decides) and no policy at all run beside it. When a policy stops the box
and the trace shows the person back later, the box is started again (a restart).

Billed idle minutes: minutes billed while nobody used the box. A false shutdown:
the box stopped while somebody used it. Overrun: idle minutes billed after the
last use beyond ``idle_minutes``.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from traces import TRACES, Trace, active_at, request_times  # noqa: E402

AGENT = HERE.parents[1] / "gpuprov" / "remote" / "idle-agent" / "gpuprov_idle.py"
IDLE_MINUTES = 30
GRACE_MINUTES = 5
CHECK_MIN = 1.0
T0 = 1_800_000_000.0


def load_agent():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpuprov_idle", AGENT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpuprov_idle"] = module
    spec.loader.exec_module(module)
    return module


agent = load_agent()


def signals_at(trace: Trace, t: float):  # type: ignore[no-untyped-def]
    """What the host shows the agent at minute ``t``: states as sampled, requests as counters and log lines."""
    sig = agent.Signals(service_connections={"vllm": 0, "open_webui": 0, "monai_label": 0})
    vllm_total = 0.0
    for s in trace.spans:
        if s.every:
            times = request_times(s)
            in_flight = sum(1 for r in times if r <= t < r + s.lasts)
            finished = sum(1 for r in times if r + s.lasts <= t)
            since_last = sum(1 for r in times if t - CHECK_MIN < r <= t)
            if s.kind == "vllm_req":
                vllm_total += finished
                sig.metrics_running["vllm"] = sig.metrics_running.get("vllm", 0) + in_flight
            elif s.kind == "monai_req":
                sig.log_requests["monai_sam2"] = sig.log_requests.get("monai_sam2", 0) + since_last
            elif s.kind == "webui_req":
                sig.log_requests["open-webui"] = sig.log_requests.get("open-webui", 0) + since_last
        elif s.start <= t < s.end:
            if s.kind == "ssh":
                sig.ssh_sessions += 1
            elif s.kind == "tunnel":
                sig.tunnel_connections += 1
            elif s.kind == "gpu":
                sig.gpu_util = 95.0
    sig.metrics_total["vllm"] = vllm_total
    return sig


def skypilot_sees(trace: Trace, t: float, server_is_job: bool) -> bool:
    """Jobs and interactive SSH only (SkyPilot autostop). Served as a SkyPilot job, the model server
    counts as a job forever; served beside it (as gpuprov deploys, with Compose) it is invisible."""
    kinds = ("job", "ssh", "server_job") if server_is_job else ("job", "ssh")
    return any(s.start <= t < s.end and s.kind in kinds for s in trace.spans)


@dataclass
class Result:
    idle_min: float = 0.0
    false_shutdowns: int = 0
    restarts: int = 0
    overrun_min: float = 0.0


def replay(trace: Trace, policy: str) -> Result:
    res = Result()
    up, state = True, agent.State(launched_at=T0, last_active=T0)
    sky_last_busy = 0.0
    pol = agent.Policy(idle_minutes=IDLE_MINUTES, grace_minutes=GRACE_MINUTES, check_interval_s=CHECK_MIN * 60,
                       max_lifetime_hours=12.0, usd_hour=trace.usd_hour)
    last_use = max(t for t in _minutes(trace) if active_at(trace, t)) + 1
    stopped_at = None
    t = 0.0
    while t < trace.horizon_min:
        using = bool(active_at(trace, t))
        if not up and using:  # the person is back: the box is started again
            up, res.restarts = True, res.restarts + 1
            state = agent.State(launched_at=state.launched_at, last_active=T0 + t * 60)
            sky_last_busy = t
        if up:
            if not using:
                res.idle_min += CHECK_MIN
            stop = False
            if policy == "gpuprov agent":
                d = agent.decide(signals_at(trace, t), state, pol, T0 + t * 60)
                state, stop = d.state, d.action == "act"
            elif policy.startswith("jobs+ssh"):
                if skypilot_sees(trace, t, server_is_job="server a job" in policy):
                    sky_last_busy = t
                stop = t - sky_last_busy >= IDLE_MINUTES
            if stop:
                res.false_shutdowns += using
                up, stopped_at = False, t
        t += CHECK_MIN
    end = stopped_at if stopped_at is not None and stopped_at >= last_use else trace.horizon_min
    res.overrun_min = max(0.0, end - last_use - IDLE_MINUTES)
    return res


def _minutes(trace: Trace) -> list[float]:
    return [m * 0.1 for m in range(int(trace.horizon_min * 10))]


def main() -> int:
    policies = ["gpuprov agent", "jobs+ssh, server a job", "jobs+ssh, server apart", "no policy"]
    print(f"idle_minutes={IDLE_MINUTES}, warning {GRACE_MINUTES} min before, one check a minute; "
          f"replayed through {AGENT.relative_to(HERE.parents[1])} decide()")
    print(f"{'trace':<20} {'policy':<23} {'$/h':>6} {'idle min':>9} {'idle $':>8} {'false stops':>11} "
          f"{'restarts':>8} {'overrun min':>11}")
    worst, false_total = 0.0, 0
    for trace in TRACES:
        for policy in policies:
            r = replay(trace, policy)
            dollars = r.idle_min / 60 * trace.usd_hour
            print(f"{trace.name:<20} {policy:<23} {trace.usd_hour:>6.3f} {r.idle_min:>9.0f} {dollars:>8.2f} "
                  f"{r.false_shutdowns:>11} {r.restarts:>8} {r.overrun_min:>11.1f}")
            if policy == "gpuprov agent":
                worst, false_total = max(worst, r.overrun_min), false_total + r.false_shutdowns
        print()
    print("jobs+ssh is SkyPilot's autostop rule: 'server a job' serves the model as a SkyPilot job, "
          "'server apart' beside it.")
    print(f"false shutdowns: {false_total}, worst idle overrun: {worst:.0f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
