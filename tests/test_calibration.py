"""The cost calibration: medians with their spread, cached, and a machine shared with
another process is noticed (its figures are not kept)."""
import warnings

import pytest

from lthfast.config.runs import TrainConfig
from lthfast.study import calibration

TINY = TrainConfig(model="resnet8", width=4, batch_size=8, precision="fp32", device="cpu")


def measure_with(monkeypatch, others_share: float):
    """calibration.measure of a tiny network while the system's busy CPU time grows by our own
    CPU time plus `others_share` of every core per second of wall time."""
    clock = {"wall": 0.0, "own": 0.0}
    monkeypatch.setattr(calibration.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(calibration, "_own_cpu_seconds", lambda: clock["own"])
    cores = calibration.os.cpu_count()

    def busy_seconds():  # read at the start (all zero) and at the end (10/3 s of wall, 5 s of our own a figure)
        return clock["own"] + others_share * cores * clock["wall"]
    monkeypatch.setattr(calibration, "_busy_cpu_seconds", busy_seconds)
    real = calibration._seconds

    def timed(fn, device):
        out = real(fn, device)
        clock["wall"] += 10 / 3
        clock["own"] += 15 / 3
        return out
    monkeypatch.setattr(calibration, "_seconds", timed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = calibration.measure(TINY, calibration.torch.device("cpu"))
    return result, [str(w.message) for w in caught]


def test_another_process_using_the_cpu_marks_the_calibration_busy(monkeypatch):
    result, messages = measure_with(monkeypatch, others_share=0.6)
    assert result.busy
    assert any("other processes used 60% of the" in m and "not kept" in m for m in messages), messages


def test_our_own_cpu_time_is_not_counted_as_another_process(monkeypatch):
    result, messages = measure_with(monkeypatch, others_share=0.0)
    assert not any("other processes used" in m for m in messages), messages
    assert result.busy == (max(result.spread.values()) > calibration.BUSY_SPREAD)


def test_figures_are_positive_medians_with_a_spread_per_figure(monkeypatch):
    result, _ = measure_with(monkeypatch, others_share=0.0)
    assert result.train_step > 0 and result.eval_image > 0 and result.hvp_image > 0 and result.bn_image > 0
    assert result.level_seconds >= 0 and result.job_seconds >= 0
    assert set(result.spread) == {"train_step", "eval", "bn", "hvp"} and all(v >= 0 for v in result.spread.values())
    assert result.device.startswith("CPU")


def test_the_system_counter_reads_where_there_is_proc_stat():
    seconds = calibration._busy_cpu_seconds()
    if seconds is None:
        pytest.skip("no /proc/stat here")
    assert seconds > 0 and calibration._own_cpu_seconds() > 0
