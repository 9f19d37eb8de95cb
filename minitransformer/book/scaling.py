"""Scaling laws: power-law fits of small runs, and the published fits of Kaplan et al. (2020).

Kaplan et al. found that a language model's test loss (nats per token), when not
held back by the other two factors, follows

``L(N) = (N_c / N)^alpha_N``, ``L(D) = (D_c / D)^alpha_D``, ``L(C_min) = (C_c / C_min)^alpha_C``

with ``N`` non-embedding parameters, ``D`` tokens and ``C`` compute in PF-days:
straight lines of slope ``-alpha`` on log-log axes. :data:`KAPLAN_2020` holds
their constants (published numbers, not measured here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["KAPLAN_2020", "kaplan_loss", "fit_power_law", "data_scaling_experiment"]

# Kaplan et al. (2020), "Scaling Laws for Neural Language Models", Table 1 / eqs. (1.1)-(1.3)
KAPLAN_2020 = {
    "N": {"alpha": 0.076, "scale": 8.8e13, "unit": "non-embedding parameters"},
    "D": {"alpha": 0.095, "scale": 5.4e13, "unit": "tokens"},
    "C": {"alpha": 0.050, "scale": 3.1e8, "unit": "PF-days (compute-efficient frontier)"},
}


def kaplan_loss(x, factor: str = "N") -> np.ndarray:
    """The published fit ``(X_c / x)^alpha_X`` for ``factor`` in ``"N"``, ``"D"``, ``"C"``."""
    if factor not in KAPLAN_2020:
        raise ValueError(f"factor must be one of {sorted(KAPLAN_2020)}, got {factor!r}")
    k = KAPLAN_2020[factor]
    return (k["scale"] / np.asarray(x, dtype=float)) ** k["alpha"]


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares line through ``(log x, log y)``: ``y ~ a * x^slope``.

    Returns:
        ``(slope, a)``; for a loss that falls as ``x`` grows, ``-slope`` is the exponent alpha.
    """
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if lx.size < 2 or not (np.isfinite(lx).all() and np.isfinite(ly).all()):
        raise ValueError("fit_power_law needs at least two positive, finite points")
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(np.exp(intercept))


def data_scaling_experiment(
    make_models: dict[str, Callable[[], nn.Module]],
    sizes: Sequence[int],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    steps: int = 300,
    seed: int = 0,
    lr: float = 3e-3,
) -> tuple[pd.DataFrame, dict]:
    """Train every model on the first ``D`` training examples for each ``D`` in ``sizes``
    (same number of steps each) and measure test loss and accuracy.

    Returns:
        a table with columns ``model, train_size, test_loss, test_accuracy, parameters``,
        and the trained models in a dict keyed by ``(model name, D)``.
    """
    from ..train import set_seed
    from .vision import evaluate_classifier, train_classifier

    rows, models = [], {}
    for name, make in make_models.items():
        for D in sizes:
            set_seed(seed)
            model = make()
            train_classifier(model, train[0][:D], train[1][:D], steps=steps, lr=lr, seed=seed)
            metrics = evaluate_classifier(model, *test)
            models[(name, D)] = model
            rows.append(
                {
                    "model": name,
                    "train_size": D,
                    "test_loss": metrics["loss"],
                    "test_accuracy": metrics["accuracy"],
                    "parameters": sum(p.numel() for p in model.parameters()),
                }
            )
    return pd.DataFrame(rows), models
