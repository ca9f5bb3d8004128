"""Deploy decisions as data (the pyinfra way): given these host facts, these commands would run.

This is how the install paths that need the internet (Docker's and NVIDIA's apt repositories) are
tested: for what they would do on a bare Ubuntu box, a GPU box, a Deep Learning image.
"""

from __future__ import annotations

import subprocess

import pytest

from gpuprov.apps.base import Secrets
from gpuprov.infra.config import VLLM_IMAGE, load_config
from gpuprov.provisioning import steps
from gpuprov.provisioning.desired import HostShape, desired_state
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.facts import MARK, ContainerFact, HostFacts, ImageFact, parse_facts, probe_script
from gpuprov.provisioning.hostpaths import HOST_ROOT

PINNED = "179fe0ddc4e632d872c3d18bf05845cad302b0ee"  # the default monai_label_ref
SECRETS = {"vllm_cxr": Secrets({"vllm_api_key": "sk-test", "webui_secret_key": "webui-secret",
                                "webui_admin_email": "admin@x", "webui_admin_password": "pw-test"}),
           "monai_label": Secrets({})}


def bare_ubuntu(**kw) -> HostFacts:
    return HostFacts(os_id="ubuntu", os_codename="jammy", arch="x86_64", **kw)


def want(gpus: int = 0, sandbox: bool = False, **cfg):
    config = load_config(None, {"stack": "t", "cloud": "aws", **cfg})
    return desired_state(config, HostShape(gpus, sandbox), SECRETS)


def scripts(actions: list[steps.Action]) -> str:
    """The actions' shell, with the host root prefix of every logical path left out."""
    return "\n".join(a.script for a in actions).replace(HOST_ROOT, "")


def test_a_bare_ubuntu_box_gets_docker_from_dockers_repository_and_everything_else():
    actions = steps.plan(bare_ubuntu(), want())
    names = [a.step for a in actions]
    assert names[0] == "docker_engine"
    text = scripts(actions)
    assert "https://download.docker.com/linux/ubuntu jammy stable" in text
    assert "/etc/apt/keyrings/docker.asc" in text
    for package in ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"):
        assert package in text
    assert "remove" in text and "docker.io" in text  # conflicting packages go first
    assert "nvidia" not in text  # no GPU reported: no toolkit, no GPU override
    assert "compose.gpu.yaml" not in text
    assert {f"image:{VLLM_IMAGE}", "vllm", "open_webui", "monai_label"} <= {
        c for a in actions for c in a.changed}


def test_a_box_with_docker_and_compose_skips_the_engine():
    facts = bare_ubuntu(docker="27.3.1", compose="2.29.7")
    assert steps.docker_engine(facts) is None
    only_plugin = steps.docker_engine(bare_ubuntu(docker="24.0.7"))
    assert only_plugin is not None and "docker-compose-plugin" in only_plugin.script and "docker-ce " not in only_plugin.script


def test_a_gpu_box_without_the_toolkit_gets_it_and_proves_the_gpu_in_a_container():
    facts = bare_ubuntu(docker="27.3.1", compose="2.29.7", gpus=1)
    actions = steps.plan(facts, want(gpus=1))
    names = [a.step for a in actions]
    assert names.index("nvidia_toolkit") < names.index("gpu_check") < names.index("files:vllm_cxr")
    text = scripts(actions)
    assert "apt-get install -y -qq nvidia-container-toolkit" in text.replace("$SUDO ", "")
    assert "nvidia-ctk runtime configure --runtime=docker" in text
    assert "nvidia-docker2" not in text  # deprecated; never installed
    assert "--gpus all" in text and "nvidia-smi" in text
    assert "-f compose.gpu.yaml" in text  # GPU reservations only on a GPU host


def test_a_deep_learning_image_with_everything_is_left_alone():
    facts = bare_ubuntu(docker="27.3.1", compose="2.29.7", gpus=1, nvidia_toolkit=True,
                        docker_runtimes=["io.containerd.runc.v2", "nvidia", "runc"], markers={"gpu-verified"})
    assert [a.step for a in steps.plan(facts, want(gpus=1)) if a.step in ("docker_engine", "nvidia_toolkit", "gpu_check")] == []
    # toolkit there but Docker not configured for it: only the runtime configure
    facts.docker_runtimes = ["runc"]
    toolkit = steps.nvidia_toolkit(facts)
    assert toolkit is not None and "apt-get" not in toolkit.script and "nvidia-ctk runtime configure" in toolkit.script


