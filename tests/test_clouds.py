"""The cloud registry: every registered driver is complete, a broken one is refused loudly, and nothing
outside the registry and the drivers decides by a cloud's name."""

from __future__ import annotations

import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

from gpuprov.infra import clouds
from gpuprov.infra.clouds.base import CloudDriver
from gpuprov.infra.config import ConfigError, build_config
from gpuprov.infra.settings import Settings
from tests.conftest import run_cli

PACKAGE = Path(__file__).resolve().parents[1] / "gpuprov"


def test_every_registered_driver_loads_and_implements_the_interface():
    loaded = clouds.registered()
    assert [cls.name for cls in loaded] == list(clouds.DRIVERS)
    for cls in loaded:
        driver = cls(Settings())
        assert isinstance(driver, CloudDriver) and driver.title


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch):
    """Register a driver from a module made in the test (as a new cloud's folder would be)."""
    def make(source: str, name: str = "moon") -> None:
        module = types.ModuleType("fake_moon_driver")
        exec(textwrap.dedent(source), module.__dict__)  # noqa: S102  (the test's own code)
        monkeypatch.setitem(sys.modules, "fake_moon_driver", module)
        monkeypatch.setitem(clouds.DRIVERS, name, "fake_moon_driver:MoonDriver")
        clouds.driver_class.cache_clear()
    yield make
    clouds.driver_class.cache_clear()


def test_a_half_implemented_driver_is_refused_at_registration(fake_module):
    fake_module("""
        from gpuprov.infra.clouds.base import CloudDriver
        class MoonDriver(CloudDriver):
            name = "moon"
            title = "the Moon"
            def build(self, config): return {}
    """)
    with pytest.raises(clouds.DriverBroken, match="cloud driver 'moon' does not implement exposure, idle_action"):
        clouds.driver_class("moon")


def test_a_driver_registered_under_another_name_is_refused(fake_module):
    fake_module("""
        from gpuprov.infra.clouds.local.driver import LocalDriver
        class MoonDriver(LocalDriver):
            pass
    """)
    with pytest.raises(clouds.DriverBroken, match="calls itself 'local'"):
        clouds.driver_class("moon")


def test_a_driver_that_cannot_be_imported_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(clouds.DRIVERS, "moon", "gpuprov.infra.clouds.moon.driver:MoonDriver")
    clouds.driver_class.cache_clear()
    try:
        with pytest.raises(clouds.DriverBroken, match="cannot be loaded"):
            clouds.driver_class("moon")
    finally:
        clouds.driver_class.cache_clear()


def test_an_unknown_cloud_is_a_config_error_naming_the_registered_ones():
    with pytest.raises(ConfigError, match="expected one of: lambda, aws, gcp, existing, local, kubernetes, eks or gke"):
        build_config({"cloud": "moon"})
    result = run_cli("plan", "--cloud", "moon")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "config key 'cloud': 'moon' is not allowed" in result.stderr


# A comparison that decides something by a cloud's name: `cloud == "aws"`, `x.cloud in ("aws", "gcp")`,
# `"lambda" == config.cloud`. Outside the registry and the drivers there must be none.
_BY_NAME = re.compile(
    r"""\bcloud\b\s*(==|!=|\bnot\s+in\b|\bin\b)\s*[(\[{]?\s*["']"""
    r"""|["'](lambda|aws|gcp|existing|local)["']\s*(==|!=)\s*[\w.]*cloud\b""")


def test_nothing_outside_the_registry_and_the_drivers_branches_on_a_cloud_name():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("infra/clouds/", "testing/")):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _BY_NAME.search(line):
                offenders.append(f"gpuprov/{rel}:{number}: {line.strip()}")
    assert offenders == []
