"""The phases of an `up` / `deploy` while they run, on a terminal: one rich progress row per phase, with its
elapsed seconds, and bytes where there are any (image layers as Docker reports them in a step's output,
the model server's download as its model directory grows on the host). Off a terminal nothing is drawn:
the plain ``phase NAME: N s`` lines of :mod:`gpuprov.provisioning.phases` are the record (CI logs).

Nothing shown here is a secret: rows carry phase names, sizes and the step output's last line, which the
spinner showed before (the batch never prints a secret: they travel on stdin into 0600 files).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from gpuprov.provisioning.phases import Phases

# Docker's sizes as a pull (on a terminal) or a BuildKit build prints them: `<layer>: ... 12.3MB/45.6MB`,
# `#5 sha256:<digest> 10.49MB / 29.54MB 0.3s`.
LAYER = re.compile(r"^\s*(?:#\d+\s+)?(?:sha256:)?([0-9a-f]{12,64})\b.*?(\d+(?:\.\d+)?)\s*([kKMG]?B)\s*/\s*"
                   r"(\d+(?:\.\d+)?)\s*([kKMG]?B)")
UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
BYTE_PHASES = ("image_pull", "image_build", "model_download", "model_cache_hit")


def layer_bytes(line: str) -> tuple[str, int, int] | None:
    """(layer, bytes done, bytes total) from one line of Docker's output, or None."""
    m = LAYER.match(line)
    if m is None:
        return None
    layer, done, du, total, tu = m.groups()
    return layer[:12], int(float(done) * UNITS[du]), int(float(total) * UNITS[tu])


class PhaseDisplay:
    """Rows of phases on ``console`` (a terminal); ``line`` feeds a step's output, ``poll_bytes`` the model's."""

    def __init__(self, console: Console, phases: Phases):
        self.phases = phases
        self.progress = Progress(SpinnerColumn(finished_text="[green]✓[/green]"),
                                 TextColumn("{task.description:<16}"), BarColumn(bar_width=24),
                                 TextColumn("{task.fields[size]:>18}"),
                                 TimeElapsedColumn(), TextColumn("[dim]{task.fields[detail]}[/dim]"),
                                 console=console, transient=False)
        self.rows: dict[str, TaskID] = {}
        self.layers: dict[str, dict[str, tuple[int, int]]] = {}
        self._poll: Callable[[], int | None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PhaseDisplay:
        self.progress.start()
        for name, seconds in self.phases.seconds.items():  # what ran before the display (`up`'s launch)
            self.on_phase(name, None)
            self.on_phase(name, seconds)
        self.phases.listeners.append(self.on_phase)
        if self.phases.current:
            self.on_phase(self.phases.current, None)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.phases.listeners.remove(self.on_phase)
        self.progress.stop()

    def on_phase(self, name: str, seconds: float | None) -> None:
        if seconds is None:
            if name not in self.rows:
                self.rows[name] = self.progress.add_task(name, total=None, detail="", size="")
            self.progress.start_task(self.rows[name])
            return
        if name in ("model_download", "model_cache_hit"):
            self._measure_model(name)  # what the model directory holds at the end of its phase
        row = self.rows.get(name)
        if row is not None:
            self.progress.update(row, total=1, completed=1, detail=f"{seconds:.1f} s")
            self.progress.stop_task(row)

    def line(self, text: str) -> None:
        """A line of the running step's output: its layer sizes count to the phase's bytes; it shows as detail."""
        name = self.phases.current
        row = self.rows.get(name) if name else None
        if row is None or name is None:
            return
        parsed = layer_bytes(text) if name in BYTE_PHASES else None
        if parsed is not None:
            layer, done, total = parsed
            layers = self.layers.setdefault(name, {})
            layers[layer] = (done, total)
            got, of = sum(d for d, _ in layers.values()), sum(t for _, t in layers.values())
            self.progress.update(row, completed=got, total=of, size=f"{decimal(got)}/{decimal(of)}")
        self.progress.update(row, detail=text.strip()[:60])

    def poll_bytes(self, measure: Callable[[], int | None], every_s: float = 1.0) -> None:
        """While a model phase runs, ``measure`` (the bytes the model directory holds) every ``every_s``."""
        self._poll = measure

        def loop() -> None:
            while not self._stop.wait(every_s):
                current = self.phases.current
                if current in ("model_download", "model_cache_hit"):
                    self._measure_model(current)

        self._thread = threading.Thread(target=loop, name="gpuprov-model-bytes", daemon=True)
        self._thread.start()

    def _measure_model(self, name: str) -> None:
        row = self.rows.get(name)
        if self._poll is None or row is None:
            return
        try:
            held = self._poll()
        except Exception:  # noqa: BLE001 - a display that cannot measure shows no bytes; the deploy goes on
            return
        if held is not None:
            self.progress.update(row, size=decimal(held))
