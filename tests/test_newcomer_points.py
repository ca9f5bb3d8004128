"""Smaller points of issue #11, each as a user meets it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_hf_token_in_a_plain_config_file_is_refused_without_echoing_it(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("hf_token: hf_abcdefghijklmnopqrstuvwxyz0123456789\n")
    result = run_cli("plan", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: config key 'hf_token': '(a token, not shown)' is not allowed; secrets are not read from plain "
        f"config files like {config}: remove it there and set HF_TOKEN in the environment")
    assert "hf_abcdef" not in result.stdout + result.stderr


def test_a_bad_tunnel_port_is_a_usage_error():
    result = run_cli("tunnel", "--port", "monai_label=http")
    assert result.returncode == 2
    assert "'monai_label=http': expected SERVICE=PORT, such as monai_label=18002" in result.stderr
    assert "Traceback" not in result.stderr


def test_cost_at_80_columns_shows_whole_instance_types():
    result = run_cli("cost", "--offline", "--cloud", "lambda", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "gpu_1x_a100_sxm4" in result.stdout and "…" not in result.stdout
