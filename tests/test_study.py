"""The whole study from one command: the smoke preset end to end, its report, and a study
stopped in the middle (by a signal) and started again ending with the same results."""
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from lthfast.foundations.errors import LthError
from lthfast.foundations.stats import CANNOT_TELL, DOES_NOT, NOT_MEASURED, SUPPORTS
from lthfast.report.markdown import write_report
from lthfast.study.executors import Execution
from lthfast.study.plan import Study
from lthfast.study.presets import preset_config
from lthfast.study.scheduler import execute

FIGURES = ["accuracy_vs_density", "baseline_loss_vs_density", "successive", "prune_path", "from_baseline",
           "sublevel"]
SECTIONS = ["## Summary", "## Findings", "## Results at R = 2", "**Accuracy against density at R = 2",
            "**Interpolation between successive IMP", "**Pruning paths", "**Distance and barrier from the baseline",
            "**Volume of the IMP minima", "Sublevel set S(eps)", "## Results at R = 0"]


def run_study(root, **overrides):
    study = Study(preset_config("smoke", **overrides), root)
    study.save_config()
    execute(study, study.plan(), Execution(stack_mode="loop"))  # loop: bit-identical however stacked
    return write_report(root)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    return root, run_study(root)


def test_smoke_study_writes_every_section_figure_and_finding(smoke):
    root, report = smoke
    text = report.read_text()
    for section in SECTIONS:
        assert section in text, section
    results = json.loads((root / "report" / "results.json").read_text())
    assert [f["number"] for f in results["findings"]] == list(range(1, 8))
    assert all(f["verdict"] in (SUPPORTS, DOES_NOT, CANNOT_TELL, NOT_MEASURED) for f in results["findings"])
    assert text.count("**R = 2: ") == 7 and text.count("**R = 0: ") == 7  # a verdict per finding and rewind point
    summary = text.split("## Summary")[1].split("## Findings")[0]
    assert summary.count("\n| ") == 8 and "| finding | R = 2 | R = 0 | primary comparison | seeds |" in summary
    assert text.count("*Figure 2.") == len(FIGURES) + 1 and "not comparable" in text
    assert set(results["rewinds"]) == {"2", "0"}  # the late rewind point and R = 0
    for rewind, names in (("2", FIGURES), ("0", ["accuracy_vs_density", "baseline_loss_vs_density", "successive",
                                               "sublevel"])):
        for name in names:
            figure = root / "report" / "figures" / f"{name}_R{rewind}.png"
            assert figure.read_bytes()[:4] == b"\x89PNG", figure
            assert f"figures/{figure.name}" in text
    assert (root / "report" / "figures" / "geometry_R2.png").exists()  # geometry at the late rewind point
    late = results["rewinds"]["2"]
    assert set(late["levels"]) == {"imp", "oneshot", "finetune", "reinit", "random-prune", "prune-large"}
    assert [g["level"] for g in late["geometry"]] == [0, 1, 2]
    assert len(late["successive"]) == 2 and all(c["seeds"] == 2 for c in late["successive"])
    assert late["dense_accuracy"]["n"] == 2


def test_results_json_numbers_are_the_stored_records_and_analyses(smoke):
    """Every per-seed number of results.json is read back from the level records and the
    analysis documents on disk, and eps is 1.1 x the mean dense train loss (by hand)."""
    root, _ = smoke
    results = json.loads((root / "report" / "results.json").read_text())
    checked = 0
    for folder in sorted(root.glob("imp_*")):
        train = json.loads((folder / "config.json").read_text())["train"]
        seed, r = str(train["seed"]), results["rewinds"][str(train["rewind_iter"])]
        for strategy, rows in r["levels"].items():
            for row in rows:
                record = json.loads((folder / strategy / f"level_{row['level']:02d}" / "level.json").read_text())
                assert row["test_accuracy"]["by_seed"][seed] == record["test_accuracy"]
                assert row["train_loss"]["by_seed"][seed] == record["train_loss"]
                assert record["threads"] >= 1 and record["backend"]  # what the bits depend on beyond the config
                assert row["baseline_train_accuracy_bn_recomputed"]["by_seed"][seed] == \
                    record["baseline"]["train_accuracy_bn_recomputed"]
                checked += 1
        for doc in (folder / "analysis" / "interpolate").glob("*.json"):
            stored = json.loads(doc.read_text())
            curves = r["successive"] + [c for rows in r["from_baseline"].values() for c in rows]
            (curve,) = [c for c in curves if c["pair"] == stored["solutions"]]
            for key in ("barrier_test_error", "barrier_test_error_heldout", "barrier_train_loss"):
                assert curve[key]["by_seed"][seed] == stored["result"][key]
            assert curve["max_train_loss"]["by_seed"][seed] == max(stored["result"]["train_loss"])
            checked += 1
    assert checked > 20
    for rewind, r in results["rewinds"].items():
        dense = [json.loads((f / "level_00" / "level.json").read_text())["train_loss"] for f in sorted(root.glob("imp_*"))
                 if str(json.loads((f / "config.json").read_text())["train"]["rewind_iter"]) == rewind]
        assert r["eps"]["value"] == pytest.approx(1.1 * sum(dense) / len(dense)) and len(dense) == 2


