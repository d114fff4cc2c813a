"""The analysis layer over the run store: solution names, cached results, curves whose ends
are the stored evaluations, the sublevel table, volume, sharpness, distance, and the CLI."""
import json
import math
import subprocess
import sys

import pytest
import torch

from lthfast.config.analyses import SharpnessSettings, VolumeSettings
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.errors import LthError
from lthfast.foundations.files import load_tensors, read_json
from lthfast.imp.driver import ImpRun
from lthfast.landscape import curves as analysis
from lthfast.landscape import sublevel
from lthfast.landscape.runs import AnalysisRun
from lthfast.landscape.sharpness import sharpness
from lthfast.landscape.volume import volume
from lthfast.pruning import masks as pruning

TRAIN = dict(model="resnet8", data="synthetic", train_subset=256, batch_size=64, epochs=2,
             rewind_iter=2, eval_batch_size=256)
# Curves on the run's own evaluation sample, with stored BN statistics: a curve's ends are
# then exactly the evaluations that IMP stored in level.json and baseline.json.
STORED = analysis.CurveSettings(points=3, bn="interpolate", train_images=256)


def make_run(root, seed=0):
    config = ImpConfig(train=TrainConfig(**TRAIN, seed=seed), eval_train_images=256, bn_batches=2)
    return ImpRun(config, root, load_dataset("synthetic", train_subset=256))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    imp_run = make_run(root)
    imp_run.chain("imp", 2)
    imp_run.chain("oneshot", 1)
    return AnalysisRun(imp_run.dir, device="cpu")


def test_solutions_are_named_by_strategy_and_level_or_folder(run):
    assert run.solution("imp:2").weights == run.folder / "imp" / "level_02" / "final.pt"
    assert run.solution("oneshot:0").weights == run.folder / "level_00" / "final.pt"  # dense is shared
    assert run.solution("imp:1:baseline").weights.name == "baseline.pt"
    assert run.solution(str(run.folder / "imp" / "level_01")).weights == run.folder / "imp" / "level_01" / "final.pt"
    assert run.levels("imp") == [0, 1, 2] and run.levels("oneshot") == [0, 1]
    assert run.strategies() == ["imp", "oneshot"]
    assert run.parent("oneshot", 1).label == "imp:0" and run.parent("imp", 2).label == "imp:1"


@pytest.mark.parametrize("spec, message", [("imp:7", "no finished level 7 of imp"), ("reinit:1", r"finished: 0\)"),
                                           ("imp:0:baseline", "no baseline"), ("imp:x", "cannot read solution"),
                                           ("nowhere/level_01", "no solution")])
def test_a_missing_solution_is_a_clear_error(run, spec, message):
    with pytest.raises(LthError, match=message):
        run.solution(spec)


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(LthError, match="not an IMP run folder"):
        AnalysisRun(tmp_path)


def test_curve_ends_are_the_stored_evaluations_and_self_barrier_is_zero(run):
    a, b = run.solution("imp:1"), run.solution("imp:2")
    curve = analysis.interpolation(run, a, b, STORED)["result"]
    assert curve["alphas"] == [0.0, 0.5, 1.0]
    for end, label in ((0, "imp/level_01"), (-1, "imp/level_02")):
        record = read_json(run.folder / label / "level.json")
        assert curve["train_loss"][end] == pytest.approx(record["train_loss"], rel=1e-5)
        assert curve["test_error"][end] == pytest.approx(1 - record["test_accuracy"], abs=1e-6)
    assert curve["barrier_train_loss"] >= -1e-6  # the ends lie on the chord
    same = analysis.interpolation(run, a, a, analysis.CurveSettings(points=4, train_images=64))["result"]
    assert same["barrier_train_loss"] == pytest.approx(0, abs=1e-5)
    assert same["barrier_test_error"] == pytest.approx(0, abs=1e-6)


