"""The fault suite's own checks can fail: a planted secret is found, in plain text and inside base64."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from faults.run import CmdlineWatch, Cycle, audit, check_exit

SECRET = "lsk_0123456789abcdef0123456789abcdef"


def test_audit_finds_planted_secrets_and_skips_the_secret_store(tmp_path: Path):
    home = tmp_path / "w0"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "clean.log").write_text("nothing to see\n")
    (home / "logs" / "leaky.log").write_text(f"Authorization: Bearer {SECRET}\n")
    for pad in range(3):  # a secret inside a pickled blob, at every base64 alignment
        blob = base64.b64encode(b"x" * pad + b"{'key': '" + SECRET.encode() + b"'}").decode()
        (home / "mock-state").mkdir(exist_ok=True)
        (home / "mock-state" / f"s{pad}.json").write_text(json.dumps({"provider": blob}))
    (home / "secrets").mkdir()
    (home / "secrets" / "s.json").write_text(json.dumps({"password": SECRET}))  # the 0600 store: its job
    (home / "sandbox" / "box" / "host").mkdir(parents=True)
    (home / "sandbox" / "box" / "host" / "env").write_text(SECRET)  # the remote box's own disk
    (home / "sandbox" / "box" / "sshd.log").write_text(SECRET)  # but its logs are ours to check

    watch = CmdlineWatch(lambda: [SECRET])
    count, found, scanned = audit([home], [SECRET], watch)
    assert count == 5, found
    assert {Path(f.split(":")[0]).name for f in found} == {"leaky.log", "s0.json", "s1.json", "s2.json", "sshd.log"}
    assert scanned == 6


def test_a_failure_without_a_message_is_a_problem():
    quiet = Cycle(1, 0, "api-5xx", "f001")
    check_exit(quiet, 90, "· something happened\n")
    assert quiet.problems == ["exit 90 with no 'error:' line"]
    told = Cycle(2, 0, "no-capacity-anywhere", "f002")
    check_exit(told, 90, "error: up failed: no capacity\n")
    assert told.problems == []
    wrong = Cycle(3, 0, "timeout", "f003")
    check_exit(wrong, 0, "")
    assert wrong.problems and "expected one of [91]" in wrong.problems[0]
