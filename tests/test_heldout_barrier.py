"""The held-out barrier (docs/protocol.md "Barrier"; STUDY.md "Interpolation and barrier"): the
peak a* is chosen on half A of the evaluation images and the barrier read there on half B,
with half B's own end values. Checked by hand on constructed curves, statistically on a
straight line plus noise (the plain maximum is biased upward, the held-out reading is not),
and on curves of a tiny stored run: the new fields are stored, the full-sample curves are
the same as without halves and are the image-weighted means of the halves, odd and
one-image samples work, and the instability analysis stores the fields too."""
import math

import pytest
import torch

from lthfast.config.analyses import CurveSettings
from lthfast.config.runs import ImpConfig, TrainConfig
from lthfast.data.loading import load_dataset
from lthfast.foundations.files import load_checkpoint
from lthfast.imp.driver import ImpRun
from lthfast.landscape import curves, registry
from lthfast.landscape import points as landscape
from lthfast.landscape.runs import AnalysisRun

NEW_KEYS = ("barrier_train_loss_heldout", "barrier_test_error_heldout", "peak_alpha_train_loss",
            "peak_alpha_test_error", "train_loss_halves", "test_error_halves", "halves")


# ----------------------------------------------------------------------------- the pure function

def test_peak_is_chosen_on_half_a_and_read_on_half_b_with_b_s_own_ends():
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    a = [1.0, 3.0, 2.0, 1.5, 1.0]  # excess over its chord (flat at 1): 0, 2, 1, 0.5, 0 -> a* = 0.25
    b = [2.0, 3.5, 9.0, 3.0, 4.0]  # its own peak is at 0.5; its chord is 2 + 2a
    alpha, height = landscape.heldout_barrier(a, b, alphas)
    assert alpha == 0.25
    assert height == pytest.approx(3.5 - (0.75 * 2.0 + 0.25 * 4.0))  # 1.0: B at A's peak, over B's own chord
    assert height != pytest.approx(3.5 - 1.0)  # (A's chord would give 2.5)
    assert landscape.barrier(b, alphas) == pytest.approx(9.0 - 3.0)  # not B's own maximum
    # Swapping the halves chooses on B (excess 0, 1, 6, -0.5, 0) and reads on A.
    assert landscape.heldout_barrier(b, a, alphas) == (0.5, pytest.approx(2.0 - 1.0))


def test_ties_ends_and_a_straight_line():
    alphas = [0.0, 0.5, 1.0]
    assert landscape.heldout_barrier([0.0, 1.0, 0.0], [5.0, 5.5, 7.0], alphas) == (0.5, pytest.approx(-0.5))
    # A straight line on A: every excess is 0 and the first point (a = 0) is chosen: height 0.
    assert landscape.heldout_barrier([1.0, 2.0, 3.0], [0.0, 9.0, 1.0], alphas) == (0.0, 0.0)
    # A valley on A: the peak is an end, where any half's excess is 0.
    assert landscape.heldout_barrier([1.0, -1.0, 1.0], [0.0, 9.0, 1.0], alphas) == (0.0, 0.0)
    # First of equal maxima.
    assert landscape.heldout_barrier([0.0, 1.0, 1.0, 0.0], [0.0, 2.0, 3.0, 0.0], [0.0, 0.25, 0.75, 1.0])[0] == 0.25


def test_an_empty_half_has_no_heldout_reading_and_bad_grids_are_refused():
    alphas = [0.0, 0.5, 1.0]
    assert landscape.heldout_barrier([1.0, 2.0, 1.0], None, alphas) == (None, None)
    assert landscape.heldout_barrier([], [1.0, 2.0, 1.0], alphas) == (None, None)
    with pytest.raises(ValueError, match="a = 0 to a = 1"):
        landscape.heldout_barrier([1.0, 2.0], [1.0, 2.0], [0.0, 0.5])
    with pytest.raises(ValueError, match="one value per grid point"):
        landscape.heldout_barrier([1.0, 2.0], [1.0, 2.0, 3.0], alphas)


def test_plain_maximum_is_biased_upward_and_the_heldout_reading_is_not():
    """A straight line plus independent Gaussian noise (sd sigma) on each half; the whole
    sample is the mean of two equal halves. The true barrier is 0.

    Tolerance, from the number of draws alone: the held-out height at an interior a* is
    n_B(a*) - (1 - a*) n_B(0) - a* n_B(1) with a* independent of half B's noise, so its mean
    is 0 and its variance sigma^2 (1 + (1 - a*)^2 + a*^2) <= 2 sigma^2 (0 at an end). The
    mean over `draws` draws then has sd <= sigma sqrt(2 / draws); 4 of those bound it
    (two-sided P(|Z| > 4) ~ 6e-5)."""
    draws, sigma = 4000, 0.1
    alphas = torch.linspace(0, 1, 21)
    alphas[-1] = 1.0
    grid = alphas.tolist()
    line = 2.0 + 0.5 * alphas
    generator = torch.Generator().manual_seed(0)
    noise = sigma * torch.randn(draws, 2, len(grid), generator=generator, dtype=torch.float64)
    plain, heldout = [], []
    for a, b in line + noise:
        plain.append(landscape.barrier(((a + b) / 2).tolist(), grid))
        heldout.append(landscape.heldout_barrier(a.tolist(), b.tolist(), grid)[1])
    tolerance = 4 * sigma * math.sqrt(2 / draws)
    mean_plain, mean_heldout = sum(plain) / draws, sum(heldout) / draws
    assert abs(mean_heldout) < tolerance
    assert mean_plain > tolerance  # a maximum over noisy points that include the ends (excess 0): >= 0
    assert mean_plain - mean_heldout > 2 * tolerance


