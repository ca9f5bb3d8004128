"""`gpuprov status` shows what the last deploy sized for the host's own GPU: vLLM's settings and the GPU
memory budget, per service, total and headroom (issue #15), from the stack's record."""

from __future__ import annotations

import json

from gpuprov.apps.base import GpuTarget
from gpuprov.apps.fit import fit
from gpuprov.infra import records
from gpuprov.infra.config import StackConfig
from gpuprov.infra.gpus import lookup
from gpuprov.infra.host import GpuHost, utcnow
from tests.conftest import run_cli


def test_status_shows_the_gpu_memory_budget_the_last_deploy_sized_for_its_gpu() -> None:
    config = StackConfig(stack="budget-demo", cloud="lambda")
    sized = fit(config, GpuTarget(lookup("A10"), "x86_64"))
    record = records.save("budget-demo", "existing", GpuHost(
        cloud="existing", address="198.51.100.9", ssh_user="ubuntu", instance_id="existing",
        instance_type="existing", gpu="A10", gpu_count=1, usd_hour=0.0, launched_at=utcnow()))
    records.write(record.model_copy(update={"deployed": ["vllm", "open_webui", "monai_label"],
                                            "serving": sized.to_json()}))

    shown = run_cli("status", "--stack", "budget-demo")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "budget-demo: serving on A10 (compute capability 8.6" in text, shown.stdout
    assert "vllm_dtype=bfloat16" in text and "gpu_memory_utilization=" in text
    for service in ("vllm ", "monai_label ", "nninteractive"):
        assert service in text.lower()
    assert "GiB total" in text and "GiB headroom" in text

    as_json = json.loads(run_cli("status", "--json", "--stack", "budget-demo").stdout)["stacks"][0]
    budget = as_json["serving"]["budget"]
    assert sum(row["gib"] for row in budget) <= as_json["serving"]["gpu"]["memory_gib"]
    assert as_json["serving"]["total_gib"] + as_json["serving"]["headroom_gib"] <= as_json["serving"]["gpu"]["memory_gib"] + 0.05
