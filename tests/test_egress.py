"""This machine's egress address (gpuprov/infra/egress.py): what an echo answer must be, and what a user sees."""

from __future__ import annotations

import pytest

from gpuprov.infra.config import ConfigError, build_config
from gpuprov.infra.egress import EgressUnknown, detect, needs_egress, parse, resolve
from gpuprov.infra.settings import Settings, SettingsError
from tests.conftest import run_cli


@pytest.mark.parametrize("answer", ["203.0.113.7\n", " 198.51.100.23 ", "8.8.8.8"])
def test_one_public_ipv4_is_its_own_32(answer):
    assert parse(answer, "echo") == f"{answer.strip()}/32"


@pytest.mark.parametrize(("answer", "why"), [
    ("10.0.0.5", "not a public address"), ("192.168.1.2", "not a public address"),
    ("100.64.0.9", "not a public address"), ("127.0.0.1", "not a public address"),
    ("169.254.169.254", "not a public address"), ("224.0.0.1", "not a public address"),
    ("0.0.0.0", "not a public address"), ("2001:db8::1", "IPv6"), ("<html>", "did not answer an IP address"),
    ("203.0.113.7; rm -rf /", "did not answer an IP address"), ("", "did not answer an IP address"),
])
def test_answers_no_cloud_could_see_us_from_are_refused_saying_what_to_do(answer, why):
    with pytest.raises(EgressUnknown, match=why) as caught:
        parse(answer, "echo")
    assert "ssh_cidrs" in str(caught.value) and caught.value.exit_code == 1


def test_no_answer_at_all_is_refused():
    with pytest.raises(EgressUnknown, match="could not tell this machine's public address"):
        detect(Settings(egress_url="http://127.0.0.1:9/"), timeout_s=2)


def test_the_url_setting_is_checked():
    with pytest.raises(SettingsError, match="GPUPROV_EGRESS_URL"):
        Settings.from_env({"GPUPROV_EGRESS_URL": "file:///etc/passwd"})
    assert Settings.from_env({}).egress_url == "https://checkip.amazonaws.com"


def test_only_clouds_without_listed_ranges_detect(egress_address):
    assert needs_egress(build_config({"cloud": "aws"})) and needs_egress(build_config({"cloud": "lambda"}))
    assert not needs_egress(build_config({"cloud": "local"}))
    assert not needs_egress(build_config({"cloud": "gcp", "ssh_cidrs": ["198.51.100.0/24"]}))
    assert not needs_egress(build_config({"cloud": "gcp", "allowed_cidrs": ["198.51.100.0/24"]}))
    cfg = resolve(build_config({"cloud": "gcp"}), Settings.from_env())
    assert (cfg.egress_cidr, cfg.ssh_sources, cfg.ssh_is_egress) == ("203.0.113.7/32", ("203.0.113.7/32",), True)


def test_egress_cidr_is_one_address():
    with pytest.raises(ConfigError, match="one address as a /32"):
        build_config({"cloud": "aws", "egress_cidr": "203.0.113.0/24"})


def test_up_stops_with_exit_1_and_one_line_before_anything_when_detection_fails(tmp_path):
    result = run_cli("up", "--cloud", "aws", "--no-deploy", env={"GPUPROV_EGRESS_URL": "http://127.0.0.1:9/",
                                                                 "GPUPROV_PULUMI": "mock"})
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: could not tell this machine's public address") and "ssh_cidrs" in lines[-1]
    assert "Traceback" not in result.stderr
    assert run_cli("status", "--json").stdout.count('"stack"') == 0  # nothing recorded, nothing made
