"""gpuprov uses the Pulumi backend the user's own Pulumi would use, and gives a passphrase only to its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprov.infra.config import ConfigError, StackConfig, build_config
from gpuprov.infra.settings import Settings, SettingsError
from gpuprov.infra.stacks import BackendError, choose_backend, mock_state_path, pulumi_env


def _login(home: Path, current: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "credentials.json").write_text(json.dumps({"current": current, "accessTokens": {current: "pul-x"}}))
    return home


@pytest.fixture(autouse=True)
def no_user_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)


def test_backend_url_in_the_environment_wins_over_a_login_and_is_not_overridden(tmp_path: Path):
    home = _login(tmp_path / "pulumi", "https://api.pulumi.com")
    settings = Settings.from_env({"PULUMI_BACKEND_URL": "s3://team-state", "PULUMI_HOME": str(home)})
    choice = choose_backend(settings)
    assert (choice.url, choice.source, choice.own) == ("s3://team-state", "PULUMI_BACKEND_URL", False)
    env = pulumi_env(settings)
    assert "PULUMI_BACKEND_URL" not in env and "PULUMI_CONFIG_PASSPHRASE_FILE" not in env  # Pulumi reads the user's


def test_the_logged_in_backend_is_used_without_the_cli(tmp_path: Path):
    home = _login(tmp_path / "pulumi", "gs://team-bucket/pulumi")
    settings = Settings.from_env({"PULUMI_HOME": str(home)})
    choice = choose_backend(settings)
    assert (choice.url, choice.own) == ("gs://team-bucket/pulumi", False)
    assert choice.source == str(home / "credentials.json")
    assert set(pulumi_env(settings)) == {"PULUMI_SKIP_UPDATE_CHECK"}


def test_an_access_token_alone_means_pulumi_cloud(tmp_path: Path):
    settings = Settings.from_env({"PULUMI_HOME": str(tmp_path / "none"), "PULUMI_ACCESS_TOKEN": "pul-x"})
    assert choose_backend(settings).url == "https://api.pulumi.com"
    assert "pul-x" not in repr(settings)  # the token itself is never a setting


def test_neither_gives_gpuprovs_own_file_backend_with_its_passphrase(tmp_path: Path, gpuprov_home: Path):
    settings = Settings.from_env({"PULUMI_HOME": str(tmp_path / "none")})
    choice = choose_backend(settings)
    assert (choice.url, choice.own) == (f"file://{gpuprov_home / 'pulumi-state'}", True)
    env = pulumi_env(settings)
    assert env["PULUMI_BACKEND_URL"] == choice.url
    passphrase = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert passphrase.parent == gpuprov_home and passphrase.stat().st_mode & 0o077 == 0


def test_own_backend_with_another_secrets_provider_gets_no_passphrase(tmp_path: Path):
    settings = Settings.from_env({"PULUMI_HOME": str(tmp_path / "none"),
                                  "GPUPROV_SECRETS_PROVIDER": "awskms://alias/gpuprov?region=us-east-1"})
    assert settings.secrets_provider == "awskms://alias/gpuprov?region=us-east-1"
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in pulumi_env(settings)


def test_an_unknown_secrets_provider_is_a_settings_error():
    with pytest.raises(SettingsError, match="GPUPROV_SECRETS_PROVIDER='vault' is not understood"):
        Settings.from_env({"GPUPROV_SECRETS_PROVIDER": "vault"})


def test_a_broken_credentials_file_is_one_clear_error(tmp_path: Path):
    home = tmp_path / "pulumi"
    home.mkdir()
    (home / "credentials.json").write_text("{not json")
    with pytest.raises(BackendError, match=r"cannot read the Pulumi login in .*credentials.json"):
        choose_backend(Settings.from_env({"PULUMI_HOME": str(home)}))


def test_mock_state_follows_a_shared_file_backend(tmp_path: Path, gpuprov_home: Path):
    shared = tmp_path / "team-state"
    cfg = build_config({"stack": "acme/gpuprov/dev", "cloud": "lambda"})
    on_team = Settings.from_env({"PULUMI_BACKEND_URL": f"file://{shared}"})
    assert mock_state_path(cfg, on_team) == shared / ".gpuprov-mock" / "gpuprov" / "dev.json"
    alone = Settings.from_env({"PULUMI_HOME": str(tmp_path / "none")})
    assert mock_state_path(cfg, alone) == gpuprov_home / "mock-state" / "dev.json"


def test_fully_qualified_stack_names():
    cfg = build_config({"stack": "acme/gpu/dev"})
    assert (cfg.stack, cfg.pulumi_stack, cfg.pulumi_project) == ("dev", "acme/gpu/dev", "gpu")
    plain = StackConfig(stack="dev")
    assert (plain.pulumi_stack, plain.pulumi_project) == ("dev", "gpuprov")
    for bad in ("acme/dev", "acme/gpu/Dev", "/gpu/dev", "acme/gpu/dev/x", "acme/g pu/dev"):
        with pytest.raises(ConfigError, match="config key 'stack'"):
            build_config({"stack": bad})
