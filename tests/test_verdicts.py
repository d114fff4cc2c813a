"""Known answers for the verdict logic (docs/protocol.md, "Deciding a finding"): for each of the
seven findings, constructed per-seed results (no training) whose right verdict is supports,
does not support and cannot tell, decided by the finding and shown in the report; the paired
standard error, the one-seed stored-spread path, Holm's correction, provisional verdicts and
`power`, each against hand computation."""
import copy
import math

import pytest

from lthfast.foundations.stats import (
    CANNOT_TELL,
    DOES_NOT,
    SUPPORTS,
    holm_rejects,
    mean_std,
    one_sided,
    paired_difference,
    verdict,
)
from lthfast.report.findings import FINDINGS, findings
from lthfast.report.markdown import SHORT, markdown
from lthfast.report.power import rows_of

L = 2  # deepest level of the constructed study
SEEDS = 5
JITTER = [-0.002, -0.001, 0.0, 0.001, 0.002]  # small spread: standard error 0.0007, t critical 2.13
WIDE = [-0.05, -0.02, 0.0, 0.02, 0.05]  # large spread around the null: no test passes


def over(values):
    return mean_std(dict(enumerate(values)))


def shifted(center, spread=JITTER):
    return over([center + e for e in spread])


def level_row(k, accuracy=0.8, loss=0.5, baseline_accuracy=0.6):
    return {"level": k, "density": 0.8 ** k, "seeds": list(range(SEEDS)), "test_accuracy": shifted(accuracy),
            "train_loss": shifted(loss), "baseline_train_loss": shifted(1.0),
            "baseline_train_loss_bn_recomputed": shifted(0.9), "baseline_train_accuracy_bn_recomputed":
            shifted(baseline_accuracy), "baseline_test_accuracy_bn_recomputed": shifted(0.5), "collapsed_layers": []}


def curve(pair, barrier=0.05):
    return {"pair": pair, "seeds": SEEDS, "barrier_train_loss": shifted(0.1), "barrier_test_error": shifted(barrier),
            "barrier_test_error_heldout": shifted(barrier), "max_train_loss": shifted(0.6),
            "end_train_loss": shifted(0.5), "alphas": [0, 0.5, 1], "train_loss": [0.5, 0.6, 0.5],
            "test_error": [0.2, 0.25, 0.2], "test_images": 100}


def study():
    """A neutral constructed study: L = 2 levels, 5 seeds, every strategy; every finding's
    primary comparison is then set by the cases below."""
    strategies = ["imp", "oneshot", "finetune", "reinit", "random-prune", "prune-large"]
    stat = {"relative": shifted(0.3)}
    r = {"rewind_iter": 1, "strategies": strategies, "dense_accuracy": shifted(0.8),
         "dense_train_accuracy": shifted(0.99),
         "levels": {s: [level_row(k) for k in range(1, L + 1)] for s in strategies},
         "successive": [curve([f"imp:{k - 1}", f"imp:{k}"]) for k in range(1, L + 1)],
         "distance_successive": [{"pair": [], "l2": shifted(1.0), "relative": shifted(0.3)} for _ in range(L)],
         "prune_path": [], "instability": [], "geometry": [],
         "from_baseline": {s: [{**curve([f"imp:{k}:baseline", f"{s}:{k}"]), "distance": dict(stat)}
                               for k in range(1, L + 1)] for s in ("imp", "finetune")},
         "analyses": {"one-parent": [{"solutions": [f"imp:{k - 1}"], "smallest_train_accuracy": shifted(0.6),
                                      "random_train_accuracy": shifted(0.6), "largest_train_accuracy": shifted(0.6)}
                                     for k in range(1, L + 1)]},
         "eps": {"value": 1.0, "rule": "constructed", "margin": 0.1, "dense_train_loss": shifted(0.9)}}
    config = {"levels": L, "rewind_iter": 1, "connected_threshold": 0.02, "model": "resnet20", "data": "cifar10",
              "train_subset": 1000, "epochs": 10, "precision": "fp32", "seeds": list(range(SEEDS)),
              "prune_fraction": 0.2}
    return {"config": config, "sizes": {"test": 100, "train_eval": 100}, "rewinds": {"1": r}, "figures": {},
            "comparable": "constructed", "published": {}, "working": []}


