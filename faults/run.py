"""``make faults``: at least 200 ``gpuprov ci`` cycles with faults at random points; no leak, no secret exposed.

Each cycle is a real ``gpuprov ci`` subprocess (so SIGINT, SIGTERM and SIGKILL are
real signals) on the mock-runtime backend (``GPUPROV_PULUMI=mock``), whose mocks
call the real Lambda dynamic providers against the Lambda API STAND-IN
(:mod:`gpuprov.testing.lambda_api`; Lambda itself cannot be reached here). The
stand-in's instances report the local sandbox host's address, so deploy, health
checks and CMD really run over SSH on a box with its own sshd and Docker engine.
The sandbox is the "GPU box", not the paid resource: each worker keeps one for
all its cycles, and cycles start and end with the stand-in's account empty.

After every cycle: the stand-in must list no instance, SSH key or firewall
ruleset; a non-zero exit must come with an ``error:`` line; the stack's local
state must be gone (after a kill -9: once the re-run or ``gpuprov reap`` ran).
At the end, every log, output and state file is searched for the stand-in's API
key, the fake HF token and every generated password, in plain text and base64,
and every command line seen in ``/proc`` during the run too.

A second operator shares each worker's Lambda account: before the cycles, a colleague
(another home, another owner reference) brings up a 12-hour stack of their own with ``gpuprov
up`` (host, SSH key, firewall rulesets). Every cycle's runs, re-runs and reaps (``--grace-minutes
0`` included) must leave all of it in place; what goes missing is a casualty (the colleague's
stack is then brought up again, so later cycles are judged too).

The last line reads exactly ``cycles: N, leaks: N, secrets exposed: N, second operator's casualties: N``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# fault kind -> weight. Every kind is described in FAULTS.md terms in README ("CI: ephemeral GPUs").
KINDS: dict[str, float] = {
    "clean": 1.5, "command-fails": 1, "api-429": 2, "api-5xx": 2, "no-capacity-anywhere": 1,
    "no-capacity-once": 1, "quota": 1, "slow-boot": 1, "slow-api": 1, "launch-dropped": 1,
    "instance-unhealthy": 1, "ssh-drop": 2, "health-fail": 1, "sigint": 2, "sigterm": 2,
    "sigkill-rerun": 1.5, "sigkill-reap": 1.5, "timeout": 0.5,
}
API_PATHS = ["instance-types", "ssh-keys", "instance-operations/launch", "/instances$", "/instances/",
             "instance-operations/terminate", "firewall-rulesets"]
# What a kind may exit with: CMD's 0/3, infra 90, timeout 91, signals 130/143.
EXPECTED_RC: dict[str, set[int]] = {
    "clean": {0}, "command-fails": {3}, "no-capacity-anywhere": {90}, "health-fail": {90},
    "timeout": {91}, "sigint": {130, 0}, "sigterm": {143, 0}, "instance-unhealthy": {0, 90},
}


SECOND_OPERATOR = "colleague@faults-second-operator"  # GPUPROV_OWNER of the colleague sharing the account


@dataclass
class Colleague:
    """The second operator's stack on a worker's account: what must survive every cycle."""

    stack: str
    instance_ids: set[str]
    ssh_keys: set[str]
    rulesets: set[str]  # ids

    def names(self) -> set[str]:
        return {f"gpuprov-{self.stack}", *self.instance_ids}


@dataclass
class Worker:
    """One sandbox host + one Lambda stand-in + one state root: cycles on a worker run one at a time."""

    index: int
    home: Path
    box: Any  # LocalSandbox
    standin: Any  # LambdaStandIn
    env: dict[str, str]
    configs: dict[str, Path]
    colleague: Colleague | None = None


@dataclass
class Cycle:
    number: int
    worker: int
    kind: str
    stack: str
    detail: str = ""
    rc: int | None = None
    seconds: float = 0.0
    followup_rc: int | None = None
    problems: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    casualties: list[str] = field(default_factory=list)  # the second operator's resources that went missing
    injected: bool = True  # False when the box was not in a state the fault could be injected into


class CmdlineWatch:
    """Samples every process's command line while the suite runs: secrets must never be on one (``ps``)."""

    def __init__(self, needles: Callable[[], list[str]]):
        self.needles = needles
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cmdline-watch")

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            needles = self.needles()
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                for n in needles:
                    if n in cmdline:
                        self.hits.append(f"pid {proc.name}: secret on the command line: {cmdline[:80]}...")

    def start(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- the machinery ----------------------------------------------------------------------------------


def make_worker(index: int, root: Path, api_key: str, hf_token: str) -> Worker:
    home = root / f"w{index}"
    home.mkdir(parents=True)
    os.environ["GPUPROV_HOME"] = str(home)  # LocalSandbox places itself under the state root
    from gpuprov.infra.clouds.local.sandbox import LocalSandbox
    from gpuprov.testing.egress_echo import EgressEcho
    from gpuprov.testing.lambda_api import CLOSED_GLOBAL_RULES, LambdaStandIn

    # The stand-in's instances ARE this box: it lets in each launch's key, as a Lambda host would.
    box = LocalSandbox(f"faultbox{index}", root=home, login_user="ubuntu")
    box.create()
    standin = LambdaStandIn(box=box, boot_seconds=0.2, terminate_seconds=0.1,
                            terminated_linger_seconds=2.0, api_key=api_key).start()
    # An account prepared for gpuprov (README): a new account's global rule opening SSH to the world is removed,
    # else every up stops before launching (the global rules are read first).
    standin.set_global_rules(list(CLOSED_GLOBAL_RULES))
    # The plain config opens SSH to this machine's egress address: asked of the echo stand-in, never the
    # real service (its thread lives as long as this process; the stand-in applies no firewall rule).
    echo = EgressEcho().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "CLOUDSDK_"))}
    env.update({
        "GPUPROV_HOME": str(home), "GPUPROV_PULUMI": "mock", "LAMBDA_API_URL": standin.url,
        "GPUPROV_EGRESS_URL": echo.url,
        "LAMBDA_API_KEY": api_key, "HF_TOKEN": hf_token, "GPUPROV_LAMBDA_RATE_SCALE": "0.01",
        "GPUPROV_VERIFY_POLL_S": "0.05", "GPUPROV_VERIFY_TIMEOUT_S": "30",
        "PYTHONUNBUFFERED": "1",
    })
    configs = {}
    for name, body in (("plain", "cloud: lambda\n"),
                       ("firewall", "cloud: lambda\nallowed_cidrs: [203.0.113.0/24]\n")):
        path = home / f"{name}.yaml"
        path.write_text(body)
        configs[name] = path
    return Worker(index, home, box, standin, env, configs)


