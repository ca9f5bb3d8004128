"""Hostile config values: each is refused naming its key (exit 2 through the command line), or, where
its grammar accepts it, it reaches the host's scripts only as data: the generated scripts split into
the same shell words as with a plain value, the value standing where the plain one stood.

The scripts are everything a deploy sends for a config: the fact probe, every step of a deploy onto a
bare Ubuntu box (install, uploads, source build, pulls, compose), and the Compose ``.env`` files.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuprov.apps.base import Secrets
from gpuprov.infra import grammar
from gpuprov.infra.config import ConfigError, StackConfig, build_config
from gpuprov.provisioning import steps
from gpuprov.provisioning.desired import HostShape, desired_state
from gpuprov.provisioning.facts import HostFacts, probe_script
from gpuprov.provisioning.hostpaths import ROOT
from tests.conftest import run_cli

SECRETS = {"vllm_cxr": Secrets({"vllm_api_key": "sk-test", "webui_secret_key": "webui-secret",
                                "webui_admin_email": "admin@example.org", "webui_admin_password": "pw-test"}),
           "monai_label": Secrets({})}
BASE: dict[str, Any] = {"stack": "hostile", "cloud": "aws", "owner": "alice"}

# A plain value for every string key (and what else the key needs to be read at all).
PLAIN: dict[str, tuple[Any, dict[str, Any]]] = {
    "stack": ("plainstack", {}),
    "cloud": ("aws", {}),
    "region": ("us-east-2", {}),
    "zone": ("us-east-2b", {}),
    "instance_type": ("g5.xlarge", {}),
    "ssh_public_key": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlainKeyPlainKeyPlainKeyPlainKeyPlainKeyPl me@host", {}),
    "ssh_private_key_path": ("/home/me/.ssh/id_plain", {}),
    "allowed_cidrs": ("198.51.100.0/24", {}),
    "ssh_cidrs": ("198.51.100.0/24", {}),
    "egress_cidr": ("198.51.100.7/32", {}),
    "apps": ("monai_label", {}),
    "model_id": ("plainorg/plain-model", {}),
    "served_model_name": ("plain-served-name", {}),
    "vllm_image": ("example.org/plain/vllm:v1", {}),
    "open_webui_image": ("example.org/plain/webui:v1", {}),
    "monai_label_image": ("example.org/plain/monai:v1", {}),
    "monai_label_repo": ("https://example.org/plain/repo", {}),
    "monai_label_ref": ("0123456789abcdef0123456789abcdef01234567", {}),
    "hf_token": ("hf_plainplainplainplain", {}),
    "owner": ("plainowner", {}),
    "host": ("plainuser@plain.example.org", {"cloud": "existing", "ssh_private_key_path": "/k"}),
    "image": ("ami-0123456789abcdef0", {}),
    "image_registry": ("registry.example.org/plain", {}),
    "host_key": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlainKeyPlainKeyPlainKeyPlainKeyPlainKeyPl",
                 {"cloud": "existing", "host": "plainuser@plain.example.org", "ssh_private_key_path": "/k"}),
    "host_key_fingerprint": ("SHA256:PlainPlainPlainPlainPlainPlainPlainPlainPla",
                             {"cloud": "existing", "host": "plainuser@plain.example.org", "ssh_private_key_path": "/k"}),
}
LIST_KEYS = {"allowed_cidrs", "ssh_cidrs", "apps"}


def test_every_string_key_of_the_config_is_tried():
    strings = {k for k, f in StackConfig.model_fields.items()
               if any(t in str(f.annotation) for t in ("str", "Path", "Secret"))}
    assert strings == set(PLAIN), "a new string key needs a plain value here (and a grammar in config.py)"


# --- what the host is sent ------------------------------------------------------------------------

def _scripts(config: StackConfig) -> list[str]:
    """Every script a deploy of ``config`` onto a bare Ubuntu box would send, and its .env files."""
    want = desired_state(config, HostShape(0, False), SECRETS)
    facts = HostFacts(os_id="ubuntu", os_codename="jammy", arch="x86_64")
    probe = probe_script(ROOT, sorted(f.path for f in want.files), want.image_refs)
    batch = steps.batch_script(steps.plan(facts, want))
    envs = [f.content.decode() for f in want.files if f.path.endswith(".env")]
    return [probe, batch, *envs]


_HEREDOC = re.compile(r"<<'GPUPROV_EOF'(?P<rest>[^\n]*)\n.*?^GPUPROV_EOF$", re.S | re.M)


def shell_words(script: str) -> list[list[str]]:
    """The script as the shell splits it: per line, its words and operators (quotes removed). Upload
    bodies (base64 heredocs: data) are left out; their files are checked as .env files."""
    out = []
    for line in _HEREDOC.sub(r"<<DATA\g<rest>", script).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        out.append(list(lexer))
    return out


def env_values(text: str) -> dict[str, str]:
    """A .env file as Compose reads it: KEY=value per line, a value bare (plain characters only) or in
    single quotes (read literally)."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if value.startswith("'"):
            assert value.endswith("'") and "'" not in value[1:-1] and not value.endswith("\\'"), line
            out[key] = value[1:-1]
        else:
            assert re.fullmatch(r"[A-Za-z0-9_./:@+=,%-]*", value), f"{line!r}: Compose would read syntax in it"
            out[key] = value
    return out


