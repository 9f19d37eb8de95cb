"""Session-based recommendation: attention over a user's history picks the next item.

The data are generated with a structure we know, so the model's attention can be
compared with the truth:

* the catalogue has ``num_series`` series of ``episodes`` items each (think of
  the episodes of a show, or the volumes of a book series), plus ``num_trending``
  trending items that everybody clicks now and then;
* a session follows one series in order (episode ``e``, ``e+1``, ...), with a
  trending item slipped in after each episode with probability ``p_trending``;
* the next item is always the next episode of the series. So the one item of
  the history that determines the answer is the **last episode** watched (the
  "evidence"), wherever it sits, and the trending clicks are noise.

The model (:class:`SessionRecommender`) embeds the items and how recently each
was clicked, lets one attention head read the history with a query made from the
most recent click, and scores every catalogue item against the result (the
output layer shares the item embeddings). Its attention weights are the natural
"explanation" of a recommendation; :func:`adversarial_weights` and removing
items from the history test how far that explanation goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attention import scaled_dot_product_attention

__all__ = [
    "Catalogue",
    "make_sessions",
    "SessionRecommender",
    "train_recommender",
    "hit_rate",
    "successor_of_last_baseline",
    "remove_item",
    "adversarial_weights",
    "session_picker_chart",
]

PAD = 0


@dataclass(frozen=True)
class Catalogue:
    """Item ids: 0 is padding, then ``num_series * episodes`` episodes, then the trending items."""

    num_series: int = 6
    episodes: int = 12
    num_trending: int = 6

    @property
    def num_items(self) -> int:
        """The vocabulary size, padding included."""
        return 1 + self.num_series * self.episodes + self.num_trending

    def episode(self, series: int, e: int) -> int:
        return 1 + series * self.episodes + e

    def trending(self, t: int) -> int:
        return 1 + self.num_series * self.episodes + t

    def is_trending(self, item: Tensor) -> Tensor:
        return item > self.num_series * self.episodes

    def name(self, item: int) -> str:
        """A readable name: ``S2E5`` (series 2, episode 5), ``trend3`` or ``pad``."""
        item = int(item)
        if item == PAD:
            return "pad"
        if item > self.num_series * self.episodes:
            return f"trend{item - 1 - self.num_series * self.episodes}"
        s, e = divmod(item - 1, self.episodes)
        return f"S{s}E{e}"


def make_sessions(
    n: int,
    catalogue: Catalogue = Catalogue(),
    max_len: int = 10,
    min_episodes: int = 2,
    max_episodes: int = 5,
    p_trending: float = 0.4,
    seed: int = 0,
) -> dict:
    """Generate ``n`` sessions.

    Returns:
        a dict with ``history (n, max_len)`` int64, left-padded with 0 so the most
        recent click is the last column; ``target (n,)`` the next episode;
        ``evidence (n,)`` the column of the last episode in the history (the item
        that determines the target); ``series (n,)``.
    """
    if not 1 <= min_episodes <= max_episodes < catalogue.episodes:
        raise ValueError(
            f"need 1 <= min_episodes <= max_episodes < episodes={catalogue.episodes}, "
            f"got {min_episodes}..{max_episodes}"
        )
    if 2 * max_episodes > max_len:
        raise ValueError(f"max_len={max_len} is too short for up to {max_episodes} episodes with trending clicks")
    g = torch.Generator().manual_seed(seed)
    history = torch.full((n, max_len), PAD, dtype=torch.long)
    target = torch.empty(n, dtype=torch.long)
    evidence = torch.empty(n, dtype=torch.long)
    series = torch.randint(catalogue.num_series, (n,), generator=g)
    for i in range(n):
        k = int(torch.randint(min_episodes, max_episodes + 1, (), generator=g))
        start = int(torch.randint(0, catalogue.episodes - k, (), generator=g))
        clicks, last_episode = [], 0
        for e in range(start, start + k):
            clicks.append(catalogue.episode(int(series[i]), e))
            last_episode = len(clicks) - 1
            if torch.rand((), generator=g).item() < p_trending:
                clicks.append(catalogue.trending(int(torch.randint(catalogue.num_trending, (), generator=g))))
        history[i, max_len - len(clicks) :] = torch.tensor(clicks)
        evidence[i] = max_len - len(clicks) + last_episode
        target[i] = catalogue.episode(int(series[i]), start + k)
    return {"history": history, "target": target, "evidence": evidence, "series": series}


class SessionRecommender(nn.Module):
    """Embeddings of items and recency, one attention read-out over the history, scores
    against every item.

    ``h_j = E[item_j] + R[recency_j]`` (recency 0 = the most recent click);
    ``q = W_Q h_last``; ``alpha = softmax(q . W_K h_j / sqrt(d))`` over the non-padding
    clicks; ``z = LN(h_last + W_O sum_j alpha_j W_V h_j)``; ``z = z + FFN(z)``;
    ``scores = z E^T`` (padding excluded).

    Args:
        num_items: vocabulary size (0 = padding).
        max_len: the longest history.
        d_model: width.
    """

    def __init__(self, num_items: int, max_len: int = 10, d_model: int = 32):
        super().__init__()
        self.num_items, self.max_len, self.d_model = num_items, max_len, d_model
        self.items = nn.Embedding(num_items, d_model, padding_idx=PAD)
        self.recency = nn.Embedding(max_len, d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        nn.init.normal_(self.items.weight, std=0.1)
        nn.init.normal_(self.recency.weight, std=0.1)

    def forward(
        self,
        history: Tensor,
        weights: Tensor | None = None,
        need_weights: bool = False,
    ):
        """Scores of every item as the next click.

        Args:
            history: ``(B, L)`` item ids, left-padded with 0, ``L <= max_len``.
            weights: optional ``(B, L)`` attention weights to use INSTEAD of the
                model's own (rows summing to 1, zero on padding): for counterfactuals.
            need_weights: also return the weights used.

        Returns:
            ``scores (B, num_items)`` [, ``weights (B, L)``].
        """
        if history.dim() != 2 or history.shape[1] > self.max_len:
            got = tuple(history.shape)
            raise ValueError(f"history must be (B, L) with L <= {self.max_len}, got {got}")
        B, L = history.shape
        # (L,): 0 for the last column
        recency = torch.arange(L - 1, -1, -1, device=history.device)
        h = self.items(history) + self.recency(recency)  # (B, L, d)
        real = history != PAD  # (B, L)
        q = self.q(h[:, -1:])  # (B, 1, d): the query comes from the most recent click
        k, v = self.k(h), self.v(h)  # (B, L, d) each
        if weights is None:
            mask = real[:, None, :]  # (B, 1, L)
            read, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
            w = w[:, 0]  # (B, 1, L) -> (B, L)
        else:
            if weights.shape != (B, L):
                got = tuple(weights.shape)
                raise ValueError(f"weights must be (B, L) = {(B, L)}, got {got}")
            w = weights
            read = w[:, None, :] @ v  # (B, 1, d)
        z = self.norm(h[:, -1] + self.o(read[:, 0]))  # (B, d)
        z = z + self.ffn(z)  # (B, d)
        scores = z @ self.items.weight.T  # (B, num_items)
        is_pad = torch.arange(self.num_items, device=scores.device) == PAD  # (num_items,)
        scores = scores.masked_fill(is_pad, float("-inf"))
        return (scores, w) if need_weights else scores


def train_recommender(
    model: SessionRecommender, data: dict, steps: int = 600, batch_size: int = 128, lr: float = 3e-3, seed: int = 0
):
    """Cross-entropy on the next item, AdamW with warmup + cosine decay; returns the History."""
    from ..train import fit, warmup_cosine_scheduler

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = warmup_cosine_scheduler(opt, warmup=max(1, steps // 10), total=steps)
    n = data["history"].shape[0]

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(n, (batch_size,), generator=g)  # (b,)
        return F.cross_entropy(model(data["history"][idx]), data["target"][idx])

    return fit(model, loss_fn, opt, steps, scheduler=sched, clip_norm=1.0, progress=False, log_every=20)


def hit_rate(scores: Tensor, target: Tensor, k: int = 1) -> float:
    """Fraction of rows whose target is among the ``k`` highest scores (HR@k)."""
    top = scores.topk(k, dim=-1).indices  # (B, k)
    return (top == target[:, None]).any(-1).float().mean().item()


def successor_of_last_baseline(history: Tensor, catalogue: Catalogue) -> Tensor:
    """A rule with no learning: recommend the episode after the most recent click.
    Returns one-hot scores ``(B, num_items)``; when the last click is a trending item
    (or a final episode) it has no answer and scores nothing."""
    last = history[:, -1]  # (B,)
    scores = torch.zeros(history.shape[0], catalogue.num_items)
    ok = ~catalogue.is_trending(last) & (last != PAD) & ((last - 1) % catalogue.episodes != catalogue.episodes - 1)
    scores[ok.nonzero()[:, 0], last[ok] + 1] = 1.0
    return scores


def remove_item(history: Tensor, column: Tensor) -> Tensor:
    """Delete one click per session (``column (B,)``) and left-pad again: ``(B, L) -> (B, L)``."""
    B, L = history.shape
    keep = torch.ones_like(history, dtype=torch.bool)
    keep[torch.arange(B), column] = False
    out = torch.full_like(history, PAD)
    for i in range(B):
        kept = history[i][keep[i]]
        out[i, L - kept.numel() :] = kept
    return out


def adversarial_weights(
    model: SessionRecommender,
    history: Tensor,
    steps: int = 300,
    lr: float = 0.1,
    kl_weight: float = 10.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Search for attention weights as DIFFERENT as possible from the model's own that
    still give the same recommendation (Jain & Wallace, 2019, adversarial attention).

    Maximises the total variation distance ``0.5 * |alpha' - alpha|_1`` minus
    ``kl_weight * KL(p || p')`` between the original and the new next-item
    distributions, over ``alpha' = softmax(free logits)`` on the non-padding clicks.

    Returns:
        ``(original weights (B, L), adversarial weights (B, L))``.
    """
    model.eval()
    with torch.no_grad():
        scores, w0 = model(history, need_weights=True)  # (B, V), (B, L)
        p0 = torch.softmax(scores, -1)  # (B, V)
    real = history != PAD  # (B, L)
    g = torch.Generator().manual_seed(seed)
    logits = (0.1 * torch.randn(history.shape, generator=g)).requires_grad_(True)  # (B, L)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        w = torch.softmax(logits.masked_fill(~real, float("-inf")), -1)  # (B, L)
        logp = torch.log_softmax(model(history, weights=w), -1)  # (B, V)
        kl = (p0 * (torch.log(p0.clamp_min(1e-30)) - logp)).nan_to_num(0.0).sum(-1)  # (B,)
        tvd = 0.5 * (w - w0).abs().sum(-1)  # (B,)
        loss = (kl_weight * kl - tvd).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        w = torch.softmax(logits.masked_fill(~real, float("-inf")), -1)
    return w0, w