def test_prune_path_goes_from_the_parent_to_the_stored_baseline(run):
    doc = analysis.prune_path(run, "imp", 2, STORED)
    assert doc["solutions"] == ["imp:1", "imp:2:baseline"] and doc["what"] == "prune-path"
    curve = doc["result"]
    assert curve["train_loss"][0] == pytest.approx(read_json(run.folder / "imp/level_01/level.json")["train_loss"], rel=1e-5)
    assert curve["train_loss"][-1] == pytest.approx(read_json(run.folder / "imp/level_02/baseline.json")["train_loss"],
                                                    rel=1e-5)


def test_results_are_cached_until_forced(run, monkeypatch):
    a, b = run.solution("imp:0"), run.solution("imp:1")
    settings = analysis.CurveSettings(points=2, train_images=32, test_images=32, bn_batches=1)
    first = analysis.interpolation(run, a, b, settings)
    assert first["path"].endswith(".json") and first["wall_seconds"] > 0

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a stored result")

    monkeypatch.setattr("lthfast.landscape.points.interpolate_on", fail)
    again = analysis.interpolation(run, a, b, settings)
    assert again["created"] == first["created"] and again["result"] == first["result"]
    other = analysis.CurveSettings(points=3, train_images=32, test_images=32, bn_batches=1)
    with pytest.raises(AssertionError, match="recomputed"):  # other settings: another result
        analysis.interpolation(run, a, b, other)
    with pytest.raises(AssertionError, match="recomputed"):
        analysis.interpolation(run, a, b, settings, force=True)


def test_sublevel_table_and_default_eps_with_one_seed(run):
    result = sublevel.table(run)["result"]
    dense_loss = read_json(run.level_dir("imp", 0) / "level.json")["train_loss"]
    assert result["eps"] == pytest.approx(dense_loss * 1.1)  # the dense network alone sets eps
    assert "dense network" in result["eps_rule"] and result["matching"]["seeds"] == 1
    labels = [row["label"] for row in result["rows"]]
    assert labels == ["imp:0", "imp:1", "imp:1:baseline", "imp:2", "imp:2:baseline", "oneshot:1", "oneshot:1:baseline"]
    for row in result["rows"]:
        assert row["inside"] == (row["train_loss"] <= result["eps"])
    given = sublevel.table(run, eps=1e-9)["result"]
    assert given["eps"] == 1e-9 and not any(row["inside"] for row in given["rows"])
    with pytest.raises(LthError, match="--eps"):
        sublevel.table(run, eps=-1.0)


def test_matching_uses_the_standard_deviation_over_seeds(run, tmp_path):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(run.folder, root / run.folder.name)
    second = make_run(root, seed=1)
    second.chain("imp", 1)
    match = sublevel.matching(AnalysisRun(root / run.folder.name, device="cpu"))
    dense = [read_json(f / "level_00" / "level.json")["test_accuracy"] for f in sorted(root.glob("imp_*"))]
    assert match["seeds"] == 2
    assert match["dense_accuracy_std"] == pytest.approx(torch.tensor(dense).std().item(), rel=1e-6)
    level1 = [read_json(f / "imp" / "level_01" / "level.json")["test_accuracy"] for f in sorted(root.glob("imp_*"))]
    expected = sum(level1) / 2 >= match["dense_accuracy_mean"] - match["dense_accuracy_std"]
    assert match["levels"]["1"]["matches"] == expected and match["levels"]["2"]["seeds"] == 1


