"""Small, exact worked examples the book computes with the package."""

from __future__ import annotations

import torch

__all__ = ["cat_sat_on_the_mat", "FEATURES"]

FEATURES = ("animal", "action", "object", "definiteness")


def cat_sat_on_the_mat(dtype: torch.dtype = torch.float64) -> dict:
    """The chapter 3 example: one query against the six words of "the cat sat on the mat".

    Each key and value has 4 hand-made features (animal, action, object,
    definiteness). The query asks mostly for an animal.

    Returns:
        dict with ``words`` (6 strings), ``query`` (1, 4), ``keys`` (6, 4),
        ``values`` (6, 4), ``features`` (4 names).
    """
    words = ["the", "cat", "sat", "on", "the", "mat"]
    keys = torch.tensor(
        [[0, 0, 0, 1], [1, 0, 0.3, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=dtype
    )  # (6, 4)
    values = torch.tensor(
        [[0.1, 0, 0, 0.8], [0.9, 0, 0.1, 0.7], [0, 0.9, 0, 0.3], [0, 0, 0.5, 0], [0, 0, 0, 0.9], [0, 0, 0.9, 0.6]],
        dtype=dtype,
    )  # (6, 4)
    query = torch.tensor([[0.9, 0.1, 0.2, 0.3]], dtype=dtype)  # (1, 4)
    return {"words": words, "query": query, "keys": keys, "values": values, "features": FEATURES}