def _row(r, strategy, k):
    return next(row for row in r["levels"][strategy] if row["level"] == k)


def set_primary(number: int, case: str) -> dict:
    """The constructed study with finding `number`'s primary comparison made to go the expected
    way (case "up"), the other way ("down") or neither ("flat")."""
    results = copy.deepcopy(study())
    r = results["rewinds"]["1"]
    effect = {"up": 0.05, "down": -0.05, "flat": 0.0}[case]
    spread = WIDE if case == "flat" else JITTER
    if number == 1:  # test accuracy imp:L - reinit:L
        _row(r, "reinit", L)["test_accuracy"] = shifted(0.8 - effect, spread)
    elif number == 2:  # barrier imp:L-1 -> imp:L separated (above the 2% threshold)
        r["successive"][-1]["barrier_test_error_heldout"] = shifted(0.02 + 2 * effect, spread)
    elif number == 3:  # oneshot:L above eps = 1.0 while imp:L below it
        _row(r, "oneshot", L)["train_loss"] = shifted(1.0 + effect, spread)
        _row(r, "imp", L)["train_loss"] = shifted(0.5)
    elif number == 4:  # test accuracy imp:L - finetune:L
        _row(r, "finetune", L)["test_accuracy"] = shifted(0.8 - effect, spread)
    elif number == 5:  # baseline train accuracy imp:L - oneshot:L
        _row(r, "oneshot", L)["baseline_train_accuracy_bn_recomputed"] = shifted(0.6 - effect, spread)
    elif number == 6:  # one parent imp:L-1: smallest - random
        r["analyses"]["one-parent"][-1]["random_train_accuracy"] = shifted(0.6 - effect, spread)
    elif number == 7:  # barrier b_L -> imp:L minus b_L -> finetune:L
        r["from_baseline"]["finetune"][-1]["barrier_test_error_heldout"] = shifted(0.05 - effect, spread)
    return results


CASES = [(n, case, expected) for n in range(1, 8)
         for case, expected in (("up", SUPPORTS), ("down", DOES_NOT), ("flat", CANNOT_TELL))]


@pytest.mark.parametrize("number, case, expected", CASES)
def test_each_finding_reaches_each_verdict_and_the_report_shows_it(number, case, expected):
    results = set_primary(number, case)
    decided = FINDINGS[number - 1](results)["per_rewind"]["1"]
    assert decided["verdict"] == expected, decided["deciding"]
    assert not decided["provisional"]  # 5 seeds
    results["findings"] = findings(results)
    summary = markdown(results).split("## Summary")[1].split("## Findings")[0]
    row = next(line for line in summary.splitlines() if line.startswith(f"| {number}. {SHORT[number]}"))
    assert row.split(" | ")[1] == expected


def test_secondary_comparisons_do_not_decide():
    """Finding 1 with its primary up and every secondary comparison down still supports."""
    results = set_primary(1, "up")
    r = results["rewinds"]["1"]
    _row(r, "reinit", 1)["test_accuracy"] = shifted(0.95)  # imp:1 - reinit:1 goes the other way
    r["dense_accuracy"] = shifted(0.95)  # imp:L worse than dense by more than the margin
    decided = FINDINGS[0](results)["per_rewind"]["1"]
    assert decided["verdict"] == SUPPORTS
    assert [c["beyond"] for c in decided["secondary"]] == ["below", "below"]


def test_a_two_part_primary_needs_both_parts_and_holm_for_does_not():
    results = set_primary(3, "up")
    _row(results["rewinds"]["1"], "imp", L)["train_loss"] = shifted(1.0, WIDE)  # imp:L part undecided
    assert FINDINGS[2](results)["per_rewind"]["1"]["verdict"] == CANNOT_TELL
    # one part the other way at 0.05 but not at Holm's 0.025: t between 2.13 and 2.78 (4 degrees of freedom)
    spread = [-0.02, -0.01, 0.0, 0.01, 0.02]  # standard error 0.00707
    results = set_primary(3, "up")
    _row(results["rewinds"]["1"], "oneshot", L)["train_loss"] = shifted(1.0 - 0.0175, spread)  # t = -2.47
    decided = FINDINGS[2](results)["per_rewind"]["1"]
    assert decided["primary"][0]["beyond"] == "below" and decided["verdict"] == CANNOT_TELL
    _row(results["rewinds"]["1"], "oneshot", L)["train_loss"] = shifted(1.0 - 0.0212, spread)  # t = -3.0
    assert FINDINGS[2](results)["per_rewind"]["1"]["verdict"] == DOES_NOT