def add_colleague(worker: Worker) -> Colleague:
    """The second operator brings up a stack of their own, from their own home, on the worker's account."""
    stack = f"colleague-{worker.index}"
    worker.standin.place_elsewhere(f"gpuprov-{stack}-")  # their host is another machine, not this worker's box
    env = {**worker.env, "GPUPROV_HOME": str(worker.home.parent / f"w{worker.index}-colleague"),
           "GPUPROV_OWNER": SECOND_OPERATOR}
    result = subprocess.run([sys.executable, "-m", "gpuprov", "up", "--no-deploy", "--config",
                             str(worker.configs["firewall"]), "--stack", stack],
                            env=env, capture_output=True, text=True, timeout=600, cwd=worker.home)
    if result.returncode != 0:
        raise RuntimeError(f"the second operator's `gpuprov up` failed: {result.stderr[-500:]}")
    st = worker.standin
    worker.colleague = Colleague(
        stack, {i["id"] for i in st.instances(include_terminated=False) if i["name"].startswith(f"gpuprov-{stack}-")},
        {k["name"] for k in st.ssh_keys() if k["name"] == f"gpuprov-{stack}"},
        {r["id"] for r in st.rulesets() if r["name"] == f"gpuprov-{stack}"})
    return worker.colleague


def colleague_casualties(worker: Worker) -> list[str]:
    """What of the second operator's stack the account no longer lists."""
    c, st = worker.colleague, worker.standin
    if c is None:
        return []
    live = {i["id"] for i in st.instances(include_terminated=False)}
    keys = {k["name"] for k in st.ssh_keys()}
    rulesets = {r["id"] for r in st.rulesets()}
    return ([f"instance {i}" for i in sorted(c.instance_ids - live)] + [f"ssh-key {k}" for k in sorted(c.ssh_keys - keys)]
            + [f"firewall-ruleset {r}" for r in sorted(c.rulesets - rulesets)])


def _docker(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", f"--host=unix://{worker.box.docker_socket}", *args],
                          capture_output=True, text=True, timeout=120)


