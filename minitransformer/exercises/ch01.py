"""Chapter 1 exercises: a GRU step by hand, the product of Jacobians, teacher-forcing inputs."""

from __future__ import annotations

import torch

from .core import Case, Exercise, Forbidden, Mistake, register


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 1. one GRU step, as nn.GRUCell computes it ------------------------------------------


def gru_step_solution(
    x: torch.Tensor, h: torch.Tensor, W_ih: torch.Tensor, W_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """One GRU step with nn.GRUCell's weight layout (rows: reset r, update z, candidate n).
    x (B, I), h (B, H), W_ih (3H, I), W_hh (3H, H), b_ih (3H,), b_hh (3H,) -> h_new (B, H)."""
    gi = x @ W_ih.T + b_ih  # (B, 3H): input parts of r, z, n
    gh = h @ W_hh.T + b_hh  # (B, 3H): hidden parts of r, z, n
    i_r, i_z, i_n = gi.chunk(3, dim=-1)  # (B, H) each
    h_r, h_z, h_n = gh.chunk(3, dim=-1)  # (B, H) each
    r = torch.sigmoid(i_r + h_r)  # reset gate
    z = torch.sigmoid(i_z + h_z)  # update gate: how much of the OLD state to keep
    n = torch.tanh(i_n + r * h_n)  # candidate; r multiplies (W_hn h + b_hn)
    return (1 - z) * n + z * h  # (B, H)


def _gru_parts(x, h, W_ih, W_hh, b_ih, b_hh):
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    return gi.chunk(3, -1), gh.chunk(3, -1)


def _gru_swapped_z(x, h, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_parts(x, h, W_ih, W_hh, b_ih, b_hh)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return z * n + (1 - z) * h


def _gru_reset_before_matmul(x, h, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, _) = _gru_parts(x, h, W_ih, W_hh, b_ih, b_hh)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    H = h.shape[-1]
    n = torch.tanh(i_n + (r * h) @ W_hh[2 * H :].T + b_hh[2 * H :])
    return (1 - z) * n + z * h


def _gru_tanh_by_exp(x, h, W_ih, W_hh, b_ih, b_hh):
    (i_r, i_z, i_n), (h_r, h_z, h_n) = _gru_parts(x, h, W_ih, W_hh, b_ih, b_hh)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    t = i_n + r * h_n
    n = (torch.exp(2 * t) - 1) / (torch.exp(2 * t) + 1)  # tanh by its formula: overflows
    return (1 - z) * n + z * h


def _gru_cases() -> list[Case]:
    g = _gen(10)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731

    def case(desc, B, I, H, x_scale=1.0):
        return Case(desc, (r(B, I) * x_scale, r(B, H), r(3 * H, I) * 0.8, r(3 * H, H) * 0.8, r(3 * H), r(3 * H)))

    return [
        case("B = 1, input size 3, hidden size 4", 1, 3, 4),
        case("B = 5, input size 6, hidden size 2", 5, 6, 2),
        case("B = 3, input size 1, hidden size 7, inputs x 1000 (saturated gates: the overflow test)", 3, 1, 7, 1000.0),
    ]


register(
    Exercise(
        "ch01.gru_step",
        "one GRU step by hand, equal to nn.GRUCell",
        gru_step_solution,
        _gru_cases,
        hint="split x W_ih^T + b_ih and h W_hh^T + b_hh into 3 chunks (r, z, n); r = sigmoid(i_r + h_r), "
        "z = sigmoid(i_z + h_z), n = tanh(i_n + r * h_n), h_new = (1 - z) * n + z * h.",
        mistakes=[
            Mistake(
                _gru_swapped_z,
                "you swapped z and 1 - z: in PyTorch's GRU z is the share of the OLD state kept, "
                "h_new = (1 - z) * n + z * h.",
            ),
            Mistake(
                _gru_reset_before_matmul,
                "you applied the reset gate BEFORE the matrix product, W_hn (r * h) (the form in Cho et al. "
                "2014); nn.GRUCell applies it after: n = tanh(i_n + r * (W_hn h + b_hn)).",
            ),
            Mistake(
                _gru_tanh_by_exp,
                "your tanh overflows: (exp(2t) - 1) / (exp(2t) + 1) is inf / inf = NaN once t > 355. "
                "Use torch.tanh (and torch.sigmoid), which stay finite for any input.",
            ),
        ],
        forbidden=[
            Forbidden(
                "the exercise is to compute the gates yourself; torch.gru_cell / nn.GRUCell is what your step "
                "is compared with. Split x W_ih^T + b_ih and h W_hh^T + b_hh into (r, z, n) chunks.",
                torch_names=("gru_cell", "gru"),
                functions=("torch.nn.modules.rnn:GRUCell.forward", "torch.nn.modules.rnn:GRU.forward"),
            )
        ],
    )
)


# -- 2. the norm of a product of Jacobians -------------------------------------------------


def jacobian_norms_solution(step_jacobians: torch.Tensor) -> torch.Tensor:
    """step_jacobians (T, H, H), entry i = dh_{i+1}/dh_i. Returns (T + 1,): the spectral
    norm of dh_t/dh_0 = J_t ... J_2 J_1 for t = 0..T (entry 0 is the identity's, 1)."""
    T, H, _ = step_jacobians.shape
    J = torch.eye(H, dtype=step_jacobians.dtype)  # dh_0/dh_0
    norms = [torch.linalg.matrix_norm(J, ord=2)]
    for step in step_jacobians:
        J = step @ J  # the NEWEST Jacobian multiplies from the left
        norms.append(torch.linalg.matrix_norm(J, ord=2))  # largest singular value
    return torch.stack(norms)  # (T + 1,)


def _jacobian_wrong_order(step_jacobians):
    H = step_jacobians.shape[-1]
    J, norms = torch.eye(H, dtype=step_jacobians.dtype), [torch.tensor(1.0, dtype=step_jacobians.dtype)]
    for step in step_jacobians:
        J = J @ step
        norms.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(norms)


def _jacobian_product_of_norms(step_jacobians):
    step_norms = torch.linalg.matrix_norm(step_jacobians, ord=2)
    return torch.cat([torch.ones(1, dtype=step_jacobians.dtype), torch.cumprod(step_norms, 0)])


def _jacobian_frobenius(step_jacobians):
    H = step_jacobians.shape[-1]
    J, norms = torch.eye(H, dtype=step_jacobians.dtype), [torch.linalg.matrix_norm(torch.eye(H))]
    for step in step_jacobians:
        J = step @ J
        norms.append(torch.linalg.matrix_norm(J))
    return torch.stack(norms).to(step_jacobians.dtype)


def _jacobian_cases() -> list[Case]:
    g = _gen(11)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return [
        Case("T = 3 random 2x2 Jacobians", (r(3, 2, 2),)),
        Case("T = 6 random 4x4 Jacobians scaled by 0.5 (vanishing)", (r(6, 4, 4) * 0.5,)),
        Case("T = 5 random 3x3 Jacobians scaled by 1.5 (exploding)", (r(5, 3, 3) * 1.5,)),
        Case("T = 1 (one step)", (r(1, 5, 5),)),
    ]


register(
    Exercise(
        "ch01.jacobian_norms",
        "the norm of dh_t/dh_0 as a product of per-step Jacobians",
        jacobian_norms_solution,
        _jacobian_cases,
        hint="start from the identity, multiply by each step's Jacobian ON THE LEFT (J = J_t @ J), and record "
        "torch.linalg.matrix_norm(J, ord=2) before the first step and after every step: T + 1 values.",
        mistakes=[
            Mistake(
                _jacobian_wrong_order,
                "you multiplied in the wrong order (J @ J_t): the chain rule gives dh_t/dh_0 = J_t ... J_1, "
                "the newest step on the LEFT.",
            ),
            Mistake(
                _jacobian_product_of_norms,
                "you multiplied the NORMS of the steps: that is only an upper bound on the norm of the "
                "product. Multiply the matrices, then take the norm.",
            ),
            Mistake(
                _jacobian_frobenius,
                "you took the Frobenius norm (the default of matrix_norm); use the spectral norm, ord=2.",
            ),
        ],
    )
)


# -- 3. teacher forcing: the decoder's inputs -----------------------------------------------


def decoder_inputs_solution(tgt_out: torch.Tensor, bos_id: int, pad_id: int) -> torch.Tensor:
    """tgt_out (B, T): the tokens the decoder must predict, each row y_1 .. y_L <eos> then padding.
    Returns tgt_in (B, T): <bos> y_1 .. y_L, then padding (input t is the target of step t - 1)."""
    tgt_in = torch.full_like(tgt_out, pad_id)
    tgt_in[:, 0] = bos_id  # step 0 starts from <bos>
    tgt_in[:, 1:] = tgt_out[:, :-1]  # shift RIGHT by one: input t = target t - 1
    return tgt_in.masked_fill(tgt_out == pad_id, pad_id)  # no input where there is nothing to predict


def _inputs_cases() -> list[Case]:
    return [
        Case("one row: targets 5 6 7 <eos>=2, bos_id=1, pad_id=0", (torch.tensor([[5, 6, 7, 2]]), 1, 0)),
        Case(
            "two rows of different lengths (padding with 0)",
            (torch.tensor([[4, 9, 3, 2, 0, 0], [8, 2, 0, 0, 0, 0]]), 1, 0),
        ),
        Case("three rows, bos_id=11, pad_id=10", (torch.tensor([[3, 4, 5, 2], [6, 2, 10, 10], [7, 7, 2, 10]]), 11, 10)),
    ]


def _shift_without_padding(tgt_out, bos_id, pad_id):
    return torch.cat([torch.full_like(tgt_out[:, :1], bos_id), tgt_out[:, :-1]], dim=1)


register(
    Exercise(
        "ch01.decoder_inputs",
        "teacher forcing: the decoder inputs are the targets shifted right",
        decoder_inputs_solution,
        _inputs_cases,
        hint="tgt_in[:, 0] = bos_id and tgt_in[:, 1:] = tgt_out[:, :-1]; where tgt_out is padding, tgt_in is "
        "padding too (the <eos> is only ever predicted, never fed in).",
        mistakes=[
            Mistake(
                lambda t, b, p: t.clone(),
                "you returned the targets unshifted: at step t the decoder would be GIVEN the token it must "
                "predict. Shift right by one and start with <bos>.",
            ),
            Mistake(
                lambda t, b, p: torch.cat([t[:, 1:], torch.full_like(t[:, :1], p)], dim=1),
                "you shifted LEFT (input t = target t + 1, a peek into the future); shift RIGHT: "
                "input t = target t - 1, with <bos> first.",
            ),
            Mistake(
                _shift_without_padding,
                "the shift is right, but the <eos> of the shorter rows was shifted into their inputs: "
                "where tgt_out is padding, tgt_in must be padding too.",
            ),
        ],
    )
)


# -- 4. change the experiment: hold the update gate fixed --------------------------------


def fixed_gate_step_solution(
    x: torch.Tensor,
    h: torch.Tensor,
    W_ih: torch.Tensor,
    W_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    z: float,
) -> torch.Tensor:
    """A GRU step (nn.GRUCell's layout) whose update gate is the constant z instead of the computed one.
    x (B, I), h (B, H), W_ih (3H, I), W_hh (3H, H), b_ih (3H,), b_hh (3H,), z a float in [0, 1]
    -> h_new (B, H)."""
    gi = x @ W_ih.T + b_ih  # (B, 3H): input parts of r, z, n
    gh = h @ W_hh.T + b_hh  # (B, 3H): hidden parts of r, z, n
    i_r, _, i_n = gi.chunk(3, dim=-1)  # (B, H) each; the computed update gate is not used
    h_r, _, h_n = gh.chunk(3, dim=-1)  # (B, H) each
    r = torch.sigmoid(i_r + h_r)  # the reset gate is computed as usual
    n = torch.tanh(i_n + r * h_n)  # candidate
    return (1 - z) * n + z * h  # (B, H): keep the share z of the old state, at every feature


def _fixed_gate_swapped(x, h, W_ih, W_hh, b_ih, b_hh, z):
    return fixed_gate_step_solution(x, h, W_ih, W_hh, b_ih, b_hh, 1 - z)


def _fixed_gate_ignored(x, h, W_ih, W_hh, b_ih, b_hh, z):
    return gru_step_solution(x, h, W_ih, W_hh, b_ih, b_hh)


def _fixed_gate_cases() -> list[Case]:
    g = _gen(14)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731

    def case(desc, B, I, H, z):
        return Case(desc, (r(B, I), r(B, H), r(3 * H, I) * 0.8, r(3 * H, H) * 0.8, r(3 * H), r(3 * H), z))

    return [
        case("B = 2, input size 3, hidden size 4, z = 0.9", 2, 3, 4, 0.9),
        case("B = 3, input size 5, hidden size 2, z = 0.25", 3, 5, 2, 0.25),
        case("B = 1, input size 2, hidden size 6, z = 0 (no memory)", 1, 2, 6, 0.0),
        case("B = 2, input size 4, hidden size 3, z = 1 (the state never changes)", 2, 4, 3, 1.0),
    ]


register(
    Exercise(
        "ch01.fixed_gate",
        "change the experiment: a GRU step with its update gate held at a constant z",
        fixed_gate_step_solution,
        _fixed_gate_cases,
        hint="compute r and the candidate n exactly as in exercise 1 (ignore the update-gate rows), then "
        "h_new = (1 - z) * n + z * h with the given number z.",
        mistakes=[
            Mistake(
                _fixed_gate_swapped,
                "you swapped z and 1 - z: in PyTorch's convention z is the share of the OLD state kept, "
                "h_new = (1 - z) * n + z * h.",
            ),
            Mistake(
                _fixed_gate_ignored,
                "your step computes the update gate from x and h: the experiment replaces it by the "
                "constant z passed in (use z, not sigmoid(i_z + h_z)).",
            ),
        ],
        forbidden=[
            Forbidden(
                "nn.GRUCell computes its own update gate; write the step yourself with the constant z.",
                torch_names=("gru_cell", "gru"),
                functions=("torch.nn.modules.rnn:GRUCell.forward", "torch.nn.modules.rnn:GRU.forward"),
            )
        ],
    )
)
