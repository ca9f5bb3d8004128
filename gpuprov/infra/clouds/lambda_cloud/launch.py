"""Launches that cannot leak: failover across offers, lookup-by-name before any retry, cleanup on every exit.

The rules, in the order they matter:
1. Every launch request carries a unique name (``<prefix>-<random>``) chosen before it is sent.
2. After any error or timeout on a launch, the instance is looked up by that name before anything
   else is tried, so a launch the API accepted but never confirmed is adopted, not duplicated.
   If the lookup itself cannot be done, nothing more is launched.
3. Anything launched that cannot be brought to ``active`` is terminated, and its termination
   confirmed, before the error reaches the user; the same on Ctrl-C and SIGTERM.
4. Offers (instance type x region with capacity) are tried cheapest first; the final error lists
   every offer tried and why each failed.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gpuprov.infra.clouds.lambda_cloud.client import Instance, InstanceType, LambdaCloud
from gpuprov.infra.clouds.lambda_cloud.errors import (
    InstanceFailed,
    InsufficientCapacity,
    LambdaApiError,
    LambdaError,
    LambdaUnreachable,
    LaunchFailed,
    ObjectNotFound,
    QuotaExceeded,
    TerminateFailed,
)

Progress = Callable[[str], None]

# Set by the signal handlers of install_cancel_handlers(): a launch running in a worker thread
# (where Python delivers no signals) sees it at its next pause, cleans up and stops.
_CANCEL = threading.Event()


class LaunchCancelled(LambdaError):
    """Ctrl-C or SIGTERM arrived during a launch; what it had launched was terminated."""

    exit_code = 130


_OUR_HANDLERS: set[Any] = set()


def cancel_launches() -> None:
    """Ask every launch running in this process to stop, clean up and raise :class:`LaunchCancelled`."""
    _CANCEL.set()


def install_cancel_handlers() -> None:
    """Make Ctrl-C and SIGTERM cancel launches running in any thread of this process (main thread only).

    The handlers set a flag launches check at every pause, then do what the handler
    they replace did (SIGTERM, by default fatal at once, raises KeyboardInterrupt
    instead, so the process unwinds and waits for the launch's cleanup). Chains onto
    whatever is installed now (e.g. ``gpuprov ci``'s handlers); a no-op when ours already is.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    _CANCEL.clear()  # a new run: a cancel from an earlier one in this process does not carry over
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if previous in _OUR_HANDLERS:
            continue

        def handler(num: int, frame: Any, previous: Any = previous) -> None:
            _CANCEL.set()
            if previous is signal.SIG_IGN:
                return
            if callable(previous):
                previous(num, frame)
                return
            raise KeyboardInterrupt(signal.Signals(num).name)

        _OUR_HANDLERS.add(handler)
        signal.signal(signum, handler)


def _pause(seconds: float) -> None:
    """Sleep, unless a cancel arrives first."""
    if _CANCEL.wait(seconds):
        raise LaunchCancelled("interrupted (Ctrl-C or SIGTERM) during a Lambda launch")


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class Offer:
    """One instance type in one region."""

    instance_type: InstanceType
    region: str

    def __str__(self) -> str:
        return f"{self.instance_type.name} in {self.region} (${self.instance_type.usd_hour:.2f}/h)"


def matching_offers(types: list[InstanceType], *, instance_type: str | None = None, region: str | None = None,
                    min_gpu_memory_gb: int | None = None, regions: list[str] | None = None) -> list[Offer]:
    """Offers with capacity that meet the config, cheapest first.

    ``instance_type`` pins the type; otherwise any single-GPU type with at least
    ``min_gpu_memory_gb`` of GPU memory qualifies. ``region`` pins the region;
    ``regions`` (when given) limits the choice, e.g. to where a firewall ruleset exists.
    """
    found = []
    for t in types:
        if instance_type is not None and t.name != instance_type:
            continue
        if instance_type is None and (t.gpus != 1 or (t.gpu_memory_gb or 0) < (min_gpu_memory_gb or 0)):
            continue
        for r in t.regions_with_capacity:
            if (region is None or r == region) and (regions is None or r in regions):
                found.append(Offer(t, r))
    return sorted(found, key=lambda o: (o.instance_type.price_cents_per_hour, o.instance_type.name, o.region))


def unique_name(prefix: str) -> str:
    """``<prefix>-<8 hex>``: unique per launch attempt, at most 64 characters as Lambda allows."""
    return f"{prefix[:55]}-{secrets.token_hex(4)}"


@dataclass
class LaunchSpec:
    """What every launch attempt of one host sends, and how long to wait."""

    name_prefix: str
    ssh_key_name: str
    tags: dict[str, str] = field(default_factory=dict)
    firewall_ruleset_ids: dict[str, str] = field(default_factory=dict)  # region -> ruleset id
    image_family: str | None = None
    file_system_names: list[str] = field(default_factory=list)  # mounted at launch (same region only)
    user_data: str | None = field(default=None, repr=False)  # cloud-init; carries the host's private key
    tries_per_offer: int = 3  # launches of one offer after transient errors (each after a lookup)
    boot_timeout_s: float = 20 * 60  # 1-GPU boxes take 3-5 min; big ones much longer (dstack #2342)
    poll_s: float = 10.0
    unhealthy_grace_s: float = 120.0
    terminate_timeout_s: float = 10 * 60
    lookup_settle_s: float = 5.0  # a just-accepted launch can take a moment to show in the list
    ambiguous_settle_s: float = 60.0  # after a timeout or dropped connection: look this long before relaunching


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt (main thread only), so cleanup runs for it too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def shielded() -> Iterator[None]:
    """Let a cleanup finish: a second Ctrl-C or SIGTERM while terminating is ignored (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def terminate_and_confirm(api: LambdaCloud, instance_id: str, timeout_s: float = 600.0, poll_s: float = 5.0,
                          progress: Progress = _quiet) -> str:
    """Terminate ``instance_id`` and wait until Lambda reports it ``terminated`` (or forgets it).

    Returns the last status seen. Raises :class:`TerminateFailed` (naming the instance) when
    termination cannot be confirmed: it may still bill, and the user must know.
    """
    scale = api.backoff_scale
    try:
        api.terminate([instance_id])
    except ObjectNotFound:
        pass  # already gone, or terminated and no longer accepted: the status check below decides
    except LambdaError as err:
        raise TerminateFailed(f"could not terminate Lambda instance {instance_id}; it may still bill. "
                              f"Terminate it in the Lambda dashboard or run `gpuprov down` again ({err})") from err
    deadline = time.monotonic() + timeout_s
    status = "terminating"
    while True:
        try:
            status = api.get_instance(instance_id).status
        except ObjectNotFound:
            return "terminated"
        except LambdaError as err:
            raise TerminateFailed(f"could not confirm Lambda instance {instance_id} terminated; it may still "
                                  f"bill. Check the Lambda dashboard ({err})") from err
        if status == "terminated":
            progress(f"instance {instance_id} terminated")
            return status
        if time.monotonic() > deadline:
            raise TerminateFailed(f"Lambda instance {instance_id} is still {status} after {timeout_s:.0f}s; "
                                  "it may still bill. Check the Lambda dashboard and terminate it there")
        time.sleep(poll_s * scale)


def wait_until_active(api: LambdaCloud, instance_id: str, spec: LaunchSpec, progress: Progress = _quiet) -> Instance:
    """Poll until the instance is ``active`` with an IP; raise :class:`InstanceFailed` on a dead end or timeout."""
    from gpuprov.provisioning.phases import note

    note("boot")  # the launch was accepted: from here the machine boots (the `up`'s phases, when in this process)
    scale = api.backoff_scale
    start = time.monotonic()
    unhealthy_since: float | None = None
    last = ""
    while True:
        inst = api.get_instance(instance_id)
        now = time.monotonic()
        if inst.status != last:
            progress(f"instance {inst.name or instance_id} is {inst.status}")
            last = inst.status
        if inst.status == "active" and inst.ip:
            return inst
        if inst.status in ("terminating", "terminated", "preempted"):
            raise InstanceFailed(f"instance {instance_id} ({inst.instance_type} in {inst.region}) became "
                                 f"{inst.status} while booting")
        if inst.status == "unhealthy":
            unhealthy_since = unhealthy_since or now
            if now - unhealthy_since > spec.unhealthy_grace_s * scale:
                raise InstanceFailed(f"instance {instance_id} ({inst.instance_type} in {inst.region}) stayed "
                                     f"unhealthy for {spec.unhealthy_grace_s:.0f}s while booting")
        else:
            unhealthy_since = None
        if now - start > spec.boot_timeout_s * scale:
            raise InstanceFailed(f"instance {instance_id} ({inst.instance_type} in {inst.region}) was still "
                                 f"{inst.status} after {spec.boot_timeout_s / 60:.0f} min")
        _pause(spec.poll_s * scale)


class _Launcher:
    """One host's launch: remembers every name it sent, so an abort can find and remove what they made."""

    def __init__(self, api: LambdaCloud, spec: LaunchSpec, progress: Progress):
        self.api, self.spec, self.progress = api, spec, progress
        self.sent_names: list[str] = []
        self.attempts: list[tuple[str, str]] = []

    def find(self, name: str, settle_s: float) -> Instance | None:
        """The live instance called ``name``; keeps looking for ``settle_s`` (scaled) before saying none."""
        scale = self.api.backoff_scale
        deadline = time.monotonic() + settle_s * scale
        while True:
            found = self.api.find_instance_by_name(name)
            if found is not None or time.monotonic() >= deadline:
                return found
            _pause(min(self.spec.lookup_settle_s * scale, max(deadline - time.monotonic(), 0)))

    def launch_offer(self, offer: Offer) -> str | None:
        """Launch ``offer`` once (retrying transient failures after a lookup); the id, or None to move on."""
        name = unique_name(self.spec.name_prefix)
        ruleset = self.spec.firewall_ruleset_ids.get(offer.region)
        last: LambdaError | None = None
        for _ in range(self.spec.tries_per_offer):
            _pause(0)
            self.sent_names.append(name)
            try:
                return self.api.launch(offer.region, offer.instance_type.name, self.spec.ssh_key_name, name=name,
                                       tags=self.spec.tags, firewall_ruleset_ids=[ruleset] if ruleset else None,
                                       image_family=self.spec.image_family, user_data=self.spec.user_data,
                                       file_system_names=self.spec.file_system_names or None)
            except LambdaError as err:
                last = err
            # No answer at all is ambiguous: the server may still be carrying the launch out, so look
            # for longer than a refused request needs before concluding it never happened.
            settle = self.spec.ambiguous_settle_s if isinstance(last, LambdaUnreachable) else self.spec.lookup_settle_s
            try:
                found = self.find(name, settle)
            except LambdaError as err:
                raise LaunchFailed(f"a launch of {offer} failed ({last}) and gpuprov could not check whether "
                                   f"instance '{name}' was created anyway ({err}); nothing more was launched. "
                                   "Check the Lambda dashboard for that name", self.attempts) from err
            if found is not None:
                self.progress(f"the launch of {name} was accepted after all: using instance {found.id}")
                return found.id
            if isinstance(last, InsufficientCapacity | QuotaExceeded):
                self.attempts.append((str(offer), last.code))
                return None
            if not getattr(last, "retryable", False):
                raise last
            self.progress(f"launch of {offer} failed ({last.code if isinstance(last, LambdaApiError) else last}); "
                          f"no instance named {name} exists, trying again")
        self.attempts.append((str(offer), f"{getattr(last, 'code', type(last).__name__)} on "
                                          f"{self.spec.tries_per_offer} tries"))
        return None

    def cleanup(self, keep: str | None = None) -> list[str]:
        """Terminate every live instance one of our names launched (except ``keep``); their ids."""
        if not self.sent_names:
            return []
        names = set(self.sent_names)
        live = [i for i in self.api.list_instances() if i.name in names and i.status != "terminated" and i.id != keep]
        for inst in live:
            self.progress(f"terminating instance {inst.id} ({inst.name}) launched by this attempt")
            terminate_and_confirm(self.api, inst.id, self.spec.terminate_timeout_s, self.spec.poll_s, self.progress)
        return [i.id for i in live]


def launch_with_failover(api: LambdaCloud, offers: list[Offer], spec: LaunchSpec,
                         progress: Progress = _quiet) -> Instance:
    """Bring up one instance on the first offer that works (cheapest first) and return it ``active``.

    Never leaves an instance behind on failure, Ctrl-C or SIGTERM: whatever this call
    launched is terminated (and confirmed) before the exception leaves.
    """
    if not offers:
        raise LaunchFailed("no Lambda region has capacity for an instance type that meets the config right now; "
                           "try again later, or set instance_type/region to another choice", [])
    launcher = _Launcher(api, spec, progress)
    instance_id: str | None = None
    with sigterm_as_interrupt():
        try:
            for offer in offers:
                progress(f"launching {offer}")
                instance_id = launcher.launch_offer(offer)
                if instance_id is not None:
                    break
            if instance_id is None:
                raise LaunchFailed(f"no Lambda offer could be launched ({len(offers)} tried, cheapest first):",
                                   launcher.attempts)
            try:
                inst = wait_until_active(api, instance_id, spec, progress)
            except InstanceFailed as err:
                with shielded():
                    terminate_and_confirm(api, instance_id, spec.terminate_timeout_s, spec.poll_s, progress)
                raise InstanceFailed(f"{err}; it has been terminated, nothing is billing") from err
            # A launch that timed out on our side may still have been carried out later, under the
            # same name: keep the one that came up, remove any twin.
            with shielded():
                launcher.cleanup(keep=inst.id)
            return inst
        except BaseException as err:
            with shielded():
                removed = launcher.cleanup()
            if isinstance(err, KeyboardInterrupt | LaunchCancelled):
                _CANCEL.clear()  # honoured: the next launch in this process starts afresh
            if isinstance(err, LaunchCancelled) and removed:
                raise LaunchCancelled(f"{err}; terminated what it had launched: {', '.join(removed)}") from None
            raise