def test_cloud_init_and_apt_locks_are_waited_for_not_failed_on():
    facts = bare_ubuntu(cloud_init="running", apt_lock="held")
    names = [a.step for a in steps.plan(facts, want())]
    assert names[:3] == ["wait_cloud_init", "wait_apt_locks", "docker_engine"]
    assert "cloud-init status --wait" in steps.plan(facts, want())[0].script
    # nothing to install: a held lock is not our business
    ready = bare_ubuntu(docker="27", compose="2", apt_lock="held")
    assert "wait_apt_locks" not in [a.step for a in steps.plan(ready, want())]


def test_an_unsupported_os_without_docker_stops_with_what_to_do():
    with pytest.raises(ProvisioningError, match="Ubuntu or Debian"):
        steps.plan(HostFacts(os_id="rocky"), want())


def test_monai_label_is_built_on_the_host_from_the_pinned_commit_or_pulled_when_named():
    text = scripts(steps.plan(bare_ubuntu(docker="27", compose="2"), want()))
    assert "git clone -q -- https://github.com/anandpreshob/OHIF-AI" in text  # "--": never read as an option
    assert "checkout -q --force 179fe0ddc4e632d872c3d18bf05845cad302b0ee" in text
    assert "-t gpuprov/ohif-ai-monai-label:179fe0ddc4e632d872c3d18bf05845cad302b0ee" in text
    named = scripts(steps.plan(bare_ubuntu(docker="27", compose="2"), want(monai_label_image="registry.example/me/monai:1")))
    assert "git clone" not in named and "docker pull registry.example/me/monai:1" in named


def test_services_listen_on_loopback_unless_their_port_is_opened():
    files = {f.path.rsplit("/", 2)[-2] + "/" + f.path.rsplit("/", 1)[-1]: f.content.decode()
             for f in want().files if f.path.endswith(".env")}
    assert "VLLM_BIND=127.0.0.1" in files["vllm_cxr/.env"] and "OPEN_WEBUI_BIND=127.0.0.1" in files["vllm_cxr/.env"]
    assert "MONAI_LABEL_BIND=127.0.0.1" in files["monai_label/.env"]
    opened = {f.path: f.content.decode() for f in want(open_ports=[8002], allowed_cidrs=["203.0.113.7/32"]).files}
    assert "MONAI_LABEL_BIND=0.0.0.0" in opened["/opt/gpuprov/monai_label/.env"]
    assert "VLLM_BIND=127.0.0.1" in opened["/opt/gpuprov/vllm_cxr/.env"]


def test_secrets_go_only_into_root_only_env_files():
    files = {f.path: f for f in want(hf_token="hf_secret_value").files}
    for path, f in files.items():
        text = f.content.decode(errors="replace")
        if any(s in text for s in ("sk-test", "pw-test", "webui-secret", "hf_secret_value")):
            assert path.endswith(("secrets.env", "webui.env")) and f.mode == 0o600, path
    assert "HF_TOKEN=hf_secret_value" in files["/opt/gpuprov/vllm_cxr/secrets.env"].content.decode()


def test_a_changed_image_tag_restarts_only_that_service():
    before, after = want(), want(vllm_image="vllm/vllm-openai:v0.11.1")
    running = [ContainerFact(p.name, s, "running", h, "") for p in before.projects for s, h in p.services.items()]
    facts = bare_ubuntu(docker="27", compose="2", containers=running,
                        files={f.path: f.sha256 for f in before.files},
                        images={r: ImageFact(True, "sha256:x", "") for r in before.image_refs})
    facts.images[f"gpuprov/ohif-ai-monai-label:{PINNED}"].label = f"https://github.com/anandpreshob/OHIF-AI@{PINNED}"
    assert steps.plan(facts, before) == []  # nothing differs: nothing runs
    changed = [c for a in steps.plan(facts, after) for c in a.changed]
    assert changed == ["files:vllm_cxr", "image:vllm/vllm-openai:v0.11.1", "vllm"]


