"""The Pulumi program itself: config read from the stack, outputs exported, run on Pulumi's mock runtime."""

from __future__ import annotations

import json

import pulumi
import pytest

from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import ConfigError, from_pulumi_config
from gpuprov.infra.host import GpuHost
from gpuprov.infra.mock_runtime import EngineMocks, run_program
from gpuprov.infra.settings import Settings
from gpuprov.infra.stacks import MockRuntimeBackend, pulumi_config_values
from tests.conftest import need_sandbox


def _with_config(values: dict[str, str]):
    pulumi.runtime.set_all_config(values)
    return from_pulumi_config


def test_pulumi_config_round_trips_through_the_model():
    from gpuprov.infra.config import build_config

    cfg = build_config({"cloud": "aws", "allowed_cidrs": ["198.51.100.0/24"], "open_ports": [8002], "spot": True,
                        "budget_usd": 25.5, "idle_minutes": 15, "hf_token": "hf_secret_value"})
    values = pulumi_config_values(cfg)
    assert values["gpuprov:hf_token"] == ("hf_secret_value", True)  # set as a Pulumi secret
    assert all(not secret for key, (_v, secret) in values.items() if key != "gpuprov:hf_token")
    result: dict = {}

    def program():
        pulumi.runtime.set_all_config({k: v for k, (v, _s) in values.items()})
        read = from_pulumi_config()
        result["cfg"] = read
        return {}

    run_program(program, EngineMocks(), stack="dev")
    read = result["cfg"]
    assert read.stack == "dev"  # the Pulumi stack name becomes the gpuprov stack
    assert (read.cloud, read.allowed_cidrs, read.open_ports, read.spot) == ("aws", ("198.51.100.0/24",), (8002,), True)
    assert (read.budget_usd, read.idle_minutes, read.hf_token_value) == (25.5, 15, "hf_secret_value")


def test_bad_pulumi_config_names_the_key():
    def program():
        pulumi.runtime.set_all_config({"gpuprov:cloud": "moon"})
        from_pulumi_config()
        return {}

    with pytest.raises(ConfigError, match="config key 'cloud'"):
        run_program(program, EngineMocks(), stack="dev")


def test_existing_program_exports_the_host_and_creates_nothing():
    import gpuprov.infra
    from gpuprov.infra.config import build_config

    cfg = build_config({"cloud": "existing", "host": "nvidia@192.0.2.10", "ssh_private_key_path": "/k"})
    mocks = EngineMocks()
    outputs = run_program(lambda: gpuprov.infra.build(cfg), mocks, stack="dev")
    assert mocks.resources == []
    assert GpuHost.model_validate(outputs["host"]).address == "192.0.2.10"


def test_local_program_on_the_mock_runtime_drives_the_real_dynamic_provider(gpuprov_home):
    """The hybrid: mocks play the engine, the dynamic provider really creates and removes the sandbox."""
    need_sandbox()
    from gpuprov.infra.config import build_config

    cfg = build_config({"cloud": "local", "stack": "hybrid"})
    backend = MockRuntimeBackend(Settings.from_env())
    host = backend.up(cfg)
    box = LocalSandbox("hybrid")
    try:
        assert box.is_running() and host.address == box.host().address  # type: ignore[union-attr]
        state = json.loads((gpuprov_home / "mock-state" / "hybrid.json").read_text())
        assert list(state["resources"]) == ["sandbox"]
        assert backend.up(cfg) == host  # a second up: diff finds no change, nothing recreated
    finally:
        backend.destroy(cfg)
    assert box.leftovers() == []
    assert not (gpuprov_home / "mock-state" / "hybrid.json").exists()