def drop_ssh_sessions(worker: Worker) -> int:
    """Kill every SSH session the sandbox's sshd is serving (by PID): the connection drops mid-flight."""
    state = worker.box.state()
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == state.sshd_pid:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def perturb_host(worker: Worker) -> None:
    """Change a file deploy manages, so the next deploy has work to do (and can be cut mid-apply)."""
    root = worker.box.dir / "host" / "opt" / "gpuprov"
    files = sorted(p for p in root.rglob("compose.yaml") if p.is_file())
    if files:
        with files[0].open("a") as fh:
            fh.write("\n# perturbed by the fault suite\n")


def repair_box(worker: Worker) -> None:
    """The suite's own upkeep between cycles: a container broken on purpose is removed (deploy recreates it)."""
    _docker(worker, "rm", "-f", "vllm")


def local_state(worker: Worker, stack: str) -> list[str]:
    found = []
    for rel in (f"ci/{stack}.json", f"stacks/{stack}.json", f"mock-state/{stack}.json"):
        if (worker.home / rel).exists():
            found.append(rel)
    return found


def ci_command(worker: Worker, stack: str, config: Path, cmd: str, timeout_min: float = 2.0) -> list[str]:
    return [sys.executable, "-m", "gpuprov", "ci", "--config", str(config), "--stack", stack,
            "--timeout", f"{timeout_min:g}", "--health-timeout", "4", "--summary",
            str(worker.home / "logs" / f"{stack}.summary.json"), "--", "sh", "-c", cmd]


Trigger = tuple[str, Callable[[subprocess.Popen[str]], None]]


def stacks_of(pid: int) -> str:
    """Every thread's Python stack in process ``pid`` (py-spy), for the log of a run that hung."""
    spy = Path(sys.executable).with_name("py-spy")
    try:
        dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"(no stacks: {err})"
    return dump.stdout + dump.stderr


