"""Per-level overhead of IMP outside training: pruning, rewinding, the level's evaluations, saving.

Runs, in one process on the same ResNet-20 weights and data:
  lthfast     a real `ImpRun.level("imp", 1)` after a one-epoch dense run whose rewind point
              is its last iteration, so that retraining takes zero steps and the level's wall
              time is its overhead: global
              magnitude pruning, the baseline saved and evaluated with stored and recomputed
              BatchNorm statistics, rewinding, the solution's final test evaluation and clean
              train loss, level.json and the index line. Measured at several evaluation sample
              sizes (train images : test images : BatchNorm batches).
  open_lth    what open_lth does per level (the baseline this bench names): a numpy sort of the
              concatenated |w| for the global threshold, and two full test-set evaluations
              (before and after training) through a DataLoader with per-image normalization,
              NCHW layout.
Eval throughput (images/s) of both paths is printed too. Synthetic images: evaluation time
does not depend on pixel values. Medians over repeats.

    python bench/level_overhead.py --repeats 3
"""
from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T

from lthfast.config.runs import TrainConfig
from lthfast.data.dataset import MEAN, STD
from lthfast.data.synthetic import synthetic
from lthfast.foundations.files import load_checkpoint, read_json
from lthfast.imp.driver import ImpConfig, ImpRun
from lthfast.models.families import create_model, prunable_names

BATCH = 128


def parse_settings(text: str) -> list[tuple[int, int | None, int]]:
    """'10000:all:40,2000:2000:16' -> [(10000, None, 40), (2000, 2000, 16)]."""
    out = []
    for item in text.split(","):
        train, test, bn = item.split(":")
        out.append((int(train), None if test == "all" else int(test), int(bn)))
    return out


def lthfast_level_seconds(root: Path, data, train: TrainConfig, setting, dense_dir: Path) -> dict:
    train_images, test_images, bn_batches = setting
    config = ImpConfig(train=train, eval_train_images=train_images, eval_test_images=test_images,
                       bn_batches=bn_batches)
    run = ImpRun(config, root, data, progress=False)
    if not (run.dir / "level_00" / "level.json").exists():
        shutil.copytree(dense_dir, run.dir / "level_00", dirs_exist_ok=True)
    folder = run.level_dir("imp", 1)
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    run.level("imp", 1)
    wall = time.perf_counter() - start
    record = read_json(folder / "level.json")
    test_eval = read_json(folder / "metrics.json")["history"][-1]["eval_seconds"]
    return {"wall_seconds": wall, "solution_test_eval": test_eval, **record["overhead_breakdown"]}


class _Normalized(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
        self.transform = T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def open_lth_level_seconds(weights: dict, names: list[str], data, model_name: str) -> dict:
    start = time.perf_counter()
    flat = np.concatenate([weights[n].numpy().ravel() for n in names])
    threshold = np.sort(np.abs(flat))[int(0.2 * flat.size)]
    masks = {n: (np.abs(weights[n].numpy()) > threshold) for n in names}
    prune_seconds = time.perf_counter() - start
    model = create_model(model_name)
    model.load_state_dict(weights)
    model.eval()
    loader = torch.utils.data.DataLoader(_Normalized(data.test_x, data.test_y), batch_size=1000)
    eval_start = time.perf_counter()
    with torch.no_grad():
        for _ in range(2):  # open_lth evaluates the test set before and after training
            correct = 0
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
    eval_seconds = time.perf_counter() - eval_start
    assert masks  # the masks are the point of the pruning step
    return {"wall_seconds": prune_seconds + eval_seconds, "prune_seconds": prune_seconds,
            "eval_images_per_second": 2 * data.test_x.shape[0] / eval_seconds}


def main(repeats: int = 3, settings: str = "10000:all:40,2000:2000:16,1000:1000:8,500:500:4",
         train_images: int = 10_000, test_images: int = 10_000, out: str = "bench/results"):
    """Median per-level overhead of lthfast at each evaluation setting vs open_lth's."""
    torch.manual_seed(0)
    data = synthetic(num_train=train_images, num_test=test_images)
    steps = -(-train_images // BATCH)
    train = TrainConfig(model="resnet20", data="synthetic", batch_size=BATCH, epochs=1,
                        rewind_iter=steps, device="cpu")
    settings = parse_settings(settings)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        first = ImpRun(ImpConfig(train=train), root / "dense", data, progress=False)
        dense_dir = first.dense()
        weights = load_checkpoint(dense_dir / "final.pt")
        names = prunable_names(create_model("resnet20"))
        rows = {f"lthfast {s[0]}:{s[1] or 'all'}:{s[2]}": [] for s in settings}
        rows["open_lth"] = []
        for _ in range(repeats):
            for setting, key in zip(settings, rows):
                rows[key].append(lthfast_level_seconds(root / "levels", data, train, setting, dense_dir))
            rows["open_lth"].append(open_lth_level_seconds(weights, names, data, "resnet20"))
    baseline = statistics.median(r["wall_seconds"] for r in rows["open_lth"])
    print(f"ResNet-20, {train_images} train / {test_images} test images, {repeats} repeats, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'path (train:test:bn batches)':32s} {'level s':>8s} {'vs open_lth':>11s}  details")
    summary = {}
    for key, runs in rows.items():
        wall = statistics.median(r["wall_seconds"] for r in runs)
        details = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "wall_seconds"}
        summary[key] = {"wall_seconds": wall, **details}
        text = ", ".join(f"{k} {v:.3f}" if v < 100 else f"{k} {v:.0f}" for k, v in details.items())
        print(f"{key:32s} {wall:8.2f} {baseline / wall:10.2f}x  {text}")
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / "level_overhead.json"
    path.write_text(json.dumps({"repeats": repeats, "results": summary}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
