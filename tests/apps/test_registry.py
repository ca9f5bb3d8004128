"""The app registry as a user meets it: broken app folders stop gpuprov with one line and exit 2;
a good one from GPUPROV_APP_PATH is known everywhere an app name is; the old `stacks:` key still works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprov.apps import load_apps, registry
from gpuprov.apps.base import AppError
from tests.apps.hello_app import write_app
from tests.conftest import run_cli


def one_line_error(result, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def apps_cli(*folders: Path, args: tuple[str, ...] = ("apps", "--json")):  # type: ignore[no-untyped-def]
    return run_cli(*args, env={"GPUPROV_APP_PATH": ":".join(str(f) for f in folders), "COLUMNS": "400"})


def test_the_built_in_apps_declare_their_services_and_ports() -> None:
    reg = registry()
    assert reg.names[:2] == ("vllm_cxr", "monai_label")
    assert reg.ports(("vllm_cxr", "monai_label")) == {"vllm": 8000, "open_webui": 3000, "monai_label": 8002}
    listed = json.loads(run_cli("apps", "--json").stdout)["apps"]
    assert [a["app"] for a in listed] == ["vllm_cxr", "monai_label"] and all(a["builtin"] for a in listed)
    assert listed[1]["build_inputs"][0]["name"] == "sam3.pt"


def test_an_app_from_the_app_path_is_listed_and_planned(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "hello_app")
    listed = json.loads(apps_cli(folder).stdout)["apps"]
    assert listed[-1]["app"] == "hello_app" and not listed[-1]["builtin"]
    assert listed[-1]["services"] == [{"service": "hello", "port": 8090, "container": "gpuprov-hello"}]
    config = tmp_path / "stack.yaml"
    config.write_text("cloud: local\napps: [hello_app]\n")
    planned = apps_cli(folder, args=("plan", "--json", "--config", str(config)))
    assert planned.returncode == 0, planned.stderr
    exposure = {e["port"]: e["service"] for e in json.loads(planned.stdout)["exposure"]}
    assert exposure == {22: "ssh", 8090: "hello"}  # only what this stack deploys


def test_a_missing_compose_file_is_refused(tmp_path: Path) -> None:
    one_line_error(apps_cli(write_app(tmp_path / "hello_app", compose=False)), "hello_app", "compose.yaml is missing")


def test_a_port_another_app_serves_on_is_refused(tmp_path: Path) -> None:
    one_line_error(apps_cli(write_app(tmp_path / "hello_app", port=8000)), "port 8000", "vllm_cxr", "hello_app")


def test_a_service_name_or_container_another_app_uses_is_refused(tmp_path: Path) -> None:
    one_line_error(apps_cli(write_app(tmp_path / "a_app", service="vllm", container="other")),
                   "service 'vllm'", "vllm_cxr", "a_app")
    one_line_error(apps_cli(write_app(tmp_path / "b_app", container="monai_sam2")),
                   "container 'monai_sam2'", "monai_label", "b_app")


def test_a_missing_standin_and_a_wrong_name_are_refused(tmp_path: Path) -> None:
    one_line_error(apps_cli(write_app(tmp_path / "hello_app", standin=False)), "standin/hello.sh is missing")
    one_line_error(apps_cli(write_app(tmp_path / "other_app", name="hello")), "must be its folder's name")


def test_an_app_py_that_fails_to_import_is_named(tmp_path: Path) -> None:
    folder = write_app(tmp_path / "hello_app")
    (folder / "app.py").write_text("import no_such_module_anywhere\n")
    one_line_error(apps_cli(folder), str(folder / "app.py"), "failed to load", "no_such_module_anywhere")
    one_line_error(apps_cli(tmp_path / "nowhere"), "does not exist", "GPUPROV_APP_PATH")


def test_an_unknown_app_in_the_config_names_the_key_and_the_known_apps(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text("apps: [vllm_cxr, comfyui]\n")
    one_line_error(run_cli("plan", "--config", str(config)), "config key 'apps'", "comfyui",
                   "vllm_cxr, monai_label", "GPUPROV_APP_PATH")


def test_the_old_key_stacks_is_still_read_with_a_one_line_notice(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text("cloud: local\nstacks: [monai_label]\n")
    result = run_cli("plan", "--json", "--config", str(config), env={"COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "stacks" in line]
    assert len(notices) == 1 and "'apps'" in notices[0] and "Traceback" not in result.stderr, result.stderr
    assert [e["port"] for e in json.loads(result.stdout)["exposure"]] == [22, 8002]
    both = tmp_path / "both.yaml"
    both.write_text("stacks: [monai_label]\napps: [monai_label]\n")
    one_line_error(run_cli("plan", "--config", str(both)), "config key 'stacks'", "keep only 'apps'")


def test_the_registry_loads_folders_by_path_the_same_way(tmp_path: Path) -> None:
    reg = load_apps([write_app(tmp_path / "hello_app")])
    assert reg.app("hello_app").project == "gpuprov-hello-app"
    with pytest.raises(AppError, match="known services: vllm, open_webui, monai_label, hello"):
        reg.service("nope")


def test_a_pulumi_stack_with_the_old_key_still_reads(recwarn: pytest.WarningsRecorder) -> None:
    import pulumi

    from gpuprov.infra.config import from_pulumi_config
    from gpuprov.infra.mock_runtime import EngineMocks, run_program

    result: dict = {}

    def program() -> dict:
        pulumi.runtime.set_all_config({"gpuprov:stacks": '["monai_label"]'})
        result["cfg"] = from_pulumi_config()
        return {}

    run_program(program, EngineMocks(), stack="dev")
    assert result["cfg"].apps == ("monai_label",)
    assert [str(w.message) for w in recwarn if issubclass(w.category, FutureWarning)] == [
        "config key 'stacks' is now 'apps'; rename it (the old name is still read, for now)"]
