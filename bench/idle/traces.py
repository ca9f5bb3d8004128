"""Five usage traces of a GPU host, in minutes after launch.

A trace is a list of :class:`Span`: either a *state* that holds for a while (an
interactive SSH session, a browser tab open through a tunnel, a GPU kept busy, a
CI job's non-interactive SSH command, a request in flight) or a train of short
*requests* (vLLM chat answers, MONAI Label segmentations) every ``every`` minutes,
each lasting ``lasts`` minutes. ``server_job`` marks the vLLM server running as a
scheduler job, which is how SkyPilot serves a model: the agent does not count it
as activity (a server that runs is not a user), SkyPilot's jobs-and-SSH rule does.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    kind: str  # ssh | tunnel | gpu | job | server_job | vllm_req | monai_req | webui_req
    start: float
    end: float
    every: float = 0.0  # request trains: minutes between requests
    lasts: float = 0.5  # request trains: minutes each request runs


@dataclass(frozen=True)
class Trace:
    name: str
    story: str
    cloud: str
    usd_hour: float
    horizon_min: float  # when somebody would notice by hand (next morning, end of the day)
    spans: list[Span] = field(default_factory=list)


TRACES = [
    Trace("clinical demo", "three demo blocks over a tunnel, 25-minute pauses, then the laptop closes", "lambda",
          0.75, 12 * 60, [
              Span("ssh", 0, 8),
              Span("tunnel", 8, 150),  # the Open WebUI / OHIF tab stays open through the pauses
              Span("vllm_req", 10, 40, every=2, lasts=0.6),
              Span("monai_req", 65, 95, every=3, lasts=0.8),
              Span("vllm_req", 120, 150, every=2, lasts=0.6),
              Span("server_job", 0, 12 * 60),
          ]),
    Trace("ci job", "a CI job: setup, a test run against vLLM, and a teardown that never came", "aws", 1.006,
          8 * 60, [
              Span("job", 0, 50),
              Span("vllm_req", 12, 45, every=0.5, lasts=0.4),
              Span("gpu", 12, 45),
          ]),
    Trace("forgotten overnight", "an hour of work through the tunnel at 18:00, then the box sits until 09:00",
          "lambda", 0.75, 15 * 60, [
              Span("ssh", 0, 5),
              Span("tunnel", 5, 60),
              Span("vllm_req", 6, 58, every=4, lasts=0.7),
              Span("server_job", 0, 15 * 60),
          ]),
    Trace("long inference", "a six-hour batch through vLLM, started over SSH and left to run", "gcp", 0.54,
          12 * 60, [
              Span("ssh", 0, 5),
              Span("job", 5, 365),
              Span("vllm_req", 5, 365, every=1, lasts=1.0),  # always a request in flight
              Span("gpu", 5, 365),
              Span("server_job", 0, 12 * 60),
          ]),
    Trace("tunnel only", "a user reads results in a browser tab over `ssh -L`, asking something every 40 min",
          "aws", 1.006, 10 * 60, [
              Span("tunnel", 2, 242),
              Span("webui_req", 5, 240, every=40, lasts=0.3),
              Span("server_job", 0, 10 * 60),
          ]),
]


def request_times(span: Span) -> list[float]:
    out, t = [], span.start
    while t < span.end:
        out.append(t)
        t += span.every
    return out


def active_at(trace: Trace, t: float) -> list[str]:
    """Ground truth: what a person is doing with the box at minute ``t`` (a server running is not a person)."""
    kinds = []
    for s in trace.spans:
        if s.kind == "server_job":
            continue
        if s.every:
            if any(r <= t < r + s.lasts for r in request_times(s)):
                kinds.append(s.kind)
        elif s.start <= t < s.end:
            kinds.append(s.kind)
    return kinds
