"""Typed configs of a training (TrainConfig) and of a chain of pruned networks (ImpConfig),
and the hash that names their run folders.

The hash covers the fields that change results and differ from their defaults (as
open_lth), so adding a new field with a default keeps old run names valid. Fields that
only say where or how fast to run (device, kernel backend, memory layout, evaluation batch
size) are left out of it: they change results only within floating-point tolerance. The
data folder's path is left out too (the same data may live anywhere), but whether the
data came from a folder or from torchvision's download is kept: the JPEG copy's pixels
differ slightly. A factory model (`package.module:factory`, lthfast.models.custom) adds the
shapes of its state to the hash (editing the factory's layers names a new run; every other
model's hash is unchanged), and a data set read from any folder (imagefolder) adds the
folder's identity (its files' relative paths and sizes).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import lthfast.data.registry as data_sets
import lthfast.models.registry as model_families
from lthfast.foundations import settings
from lthfast.foundations.errors import LthError
from lthfast.foundations.hardware import check_device, resolve_precision
from lthfast.foundations.hashing import digest
from lthfast.foundations.settings import nested, setting
from lthfast.models.custom import FORM as FACTORY_FORM
from lthfast.models.families import architecture, check_size, family
from lthfast.ops import BACKENDS

NOT_HASHED = {"device", "backend", "channels_last", "eval_batch_size", "data_dir"}
PRECISIONS = ("auto", "fp32", "bf16")
# Values hashed against what a field meant before it existed or changed its default, so that
# runs stored then keep their names: every run before `precision` existed trained in fp32.
LEGACY_DEFAULTS = {"precision": "fp32"}
# {family: its late rewind point} (Frankle et al. 2020, docs/protocol.md: resnet 2000, vgg 1000), from the registry.
DEFAULT_REWIND_ITER = model_families.DEFAULT_REWIND_ITER
SEED_MAX = 2 ** 32 - 1  # seeds are mixed into 64-bit generator seeds (seed * 1_000_003 + k)


def config_hash(fields_: dict) -> str:
    """12 hex digits of the SHA-256 of the fields as sorted JSON: a run folder's name."""
    return digest(fields_, 12)