def run_logged(worker: Worker, argv: list[str], log: Path, triggers: list[Trigger],
               timers: list[tuple[float, Callable[[subprocess.Popen[str]], None]]],
               timeout: float = 300) -> tuple[int, str]:
    """Run ``argv``, keep its output in ``log``, fire ``triggers`` on matching stderr lines and ``timers``."""
    proc = subprocess.Popen(argv, env=worker.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    lines: list[str] = []
    pending = list(triggers)

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            for i, (pattern, action) in enumerate(pending):
                if pattern in line:
                    pending.pop(i)
                    action(proc)
                    break

    out_chunks: list[str] = []

    def read_out() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    readers = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
    for r in readers:
        r.start()
    started = [threading.Timer(delay, lambda a=action: proc.poll() is None and a(proc)) for delay, action in timers]
    for t in started:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        lines.append(f"fault suite: still running after {timeout}s; its threads, then kill -9:\n{stacks_of(proc.pid)}\n")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for t in started:
        t.cancel()
    for r in readers:
        r.join(timeout=10)
    out, text = "".join(out_chunks), "".join(lines)
    log.write_text(f"$ {' '.join(argv)}\n--- stdout\n{out}\n--- stderr\n{text}")
    return proc.returncode, text


# --- one cycle ----------------------------------------------------------------------------------------


def run_cycle(worker: Worker, number: int, kind: str, rng: random.Random) -> Cycle:
    stack = f"f{number:03d}"
    cycle = Cycle(number, worker.index, kind, stack)
    st = worker.standin
    logs = worker.home / "logs"
    config = worker.configs["firewall" if rng.random() < 0.5 else "plain"]
    cmd = "echo cycle ok as uid $(id -u)"  # CMD runs as nobody on the host (no Docker, no sudo)
    triggers: list[Trigger] = []
    timers: list[tuple[float, Callable[[subprocess.Popen[str]], None]]] = []
    timeout_min = 2.0
    if kind == "command-fails":
        cmd = "echo failing on purpose; exit 3"
    elif kind in ("api-429", "api-5xx"):
        status = 429 if kind == "api-429" else rng.choice([500, 502, 503])
        path = rng.choice(API_PATHS)
        count = rng.randint(1, 3)
        st.add_fault("status", status=status, path=path, count=count)
        cycle.detail = f"{status} x{count} on {path}"
    elif kind == "no-capacity-anywhere":
        st.add_fault("capacity")
    elif kind == "no-capacity-once":
        st.add_fault("capacity", count=1)
    elif kind == "quota":
        st.add_fault("quota", count=1)
    elif kind == "slow-boot":
        st.boot_seconds = round(rng.uniform(1.0, 3.0), 2)
        cycle.detail = f"boot {st.boot_seconds}s"
    elif kind == "slow-api":
        seconds, count = round(rng.uniform(0.2, 1.5), 2), rng.randint(1, 4)
        st.add_fault("delay", seconds=seconds, count=count, path=rng.choice(API_PATHS))
        cycle.detail = f"{seconds}s x{count}"
    elif kind == "launch-dropped":
        st.add_fault("drop_after_launch", count=1)
    elif kind == "instance-unhealthy":
        st.add_fault("unhealthy", count=1)
    elif kind == "ssh-drop":
        perturb_host(worker)
        point = rng.choice(["checking the host", "applying", "step files", "step compose"])
        def drop(_p: subprocess.Popen[str]) -> None:
            drop_ssh_sessions(worker)

        triggers.append((point, drop))
        cycle.detail = f"at '{point}'"
    elif kind == "health-fail":
        # The service keeps running (deploy sees nothing to fix) but its health route is gone.
        if _docker(worker, "exec", "vllm", "rm", "-f", "/standin/vllm.sh").returncode != 0:
            # vllm was removed by the last repair; this deploy recreates it healthy: nothing injected.
            cycle.injected, cycle.detail = False, "not injected (vllm absent)"
    elif kind in ("sigint", "sigterm"):
        # At a random moment of the run: counted from when gpuprov ci holds its signal handlers (a
        # signal during Python's own start-up, before any of gpuprov's code, simply ends the process).
        delay = round(rng.uniform(0.0, 3.5), 2)
        signum = signal.SIGINT if kind == "sigint" else signal.SIGTERM

        def later(p: subprocess.Popen[str], delay: float = delay, signum: int = signum) -> None:
            def fire() -> None:
                if p.poll() is None:
                    p.send_signal(signum)

            threading.Timer(delay, fire).start()

        triggers.append(("gpuprov ci: stack", later))
        cycle.detail = f"{delay}s into the run"
    elif kind in ("sigkill-rerun", "sigkill-reap"):
        delay = round(rng.uniform(0.3, 5.0), 2)  # anywhere at all, start-up included
        timers.append((delay, lambda p: p.send_signal(signal.SIGKILL)))
        cycle.detail = f"after {delay}s"
    elif kind == "timeout":
        cmd, timeout_min = "sleep 60", 0.1

    started = time.monotonic()
    rc, err = run_logged(worker, ci_command(worker, stack, config, cmd, timeout_min), logs / f"{stack}.log",
                         triggers, timers)
    cycle.rc = rc
    st.clear_faults()
    st.boot_seconds = 0.2

    killed = kind.startswith("sigkill") and rc == -signal.SIGKILL
    if kind.startswith("sigkill") and not killed:
        cycle.detail += " (finished before the kill)"
    if not killed:
        check_exit(cycle, rc, err)
    else:
        # What a kill -9 leaves is removed by the re-run of the same stack, or by the reaper.
        if kind == "sigkill-rerun":
            argv = ci_command(worker, stack, config, "echo rerun ok")
        else:
            argv = [sys.executable, "-m", "gpuprov", "reap", "--cloud", "lambda", "--grace-minutes", "0"]
        cycle.followup_rc, ferr = run_logged(worker, argv, logs / f"{stack}.followup.log", [], [])
        if cycle.followup_rc != 0:
            cycle.problems.append(f"{kind.removeprefix('sigkill-')} after kill -9 exited {cycle.followup_rc}: "
                                  f"{_error_lines(ferr) or ferr[-300:]}")
    cycle.seconds = time.monotonic() - started
    if kind == "health-fail" and cycle.injected:
        repair_box(worker)

    cycle.casualties = colleague_casualties(worker)
    theirs = worker.colleague.names() | worker.colleague.rulesets if worker.colleague else set()
    leftovers = st.leftovers()
    cycle.leaks = [f"{what} {name}" for what, names in leftovers.items() for name in names if name not in theirs]
    if cycle.leaks:
        st.reset()  # the next cycle starts from an empty account (but the colleague's stack); this one is counted
    if cycle.leaks or cycle.casualties:
        add_colleague(worker)
    stale = local_state(worker, stack)
    if stale:
        cycle.problems.append(f"local state left: {', '.join(stale)}")
    return cycle


def _error_lines(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.startswith("error:"))


def check_exit(cycle: Cycle, rc: int, err: str) -> None:
    """Every failure says what failed (an ``error:`` line) and exits non-zero; teardown never fails here."""
    if rc < 0:
        cycle.problems.append(f"died of signal {-rc} instead of exiting")
    elif rc != 0 and not _error_lines(err):
        cycle.problems.append(f"exit {rc} with no 'error:' line")
    if rc == 92:
        cycle.problems.append(f"teardown failed: {_error_lines(err)}")
    expected = EXPECTED_RC.get(cycle.kind) if cycle.injected else None
    if expected is not None and rc not in expected:
        cycle.problems.append(f"exit {rc}, expected one of {sorted(expected)}: {_error_lines(err)[:300]}")


# --- the secrets audit ----------------------------------------------------------------------------------------


def _variants(secret: str) -> list[str]:
    """The secret itself and its base64 forms at every alignment (as it would sit inside a blob)."""
    out = [secret]
    raw = secret.encode()
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw).decode()
        start = (pad * 4 + 2) // 3 + 1  # skip characters that mix in the padding bytes
        end = len(enc) - 4  # and the last group, which mixes in what follows
        if end - start >= 12:
            out.append(enc[start:end])
    return out


