"""The in-memory datamodule on every dataset: real digits and MNIST, generated files of the real
Fashion-MNIST and CIFAR-10 formats, and the error for a missing dataset."""
from __future__ import annotations

import pytest
import torch

from distillscape.data import DatasetNotFoundError, TensorDataModule
from conftest import SHARED_DATA, needs_mnist


def check_module(dm: TensorDataModule, shape, n_test, val_size):
    assert dm.image_shape == shape
    assert dm.num_classes == 10
    assert len(dm.val_y) == val_size and len(dm.test_y) == n_test
    # normalized with training-split statistics: mean 0, std 1 per channel on train
    torch.testing.assert_close(dm.train_x.mean(dim=(0, 2, 3)), torch.zeros(shape[0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(dm.train_x.std(dim=(0, 2, 3)), torch.ones(shape[0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(dm.denormalize(dm.normalize(dm.test_x[:5])), dm.test_x[:5])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (dm.batch_size, *shape) and y.dtype == torch.int64
    xs = torch.cat([b[0] for b in dm.test_dataloader()])
    assert torch.equal(xs, dm.test_x)  # the test loader covers the split once, in order


def test_digits_offline_default():
    dm = TensorDataModule("digits", val_size=200, batch_size=64)
    dm.setup()
    check_module(dm, (1, 8, 8), n_test=359, val_size=200)
    assert len(dm.train_y) == 1797 - 359 - 200
    # the split is a fixed function of split_seed: train, val and test never overlap
    again = TensorDataModule("digits", val_size=200)
    again.setup()
    assert torch.equal(again.val_x, dm.val_x)


@needs_mnist
def test_full_mnist_from_shared_data():
    dm = TensorDataModule("mnist", root=str(SHARED_DATA), val_size=5000, batch_size=128)
    dm.setup()
    check_module(dm, (1, 28, 28), n_test=10000, val_size=5000)
    assert len(dm.train_y) == 55000
    assert torch.bincount(dm.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("name,shape,n_test", [("fashion_mnist", (1, 28, 28), 200), ("mnist", (1, 28, 28), 200),
                                               ("cifar10", (3, 32, 32), 100)])
def test_generated_files_of_real_formats(tiny_data_root, name, shape, n_test):
    dm = TensorDataModule(name, root=str(tiny_data_root), val_size=50, batch_size=32)
    dm.setup()
    check_module(dm, shape, n_test=n_test, val_size=50)
    if name == "cifar10":
        assert dm.classes[0] == "airplane"


@pytest.mark.parametrize("name,where", [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"),
                                        ("cifar10", "cifar-10-batches-py")])
def test_missing_dataset_names_path_and_remedy(tmp_path, name, where):
    dm = TensorDataModule(name, root=str(tmp_path), download=False)
    with pytest.raises(DatasetNotFoundError) as e:
        dm.setup()
    msg = str(e.value)
    assert str(tmp_path / where) in msg
    assert "DISTILLSCAPE_DATA" in msg and "download=true" in msg


def test_class_balanced_sample():
    dm = TensorDataModule("digits")
    dm.setup()
    x, y = dm.class_balanced_sample(3, torch.Generator().manual_seed(0))
    assert y.tolist() == [c for c in range(10) for _ in range(3)]
    assert x.shape == (30, 1, 8, 8)
