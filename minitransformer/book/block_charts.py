"""Chapter 6's interactive charts: the warmup schedule and label smoothing.

They respond without a kernel (see the controls at the end of :mod:`minitransformer.book.viz`):
the schedule is computed in the page with a Vega expression of
:func:`minitransformer.train.noam_lr`'s formula; the label-smoothing chart holds the
targets and losses for every position of its slider, computed with
:func:`minitransformer.train.smoothed_targets`.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import torch

from minitransformer.book import viz
from minitransformer.train import smoothed_targets

__all__ = ["NOAM_STEPS", "noam_chart", "smoothing_chart", "smoothing_losses"]

NOAM_STEPS = (1, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000)


def noam_chart(warmup: int = 4000, d_model: int = 512, width: int = 380) -> alt.VConcatChart:
    """The learning rate of the warmup schedule at a few steps, with a warmup slider and a width menu.

    ``lr(s) = d_model^-0.5 · min(s^-0.5, s · warmup^-1.5)`` (steps from 1), computed in the
    page; the line above the bars gives the peak, ``(d_model · warmup)^-0.5`` at ``s = warmup``.

    Args:
        warmup: the slider's starting position (500 to 16000 in steps of 500).
        d_model: the menu's starting width (64 to 2048).
        width: the plotting width in pixels.

    Returns:
        the chart; its unit charts are named ``"peak"`` (the text line) and ``"rate"`` (the bars).
    """
    controls = [
        viz.slider("warmup", 500, 16000, 500, value=warmup, label="warmup"),
        viz.picker("d_model", [64, 128, 256, 512, 1024, 2048], value=d_model, label="d_model"),
    ]
    lr = "pow(d_model, -0.5) * min(pow(max(datum.step, 1), -0.5), max(datum.step, 1) * pow(warmup, -1.5))"
    peak = viz.text_lines(
        "'peak lr ' + format(pow(d_model * warmup, -0.5), '.3e') + ' at step ' + format(warmup, 'd')"
        " + '  (= (d_model · warmup)^-0.5)'",
        1,
        "peak",
        width,
        font_size=12,
    ).add_params(*controls)
    order = [f"step {s}" for s in NOAM_STEPS]
    bars = (
        alt.Chart(pd.DataFrame({"step": list(NOAM_STEPS)}))
        .transform_calculate(lr=lr)
        .transform_calculate(label="'step ' + format(datum.step, 'd')")
        .encode(
            y=alt.Y("label:N", sort=order, title=None),
            x=alt.X("lr:Q", title="learning rate", axis=alt.Axis(format=".1e", tickCount=4)),
        )
    )
    text = bars.mark_text(align="left", dx=4, fontSize=11).encode(
        text=alt.Text("lr:Q", format=".2e"), x=alt.value(width + 2)
    )
    rate = alt.layer(bars.mark_bar(color="#4c78a8").properties(name="rate"), text).properties(width=width, height=220)
    return alt.vconcat(peak, rate)


PREDICTIONS = ("confident (0.999 on the target)", "the smoothed target itself", "uniform")


def smoothing_losses(epsilon: float, num_classes: int = 8, target: int = 2) -> tuple[torch.Tensor, dict[str, float]]:
    """The smoothed target and the loss ``-sum_c q_c log p_c`` of three predictions ``p``.

    Args:
        epsilon: the smoothing, in [0, 1].
        num_classes: ``C``.
        target: the correct class.

    Returns:
        ``q`` ``(C,)`` from :func:`~minitransformer.train.smoothed_targets`, and the losses of a
        confident prediction (0.999 on the target, the rest shared), of ``q`` itself and of
        the uniform distribution, keyed by :data:`PREDICTIONS`.
    """
    q = smoothed_targets(torch.tensor([target]), num_classes, epsilon, dtype=torch.float64)[0]  # (C,)
    confident = torch.full((num_classes,), 0.001 / (num_classes - 1), dtype=torch.float64)
    confident[target] = 0.999
    uniform = torch.full((num_classes,), 1 / num_classes, dtype=torch.float64)
    losses = {
        name: -(q * torch.log(p.clamp_min(1e-12))).sum().item() for name, p in zip(PREDICTIONS, (confident, q, uniform))
    }
    return q, losses


def smoothing_chart(epsilon: float = 0.1, num_classes: int = 8, target: int = 2, width: int = 300) -> alt.VConcatChart:
    """The smoothed target (top) and the loss of three predictions (below it), with an ε slider.

    The data holds both for every slider position (0 to 0.5 in steps of 0.05), from
    :func:`smoothing_losses`, rounded to 4 decimals.

    Args:
        epsilon: the slider's starting position.
        num_classes, target: the vocabulary size ``C`` and the correct token.
        width: the width of the target's plotting area; the losses' is 2/3 of it.

    Returns:
        the chart; its unit charts are named ``"target"`` and ``"loss"``.
    """
    eps = viz.slider("epsilon", 0.0, 0.5, 0.05, value=epsilon, label="ε")
    targets, losses = [], []
    for e in np.round(np.arange(0, 0.5001, 0.05), 2):
        q, loss = smoothing_losses(float(e), num_classes, target)
        targets += [{"epsilon": float(e), "token": f"token {c}", "q": round(p, 4)} for c, p in enumerate(q.tolist())]
        losses += [{"epsilon": float(e), "prediction": k, "loss": round(v, 4) + 0.0} for k, v in loss.items()]
    top = float(np.ceil(max(r["loss"] for r in losses)))
    bars = (
        alt.Chart(pd.DataFrame(targets), title="Target distribution")
        .transform_filter(viz.at_control(eps))
        .encode(
            x=alt.X(
                "token:N", sort=[f"token {c}" for c in range(num_classes)], title=None, axis=alt.Axis(labelAngle=-45)
            ),
            y=alt.Y("q:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
        )
    )
    left = alt.layer(
        bars.mark_bar(color="#4c78a8").properties(name="target"),
        bars.mark_text(dy=-6, fontSize=10).encode(text=alt.Text("q:Q", format=".4f")),
    ).properties(width=width, height=200)
    loss = (
        alt.Chart(pd.DataFrame(losses), title="Loss of three predictions")
        .transform_filter(viz.at_control(eps))
        .encode(
            y=alt.Y("prediction:N", sort=list(PREDICTIONS), title=None, axis=alt.Axis(labelLimit=200)),
            x=alt.X("loss:Q", title="loss (nats)", scale=alt.Scale(domain=[0, top])),
        )
    )
    right = alt.layer(
        loss.mark_bar().properties(name="loss"),
        loss.mark_text(align="left", dx=4, fontSize=11).encode(text=alt.Text("loss:Q", format=".4f")),
    ).properties(width=width * 2 // 3, height=120)
    return alt.vconcat(left, right).add_params(eps)
