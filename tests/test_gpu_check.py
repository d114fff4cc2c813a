"""bench/gpu_check.py --dry-run: the GPU check's plumbing, every section, on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["environment", "build", "pytest", "op_checks", "stack_equivalence", "smoke_study", "pytest_result",
            "step_overhead", "kernels", "stack_throughput", "interpolation", "compiled", "compile_step"]


def test_the_dry_run_writes_every_section_in_under_a_minute(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert result["dry_run"] and list(sections) == SECTIONS
    assert {name: s["status"] for name, s in sections.items()} == {name: "ok" for name in SECTIONS}, \
        {name: s.get("error") for name, s in sections.items() if s["status"] != "ok"}
    assert all(s["device"] == result["device"] for s in sections.values())  # every figure names the device
    assert result["seconds"] < 60

    assert sections["build"]["command"].startswith("LTHFAST_BUILD_CUDA=1")
    assert [run["returncode"] for run in sections["pytest_result"]["runs"]] == [0, 0, 0]
    assert all("collected" in run["summary"] for run in sections["pytest_result"]["runs"])
    assert sections["op_checks"]["checks"] and all(c["ok"] for c in sections["op_checks"]["checks"].values())
    modes = sections["stack_equivalence"]["modes"]
    assert all(m["identical"] for m in modes["loop"]["members"])
    assert all(m["pruned_exactly_zero"] for m in modes["grouped"]["members"])
    assert modes["streams"]["expected"] and "needs a CUDA device" in modes["streams"]["error"]
    smoke = sections["smoke_study"]
    assert [smoke[name]["returncode"] for name in ("stacked", "one_at_a_time", "paper_plan")] == [0, 0, 0], smoke
    assert "stacked:" in smoke["paper_plan"]["output_tail"] and "device-hours" in smoke["paper_plan"]["output_tail"]
    assert sections["kernels"]["member_lr_masked_sgd"]["max_abs_diff_vs_separate_calls"] == 0
    for precision in ("fp32", "bf16"):
        rows = sections["stack_throughput"]["results"][precision]
        assert set(rows) == {"1", "2"} and {"separate", "loop", "grouped", "auto"} <= set(rows["2"])
    assert set(sections["interpolation"]) >= {"grouped", "loop"}
    compiled = sections["compiled"]
    assert compiled["results"]["fp32"]["loop+eager"]["1"]["loop"]["images_per_second"] > 0
    assert compiled["graph_equivalence"]["modes"]["graph"]["expected"]
