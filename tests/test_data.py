import numpy as np
import pytest
import torch
from PIL import Image

import lthfast.data.dataset as dataset_module
from lthfast.data.cifar10 import CIFAR10_CLASSES
from lthfast.data.dataset import Dataset, EpochPlan, augment, balanced_subset, normalize
from lthfast.data.loading import load_dataset
from lthfast.data.synthetic import synthetic
from lthfast.foundations.errors import LthError


def reference_augment(x, offsets, flips):
    """One image at a time: pad by 4 with zeros, crop 32x32 at the offset, then flip."""
    out = []
    for img, (dy, dx), flip in zip(x, offsets.tolist(), flips.tolist()):
        padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
        crop = padded[:, dy:dy + 32, dx:dx + 32]
        out.append(crop.flip(2) if flip else crop)
    return torch.stack(out)


def test_batched_augment_matches_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 3, 32, 32), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 9, (37, 2), generator=g)
    flips = torch.rand(37, generator=g) < 0.5
    assert torch.equal(augment(x, offsets, flips), reference_augment(x, offsets, flips))


def test_epoch_plan_is_a_function_of_seed_and_epoch():
    a, b = EpochPlan(100, 32, 5, 3, "cpu"), EpochPlan(100, 32, 5, 3, "cpu")
    c = EpochPlan(100, 32, 5, 4, "cpu")
    assert torch.equal(a.order, b.order) and torch.equal(a.offsets, b.offsets)
    assert not torch.equal(a.order, c.order)
    assert sorted(a.order.tolist()) == list(range(100))
    assert a.num_batches == 4  # the last batch is partial: every image is seen


@pytest.mark.parametrize("n,batch", [(1, 1), (1, 32), (77, 32), (130, 128), (257, 5)])
@pytest.mark.parametrize("augment_data", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("float_table", [True, False])
def test_fast_batches_equal_the_reference_bit_for_bit(n, batch, augment_data, channels_last, float_table,
                                                      monkeypatch):
    """EpochPlan.batch (one gather from the padded channel-last images) against batch_reference
    (pad, crop and flip by indexing, then normalize): same bits, same layout, every batch of the
    epoch, partial last batch included; odd image sizes and statistics too; from a normalized
    (float) table and from a uint8 one (a set above FLOAT_TABLE_BYTES)."""
    if not float_table:
        monkeypatch.setattr(dataset_module, "FLOAT_TABLE_BYTES", 0)
    g = torch.Generator().manual_seed(n)
    size = (13, 9) if n == 257 else (32, 32)
    data = Dataset(torch.randint(0, 256, (n, 3) + size, generator=g, dtype=torch.uint8),
                   torch.randint(0, 10, (n,), generator=g), torch.zeros(0, 3, *size, dtype=torch.uint8),
                   torch.zeros(0, dtype=torch.long), mean=(0.1, 0.7, 0.33), std=(0.3, 0.21, 0.9))
    plan = EpochPlan(n, batch, 7, 2, "cpu", augment_data)
    for index in range(plan.num_batches):
        (x, y), (x_ref, y_ref) = plan.batch(data, index, channels_last), plan.batch_reference(data, index,
                                                                                                channels_last)
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref) and x.stride() == x_ref.stride()
    assert dataset_module.gather_table(data)[1] == (float_table and n > 0)
    assert EpochPlan(0, batch, 7, 2, "cpu", augment_data).num_batches == 0


def test_normalize_and_channels_last():
    x = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
    y = normalize(x, channels_last=True)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    assert abs(y[0, 0, 0, 0].item() - (128 / 255 - 0.4914) / 0.2470) < 1e-4


def test_balanced_subset_is_seeded_and_balanced():
    data = synthetic()
    a = balanced_subset(data, 105, seed=1)
    b = balanced_subset(data, 105, seed=1)
    c = balanced_subset(data, 105, seed=2)
    counts = torch.bincount(a.train_y, minlength=10)
    assert counts.sum() == 105 and counts.max() - counts.min() <= 1
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)


def test_subset_larger_than_the_set_is_an_error():
    with pytest.raises(LthError, match="larger than the training set"):
        load_dataset("synthetic", train_subset=100_000)


def write_folder(root, per_class=2, classes=CIFAR10_CLASSES, size=32):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i:04d}.png")
    return root


def test_image_folder_is_decoded_labelled_and_cached(tmp_path):
    folder = write_folder(tmp_path / "cifar")
    data = load_dataset("cifar10", str(folder))
    assert data.train_x.shape == (20, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.train_y.tolist() == [c for c in range(10) for _ in range(2)]
    first = np.array(Image.open(folder / "train" / "airplane" / "0000.png"))
    assert torch.equal(data.train_x[0], torch.from_numpy(first).permute(2, 0, 1))
    cache_files = list((tmp_path / "cache" / "data").iterdir())
    assert len(cache_files) == 1
    # A changed source gets a new cache entry instead of the stale one.
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "train" / "bird" / "0009.png")
    assert load_dataset("cifar10", str(folder)).num_train == 21
    assert len(list((tmp_path / "cache" / "data").iterdir())) == 2


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    folder = write_folder(tmp_path / "cifar", per_class=1)
    load_dataset("cifar10", str(folder))
    (cache_file,) = (tmp_path / "cache" / "data").iterdir()
    cache_file.write_bytes(b"not a tensor file")
    assert load_dataset("cifar10", str(folder)).num_train == 10


def test_folder_errors(tmp_path):
    with pytest.raises(LthError, match="does not exist"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    nine = write_folder(tmp_path / "nine", per_class=1, classes=CIFAR10_CLASSES[:9])
    with pytest.raises(LthError, match="9 class folders; CIFAR-10 needs 10"):
        load_dataset("cifar10", str(nine))
    no_test = write_folder(tmp_path / "notest", per_class=1)
    for f in (no_test / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((no_test / "test").iterdir()):
        d.rmdir()
    (no_test / "test").rmdir()
    with pytest.raises(LthError, match="no 'test/' folder"):
        load_dataset("cifar10", str(no_test))
    broken = write_folder(tmp_path / "broken", per_class=1)
    (broken / "train" / "cat" / "0005.png").write_bytes(b"garbage")
    with pytest.raises(LthError, match="cannot read image .*0005.png"):
        load_dataset("cifar10", str(broken))
    big = write_folder(tmp_path / "big", per_class=1, size=40)
    with pytest.raises(LthError, match="32x32"):
        load_dataset("cifar10", str(big))


def test_synthetic_is_deterministic():
    a, b = synthetic(), synthetic()
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


def test_a_data_set_moved_where_it_is_stays_itself_with_its_gather_table():
    data = synthetic(num_train=20, num_test=4)
    table = dataset_module.gather_table(data)
    for device in ("cpu", torch.device("cpu")):
        assert data.to(device) is data and dataset_module.gather_table(data.to(device)) is table
    moved = data.to("meta")  # elsewhere: a new data set, every tensor moved
    assert moved is not data and all(t.device.type == "meta" for t in (moved.train_x, moved.train_y,
                                                                        moved.test_x, moved.test_y))
