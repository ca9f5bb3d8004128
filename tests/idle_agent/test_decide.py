"""The idle decision, one signal at a time: each alone keeps the box up; silence acts on time."""

from __future__ import annotations

from types import ModuleType

import pytest

MIN = 60.0
T0 = 1_800_000_000.0


def policy(agent: ModuleType, **kw):  # type: ignore[no-untyped-def]
    base = dict(idle_minutes=30, grace_minutes=5, check_interval_s=60, max_lifetime_hours=12.0, usd_hour=1.0)
    return agent.Policy(**{**base, **kw})


def replay(agent: ModuleType, pol, signals_at, minutes: int, start=None):  # type: ignore[no-untyped-def]
    """Run one check a minute for ``minutes``; return every decision."""
    state = start or agent.State(launched_at=T0, last_active=T0)
    out = []
    for m in range(1, minutes + 1):
        d = agent.decide(signals_at(m), state, pol, T0 + m * MIN)
        state = d.state
        out.append(d)
    return out


def first_act(decisions):  # type: ignore[no-untyped-def]
    return next((i + 1 for i, d in enumerate(decisions) if d.action == "act"), None)


def test_silence_warns_then_acts_at_idle_minutes(agent: ModuleType) -> None:
    ds = replay(agent, policy(agent), lambda m: agent.Signals(), 60)
    warn = next(i + 1 for i, d in enumerate(ds) if d.action == "warn")
    assert (warn, ds[warn - 1].reason) == (25, "idle")  # grace_minutes before idle_minutes
    assert "gpuprov-idle postpone" in ds[warn - 1].message
    assert first_act(ds) == 30
    assert [d.action for d in ds[30:]] == ["none"] * 30  # acted once, not every minute


@pytest.mark.parametrize("name,sig", [
    ("vllm running", dict(metrics_running={"vllm": 1.0})),
    ("vllm waiting", dict(metrics_waiting={"vllm": 3.0})),
    ("monai label connection", dict(service_connections={"monai_label": 1})),
    ("open webui connection", dict(service_connections={"open_webui": 2})),
    ("ssh tunnel", dict(tunnel_connections=1)),
    ("interactive ssh", dict(ssh_sessions=1)),
    ("gpu busy", dict(gpu_util=87.0)),
    ("request lines in logs", dict(log_requests={"monai_sam2": 4})),
])
def test_each_signal_alone_keeps_the_box_up(agent: ModuleType, name: str, sig: dict) -> None:
    ds = replay(agent, policy(agent), lambda m: agent.Signals(**sig), 180)
    assert first_act(ds) is None, name
    assert all(d.reason == "active" and d.activity for d in ds), name


def test_vllm_counters_that_move_count_and_still_ones_do_not(agent: ModuleType) -> None:
    moving = replay(agent, policy(agent), lambda m: agent.Signals(metrics_total={"vllm": float(m)}), 120)
    assert first_act(moving) is None
    still = replay(agent, policy(agent), lambda m: agent.Signals(metrics_total={"vllm": 42.0}), 120)
    assert first_act(still) == 30


def test_gpu_below_threshold_is_idle(agent: ModuleType) -> None:
    ds = replay(agent, policy(agent), lambda m: agent.Signals(gpu_util=3.0), 60)
    assert first_act(ds) == 30


def test_activity_during_the_grace_period_cancels_the_warning(agent: ModuleType) -> None:
    ds = replay(agent, policy(agent), lambda m: agent.Signals(ssh_sessions=1 if m == 27 else 0), 70)
    assert ds[24].action == "warn" and ds[26].reason == "active"
    assert first_act(ds) == 27 + 30


def test_postpone_holds_the_idle_action_off(agent: ModuleType) -> None:
    until = T0 + 90 * MIN
    ds = replay(agent, policy(agent), lambda m: agent.Signals(postponed_until=until), 150)
    assert first_act(ds) == 90 + 5  # warned again once the postponement ends, acts after the grace
    assert ds[40].reason == "postponed"


def test_lifetime_fires_under_activity(agent: ModuleType) -> None:
    ds = replay(agent, policy(agent, max_lifetime_hours=2.0), lambda m: agent.Signals(metrics_running={"vllm": 2.0},
                                                                                        ssh_sessions=1), 180)
    assert ds[114].action == "warn" and ds[114].reason == "lifetime"
    assert first_act(ds) == 120 and ds[119].reason == "lifetime"
    assert ds[119].activity  # it acted although the box was in use


def test_lifetime_ignores_postpone(agent: ModuleType) -> None:
    ds = replay(agent, policy(agent, max_lifetime_hours=1.0), lambda m: agent.Signals(postponed_until=T0 + 1e6), 70)
    assert first_act(ds) == 60


def test_budget_warns_at_80_percent_and_acts_before_passing_it(agent: ModuleType) -> None:
    # $6/hour = $0.10 a minute; budget $5: 80% at minute 40; minute 50 + one check would pass it.
    ds = replay(agent, policy(agent, usd_hour=6.0, budget_usd=5.0), lambda m: agent.Signals(metrics_running={"vllm": 1.0}), 80)
    assert ds[39].action == "warn" and ds[39].reason == "budget"
    act = first_act(ds)
    assert act == 50 and ds[act - 1].reason == "budget"
    assert ds[act - 1].spend_usd <= 5.0  # acted before the cap was passed, not after


def test_a_failed_check_is_not_an_activity(agent: ModuleType) -> None:
    # All signals unreadable (service down, no nvidia-smi): idle, not "in use".
    ds = replay(agent, policy(agent), lambda m: agent.Signals(), 31)
    assert first_act(ds) == 30
