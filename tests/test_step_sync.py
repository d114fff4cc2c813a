"""A training step makes no host synchronization, so that a CUDA graph can capture it and the
host never waits for the GPU: the trainer's step (lthfast.training.stack._Loop._step; its
member's batch, the engine's forward and backward, the update, the running sums) reads no
tensor value back to the host. On the CPU this is checked by recording every Python-level
read of a tensor's values (item, tolist, numpy, cpu, bool, int, float, index, format), and
every aten op whose output size depends on values, during the steps between epoch ends
(an epoch end reads its sums once, by design). On a GPU, bench/step_overhead.py counts the
synchronizations torch.cuda.set_sync_debug_mode reports.
"""
import contextlib
import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lthfast import ops
from lthfast.config.runs import TrainConfig
from lthfast.data.synthetic import synthetic
from lthfast.training import stack as stack_module
from lthfast.training.member import TrainJob
from lthfast.training.optim import StackedMaskedSGD

HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__format__")
VALUE_SIZED = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_consecutive", "equal",
               "is_nonzero", "allclose", "unique_dim"}


class _ValueSizedOps(TorchDispatchMode):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in VALUE_SIZED:
            self.seen.append(f"aten.{func.overloadpacket.__name__}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_reads():
    """Yields a list that collects every host read of a tensor's values made inside."""
    seen, originals = [], {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def recording(name, original):
        def method(self, *args, **kwargs):
            seen.append(f"Tensor.{name}")
            return original(self, *args, **kwargs)
        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, recording(name, original))
    try:
        with _ValueSizedOps(seen):
            yield seen
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def open_stack(tmp_path, k, mode, fine_tune_lr=None):
    """A stack of k trainings of the smoke model on synthetic data (64 batches an epoch),
    member 0 at another lr when fine_tune_lr is given (per-member rates: a tensor lr)."""
    data = synthetic(num_train=32 * 64, num_test=16)
    config = TrainConfig(model="resnet8", width=8, batch_size=32, epochs=2, lr=0.05, rewind_iter=None)
    configs = [dataclasses.replace(config, seed=i) for i in range(k)]
    if fine_tune_lr is not None:
        configs[0] = dataclasses.replace(configs[0], lr=fine_tune_lr)
    jobs = [TrainJob(c, tmp_path / f"m{i}") for i, c in enumerate(configs)]
    return stack_module.open_stack(jobs, range(k), data, mode)


@pytest.mark.parametrize("k,mode,fine_tune_lr", [(1, "loop", None), (3, "loop", 0.001), (3, "grouped", 0.001)])
def test_a_training_step_reads_no_tensor_value_back_to_the_host(tmp_path, k, mode, fine_tune_lr):
    loop = open_stack(tmp_path, k, mode, fine_tune_lr)
    with host_reads() as seen:
        for _ in range(3):  # the epoch's first step (its plan made) and two more; no epoch end
            loop._step()
    assert loop.members[0].iteration == 3
    assert seen == []


def test_the_check_sees_a_host_read(tmp_path):
    """The recorder is not blind: an lr tensor whose values the op must check is a host read
    (the reason StackedMaskedSGD checks its rates as floats and says so), as is .item()."""
    params, grads, momentum = torch.zeros(6), torch.ones(6), torch.zeros(6)
    keep = torch.ones(6, dtype=torch.bool)
    with host_reads() as seen:
        ops.masked_sgd_(params, grads, momentum, keep, torch.tensor([0.1, 0.2]), 0.9, 0.0)
    assert "Tensor.__bool__" in seen
    with host_reads() as seen:
        torch.ones(2).sum().item()
    assert seen == ["Tensor.item", "aten._local_scalar_dense"]


def test_stacked_sgd_checks_member_rates_on_the_host():
    model = torch.nn.Linear(3, 2)
    sgd = StackedMaskedSGD([model, torch.nn.Linear(3, 2)], [None, None], 0.9, 0.0)
    for bad in (float("nan"), -0.1, float("inf")):
        with pytest.raises(ValueError, match="finite and non-negative"):
            sgd.step([0.1, bad])


def test_compile_by_default_follows_the_measured_table(monkeypatch):
    """compile="auto": compiled only for the (device kind, model, width, precision) the bench
    measured faster, in loop stacks; an explicit setting is kept; LTHFAST_COMPILE=0 turns it off."""
    from lthfast.training import engines

    cpu = torch.device("cpu")
    monkeypatch.delenv("LTHFAST_COMPILE", raising=False)
    monkeypatch.setattr(engines, "device_kind", lambda device: "cpu-amx")
    assert engines.resolve_compile("auto", "resnet20", 16, "bf16", cpu, "loop") is True
    for args in (("vgg16", 64, "bf16", cpu, "loop"), ("resnet20", 16, "fp32", cpu, "loop"),
                 ("resnet20", 8, "bf16", cpu, "loop"), ("resnet20", 16, "bf16", cpu, "grouped")):
        assert engines.resolve_compile("auto", *args) is False
    assert engines.resolve_compile(True, "vgg16", 64, "bf16", cpu, "grouped") is True
    monkeypatch.setattr(engines, "device_kind", lambda device: "cpu")
    assert engines.resolve_compile("auto", "resnet20", 16, "bf16", cpu, "loop") is False
    monkeypatch.setattr(engines, "device_kind", lambda device: "cpu-amx")
    monkeypatch.setenv("LTHFAST_COMPILE", "0")
    assert engines.resolve_compile("auto", "resnet20", 16, "bf16", cpu, "loop") is False
