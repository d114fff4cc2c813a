"""Training throughput: seconds per step and images per second, data pipeline included.

Runs, side by side in one process on the same data, on the tensors' device:
  baseline    what a user would otherwise write (open_lth style): a torch DataLoader
              with per-image torchvision transforms (pad-4 crop, flip, normalize),
              default NCHW layout, torch.optim.SGD
  lthfast     lthfast's trainer step: device-resident uint8 data, batched seeded
              augmentation, channels_last, SGD with the pruned entries kept at zero
              (a random 20%-density mask; flat parameters and the fused masked SGD
              kernel of the `auto` backend)
  lthfast-nchw  the same in the default layout (to show what channels_last gives)
  lthfast-bf16  the same under bfloat16 autocast (with --bf16)
Configurations are interleaved in each repeat; medians over repeats are reported.

    python bench/train_throughput.py --models resnet20,vgg16 --repeats 5
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T

from lthfast.config.runs import TrainConfig
from lthfast.data.dataset import MEAN, STD, EpochPlan
from lthfast.data.synthetic import synthetic
from lthfast.models.families import create_model, prunable_names
from lthfast.training.network import place_mask
from lthfast.training.optim import MaskedSGD
from lthfast.training.trainer import train_step


class _PerImageDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                    T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def baseline_runner(model_name, data, batch_size, device):
    model = create_model(model_name, seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(_PerImageDataset(data.train_x, data.train_y),
                                         batch_size=batch_size, shuffle=True, drop_last=True)
    batches = iter(loader)

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def lthfast_runner(model_name, data, batch_size, device, channels_last, precision="fp32"):
    config = TrainConfig(model=model_name, batch_size=batch_size, lr=0.01, precision=precision)
    model = create_model(model_name, seed=0).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    mask = place_mask(model, {n: torch.rand(params[n].shape, generator=g) < 0.2 for n in prunable_names(model)})
    opt = MaskedSGD(model, mask, momentum=0.9, weight_decay=1e-4, backend="auto")
    data = data.to(device)
    iteration = 0

    def step():
        nonlocal iteration
        epoch, index = divmod(iteration, 8)
        if index == 0:  # a new epoch's order and augmentation, as the trainer draws them
            step.plan = EpochPlan(data.num_train, batch_size, 0, epoch, device)
        x, y = step.plan.batch(data, index, channels_last)
        iteration += 1
        loss, _ = train_step(model, opt, x, y, 0.01, config, device)
        return loss
    return step


def time_steps(step, steps, device):
    step()  # warm-up: allocator, oneDNN primitive cache
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main(models: str = "resnet20,vgg16", batch_size: int = 128, steps: int = 0, repeats: int = 5,
         device: str = "auto", bf16: bool = False, out: str = "bench/results/train_throughput.json"):
    """bf16: also time lthfast under bfloat16 autocast (slow on CPUs without AVX512-BF16/AMX)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    data = synthetic(num_train=8 * batch_size, num_test=10)
    results = {"device": device_name, "batch_size": batch_size, "torch": torch.__version__, "models": {}}
    print(f"device: {device_name}; batch {batch_size}; medians of {repeats} repeats")
    model_names = models.split(",") if isinstance(models, str) else list(models)  # Fire parses a,b as a tuple
    for model_name in model_names:
        n = steps or (3 if model_name.startswith("vgg") and device.type == "cpu" else 8)
        runners = {
            "baseline": baseline_runner(model_name, data, batch_size, device),
            "lthfast": lthfast_runner(model_name, data, batch_size, device, channels_last=True),
            "lthfast-nchw": lthfast_runner(model_name, data, batch_size, device, channels_last=False),
        }
        if bf16:
            runners["lthfast-bf16"] = lthfast_runner(model_name, data, batch_size, device, True, "bf16")
        times = {name: [] for name in runners}
        for _ in range(repeats):
            for name, step in runners.items():
                times[name].append(time_steps(step, n, device))
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        results["models"][model_name] = {
            name: {"seconds_per_step": medians[name], "images_per_second": batch_size / medians[name],
                   "all_seconds_per_step": times[name], "speedup_vs_baseline": medians["baseline"] / medians[name]}
            for name in runners}
        for name in runners:
            print(f"{model_name:9s} {name:13s} {medians[name]:.3f} s/step  {batch_size / medians[name]:7.0f} img/s  "
                  f"x{medians['baseline'] / medians[name]:.2f} vs baseline")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    print(f"results written to {out}")


if __name__ == "__main__":
    import fire
    fire.Fire(main)
