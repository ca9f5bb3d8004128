"""The phases of an `up` (#16): a backend's note() reaches the running stopwatch only, the phases run in order,
and Docker's layer sizes count to a phase's bytes on the live display."""

from __future__ import annotations

from gpuprov.provisioning.phases import PHASES, Phases, note


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_backend_that_sees_the_launch_accepted_starts_boot_on_the_running_stopwatch() -> None:
    clock = Clock()
    said: list[str] = []
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


def test_docker_layer_sizes_count_to_the_phase_bytes_on_the_display() -> None:
    import io

    from rich.console import Console

    from gpuprov.cli.phase_display import PhaseDisplay, layer_bytes

    # BuildKit's plain progress and a pull on a terminal, as Docker prints them; other lines carry no bytes.
    assert layer_bytes("#5 sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9 10.49MB / 29.54MB 0.3s") \
        == ("0a1b2c3d4e5f", 10_490_000, 29_540_000)
    assert layer_bytes("a3ed95caeb02: Downloading [=====>      ]  1.5kB/3.2kB") == ("a3ed95caeb02", 1500, 3200)
    assert layer_bytes("a3ed95caeb02: Pull complete") is None
    assert layer_bytes("step image:vllm: Status: Downloaded newer image") is None

    screen = io.StringIO()
    phases = Phases()
    with PhaseDisplay(Console(file=screen, force_terminal=True, width=160), phases) as display:
        phases.begin("image_pull")
        display.line("a3ed95caeb02: Downloading [=>   ]  1.0MB/4.0MB")
        display.line("b4fe06dbfc13: Downloading [=>   ]  2.0MB/4.0MB")
        display.line("a3ed95caeb02: Downloading [===> ]  3.0MB/4.0MB")  # the same layer again: replaced, not added
        phases.end()
    assert "5.0 MB/8.0 MB" in screen.getvalue()
