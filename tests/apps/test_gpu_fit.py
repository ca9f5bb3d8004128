"""Serving sized for the GPU it lands on: settings per GPU, the GPU memory budget, and refusals
before anything is created, as `gpuprov plan` / `up` show them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuprov.apps.base import GpuTarget
from gpuprov.apps.fit import fit, planned
from gpuprov.cost.catalog import offers
from gpuprov.infra.config import load_config
from gpuprov.infra.gpus import lookup
from gpuprov.provisioning.facts import HostFacts, gpu_spec
from tests.conftest import run_cli


def _config_file(tmp_path: Path, **values) -> str:
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("cloud", ["aws", "lambda"])
def test_plan_shows_vllm_settings_and_the_gpu_memory_budget_for_the_default_type(cloud):
    r = run_cli("plan", "--cloud", cloud, "--json")
    assert r.returncode == 0, r.stderr
    serving = json.loads(r.stdout)["serving"]
    assert serving["gpu"]["name"] in ("A10G", "A10")
    vllm = serving["settings"]["vllm_cxr"]
    assert vllm["VLLM_DTYPE"] == "bfloat16"
    assert vllm["MAX_MODEL_LEN"] == "8192"
    assert json.loads(vllm["LIMIT_MM_PER_PROMPT"]) == {"image": 1, "video": 0}
    assert json.loads(vllm["MM_PROCESSOR_KWARGS"])["max_pixels"] == 1280 * 28 * 28
    services = {row["service"]: row["gib"] for row in serving["budget"]}
    assert set(services) == {"vllm", "monai_label"}
    assert serving["total_gib"] <= serving["gpu"]["memory_gib"]
    # vLLM's share is what the card leaves it beside MONAI Label, not a fixed 0.5
    share = float(vllm["GPU_MEMORY_UTILIZATION"])
    assert share * serving["gpu"]["memory_gib"] == pytest.approx(services["vllm"], abs=0.1)
    assert share < 0.5

    text = run_cli("plan", "--cloud", cloud)
    assert text.returncode == 0, text.stderr
    assert "vllm_cxr: vllm_dtype=bfloat16, max_model_len=8192" in text.stdout
    assert "GiB  total" in text.stdout and "headroom" in text.stdout


def test_the_default_gcp_type_runs_and_the_t4_stops_before_anything_is_created(tmp_path):
    default = run_cli("plan", "--cloud", "gcp", "--json")
    assert default.returncode == 0, default.stderr
    serving = json.loads(default.stdout)["serving"]
    assert (serving["gpu"]["name"], serving["problems"]) == ("L4", [])

    t4 = _config_file(tmp_path, cloud="gcp", instance_type="n1-standard-4")
    r = run_cli("plan", "--config", t4)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: gcp n1-standard-4 (T4) cannot serve this stack: vLLM cannot serve")
    assert "vllm-project/vllm#29743" in line and "g2-standard-4 (L4" in line
    assert "Traceback" not in r.stderr
    assert "vllm_dtype=half" in r.stdout  # the plan itself is still shown: what it would have run with

    up = run_cli("up", "--config", t4)  # stops before anything is created or any credential is asked for
    assert up.returncode == 2 and "cannot serve this stack" in up.stderr
    assert not (Path(tmp_path) / "gpuprov-home" / "mock-state").exists()

    only_label = run_cli("plan", "--config", _config_file(tmp_path, cloud="gcp", instance_type="n1-standard-4",
                                                          apps=["monai_label"]), "--json")
    assert only_label.returncode == 0, only_label.stderr
    assert json.loads(only_label.stdout)["serving"]["problems"] == []


def test_sam3_on_a_24_gib_card_does_not_fit_and_the_numbers_say_so():
    cfg = load_config(None, {"cloud": "aws"})
    a10 = lookup("NVIDIA A10G")
    without = fit(cfg, GpuTarget(a10, "x86_64"))
    assert without.problems == []
    with_sam3 = fit(cfg, GpuTarget(a10, "x86_64", inputs=frozenset({"sam3.pt"})))
    assert with_sam3.problems and "vLLM needs" in with_sam3.problems[0]
    assert "lower max_model_len, deploy one app only, or pick a type with more GPU memory" in with_sam3.problems[0]


def test_an_arm64_host_gets_no_amd64_only_vllm_image_and_is_told_the_one_to_use():
    cfg = load_config(None, {"cloud": "local"})  # a DGX Spark as `existing`: sized from what it reports
    spark = lookup("NVIDIA GB10")
    result = fit(cfg, GpuTarget(spark, "aarch64"))
    assert any("no arm64 build" in p and "nvcr.io/nvidia/vllm:<yy.mm>-py3" in p for p in result.problems)
    assert any("Blackwell" in p and "monai_label_image" in p for p in result.problems)
    fixed = cfg.model_copy(update={"vllm_image": "nvcr.io/nvidia/vllm:25.09-py3",
                                   "monai_label_image": "registry.example/ohif-ai-monai-label:cu128"})
    assert fit(fixed, GpuTarget(spark, "aarch64")).problems == []


@pytest.mark.parametrize(("image", "driver", "refused"), [
    (None, "575.57.08", True),  # the pinned CUDA 13 build on a CUDA 12.9 driver
    (None, "580.65.06", False),
    (None, None, False),  # not known yet (plan): judged at deploy
    ("vllm/vllm-openai:v0.30.0-cu129", "575.57.08", False),
    ("vllm/vllm-openai:v0.11.0", "535.183.01", False),  # an older tag is not judged
    ("nvcr.io/nvidia/vllm:25.09-py3", "535.183.01", False),
])
def test_a_cuda_13_vllm_image_needs_driver_580_and_the_refusal_names_the_cu129_build(image, driver, refused):
    cfg = load_config(None, {"cloud": "local", **({"vllm_image": image} if image else {})})
    problems = fit(cfg, GpuTarget(lookup("A10"), "x86_64", driver=driver)).problems
    assert any("CUDA 13" in p for p in problems) == refused, problems
    if refused:
        assert "vllm/vllm-openai:v0.30.0-cu129" in problems[0] and driver in problems[0]


def test_lambda_gh200_is_an_arm64_host_and_plan_says_so_before_launch(tmp_path):
    r = run_cli("plan", "--config", _config_file(tmp_path, cloud="lambda", instance_type="gpu_1x_gh200"))
    assert r.returncode == 2
    assert "no arm64 build" in r.stderr and "cheapest lambda type that fits is gpu_1x_a10" in r.stderr
    ok = run_cli("plan", "--json", "--config", _config_file(
        tmp_path, cloud="lambda", instance_type="gpu_1x_gh200", vllm_image="nvcr.io/nvidia/vllm:25.09-py3"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["serving"]["arch"] == "aarch64"


def test_a_share_too_small_for_one_sequence_is_refused_with_its_numbers(tmp_path):
    r = run_cli("plan", "--config", _config_file(tmp_path, cloud="aws", gpu_memory_utilization=0.2))
    assert r.returncode == 2
    assert "vLLM needs 9.3 GiB on the A10G" in r.stderr and "would get 4.5 GiB" in r.stderr


def test_the_hosts_own_report_sizes_the_deploy():
    facts = HostFacts(gpus=1, gpu_report="NVIDIA L4, 8.9, 23034")
    spec = gpu_spec(facts)
    assert spec is not None and (spec.name, spec.cc, spec.memory_gib) == ("L4", "8.9", 22.5)
    old_driver = gpu_spec(HostFacts(gpus=1, gpu_report="Tesla T4, 15360"))
    assert old_driver is not None and old_driver.cc == "7.5"  # no compute_cap column: from the table
    spark = gpu_spec(HostFacts(gpus=1, gpu_report="NVIDIA GB10, 12.1, [N/A]"))  # unified memory: none reported
    assert spark is not None and spark.memory_gib == 128.0
    assert gpu_spec(HostFacts(gpus=0, gpu_report="")) is None


@settings(max_examples=300, deadline=None)
@given(offer=st.sampled_from([(o.cloud, o.type) for o in offers() if lookup(o.gpu)]),
       apps=st.sampled_from([("vllm_cxr", "monai_label"), ("vllm_cxr",), ("monai_label",)]),
       share=st.one_of(st.none(), st.floats(0.05, 1.0)),
       context=st.integers(1024, 32768), sam3=st.booleans())
def test_no_configuration_that_fits_exceeds_its_card(offer, apps, share, context, sam3):
    cloud, kind = offer
    cfg = load_config(None, {"cloud": cloud, "instance_type": kind, "apps": list(apps),
                             "gpu_memory_utilization": share, "max_model_len": context})
    target = planned(cfg).target  # type: ignore[union-attr]
    result = fit(cfg, GpuTarget(target.gpu, target.arch, inputs=frozenset({"sam3.pt"} if sam3 else ())))
    if not result.problems:
        assert target.gpu is not None and result.total_gib <= target.gpu.memory_gib
