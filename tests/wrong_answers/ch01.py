"""Plausible wrong answers to chapter 1's exercises (each must fail its checker)."""

from __future__ import annotations

import torch


def _gates(x, h, W_ih, W_hh, b_ih, b_hh):
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, -1), gh.chunk(3, -1)
    return torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z), i_n, h_n


def gru_z_swapped(x, h, W_ih, W_hh, b_ih, b_hh):
    r, z, i_n, h_n = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    n = torch.tanh(i_n + r * h_n)
    return z * n + (1 - z) * h  # z and 1 - z swapped


def gru_reset_before_matmul(x, h, W_ih, W_hh, b_ih, b_hh):
    r, z, i_n, _ = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    H = h.shape[-1]
    n = torch.tanh(i_n + (r * h) @ W_hh[2 * H :].T + b_hh[2 * H :])  # Cho et al.'s form, not PyTorch's
    return (1 - z) * n + z * h


def gru_reset_outside_bias(x, h, W_ih, W_hh, b_ih, b_hh):
    r, z, i_n, h_n = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    H = h.shape[-1]
    n = torch.tanh(i_n + r * (h_n - b_hh[2 * H :]) + b_hh[2 * H :])  # r applied to W h only, not its bias
    return (1 - z) * n + z * h


def gru_gate_order_zr(x, h, W_ih, W_hh, b_ih, b_hh):
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    (i_z, i_r, i_n), (h_z, h_r, h_n) = gi.chunk(3, -1), gh.chunk(3, -1)  # assumed (z, r, n) row order
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    return (1 - z) * torch.tanh(i_n + r * h_n) + z * h


def jac_wrong_order(Js):
    J, out = torch.eye(Js.shape[-1], dtype=Js.dtype), [torch.tensor(1.0, dtype=Js.dtype)]
    for step in Js:
        J = J @ step  # newest Jacobian on the right
        out.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(out)


def jac_product_of_norms(Js):
    return torch.cat([torch.ones(1, dtype=Js.dtype), torch.cumprod(torch.linalg.matrix_norm(Js, ord=2), 0)])


def jac_frobenius(Js):
    J, out = torch.eye(Js.shape[-1], dtype=Js.dtype), [torch.tensor(1.0, dtype=Js.dtype)]
    for step in Js:
        J = step @ J
        out.append(torch.linalg.matrix_norm(J))  # Frobenius, not spectral
    return torch.stack(out)


def jac_no_identity(Js):
    J, out = torch.eye(Js.shape[-1], dtype=Js.dtype), []
    for step in Js:
        J = step @ J
        out.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(out)  # forgot t = 0: T values, not T + 1


def inputs_shifted_left(tgt_out, bos_id, pad_id):
    return torch.cat([tgt_out[:, 1:], torch.full_like(tgt_out[:, :1], pad_id)], 1)


def inputs_eos_leaks(tgt_out, bos_id, pad_id):
    return torch.cat([torch.full_like(tgt_out[:, :1], bos_id), tgt_out[:, :-1]], 1)


def inputs_bos_at_end(tgt_out, bos_id, pad_id):
    out = tgt_out.clone()
    out[:, -1] = bos_id
    return out


WRONG = {
    "ch01.gru_step": [gru_z_swapped, gru_reset_before_matmul, gru_reset_outside_bias, gru_gate_order_zr],
    "ch01.jacobian_norms": [jac_wrong_order, jac_product_of_norms, jac_frobenius, jac_no_identity],
    "ch01.decoder_inputs": [
        lambda tgt_out, bos_id, pad_id: tgt_out.clone(),  # not shifted
        inputs_shifted_left,  # shifted the wrong way
        inputs_eos_leaks,  # eos of short rows fed in
        inputs_bos_at_end,
    ],
}