def _leaves(data: object, key: str = "") -> list[tuple[str, str]]:
    """(key, value) of every string in a JSON document (the secret store nests them by app)."""
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in _leaves(v, str(k))]
    return [(key, data)] if isinstance(data, str) else []


def generated_secrets(homes: list[Path]) -> list[str]:
    """Every password and key gpuprov generated during the run (from the stacks' 0600 secret stores)."""
    found = []
    for home in homes:
        for path in (home / "secrets").glob("*.json"):
            found += [value for key, value in _leaves(json.loads(path.read_text()))
                      if "email" not in key and len(value) >= 12]
        passphrase = home / "pulumi-passphrase"
        if passphrase.exists():
            found.append(passphrase.read_text().strip())
    return found


class Harvest:
    """Every generated secret seen during the run. A cycle's secrets live only while its stack does (the
    teardown forgets them), so they are gathered while cycles run, and watched for on command lines too."""

    def __init__(self, homes: list[Path], fixed: list[str]):
        self.homes, self.fixed = homes, fixed
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> list[str]:
        try:
            found = generated_secrets(self.homes)
        except (OSError, ValueError):  # a store being written right now: read it at the next poll
            found = []
        with self._lock:
            self.seen.update(found)
            return [*self.fixed, *self.seen]


SECRET_STORES = ("secrets", "pulumi-passphrase")  # the designated 0600 stores: the service secrets, the passphrase


def files_to_audit(homes: list[Path]) -> list[Path]:
    """Logs, outputs and state: everything under the state roots except the designated secret stores
    (:data:`SECRET_STORES`, whose modes :func:`audit` checks) and the sandbox host's own disk (it is the
    remote box); its sshd/dockerd logs are in."""
    out = []
    for home in homes:
        for path in home.rglob("*"):
            rel = path.relative_to(home).parts
            if not path.is_file() or path.is_symlink() or rel[0] in SECRET_STORES:
                continue
            if rel[0] == "sandbox" and not (len(rel) == 3 and path.suffix == ".log"):
                continue
            out.append(path)
    return out


def audit(homes: list[Path], secrets_list: list[str], watch: CmdlineWatch) -> tuple[int, list[str], int]:
    files = files_to_audit(homes)
    needles = [(s, v) for s in secrets_list for v in _variants(s)]
    exposed: list[str] = []
    for path in files:
        try:
            data = path.read_bytes().decode(errors="replace")
        except OSError:
            continue
        for secret, variant in needles:
            if variant in data:
                exposed.append(f"{path}: holds a secret ({secret[:4]}...{'' if variant == secret else ' as base64'})")
    for home in homes:  # the stores themselves must be private
        passphrase = home / "pulumi-passphrase"
        if passphrase.exists() and passphrase.stat().st_mode & 0o077:
            exposed.append(f"{passphrase}: mode {passphrase.stat().st_mode & 0o777:o}, not 0600")
    exposed += sorted(set(watch.hits))
    return len(exposed), exposed, len(files)


