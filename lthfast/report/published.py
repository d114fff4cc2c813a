"""Published reference results, shown beside (never mixed with) what a study measures.

Renda, Frankle and Carbin 2020, "Comparing Rewinding and Fine-tuning in Neural Network
Pruning" (ICLR 2020): ResNet-20 and VGG-16 on CIFAR-10, 182 epochs, 3 trials, medians.
Checked against their released data (vision/plot/bases_dataframe.pkl and
pruned_dataframe.pkl of github.com/lottery-ticket/rewinding-iclr20-public): unstructured
global magnitude pruning, iterative ("is_iterative"), test accuracy in percent.
  - weight rewinding to epoch 12: retrain_method "lottery", retrain_time 170 epochs
  - rewinding to epoch 0 (the original lottery ticket): "lottery", 182 epochs
  - fine-tuning (lr 0.001), the best over the released retraining budgets (10 to 182 epochs,
    as the study's specification quotes them); and at the full 182-epoch budget, which lthfast's finetune uses
  - learning-rate rewinding: retrain_method "lr_finetune" (the release's name for it), 170
    epochs, the budget of weight rewinding to epoch 12 (lthfast's lr-rewind retrains from R
    to the end, as weight rewinding does)
Dense: mean +/- std over the released base networks (246 each). Selection: network resnet20,
prune_method Unstructured, is_iterative, the retrain method and budget, grouped by density
rounded to 4 places, median of test_acc over the 3 trials, printed with '%.2f'.
Where the release differs from a like-for-like comparison: its test accuracy is on 8,000 test
images (2,000 are its validation set), so medians can fall on a half hundredth (91.675 is
printed 91.67); "best budget" is chosen here by the test median, while the paper's plots
choose it by validation (that gives 90.60 / 90.35 / 89.78 for fine-tuning); no pruned VGG-16
results were released, so VGG-16 has its dense value only.
"""
from __future__ import annotations

SOURCE = ("Renda, Frankle & Carbin 2020, ICLR, released data (github.com/lottery-ticket/rewinding-iclr20-public): "
          "CIFAR-10, 182 epochs, median of 3 trials")

DENSE = {"resnet20": (91.71, 0.23), "vgg16": (93.33, 0.19)}  # test accuracy %, mean and std

# density -> test accuracy % (ResNet-20, iterative pruning)
RESNET20 = {
    "weight rewinding to epoch 12": {0.2097: 91.67, 0.168: 91.31, 0.107: 91.00},
    "rewinding to epoch 0": {0.2097: 89.21, 0.168: 88.56, 0.107: 86.67},
    "fine-tuning, best budget": {0.2097: 90.94, 0.168: 90.56, 0.107: 89.78},
    "fine-tuning, 182 epochs": {0.2097: 90.46, 0.168: 89.99, 0.107: 89.33},
    "learning-rate rewinding, 170 epochs": {0.2097: 91.69, 0.168: 91.49, 0.107: 91.07},
}
# Which lthfast strategy (and rewind point) each published curve corresponds to.
MATCHES = {"weight rewinding to epoch 12": ("imp", "late"), "rewinding to epoch 0": ("imp", 0),
           "fine-tuning, 182 epochs": ("finetune", "late"), "fine-tuning, best budget": ("finetune", "late"),
           "learning-rate rewinding, 170 epochs": ("lr-rewind", "late")}


def comparable(config: dict) -> str | None:
    """Why a study's numbers cannot stand beside the published ones, or None if its recipe
    follows the paper's (full CIFAR-10, at least 160 epochs, a published model)."""
    if config["data"] != "cifar10" or config.get("train_subset") is not None:
        return "it trains on a subset or on other data, not the full CIFAR-10 training set"
    if config["epochs"] < 160:
        return f"it trains {config['epochs']} epochs, not the paper recipe's 160 (182 in Renda et al.)"
    if config["model"] not in DENSE or config.get("width") not in (None, 16 if config["model"] == "resnet20" else 64):
        return f"{config['model']} at this width has no published reference here"
    return None


def reference(config: dict) -> dict:
    """The published figures for the study's model: dense and, for ResNet-20, per density."""
    return {"source": SOURCE, "model": config["model"], "dense": DENSE.get(config["model"]),
            "by_density": RESNET20 if config["model"] == "resnet20" else {}}