def test_facts_come_back_from_one_script_in_sections():
    text = "\n".join([
        f"{MARK}os", "ubuntu noble aarch64", f"{MARK}cloud_init", "done", f"{MARK}apt_lock", "free",
        f"{MARK}docker", "27.3.1", f"{MARK}compose", "2.29.7", f"{MARK}gpus", "1", f"{MARK}nvidia_toolkit", "installed",
        f"{MARK}docker_runtimes", '{"nvidia":{},"runc":{}}', f"{MARK}files", "abc  /opt/gpuprov/x",
        f"{MARK}images", "vllm/vllm-openai:v0.11.0 sha256:1 <no value>", "ghcr.io/x:1 missing",
        f"{MARK}containers", "gpuprov-vllm-cxr|vllm|running|h1|vllm/vllm-openai:v0.11.0",
        f"{MARK}markers", "gpu-verified", f"{MARK}end",
    ])
    facts = parse_facts(text)
    assert (facts.os_id, facts.os_codename, facts.arch, facts.gpus) == ("ubuntu", "noble", "aarch64", 1)
    assert facts.docker_runtimes == ["nvidia", "runc"] and facts.files == {"/opt/gpuprov/x": "abc"}
    assert facts.images["vllm/vllm-openai:v0.11.0"] == ImageFact(True, "sha256:1", "")
    assert not facts.images["ghcr.io/x:1"].present
    assert facts.containers == [ContainerFact("gpuprov-vllm-cxr", "vllm", "running", "h1", "vllm/vllm-openai:v0.11.0")]
    with pytest.raises(ValueError):
        parse_facts(text.replace(f"{MARK}end", ""))


def test_the_probe_script_runs_in_a_real_shell_on_a_machine_without_docker(tmp_path):
    (tmp_path / "f").write_text("x")
    out = subprocess.run(["sh", "-s"], input=probe_script(str(tmp_path), [str(tmp_path / "f"), "/nope"], []),
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=True).stdout
    facts = parse_facts(out)
    assert facts.docker is None and facts.gpus == 0 and list(facts.files) == [str(tmp_path / "f")]


def test_a_failing_step_stops_the_batch_and_is_named():
    batch = steps.batch_script([
        steps.Action("first", "echo one"),
        steps.Action("broken", "false\necho after-false"),
        steps.Action("never", "echo never"),
    ])
    result = subprocess.run(["sh", "-s"], input=batch, capture_output=True, text=True)
    assert result.returncode == 1
    assert "one" in result.stdout and "@@gpuprov-failed broken" in result.stdout
    assert "after-false" not in result.stdout and "never" not in result.stdout


def test_a_new_sam3_checkpoint_rebuilds_monai_label_and_recreates_only_it():
    before = want()
    running = [ContainerFact(p.name, s, "running", h, "") for p in before.projects for s, h in p.services.items()]
    facts = bare_ubuntu(docker="27", compose="2", containers=running, files={f.path: f.sha256 for f in before.files},
                        images={r: ImageFact(True, "sha256:x", "") for r in before.image_refs})
    [build] = before.builds
    facts.images[build.image].label = build.label
    assert steps.plan(facts, before) == []
    with_sam3 = want()
    with_sam3.builds[0].inputs["sam3.pt"] = "ab" * 32  # uploaded to /opt/gpuprov/uploads/sam3.pt
    actions = steps.plan(facts, with_sam3)
    text = scripts(actions)
    assert "/opt/gpuprov/uploads/sam3.pt /opt/gpuprov/src/ohif-ai/monai-label/checkpoints/sam3.pt" in text
    assert f"gpuprov.label=https://github.com/anandpreshob/OHIF-AI@179fe0ddc4e632d872c3d18bf05845cad302b0ee+sam3:{'ab' * 8} " in text
    assert [c for a in actions for c in a.changed] == ["image:gpuprov/ohif-ai-monai-label:179fe0ddc4e632d872c3d18bf05845cad302b0ee", "monai_label"]
    assert "--force-recreate" in actions[-1].script  # same tag, new image: the container must be recreated


def test_env_values_compose_would_read_as_syntax_are_single_quoted():
    """Compose's .env parser (compose-go dotenv) cuts a bare value at '#' and expands '$': such values
    are written in single quotes, which it takes literally; plain ones stay bare."""
    files = {f.path: f.content.decode() for f in want().files}
    assert "WEBUI_ADMIN_NAME='gpuprov admin'\n" in files["/opt/gpuprov/vllm_cxr/webui.env"]
    assert "MODEL_ID=nvidia/NV-Reason-CXR-3B\n" in files["/opt/gpuprov/vllm_cxr/.env"]