# ----------------------------------------------------------------------------- curves of a stored run

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    train = TrainConfig(model="resnet8", data="synthetic", train_subset=128, batch_size=64, epochs=1, rewind_iter=1,
                        eval_batch_size=256)
    imp_run = ImpRun(ImpConfig(train=train, eval_train_images=128, bn_batches=1),
                     tmp_path_factory.mktemp("heldout"), load_dataset("synthetic", train_subset=128))
    imp_run.chain("imp", 1)
    return AnalysisRun(imp_run.dir, device="cpu")


def _weighted(halves: list, n: int) -> list[float]:
    """The image-weighted mean of the halves' curves (A holds the even positions)."""
    n_a, n_b = (n + 1) // 2, n // 2
    if halves[1] is None:
        return halves[0]
    return [(n_a * a + n_b * b) / n for a, b in zip(*halves)]


def _check_curve(curve: dict, train_images: int, test_images: int) -> None:
    assert set(NEW_KEYS) <= set(curve) and curve["halves"] == landscape.HALVES
    assert curve["train_images"] == train_images and curve["test_images"] == test_images
    points = len(curve["alphas"])
    for key, n in (("train_loss", train_images), ("test_error", test_images)):
        halves = curve[f"{key}_halves"]
        assert len(halves) == 2 and len(halves[0]) == points
        assert halves[1] is None if n == 1 else len(halves[1]) == points
        assert curve[key] == pytest.approx(_weighted(halves, n), rel=1e-6, abs=1e-9)
        assert (curve[f"peak_alpha_{key}"], curve[f"barrier_{key}_heldout"]) == \
            landscape.heldout_barrier(*halves, curve["alphas"])
        assert curve[f"barrier_{key}"] == landscape.barrier(curve[key], curve["alphas"])  # the plain maximum


@pytest.mark.parametrize("train_images, test_images, chunk", [(64, 32, None), (33, 17, 2)])
def test_curve_stores_the_halves_and_its_full_sample_curve_is_unchanged(run, train_images, test_images, chunk):
    a, b = run.solution("imp:0"), run.solution("imp:1")
    settings = CurveSettings(points=3, bn_batches=1, train_images=train_images, test_images=test_images)
    compute = curves.Compute(chunk=chunk, batch_size=16)  # several batches: the halves' offsets move
    curve = curves.interpolation(run, a, b, settings, compute)["result"]
    _check_curve(curve, train_images, test_images)
    assert curve["peak_alpha_train_loss"] in curve["alphas"] and curve["barrier_train_loss_heldout"] is not None
    # The same curve without halves, as every earlier version computed it: bit for bit.
    sets = {"train": run.sample("train", train_images), "test": run.sample("test", test_images)}
    plain = landscape.interpolate_on(load_checkpoint(a.weights), load_checkpoint(b.weights), curve["alphas"],
                                     run.model, run.width, run.data, sets,
                                     compute.eval_settings(run, settings.bn, settings.bn_batches, settings.seed))
    assert plain["train"]["loss"] == curve["train_loss"] and plain["train"]["accuracy"] == curve["train_accuracy"]
    assert plain["test"]["loss"] == curve["test_loss"]
    assert [1 - v for v in plain["test"]["accuracy"]] == curve["test_error"]


def test_a_one_image_sample_has_no_heldout_barrier(run):
    settings = CurveSettings(points=3, bn_batches=1, train_images=1, test_images=1)
    curve = curves.interpolation(run, run.solution("imp:0"), run.solution("imp:1"), settings)["result"]
    _check_curve(curve, 1, 1)
    assert curve["barrier_train_loss_heldout"] is None and curve["peak_alpha_test_error"] is None
    assert curve["train_loss_halves"][0] == curve["train_loss"]  # half A is the whole sample
    assert set(registry.get("interpolate").summary(curve)) == {"barrier_train_loss", "barrier_test_error"}


def test_the_instability_analysis_stores_the_fields_and_summaries_read_old_results(run):
    entry = registry.get("instability")
    doc = entry.compute(run, [run.solution("imp:1"), run.solution("imp:0")],
                        entry.settings(points=3, bn_batches=1, train_images=20, test_images=21), None)
    assert doc["what"] == "instability"
    _check_curve(doc["result"], 20, 21)
    summary = entry.summary(doc["result"])
    assert summary == {key: doc["result"][key] for key in ("barrier_train_loss", "barrier_test_error",
                                                           "barrier_train_loss_heldout",
                                                           "barrier_test_error_heldout")}
    old = {key: value for key, value in doc["result"].items() if key not in NEW_KEYS}  # an earlier version's
    assert entry.summary(old) == {"barrier_train_loss": old["barrier_train_loss"],
                                  "barrier_test_error": old["barrier_test_error"]}
