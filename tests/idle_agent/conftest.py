"""The idle agent is a plain script for the host, not a package: load it by path, as the host runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

AGENT = Path(__file__).resolve().parents[2] / "gpuprov" / "remote" / "idle-agent" / "gpuprov_idle.py"


def load_agent() -> ModuleType:
    if "gpuprov_idle" in sys.modules:
        return sys.modules["gpuprov_idle"]
    spec = importlib.util.spec_from_file_location("gpuprov_idle", AGENT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpuprov_idle"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def agent() -> ModuleType:
    return load_agent()