def same_meaning(plain: list[str], hostile: list[str], plain_value: str, value: str) -> None:
    """The hostile scripts are the plain ones with the plain value replaced by the hostile one inside
    words: no word, operator or line more or less."""
    for p, h in zip(plain, hostile, strict=True):
        if p.lstrip().startswith("set +e") or "@@gpuprov-step" in p or "GPUPROV_EOF" in p:
            want = [[w.replace(plain_value, value) for w in line] for line in shell_words(p)]
            assert shell_words(h) == want
        else:
            # NAME_CONFIG: a hash of the service's settings (hex), which changes with any of them.
            want_env = {k: v.replace(plain_value, value) for k, v in env_values(p).items() if not k.endswith("_CONFIG")}
            assert {k: v for k, v in env_values(h).items() if not k.endswith("_CONFIG")} == want_env


def _values(key: str, value: Any) -> dict[str, Any]:
    plain, needs = PLAIN[key]
    out = {**BASE, **needs, key: [value] if key in LIST_KEYS else value}
    if key == "cloud" and value == "existing":
        out |= {"host": "u@h", "ssh_private_key_path": "/k"}
    return out


# Text a shell, git, Compose or ssh would read as something else, and what a grammar must not let past.
HOSTILE = ["; id > /tmp/pwned ; echo ", "' ; id ; echo '", '"$(id)"', "`id`", "$(id)", "${HOME}", "\n", "\r",
           "\x00", "\x1b[2J", "\u202e", " ", "\t", "#", "\\", "|", "&", "*", "?", "~", "<", ">", "!", "--upload-pack=id",
           "-oProxyCommand=id", "--", "@", ":", "/../", "%00", "=", "'", '"']


def hostile_for(key: str) -> st.SearchStrategy[str]:
    plain = str(PLAIN[key][0])
    fragment = st.sampled_from(HOSTILE)
    return st.one_of(
        st.text(max_size=40),
        st.builds(lambda f, t: f + t, fragment, st.text(max_size=8)),
        st.builds(lambda f: plain + f, fragment),  # a valid value with something after it
        st.builds(lambda f: f + plain, fragment),  # ... or before it
        st.builds(lambda f, i: plain[:i] + f + plain[i:], fragment, st.integers(0, len(plain))),
    )


@pytest.mark.parametrize("key", sorted(PLAIN))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_hostile_value_is_refused_naming_its_key_or_reaches_the_host_as_one_word(key, data):
    value = data.draw(hostile_for(key))
    try:
        hostile_config = build_config(_values(key, value))
    except ConfigError as err:
        assert err.key == key, (err.key, str(err))
        return
    assert grammar.control_character(value) is None
    if key in ("cloud", "apps"):  # a name from a fixed list: a choice, never text that reaches the host
        assert value in (hostile_config.cloud, *hostile_config.apps)
        return
    plain_value = str(PLAIN[key][0])
    plain_config = build_config(_values(key, plain_value))
    same_meaning(_scripts(plain_config), _scripts(hostile_config), plain_value, value)


# --- the checker finds what the issue found ------------------------------------------------------

def test_the_check_catches_a_value_spliced_into_a_script_unquoted():
    """The issue's exploit, through a probe that forgot shlex.quote: the check must see the extra words."""
    plain, hostile = "179fe0d", "179fe0d' ; id > /tmp/pwned ; echo '"
    spliced = lambda ref: f"set +e\ngit checkout -q --force '{ref}'\n"  # noqa: E731
    with pytest.raises(AssertionError):
        same_meaning([spliced(plain)], [spliced(hostile)], plain, hostile)
    quoted = lambda ref: f"set +e\ngit checkout -q --force {shlex.quote(ref)}\n"  # noqa: E731
    same_meaning([quoted(plain)], [quoted(hostile)], plain, hostile)


def test_the_check_catches_an_env_value_compose_would_interpolate():
    with pytest.raises(AssertionError):
        same_meaning(["MODEL_ID=a/b\n"], ["MODEL_ID=a/b${HOME}\n"], "a/b", "a/b${HOME}")


# --- through the command line, as the user meets it ----------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("monai_label_ref", "179fe0d' ; id > /tmp/pwned ; echo '"),
    ("monai_label_ref", "179fe0d"),  # a short id: a branch or tag could take its name
    ("monai_label_repo", "--upload-pack=touch /tmp/pwned"),
    ("monai_label_repo", "http://github.com/anandpreshob/OHIF-AI"),
    ("vllm_image", "vllm/vllm-openai:v0.11.0\n"),
    ("instance_type", "g5.xlarge\n"),
    ("model_id", "nvidia/NV-Reason-CXR-3B\nVLLM_BIND=0.0.0.0"),
    ("model_id", "${HF_TOKEN}"),
    ("stack", "dev\n"),
    ("owner", "me; rm -rf /"),
])
def test_the_issues_hostile_values_exit_2_naming_the_key(tmp_path, key, value):
    import yaml

    config = tmp_path / "hostile.yaml"
    config.write_text(yaml.safe_dump({"cloud": "aws", key: value}))
    result = run_cli("plan", "--config", str(config), env={"GPUPROV_PULUMI": "mock"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: config key '{key}'"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