def test_a_study_without_sharpness_shows_no_empty_sharpness_columns_or_panels(smoke, tmp_path, monkeypatch):
    from lthfast.landscape import plots
    from lthfast.report import figures
    from lthfast.report import markdown as report
    root, _ = smoke
    geometry = json.loads((root / "report" / "results.json").read_text())["rewinds"]["2"]["geometry"]
    measured = report._geometry_table(geometry, "R = 2")
    assert "lambda_max" in measured[2] and "sharpness not measured" not in measured[0]
    empty = {"mean": float("nan"), "std": float("nan"), "n": 0, "values": [], "by_seed": {}, "noise": {}}
    for g in geometry:  # as the cpu presets store it: volume only
        g.update(top_eigenvalue=empty, lambda_min=empty, eigen_residual=empty, trace=empty, eigen_converged=None)
    table = report._geometry_table(geometry, "R = 2")
    assert table[2] == "| level | dimension | log-volume | mean radius |" and "None" not in "".join(table)
    assert "sharpness not measured in this study" in table[0]
    drawn = {}
    monkeypatch.setattr(plots, "per_level", lambda levels, series, path, title: drawn.update(series) or path)
    figure = figures._geometry_figure(geometry, tmp_path / "g.png", "R = 2")
    assert list(drawn) == ["log-volume (nats)", "mean radius (units of ||theta||)"]
    assert "sharpness not measured" in figure["caption"] and "Lanczos" not in figure["caption"]


def test_the_report_never_claims_what_its_numbers_do_not_show(smoke):
    root, _ = smoke
    results = json.loads((root / "report" / "results.json").read_text())
    for finding in results["findings"]:
        for rewind, decided in finding["per_rewind"].items():
            checks = decided["checks"]
            # Support needs every comparison beyond twice its standard error, the expected way.
            supported = bool(checks) and all(c["se"] is not None and c["beyond"] == c["expected"] for c in checks)
            assert (decided["verdict"] == SUPPORTS) == supported, (finding["number"], rewind)
            for c in checks:
                if c.get("kind") is None and c["se"] is not None:
                    assert (c["beyond"] == c["expected"]) == (c["difference"] * c["sign"] > 2 * c["se"])


def test_a_one_seed_study_never_decides_from_trained_networks(smoke, tmp_path):
    """Seed 0 alone: no comparison of trained networks decides (the binomial error of an
    evaluation is no noise estimate for training). With the other seed's runs stored beside
    it, their spread is used and the report says so."""
    root, _ = smoke
    alone = tmp_path / "alone"
    alone.mkdir()
    for run in root.glob("imp_*"):
        if json.loads((run / "config.json").read_text())["train"]["seed"] == 0:
            shutil.copytree(run, alone / run.name)
    config = preset_config("smoke", seeds=(0,))
    Study(config, alone).save_config()
    results = json.loads((write_report(alone).parent / "results.json").read_text())
    assert {d["verdict"] for f in results["findings"] for d in f["per_rewind"].values()} <= {CANNOT_TELL, NOT_MEASURED}
    assert all(c["beyond"] in ("unknown", "missing") for f in results["findings"] for d in f["per_rewind"].values()
               for c in d["checks"])
    Study(config, root).save_config()  # the same one-seed study where seed 1 is stored too
    results = json.loads((write_report(root).parent / "results.json").read_text())
    checks = [c for f in results["findings"] for d in f["per_rewind"].values() for c in d["checks"]]
    assert checks and all(c["noise"].startswith("one seed; spread of 2 stored runs of the same config (seeds 0, 1)")
                          for c in checks if c["se"] is not None)
    assert any(c["se"] is not None for c in checks)
    Study(preset_config("smoke"), root).save_config()  # leave the two-seed study as the module found it
    write_report(root)