def test_holm_step_down_by_hand():
    assert holm_rejects([0.01, 0.04]) == [True, True]  # 0.01 <= 0.025, then 0.04 <= 0.05
    assert holm_rejects([0.03, 0.04]) == [False, False]  # 0.03 > 0.025: stop
    assert holm_rejects([0.2, 0.001, 0.02]) == [False, True, True]  # 0.001 <= 1/60, 0.02 <= 0.025, 0.2 > 0.05
    assert verdict([]) == CANNOT_TELL


def test_fewer_than_five_seeds_is_provisional():
    three = [-0.001, 0.0, 0.001]
    results = set_primary(1, "up")
    r = results["rewinds"]["1"]
    _row(r, "imp", L)["test_accuracy"] = shifted(0.8, three)
    _row(r, "reinit", L)["test_accuracy"] = shifted(0.75, three)
    decided = FINDINGS[0](results)["per_rewind"]["1"]
    assert decided["verdict"] == SUPPORTS and decided["provisional"]
    results["findings"] = findings(results)
    assert "| supports (provisional) |" in markdown(results)


def test_the_paired_standard_error_and_t_test_by_hand():
    a, b = over([1.0, 2.0, 4.0]), over([0.5, 1.0, 2.0])  # differences 0.5, 1, 2
    d = paired_difference(a, b)
    mean = 3.5 / 3
    sd = math.sqrt(((0.5 - mean) ** 2 + (1 - mean) ** 2 + (2 - mean) ** 2) / 2)
    assert d["difference"] == pytest.approx(mean) and d["se"] == pytest.approx(sd / math.sqrt(3)) and d["n"] == 3
    tested = one_sided(d, "above")
    assert tested["t"] == pytest.approx(mean / (sd / math.sqrt(3)))  # 2.65 < 2.92: within
    assert tested["beyond"] == "within" and tested["bound"] == pytest.approx(mean - 2.919986 * sd / math.sqrt(3), rel=1e-5)
    assert one_sided(d, "above", null=-1.0)["beyond"] == "above"  # non-inferiority at margin 1: passes


def test_the_one_seed_path_uses_the_stored_runs_spread_by_hand():
    a = mean_std({0: 0.8}, {0: 0.8, 1: 0.7, 2: 0.9})
    b = mean_std({0: 0.6}, {0: 0.6, 1: 0.65, 2: 0.7})
    d = paired_difference(a, b)  # stored differences 0.2, 0.05, 0.2
    assert d["difference"] == pytest.approx(0.2) and d["n"] == 3 and d["seeds"] == 1
    assert d["se"] == pytest.approx(math.sqrt(((0.2 - 0.15) ** 2 + (0.05 - 0.15) ** 2 + (0.2 - 0.15) ** 2) / 2))
    assert one_sided(d, "above")["beyond"] == "within"  # t = 2.31 < 2.92
    assert paired_difference(mean_std({0: 0.8}), mean_std({0: 0.6}))["se"] is None  # no noise estimate
    assert one_sided(paired_difference(mean_std({0: 0.8}), mean_std({0: 0.6})), "above")["beyond"] == "unknown"


def test_power_on_constructed_effects_by_hand():
    """A difference of mean 0.01 and seed standard deviation 0.01: t = sqrt(N) at N seeds."""
    results = set_primary(1, "up")
    diffs = [0.01 + e for e in (-0.01, 0.0, 0.01)]  # mean 0.01, sd 0.01
    r = results["rewinds"]["1"]
    _row(r, "imp", L)["test_accuracy"] = over([0.8, 0.8, 0.8])
    _row(r, "reinit", L)["test_accuracy"] = over([0.8 - d for d in diffs])
    for seeds, passes in ((3, False), (4, False), (5, True), (20, True)):  # t critical 2.92, 2.35, 2.13, 1.73
        row = next(x for x in rows_of(results, seeds) if x["role"] == "primary" and x["finding"] == 1)
        assert row["seed_sd"] == pytest.approx(0.01) and row["t_at_n"] == pytest.approx(math.sqrt(seeds))
        assert row["decides_at_n"] == passes and row["expected_way_at_n"] == passes