# --- the whole suite ---------------------------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=int(os.environ.get("FAULT_CYCLES", "200")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FAULT_SEED") or secrets.randbelow(10**6)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FAULT_WORKERS", "2")))
    parser.add_argument("--keep", action="store_true", help="keep the logs and state directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the fault suite needs root (the local sandbox host: network namespace, sshd, dockerd)")
        return 2
    print(f"fault suite: {args.cycles} cycles, {args.workers} workers, seed {args.seed} "
          f"(re-run with FAULT_SEED={args.seed})", flush=True)
    # SIGTERM (a CI runner giving up) unwinds like Ctrl-C, so the sandboxes and stand-ins are still removed.
    signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix="gpuprov-faults-"))
    api_key = "lsk_" + secrets.token_hex(20)
    hf_token = "hf_" + secrets.token_urlsafe(24)
    workers: list[Worker] = []
    cycles: list[Cycle] = []
    harvest = Harvest([], [api_key, hf_token])
    watch = CmdlineWatch(harvest).start()
    started = time.monotonic()
    try:
        for i in range(args.workers):
            workers.append(make_worker(i, root, api_key, hf_token))
            (workers[-1].home / "logs").mkdir()
            harvest.homes.append(workers[-1].home)
            add_colleague(workers[-1])
        # One clean warm-up cycle a worker: the first deploy builds the stand-in images.
        warm = [run_cycle(w, 900 + w.index, "clean", random.Random(args.seed)) for w in workers]
        for c in warm:
            print(f"warm-up [w{c.worker}] rc={c.rc} {c.seconds:.1f}s {'; '.join(c.problems + c.leaks) or 'ok'}",
                  flush=True)
        kinds, weights = list(KINDS), list(KINDS.values())
        plan = [(n, random.Random(args.seed * 1000 + n)) for n in range(args.cycles)]
        lock = threading.Lock()

        def work(worker: Worker) -> None:
            for n, rng in plan[worker.index::len(workers)]:
                kind = rng.choices(kinds, weights)[0]
                cycle = run_cycle(worker, n, kind, rng)
                with lock:
                    cycles.append(cycle)
                    status = "; ".join(cycle.problems + [f"LEAK {x}" for x in cycle.leaks]
                                       + [f"CASUALTY (second operator) {x}" for x in cycle.casualties]) or "ok"
                    follow = f" then {cycle.followup_rc}" if cycle.followup_rc is not None else ""
                    print(f"cycle {n:3d} [w{worker.index}] {kind:<20} {cycle.detail:<34} rc={cycle.rc}{follow} "
                          f"{cycle.seconds:5.1f}s {status}", flush=True)

        threads = [threading.Thread(target=work, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        watch.stop()
        for w in workers:
            w.standin.stop()
            os.environ["GPUPROV_HOME"] = str(w.home)
            w.box.destroy()
    homes = [w.home for w in workers]
    harvest()  # what is still stored at the end (kill -9'd stacks' stores, the passphrase)
    generated = sorted(harvest.seen)
    exposed_n, exposed, scanned = audit(homes, [api_key, hf_token, *generated], watch)
    leaks = sum(len(c.leaks) for c in cycles)
    casualties = sum(len(c.casualties) for c in cycles)
    problems = [(c, p) for c in cycles for p in c.problems]
    by_kind: dict[str, Counter[int | None]] = defaultdict(Counter)
    for c in cycles:
        by_kind[c.kind][c.rc if c.followup_rc is None else c.followup_rc] += 1
    print("\nexit codes by fault (after a kill -9: the re-run's or reaper's):")
    for kind in sorted(by_kind):
        print(f"  {kind:<22} {dict(sorted(by_kind[kind].items(), key=lambda kv: str(kv[0])))}")
    print(f"secrets audit: {scanned} files and every command line seen; {len(api_key) and 3} kinds of secret "
          f"(Lambda API key, HF token, {len(generated)} generated passwords/keys)")
    for line in exposed:
        print(f"  EXPOSED {line}")
    for c, p in problems:
        print(f"  PROBLEM cycle {c.number} ({c.kind}): {p}")
    for c in {c.number: c for c, _ in problems}.values():  # what each failed run said last (audited above)
        log = workers[c.worker].home / "logs" / f"{c.stack}.log"
        tail = log.read_text(errors="replace").splitlines()[-60:] if log.exists() else ["(no log)"]
        print(f"--- cycle {c.number}: the end of {log.name}\n" + "\n".join(f"    {line}" for line in tail))
    clean = not problems and not leaks and not exposed_n and not casualties
    kept = args.keep or not clean  # a failed run keeps its logs for whoever looks into it
    print(f"{len(cycles)} cycles in {time.monotonic() - started:.0f}s; logs {'in ' + str(root) if kept else 'removed'}")
    if not kept:
        shutil.rmtree(root, ignore_errors=True)
    print(f"cycles: {len(cycles)}, leaks: {leaks}, secrets exposed: {exposed_n}, "
          f"second operator's casualties: {casualties}", flush=True)
    return 0 if clean and len(cycles) >= args.cycles else 1


if __name__ == "__main__":
    sys.exit(main())
