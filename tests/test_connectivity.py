"""The one connectivity rule (docs/protocol.md, "Linear connectivity"), given known answers:
two networks are connected when their test-error barrier is below the threshold by a
one-sided t test at 0.05 over seeds, separated when above it by the same test, and neither
otherwise; findings 2, 4 and 7 decide their barriers by it."""
import math

import pytest

from lthfast.foundations.stats import CANNOT_TELL, DOES_NOT, SUPPORTS, connectivity, mean_std, t_critical
from lthfast.report.findings import finding_2, finding_4, finding_7

CONNECTED = [0.004, 0.006, 0.005]  # far below 2%
SEPARATED = [0.110, 0.090, 0.100]  # far above
NEITHER = [0.002, 0.020, 0.040]  # straddles it: mean 0.0207, standard error 0.011


def over_seeds(values):
    return mean_std(dict(enumerate(values)))


def test_t_critical_is_students_one_sided_95_quantile():
    assert [round(t_critical(n), 2) for n in (3, 4, 5, 10)] == [2.92, 2.35, 2.13, 1.83]


@pytest.mark.parametrize("values, state", [(CONNECTED, "below"), (SEPARATED, "above"), (NEITHER, "within")])
def test_the_rule_says_connected_separated_or_neither(values, state):
    d = connectivity(over_seeds(values), 0.02)
    assert d["beyond"] == state
    assert d["height"] == pytest.approx(sum(values) / 3) and d["difference"] == pytest.approx(d["height"] - 0.02)
    se = math.sqrt(sum((v - d["height"]) ** 2 for v in values) / 2) / math.sqrt(3)  # by hand
    assert d["se"] == pytest.approx(se)
    low, high = d["bounds"]
    assert (high < 0.02) == (state == "below") and (low > 0.02) == (state == "above")


def test_the_threshold_is_the_studys():
    assert connectivity(over_seeds(NEITHER), 0.07)["beyond"] == "below"
    assert connectivity(over_seeds(SEPARATED), 0.15)["beyond"] == "below"
    assert connectivity(over_seeds(CONNECTED), 0.001)["beyond"] == "above"
    assert connectivity(over_seeds([0.01]), 0.02)["beyond"] == "unknown"  # one seed, no stored spread


def successive(values_per_pair, threshold=0.02):
    pairs = [{"pair": [f"imp:{k}", f"imp:{k + 1}"], "barrier_test_error": over_seeds(v)}
             for k, v in enumerate(values_per_pair)]
    return {"config": {"levels": len(pairs), "rewind_iter": 1, "connected_threshold": threshold},
            "rewinds": {"1": {"successive": pairs}}}


@pytest.mark.parametrize("pairs, verdict", [([SEPARATED, SEPARATED], SUPPORTS), ([SEPARATED, CONNECTED], DOES_NOT),
                                            ([CONNECTED, SEPARATED], SUPPORTS), ([SEPARATED, NEITHER], CANNOT_TELL)])
def test_finding_2_is_decided_by_the_last_successive_pair(pairs, verdict):
    decided = finding_2(successive(pairs))["per_rewind"]["1"]
    assert decided["verdict"] == verdict
    assert [c["beyond"] for c in decided["secondary"]] == [{"SEP": "above", "CON": "below"}[
        "SEP" if pairs[0] is SEPARATED else "CON"]]
    if verdict == CANNOT_TELL:
        assert "neither connected nor separated" in decided["deciding"] and "0.0207" in decided["deciding"]


def escapes(imp_barrier, finetune_barrier):
    """One level: curves from b_1 to imp:1 and finetune:1; imp farther and more accurate."""
    def row(strategy, accuracy):
        return {"level": 1, "test_accuracy": over_seeds(accuracy)}
    r = {"strategies": ["imp", "finetune"],
         "levels": {"imp": [row("imp", [0.80, 0.82, 0.81])], "finetune": [row("finetune", [0.70, 0.71, 0.69])]},
         "from_baseline": {
             "imp": [{"barrier_test_error": over_seeds(imp_barrier), "distance": {"relative": over_seeds([0.3, 0.31, 0.29])}}],
             "finetune": [{"barrier_test_error": over_seeds(finetune_barrier),
                           "distance": {"relative": over_seeds([0.01, 0.012, 0.011])}}]}}
    return {"config": {"levels": 1, "rewind_iter": 1, "connected_threshold": 0.02}, "rewinds": {"1": r}}


STATE = {id(CONNECTED): "below", id(SEPARATED): "above", id(NEITHER): "within"}


@pytest.mark.parametrize("finetune_barrier", [CONNECTED, SEPARATED, NEITHER])
def test_finding_7_reports_whether_fine_tuning_stays_connected_to_its_baseline(finetune_barrier):
    decided = finding_7(escapes(SEPARATED, finetune_barrier))["per_rewind"]["1"]
    (link,) = [c for c in decided["secondary"] if c["kind"] == "connectivity"]
    assert link["beyond"] == STATE[id(finetune_barrier)] and link["expected"] == "below"
    # primary: the barrier from b_L to imp:L minus the one to finetune:L, paired over seeds
    assert decided["primary"][0]["difference"] == pytest.approx(0.1 - sum(finetune_barrier) / 3)


@pytest.mark.parametrize("imp_barrier", [SEPARATED, CONNECTED, NEITHER])
def test_finding_4_reports_whether_the_rewound_solution_is_separated_from_its_baseline(imp_barrier):
    decided = finding_4(escapes(imp_barrier, CONNECTED))["per_rewind"]["1"]
    (link,) = [c for c in decided["secondary"] if c["kind"] == "connectivity"]
    assert link["beyond"] == STATE[id(imp_barrier)] and link["expected"] == "above"
    assert decided["verdict"] == SUPPORTS  # primary: test accuracy imp:1 - finetune:1, +0.11 over 3 seeds
