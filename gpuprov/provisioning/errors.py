"""What can go wrong while making a host serve; each message says what to do."""

from __future__ import annotations

from gpuprov.infra.errors import GpuprovError


class ProvisioningError(GpuprovError):
    """A deploy step failed on the host."""

    exit_code = 4


class HostUnreachable(ProvisioningError):
    """SSH did not answer, or refused our key."""


class HostKeyChanged(ProvisioningError):
    """The host presented a different SSH host key than the one pinned for the stack."""

    exit_code = 5

    def __init__(self, stack: str, where: str, known: str, offered: str, known_hosts: str, declared: bool = False):
        if declared:  # the key the host was given at launch (or declared itself), known before any connect
            super().__init__(
                f"the SSH host key of {where} is not the one its target declared (stack '{stack}'): expected "
                f"{known}, offered {offered}. Someone else may answer at that address; gpuprov stopped without "
                "sending anything. Check the host in your cloud's console, or `gpuprov down` and `gpuprov up` again."
            )
            return
        super().__init__(
            f"the SSH host key of {where} changed (stack '{stack}'): pinned {known}, offered {offered}. "
            "This is what a man-in-the-middle looks like; gpuprov stopped without sending anything. "
            f"If the host was really replaced, remove its line from {known_hosts} and run again."
        )


class HostKeyUnknown(ProvisioningError):
    """The host's SSH key is known from nowhere (no declared key or fingerprint, no pin, not in known_hosts):
    gpuprov does not trust it on first use."""

    exit_code = 5

    def __init__(self, stack: str, where: str, kind: str, fingerprint: str):
        super().__init__(
            f"the SSH host key of {where} is not known (stack '{stack}'): it presented {kind} {fingerprint}, and "
            "gpuprov stopped without sending anything. If that is the machine's key (on it: ssh-keygen -lf "
            f"/etc/ssh/ssh_host_ed25519_key.pub), add host_key_fingerprint: \"{fingerprint}\" to the stack config, "
            "or connect once with ssh so that ~/.ssh/known_hosts has it, and run again."
        )


class StepFailed(ProvisioningError):
    """A batch of apply commands exited non-zero."""

    def __init__(self, step: str, code: int, tail: str):
        self.step = step
        super().__init__(f"deploy step '{step}' failed on the host (exit {code}):\n{tail.strip()[-2000:]}")


class ServiceUnhealthy(ProvisioningError):
    """A deployed service did not become healthy in time."""

    def __init__(self, service: str, url: str, detail: str, timeout_s: float):
        self.service = service
        super().__init__(
            f"service '{service}' was not healthy after {timeout_s:.0f}s ({url}: {detail}). "
            f"See its logs: `fab logs --service {service}` or `docker compose logs` on the host."
        )


class SmokeFailed(ProvisioningError):
    """A smoke request got an answer of the wrong shape."""

    def __init__(self, service: str, detail: str):
        self.service = service
        super().__init__(f"smoke test of '{service}' failed: {detail}")