def session_picker_chart(
    catalogue: Catalogue,
    history: Tensor,
    evidence: Tensor,
    target: Tensor,
    recommended: Tensor,
    weights: Tensor,
    without_top: Tensor,
    index: int = 0,
    width: int = 360,
):
    """Sessions one at a time, chosen with a slider: the model's attention over the history
    (the evidence starred), its recommendation, and what it recommends once the
    top-weighted click is deleted.

    Args:
        catalogue: names the items.
        history: ``(N, L)`` the sessions offered (``PAD`` = empty), one slider position each.
        evidence: ``(N,)`` the column of each session's last episode.
        target: ``(N,)`` the true next item.
        recommended: ``(N,)`` the model's recommendation.
        weights: ``(N, L)`` the model's attention over the history.
        without_top: ``(N,)`` the recommendation once the top-weighted click is removed
            (:func:`remove_item`).
        index: the session shown first.
        width: the bars' width in pixels.

    Returns:
        an ``alt`` concatenated chart with one bound parameter, ``session``.
    """
    import altair as alt
    import pandas as pd

    from . import viz

    N, L = history.shape
    for name, t in (("evidence", evidence), ("target", target), ("recommended", recommended)):
        if t.shape != (N,):
            raise ValueError(f"{name} must be ({N},) like the sessions, got {tuple(t.shape)}")
    if weights.shape != (N, L) or without_top.shape != (N,):
        raise ValueError(f"weights must be ({N}, {L}) and without_top ({N},)")
    param = viz.slider("session", 0, N - 1, 1, value=index, label="session")
    bars, notes = [], []
    for n in range(N):
        real = [j for j in range(L) if history[n, j] != PAD]
        for place, j in enumerate(real):
            star = "★ " if j == int(evidence[n]) else ""
            item = catalogue.name(history[n, j])
            bars.append(
                {
                    "session": n,
                    "place": place,
                    "click": f"{place + 1}. {star}{item}",
                    "weight": round(float(weights[n, j]), 3),
                    "kind": "evidence" if star else "other click",
                }
            )
        top = max(real, key=lambda j: float(weights[n, j]))
        notes.append(
            {
                "session": n,
                "text": f"session {n}: next item {catalogue.name(target[n])}, recommended "
                f"{catalogue.name(recommended[n])}  (★ = the evidence)\nwithout its top-weighted click "
                f"{catalogue.name(history[n, top])}: recommended {catalogue.name(without_top[n])}",
            }
        )
    at = viz.at_control(param)
    base = (
        alt.Chart(pd.DataFrame(bars), title="attention over the history")
        .transform_filter(at)
        .encode(
            y=alt.Y("click:N", sort=alt.EncodingSortField("place", op="min"), title=None),
            x=alt.X("weight:Q", scale=alt.Scale(domain=[0, 1]), title="attention weight"),
        )
    )
    chart = base.mark_bar().encode(
        color=alt.Color(
            "kind:N",
            scale=alt.Scale(domain=["evidence", "other click"], range=["#d62728", "#4c78a8"]),
            legend=alt.Legend(orient="bottom", title=None),
        )
    ) + base.mark_text(align="left", dx=3).encode(text=alt.Text("weight:Q", format=".3f"))
    longest = max(sum(1 for v in row.tolist() if v != PAD) for row in history)
    note = viz.text_panel(pd.DataFrame(notes), "text", width=600, height=34).transform_filter(at)
    return alt.vconcat(note, chart.properties(width=width, height=20 * longest)).add_params(param)