def test_the_report_stands_beside_the_published_numbers_only_for_the_paper_recipe(tmp_path):
    paper = tmp_path / "paper"
    Study(preset_config("paper-resnet20"), paper).save_config()
    text = write_report(paper).read_text()
    published = text.split("## Published reference (not measured here)")[1]
    for value in ("91.71 ± 0.23", "91.67", "91.31", "91.00", "89.21", "88.56", "86.67", "90.94", "90.56", "89.78"):
        assert value in published, value
    assert "Renda" in published and "this study is not comparable" not in text
    smoke = tmp_path / "smoke"
    Study(preset_config("smoke"), smoke).save_config()
    text = write_report(smoke).read_text()
    assert "are not shown: this study is not comparable with them" in text and "## Published reference" not in text


def stored_numbers(root):
    """{relative path: numbers} of every finished level and analysis result under root."""
    out = {}
    for path in sorted(root.glob("imp_*/**/*.json")):
        record = json.loads(path.read_text())
        if path.name == "level.json":
            out[str(path.relative_to(root))] = {k: record[k] for k in ("test_accuracy", "train_loss", "baseline")}
        elif "analysis" in path.parts:  # every number but the timings
            out[str(path.relative_to(root))] = {k: v for k, v in record["result"].items() if "seconds" not in k}
    return out