@dataclass
class TrainConfig:
    """One training run: model, data, recipe (docs/protocol.md's defaults) and seed."""
    model: str = setting("resnet20", "the model: " + " or ".join(f.form for f in model_families.FAMILIES.values())
                         + ", e.g. resnet20 or vgg16, or your own: " + FACTORY_FORM + " (factory(num_classes) -> "
                         "nn.Module, built under torch.manual_seed(SEED); see lthfast/models/custom.py).", kind="str")
    width: int | None = setting(None, "base width (default: " + ", ".join(
        f"{f.name} {f.default_width}" for f in model_families.FAMILIES.values()) + "); ignored for a factory "
        "model.", minimum=1)
    data: str = setting("cifar10", "the data set: " + " or ".join(
                            f"{e.name} ({e.description})" if e.description else e.name
                            for e in data_sets.DATA_SETS.values()) + ".",
                        kind="str", choices=data_sets.NAMES)
    data_dir: str | None = setting(None, "the data set in ImageFolder layout (train/<class>/*.jpg, "
                                   "test/<class>/*.jpg): a copy of CIFAR-10 or CIFAR-100, or any folder for --data "
                                   "imagefolder; default: torchvision's download into the cache folder.", kind="str")
    train_subset: int | None = setting(None, "train on a seeded, class-balanced subset of this many images.",
                                       minimum=10)
    subset_seed: int = setting(0, "seed of that subset (kept apart from --seed so that seeds share it).",
                               minimum=0, maximum=SEED_MAX)
    epochs: int = setting(160, "training epochs.", minimum=1)
    batch_size: int = setting(128, "images per step.", minimum=1)
    lr: float = setting(0.1, "peak learning rate.", kind="float", minimum=0.0)
    momentum: float = setting(0.9, "SGD momentum.", kind="float", minimum=0.0)
    nesterov: bool = setting(False, "use Nesterov momentum.", kind="bool")
    weight_decay: float = setting(1e-4, "L2 weight decay.", kind="float", minimum=0.0)
    milestones: tuple | None = setting(None, "epochs where the lr is multiplied by GAMMA, e.g. 80,120; default: "
                                       "half and three quarters of EPOCHS.", kind="ints", minimum=1,
                                       error="must be positive epoch numbers like 80,120, each once")
    gamma: float = setting(0.1, "lr factor at each milestone.", kind="float", minimum=0.0)
    warmup_iters: int = setting(0, "linear lr warmup over this many iterations (0: none).", minimum=0)
    seed: int = setting(0, "seed of the initialization, and of the data order unless DATA_SEED is given.",
                        minimum=0, maximum=SEED_MAX)
    data_seed: int | None = setting(None, "seed of data order and augmentation.", minimum=0, maximum=SEED_MAX)
    augment: bool = setting(True, "random crop (4-pixel padding) and horizontal flip of training batches, and of "
                            "the batches that recompute BatchNorm statistics.", kind="bool")
    precision: str = setting("auto", "fp32, bf16 (autocast) or auto: bf16 where the device runs it natively (CUDA "
                             "with bf16, CPUs with AMX-BF16 or AVX512-BF16), else fp32; stored resolved.", kind="str",
                             choices=PRECISIONS)
    channels_last: bool | None = setting(None, "memory layout; default: channels_last (measured faster), NCHW for "
                                         "a factory model.", kind="bool")
    rewind_iter: int | None = setting(None, "also save the weights at this iteration (rewind.pt), for IMP's "
                                      "rewinding.", minimum=0)
    eval_every: int = setting(1, "evaluate the test set every this many epochs (and at the end).", minimum=1)
    eval_batch_size: int = setting(256, "batch size of evaluation.", minimum=1)
    device: str = setting("auto", "auto, cpu or cuda[:N].", kind="str")
    backend: str = setting("auto", "kernels: auto, torch (reference), cpp (CPU), cuda or triton.", kind="str",
                           choices=BACKENDS)

    def __post_init__(self):
        self.validate()

    def validate(self):
        settings.check(self)
        if self.milestones is not None:
            self.milestones = tuple(sorted(self.milestones))
        check_device(self.device)
        self.precision = resolve_precision(self.precision, self.device)
        if family(self.model).factory:  # no width; NCHW unless asked (a factory's code may `view` activations)
            self.width = None
            if self.channels_last is None:
                self.channels_last = False
        check_size(self.model, self.width, self.num_classes)

    # -------------------------------------------------------------- derived values
    @property
    def lr_milestones(self) -> tuple:
        """Milestone epochs; by default 80,120 of 160 epochs, scaled to the run's length."""
        if self.milestones is not None:
            return self.milestones
        return (round(self.epochs * 0.5), round(self.epochs * 0.75))

    @property
    def num_classes(self) -> int:
        """The data set's class count: the model's output size."""
        return data_sets.get(self.data, self.data_dir).num_classes

    @property
    def effective_data_seed(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hashed_fields(self) -> dict:
        out = settings.hashed(self, LEGACY_DEFAULTS, skip=NOT_HASHED)
        entry = data_sets.get(self.data, self.data_dir)
        if entry.reads_data_dir and self.data_dir is not None:
            out["data_source"] = "image-folder"
        if entry.identity is not None:
            out["data_identity"] = entry.identity
        if family(self.model).factory:
            out["model_shapes"] = architecture(self.model, None, entry.num_classes)
        return out

    def run_hash(self) -> str:
        return config_hash(self.hashed_fields())

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise LthError(f"unknown config fields: {', '.join(sorted(unknown))}")
        d = {**LEGACY_DEFAULTS, **d}
        if isinstance(d.get("milestones"), list):
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)


@dataclass
class ImpConfig:
    """What a chain of pruned networks depends on (levels and strategy are not part of it)."""
    train: TrainConfig = nested(TrainConfig)
    prune_fraction: float = setting(0.2, "fraction of the remaining prunable weights removed per level.",
                                    kind="float", positive=True, below=1)
    finetune_lr: float = setting(0.001, "constant learning rate of fine-tuning.", kind="float", positive=True)
    fixed_data_order: bool = setting(False, "one data order for every training (default: one per strategy and "
                                     "level).", kind="bool")
    eval_train_images: int = setting(10_000, "size of the fixed, unaugmented training sample for train loss.",
                                     minimum=1)
    eval_test_images: int | None = setting(None, "test images for evaluating baselines and solutions (default: "
                                           "all).", minimum=1)
    bn_batches: int = setting(40, "augmented training batches used to recompute a baseline's BatchNorm "
                              "statistics.", minimum=1)

    def __post_init__(self):
        settings.check(self)
        if self.train.rewind_iter is None:
            self.train = dataclasses.replace(self.train, rewind_iter=family(self.train.model).rewind_iter)

    def hashed_fields(self) -> dict:
        return {"train": self.train.hashed_fields(), **settings.hashed(self, skip=("train",))}

    def run_hash(self) -> str:
        return config_hash(self.hashed_fields())

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "train"}
        d["train"] = self.train.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImpConfig":
        """The config stored in a run's config.json; LthError if it is not one."""
        try:
            d = dict(d)
            return cls(train=TrainConfig.from_dict(d.pop("train")), **d)
        except (KeyError, TypeError, AttributeError) as exc:
            raise LthError(f"not an IMP config ({type(exc).__name__}: {exc})") from None