def test_eps_with_two_seeds_is_the_dense_networks_whatever_matches(run, tmp_path, monkeypatch):
    """eps = 1.1 x the mean dense train loss of both seeds, fixed before pruning: a level that
    does not match (none, here) changes nothing (docs/protocol.md, "Sublevel set")."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(run.folder, root / run.folder.name)
    make_run(root, seed=1).chain("imp", 1)
    opened = AnalysisRun(root / run.folder.name, device="cpu")
    dense = [read_json(f / "level_00" / "level.json")["train_loss"] for f in sorted(root.glob("imp_*"))]
    result = sublevel.table(opened)["result"]
    assert len(dense) == 2 and result["eps"] == pytest.approx(1.1 * sum(dense) / 2)
    real = sublevel.matching

    def nothing_matches(r):
        m = real(r)
        return {**m, "levels": {k: {**v, "matches": False} for k, v in m["levels"].items()},
                "last_matching_level": None}
    monkeypatch.setattr(sublevel, "matching", nothing_matches)
    again = sublevel.table(opened, force=True)["result"]
    assert again["eps"] == result["eps"] and again["matching"]["last_matching_level"] is None


def test_volume_radii_bound_the_loss_level_and_count_unpruned_dimensions(run):
    solution = run.solution("imp:2")
    settings = VolumeSettings(directions=3, train_images=64, bisections=4, delta=0.2)
    v = volume(run, solution, settings)["result"]
    _, mask = solution.load()
    assert v["dimension"] == pruning.kept_count(mask)
    assert len(v["radii"]) == 3 and all(0 < r < math.inf for r in v["radii"])
    assert math.isfinite(v["log_volume"]) and v["passes"] >= 1 + 4


def test_sharpness_is_finite_and_restricted_to_unpruned_weights(run):
    solution = run.solution("imp:1")
    settings = SharpnessSettings(images=64, products=40, lanczos_vectors=8, trace_samples=3)
    s = sharpness(run, solution, settings)["result"]
    assert s["images"] == 64 and s["dimension"] == pruning.kept_count(solution.load()[1])
    assert math.isfinite(s["top_eigenvalue"]) and s["hessian_vector_products"] <= 40 + 8 + 2
    assert s["lambda_min"] <= s["top_eigenvalue"] and math.isfinite(s["trace"])
    assert s["eigen_converged"] == (s["eigen_residual"] < settings.tolerance)


def test_distance_over_unpruned_weights(run):
    a, b = run.solution("imp:0"), run.solution("imp:1")
    d = analysis.distance(run, a, b)["result"]
    (theta_a, _), (theta_b, _) = a.load(), b.load()
    names = pruning.unpack(load_tensors(a.mask)).keys()
    expected = math.sqrt(sum(float(((theta_a[n] - theta_b[n]) ** 2).sum()) for n in names))
    assert d["l2"] == pytest.approx(expected, rel=1e-6)
    assert analysis.distance(run, b, b)["result"]["l2"] == 0


def lthfast(*args):
    return subprocess.run([sys.executable, "-m", "lthfast", *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_json_and_figures_and_reports_bad_names(run):
    out = lthfast("analyze", "interpolate", str(run.folder), "--successive", "imp", "--points", "3",
                  "--train-images", "32", "--test-images", "32", "--bn-batches", "1", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("barrier train loss") == 2
    figure = out.stdout.strip().splitlines()[-1].split("figure: ")[1]
    assert figure.endswith(".png") and open(figure, "rb").read(4) == b"\x89PNG"
    out = lthfast("analyze", "sublevel", str(run.folder))
    assert out.returncode == 0 and "imp:2:baseline" in out.stdout
    out = lthfast("analyze", "volume", str(run.folder), "--strategy", "imp", "--directions", "2",
                  "--train-images", "32", "--bisections", "2", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    stored = [json.loads(p.read_text()) for p in (run.folder / "analysis" / "volume").glob("*.json")]
    assert sorted(d["solutions"][0] for d in stored if d["settings"]["directions"] == 2) == ["imp:0", "imp:1", "imp:2"]
    assert "figure:" in out.stdout and out.stdout.count("log-volume") == 3
    for args, message in [(("distance", str(run.folder), "--a", "imp:9", "--b", "imp:1"), "no finished level 9"),
                          (("volume", str(run.folder)), "give --solution"),
                          (("interpolate", str(run.folder), "--a", "imp:1", "--b", "imp:2", "--points", "1"),
                           "--points must be an integer >= 2"),
                          (("nonsense", str(run.folder)), "unknown analyze 'nonsense'")]:
        out = lthfast("analyze", *args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