def test_a_study_stopped_in_the_middle_and_started_again_ends_the_same(smoke, tmp_path):
    """Seed 0 alone, stopped by SIGINT during its trainings, then run again: every level and
    analysis equals the uninterrupted two-seed study's (the run folders of seed 0 have the
    same names in both roots)."""
    reference_root, _ = smoke
    root = tmp_path / "stopped"
    command = [sys.executable, "-m", "lthfast", "study", "--preset", "smoke", "--seeds", "0", "--root", str(root),
               "--noreport", "--stack-mode", "loop"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # stop it once a few levels are stored
        if len(list(root.glob("imp_*/*/level_01/level.json"))) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "error: " in err, err
    assert not (root / "report").exists()
    report = run_study(root, seeds=(0,))
    assert report.exists()
    got, expected = stored_numbers(root), stored_numbers(reference_root)
    sublevel = [k for k in got if "/sublevel/" in k]
    assert len(got) > 40 and sublevel
    for key, value in got.items():
        if key in sublevel:  # one seed: eps from its own dense network alone (the reference has two seeds)
            assert "mean over 1 seed" in value["eps_rule"] and key not in expected, key
        elif "/sharpness/" in key:  # ARPACK keeps a random state across calls in a process: ~1e-9 apart
            assert value.keys() == expected[key].keys(), key
            for name, number in value.items():
                want = expected[key][name]
                if "residual" in name:  # rounding noise below the solver's tolerance (1e-3)
                    assert abs(number - want) < 1e-4, (key, name)
                elif name == "hessian_vector_products":  # a restart drawn from ARPACK's state may add some
                    assert abs(number - want) <= 10, (key, name)
                elif isinstance(number, float):
                    assert number == pytest.approx(want, rel=1e-6), (key, name)
                else:  # the solver's name, sizes, converged
                    assert number == want, (key, name)
        else:
            assert value == expected[key], key


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lthfast", "study", "--preset", "smoke", "--root", str(tmp_path / "r"),
                          "--dry-run", "--seeds", "0", "--levels", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "seed0/R2/train imp:1" in out.stdout and "seed0/R0/train imp:1" in out.stdout
    summary = [line for line in out.stdout.splitlines() if " jobs, " in line][0]
    assert summary.startswith(f"{out.stdout.count(' to run ')} jobs, {out.stdout.count(' to run ')} to run, estimated")
    assert "ms per training step" in out.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--preset", "nonsense"], "unknown preset 'nonsense'"),
    (["--preset", "smoke", "--levels", "0"], "--levels must be an integer >= 1"),
    (["--preset", "smoke", "--strategies", "imp,bogus"], "unknown strategy 'bogus'"),
    (["--preset", "smoke", "--strategies", "oneshot"], "must include imp"),
    (["--preset", "smoke", "--seeds", "a,b"], "--seeds must be a comma-separated list"),
    (["--preset", "smoke", "--curve-points", "1"], "--curve-points must be an integer >= 2"),  # the flag as typed
])
def test_bad_study_flags_are_one_line_errors(args, message, tmp_path):
    out = subprocess.run([sys.executable, "-m", "lthfast", "study", *args, "--root", str(tmp_path), "--dry-run"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr


def test_report_without_a_study_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lthfast", "report", "--root", str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "no study under" in out.stderr


def test_presets_cover_the_study_and_flags_override_them():
    paper = preset_config("paper-resnet20")
    assert paper.seeds == (0, 1, 2) and 0.02 < 0.8 ** paper.levels < 0.04 and paper.train.epochs == 160
    assert paper.rewind_iter == 2000 and paper.rewinds() == [2000, 0]
    assert preset_config("paper-vgg16").rewind_iter == 1000
    cpu = preset_config("cpu", levels=2)
    assert cpu.levels == 2 and cpu.train.train_subset == 5000
    assert not [j for j in Study(cpu, "/nonexistent").plan() if j.kind == "sharpness"]  # none on a CPU preset
    chosen = preset_config("cpu", levels=2, sharpness_levels=(0, -1))
    sharpness = [j.key for j in Study(chosen, "/nonexistent").plan() if j.kind == "sharpness"]
    assert sharpness == ["seed0/R40/sharpness imp:0", "seed0/R40/sharpness imp:2"]  # first and last level
    with pytest.raises(LthError, match="--sharpness-images"):  # the flag as typed
        preset_config("cpu", sharpness_images=0)


def test_wall_estimate_replays_the_schedulers_batches_on_the_slots():
    """Known answers: two independent chains a -> b (10 s, 20 s) and c -> d (30 s, 5 s), and an
    analysis e (7 s) after b and d. One slot: everything in turn (72 s). Two slots: trainings
    a and c start in one stack each (scheduler.batches spreads them over the slots): c ends at
    30, a at 10, b runs 10..30, d 30..35, e 35..42."""
    from lthfast.study.dryrun import wall_seconds
    from lthfast.study.executors import Execution
    from lthfast.study.plan import Job

    def job(key, kind, cost, deps=()):
        return Job(key, kind, list(deps), cost, lambda: False, lambda: None)

    jobs = [job("a", "train", 10), job("c", "train", 30), job("b", "train", 20, ["a"]), job("d", "train", 5, ["c"]),
            job("e", "interpolate", 7, ["b", "d"])]
    assert wall_seconds(None, jobs, Execution(workers=1, stack=1)) == pytest.approx(72)
    assert wall_seconds(None, jobs, Execution(workers=2, stack=1)) == pytest.approx(42)
    # a stack of both first trainings on one slot costs their sum (loop), then b and d together
    assert wall_seconds(None, jobs, Execution(workers=1, stack=2)) == pytest.approx(72)
    assert wall_seconds(None, jobs, Execution(workers=1, stack=2, executor="ray")) is None


def test_stacking_speeds_up_a_stacks_steps_not_its_levels_fixed_work():
    """Known answer: two trainings of 10 s, each 6 s of steps (6 steps of 1 s) and 4 s of
    evaluations and files, in one stack whose steps cost half (stacking 0.5): 2 x 4 + 0.5 x 12 = 14 s."""
    import types

    from lthfast.study.dryrun import wall_seconds
    from lthfast.study.executors import Execution
    from lthfast.study.plan import Job

    jobs = [Job(key, "train", [], 10.0, lambda: False, lambda: None, steps=6) for key in "ab"]
    study = types.SimpleNamespace(calibration=types.SimpleNamespace(train_step=1.0))
    grouped = Execution(workers=1, stack=2, stack_mode="grouped")
    assert wall_seconds(study, jobs, grouped, stacking=0.5) == pytest.approx(14)
    assert wall_seconds(study, jobs, grouped, stacking=1.0) == pytest.approx(20)


def test_a_stack_shape_auto_has_not_measured_is_priced_with_its_measurement(tmp_path, monkeypatch):
    """Known answer: auto steps each candidate 3 rounds x 2 steps + 1 warm-up = 7 times; a stack
    of 4 at 1 s a network-step costs 4 s in loop and 2 s grouped (stacking 0.5): 7 x 6 = 42 s.
    A shape in the cache, or a stack of one, costs nothing."""
    from lthfast.config.runs import TrainConfig
    from lthfast.foundations.files import atomic_write_json
    from lthfast.training import auto

    monkeypatch.setenv("LTHFAST_CACHE", str(tmp_path))
    config, cpu = TrainConfig(model="resnet8", width=4, batch_size=8, device="cpu"), torch.device("cpu")
    assert auto.measurement_seconds(config, 4, cpu, 1.0, 0.5) == pytest.approx(42)
    assert auto.measurement_seconds(config, 1, cpu, 1.0, 0.5) == 0
    atomic_write_json({auto.cache_key(config, 4, cpu): {"mode": "loop", "seconds_per_step": {}}},
                      tmp_path / "stack_modes.json")
    assert auto.measurement_seconds(config, 4, cpu, 1.0, 0.5) == 0
