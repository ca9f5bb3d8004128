"""The phases of an `up` (#16): a backend's note() reaches the running stopwatch only, and the health wait
tells a model server's start (download or cache hit) apart from the other services'."""

from __future__ import annotations

from gpuprov.provisioning.phases import PHASES, Phases, note


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_backend_that_sees_the_launch_accepted_starts_boot_on_the_running_stopwatch() -> None:
    clock, said = Clock(), []
    phases = Phases(said.append, clock)
    phases.begin("launch")
    with phases.watching():
        clock.now = 2.0
        note("boot")  # what Lambda's launch says once an instance id came back
        clock.now = 7.0
    phases.end()
    assert phases.to_json() == {"launch": 2.0, "boot": 5.0}
    assert said == ["phase launch: 2.0 s", "phase boot: 5.0 s"]
    note("ssh_ready")  # nothing is watching: a no-op, not an error
    assert phases.current is None


def test_the_phases_are_in_the_order_an_up_runs_them() -> None:
    assert PHASES.index("launch") < PHASES.index("boot") < PHASES.index("ssh_ready") < PHASES.index("bootstrap")
    assert PHASES.index("services_started") < PHASES.index("model_download") < PHASES.index("service_healthy")
    assert "model_cache_hit" in PHASES
