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
                                            ([SEPARATED, NEITHER], CANNOT_TELL)])
def test_finding_2_supports_when_successive_solutions_are_separated(pairs, verdict):
    decided = finding_2(successive(pairs))["per_rewind"]["1"]
    assert decided["verdict"] == verdict
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


@pytest.mark.parametrize("finetune_barrier, verdict", [(CONNECTED, SUPPORTS), (SEPARATED, DOES_NOT),
                                                       (NEITHER, CANNOT_TELL)])
def test_finding_7_asks_fine_tuning_to_stay_connected_to_its_baseline(finetune_barrier, verdict):
    assert finding_7(escapes(SEPARATED, finetune_barrier))["per_rewind"]["1"]["verdict"] == verdict


@pytest.mark.parametrize("imp_barrier, verdict", [(SEPARATED, SUPPORTS), (CONNECTED, DOES_NOT),
                                                  (NEITHER, CANNOT_TELL)])
def test_finding_4_asks_the_rewound_solution_to_be_separated_from_its_baseline(imp_barrier, verdict):
    assert finding_4(escapes(imp_barrier, CONNECTED))["per_rewind"]["1"]["verdict"] == verdict
