"""Every usage error in the whole ``gpuprov`` command tree, as a user meets it: one line and the usage, exit 2.

Issue #11: with typer 0.29 (which carries its own click) each of these ended in a traceback and exit 1.
The tree is read from the app itself, so a command added later is covered too.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer

from tests.conftest import run_cli


def _tree() -> list[tuple[list[str], Any]]:
    from gpuprov.cli import commands  # noqa: F401  (registers every command)
    from gpuprov.cli.app import app

    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        found.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


def _cases() -> list[tuple[str, list[str]]]:
    """(what, argv) for each usage error of each command. Typer may carry its own click, so parameters
    are told apart by what they are (``param_type_name``), not by the installed click's classes."""
    cases: list[tuple[str, list[str]]] = []
    for path, cmd in _tree():
        name = " ".join(["gpuprov", *path])
        if not cmd.context_settings.get("ignore_unknown_options"):  # `ci` passes them on to its CMD
            cases.append((f"{name}: unknown option", [*path, "--no-such-option"]))
        if getattr(cmd, "commands", None):
            cases.append((f"{name}: unknown command", [*path, "no-such-command"]))
            cases.append((f"{name}: no arguments", path))
            continue
        options = [p for p in cmd.params if p.param_type_name == "option"]
        valued = [p for p in options if not p.is_flag and not p.count and p.nargs == 1]
        if valued:
            cases.append((f"{name}: missing value", [*path, valued[0].opts[0]]))
        if any(p.param_type_name == "argument" and p.required for p in cmd.params):
            cases.append((f"{name}: missing argument", path))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("case", "args"), CASES, ids=[case for case, _ in CASES])
def test_usage_error_is_one_line_and_usage_exit_2(case, args):
    result = run_cli(*args, timeout=60)
    shown = result.stdout + result.stderr
    assert result.returncode == 2, shown
    assert "Traceback" not in shown
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if case.endswith("no arguments"):
        assert "Usage:" in shown and errors == [], shown  # a bare group answers with its help
    else:
        assert "Usage:" in result.stderr, shown
        assert len(errors) == 1 and result.stderr.startswith("error:"), shown


def test_the_tree_is_all_there():
    names = {" ".join(path) for path, _ in _tree()}
    assert {"", "up", "down", "status", "ci", "sandbox", "sandbox lambda-api", "viewer"} <= names
