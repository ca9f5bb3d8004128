"""The stack config model: every bad input names its key, value and what is allowed."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gpuprov.infra.config import (
    CLOUDS,
    ConfigError,
    StackConfig,
    build_config,
    load_config,
    pulumi_config_block,
    render_pulumi_yaml,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("values", "key", "fragment"),
    [
        ({"cloud": "moon"}, "cloud", "lambda, aws, gcp, existing, local, kubernetes, eks or gke"),
        ({"allowed_cidrs": ["10.0.0.0/33"]}, "allowed_cidrs", "203.0.113.7/32"),
        ({"allowed_cidrs": ["10.0.0.1/8"]}, "allowed_cidrs", "host bits"),
        ({"allowed_cidrs": ["0.0.0.0/0"]}, "allowed_cidrs", "allow_public"),
        ({"allowed_cidrs": ["::/0"]}, "allowed_cidrs", "allow_public"),
        ({"allowed_cidrs": ["0.0.0.0/1", "128.0.0.0/1"]}, "allowed_cidrs", "they reach 100.00% of IPv4"),
        ({"allowed_cidrs": ["2000::/3"]}, "allowed_cidrs", "allow_public"),
        ({"allowed_cidrs": ["10.0.0.0/7"]}, "allowed_cidrs", "allow_public"),
        ({"allowed_cidrs": ["10.0.0.0/8", "11.0.0.0/24"]}, "allowed_cidrs", "allow_public"),
        ({"open_ports": [8002]}, "open_ports", "gpuprov tunnel"),
        ({"monai_label_ref": "179fe0d"}, "monai_label_ref", "40-hex"),
        ({"monai_label_ref": "179fe0d' ; id > /tmp/pwned ; echo '"}, "monai_label_ref", "40-hex"),
        ({"monai_label_repo": "--upload-pack=touch /tmp/x"}, "monai_label_repo", "https://"),
        ({"monai_label_repo": "https://user:pw@github.com/x/y"}, "monai_label_repo", "without credentials"),
        ({"monai_label_repo": "file://relative/path"}, "monai_label_repo", "file:///path"),
        ({"monai_label_repo": "ext::sh -c id"}, "monai_label_repo", "https://"),
        ({"vllm_image": "vllm/vllm-openai:v0.11.0\n"}, "vllm_image", "control character"),
        ({"stack": "dev\n"}, "stack", "control character"),
        ({"cloud": "aws", "instance_type": "g5.xlarge\n"}, "instance_type", "control character"),
        ({"model_id": "NV-Reason-CXR-3B"}, "model_id", "owner/name"),
        ({"model_id": "a/b c"}, "model_id", "owner/name"),
        ({"served_model_name": "x${HF_TOKEN}"}, "served_model_name", "letters, digits"),
        ({"hf_token": "hf_x y z secret"}, "hf_token", "(hidden)"),
        ({"owner": "me; id"}, "owner", "user name"),
        ({"cloud": "existing", "host": "u@-oProxyCommand=id", "ssh_private_key_path": "/k"}, "host", "user@address"),
        ({"budget_usd": -5}, "budget_usd", "positive amount"),
        ({"cloud": "aws", "instance_type": "m5.large"}, "instance_type", "g5.xlarge"),
        ({"cloud": "gcp", "instance_type": "gpu_1x_a10"}, "instance_type", "n1-standard-4"),
        ({"cloud": "lambda", "instance_type": "g5.xlarge"}, "instance_type", "gpu_1x_a10"),
        ({"apps": ["vllm_cxr", "comfyui"]}, "apps", "vllm_cxr, monai_label"),
        ({"apps": []}, "apps", "at least one"),
        ({"open_ports": [22]}, "open_ports", "other than 22"),
        ({"open_ports": [70000]}, "open_ports", "1 to 65535"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization", "at most 1"),
        ({"idle_minutes": 0}, "idle_minutes", "1 to 10080"),
        ({"max_lifetime_hours": -1}, "max_lifetime_hours", "greater than 0"),
        ({"cloud": "existing"}, "host", "user@address"),
        ({"cloud": "existing", "host": "spark.lan", "ssh_private_key_path": "/k"}, "host", "user@address[:port]"),
        ({"cloud": "existing", "host": "ubuntu@spark.lan"}, "ssh_private_key_path", "private key"),
        ({"cloud": "lambda", "spot": True}, "spot", "aws and gcp only"),
        ({"ssh_public_key": "not a key"}, "ssh_public_key", "ssh-ed25519"),
        ({"vllm_image": "Bad Image!"}, "vllm_image", "registry/name:tag"),
        ({"colud": "aws"}, "colud", "not a gpuprov setting"),
        ({"cloud": "aws", "image": "ubuntu-22.04"}, "image", "ami-0123456789abcdef0"),
        ({"cloud": "gcp", "image": "ami-0123456789abcdef0"}, "image", "family/NAME"),
        ({"cloud": "local", "image": "family/x"}, "image", "aws and gcp"),
    ],
)
def test_bad_input_names_key_value_and_what_is_allowed(values, key, fragment):
    with pytest.raises(ConfigError) as caught:
        build_config(values)
    err = caught.value
    assert err.key == key
    assert f"config key '{key}'" in str(err)
    assert fragment in str(err)
    assert err.exit_code == 2


def test_defaults_are_safe():
    cfg = build_config({})
    assert cfg.cloud == "local"
    assert cfg.allowed_cidrs == () and cfg.open_ports == () and not cfg.allow_public
    assert cfg.apps == ("vllm_cxr", "monai_label")
    assert cfg.idle_minutes == 30 and cfg.budget_usd is None


def test_cloud_defaults_resolve_from_the_catalog():
    assert build_config({"cloud": "aws"}).resolved_instance_type == "g5.xlarge"
    assert build_config({"cloud": "aws"}).resolved_region == "us-east-1"
    gcp = build_config({"cloud": "gcp", "region": "europe-west4"})
    assert (gcp.resolved_instance_type, gcp.resolved_zone) == ("g2-standard-4", "europe-west4-a")
    assert build_config({"cloud": "lambda"}).resolved_instance_type == "gpu_1x_a10"
    # Lambda adds types often: any name of its scheme is accepted, the API judges it.
    assert build_config({"cloud": "lambda", "instance_type": "gpu_2x_b200_sxm6"}).instance_type


def test_existing_host_is_parsed():
    cfg = build_config({"cloud": "existing", "host": "nvidia@192.0.2.10:2222", "ssh_private_key_path": "/k"})
    assert cfg.existing_host is not None
    assert (cfg.existing_host.user, cfg.existing_host.address, cfg.existing_host.port) == ("nvidia", "192.0.2.10", 2222)


def test_public_range_allowed_only_when_insisted():
    cfg = build_config({"allowed_cidrs": ["0.0.0.0/0"], "allow_public": True})
    assert cfg.allowed_cidrs == ("0.0.0.0/0",)


def test_hf_token_is_secret(monkeypatch):
    cfg = build_config({"hf_token": "hf_abcdefghijklmnopqrstuvwxyz0123456789"})
    assert "hf_abc" not in repr(cfg) and "hf_abc" not in str(cfg.model_dump())
    assert cfg.hf_token_value == "hf_abcdefghijklmnopqrstuvwxyz0123456789"
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert build_config({}).hf_token_value == "from-env"


def test_yaml_file_bare_and_pulumi_style(tmp_path):
    bare = tmp_path / "bare.yaml"
    bare.write_text("cloud: aws\nallowed_cidrs: [198.51.100.0/24]\nbudget_usd: 50\n")
    pulumi_style = tmp_path / "Pulumi.dev.yaml"
    pulumi_style.write_text("config:\n  gpuprov:cloud: aws\n  gpuprov:allowed_cidrs: [198.51.100.0/24]\n"
                            "  gpuprov:budget_usd: 50\n")
    assert load_config(bare) == load_config(pulumi_style)
    # flags override the file
    assert load_config(bare, {"cloud": "gcp"}).cloud == "gcp"


@pytest.mark.parametrize("text", ["cloud: [unclosed", "- just\n- a list\n"])
def test_bad_yaml_file_is_a_config_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="--config"):
        load_config(path)


def test_pulumi_yaml_declares_every_setting():
    assert (REPO / "Pulumi.yaml").read_text() == render_pulumi_yaml(), "run `make pulumi-yaml`"
    doc = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert doc["name"] == "gpuprov"
    assert doc["runtime"]["options"]["virtualenv"] == ".venv"
    assert doc["config"] == pulumi_config_block()
    assert set(doc["config"]) == {f"gpuprov:{k}" for k in StackConfig.model_fields if k != "stack"}
    assert all("description" in v and "type" in v for v in doc["config"].values())


# --- properties -----------------------------------------------------------------------

networks = st.one_of(
    st.ip_addresses(v=4).flatmap(lambda a: st.integers(0, 32).map(lambda p: ipaddress.ip_network(f"{a}/{p}", strict=False))),
    st.ip_addresses(v=6).flatmap(lambda a: st.integers(0, 128).map(lambda p: ipaddress.ip_network(f"{a}/{p}", strict=False))),
)


def _addresses(nets, version: int) -> int:
    """How many addresses of ``version`` the networks reach, counted by merging intervals (the oracle)."""
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version)
    total, end = 0, -1
    for lo, hi in spans:
        if hi > end:
            total += hi - max(lo, end + 1) + 1
            end = hi
    return total


# Half-internet splits and wide prefixes as well as narrow ones, so both outcomes are drawn often.
wide_networks = st.one_of(
    networks,
    st.integers(0, 8).flatmap(lambda p: st.integers(0, 2**p - 1).map(
        lambda i: ipaddress.ip_network((i << (32 - p), p)))),
    st.integers(0, 33).flatmap(lambda p: st.integers(0, 2**p - 1).map(
        lambda i: ipaddress.ip_network((i << (128 - p), p)))),
)


@given(st.lists(wide_networks, max_size=6), st.booleans())
def test_ranges_reaching_more_than_a_slash_8_or_a_slash_32_need_allow_public(nets, allow_public):
    """Judged by addresses: 0.0.0.0/1 + 128.0.0.0/1 is the internet as much as 0.0.0.0/0 is."""
    values = {"allowed_cidrs": [str(n) for n in nets], "allow_public": allow_public}
    public = _addresses(nets, 4) > 2**24 or _addresses(nets, 6) > 2**96
    if public and not allow_public:
        with pytest.raises(ConfigError, match="allow_public"):
            build_config(values)
    else:
        cfg = build_config(values)
        assert {ipaddress.ip_network(c) for c in cfg.allowed_cidrs} == set(nets)


@given(st.text(max_size=12))
def test_any_cloud_name_is_accepted_or_named_in_the_error(name):
    if name in CLOUDS:
        values = {"cloud": name}
        if name == "existing":
            values |= {"host": "u@h", "ssh_private_key_path": "/k"}
        assert build_config(values).cloud == name
    else:
        with pytest.raises(ConfigError) as caught:
            build_config({"cloud": name})
        assert caught.value.key == "cloud"


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**6, 10**6))
def test_budget_is_positive_or_refused(amount):
    if amount == amount and amount > 0 and amount != float("inf"):
        assert build_config({"budget_usd": amount}).budget_usd == amount
    else:
        with pytest.raises(ConfigError) as caught:
            build_config({"budget_usd": amount})
        assert caught.value.key == "budget_usd"


@given(st.integers(-5, 70000))
def test_ports_in_range_other_than_ssh(port):
    values = {"open_ports": [port], "allowed_cidrs": ["203.0.113.7/32"]}
    if 1 <= port <= 65535 and port != 22:
        assert build_config(values).open_ports == (port,)
    else:
        with pytest.raises(ConfigError, match="open_ports"):
            build_config(values)


def test_pulumi_stack_file_with_other_providers_settings(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text("config:\n  aws:region: eu-west-1\n  gcp:project: my-lab\n  gpuprov:cloud: aws\n")
    assert load_config(path).cloud == "aws"  # aws:/gcp: keys belong to their providers, not refused


def test_image_pins_per_cloud():
    assert build_config({"cloud": "aws", "image": "ami-0123456789abcdef0"}).image == "ami-0123456789abcdef0"
    assert build_config({"cloud": "gcp", "image": "family/common-cu128-ubuntu-2204-nvidia-570"}).image
    assert build_config({"cloud": "gcp", "image": "projects/p/global/images/my-image"}).image
