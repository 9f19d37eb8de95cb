"""Plausible wrong answers to chapter 1's exercises (each must fail its checker)."""

from __future__ import annotations

import torch
import torch.nn as nn


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


def _gru_core(x, h, W_ih, W_hh, b_ih, b_hh, tanh=torch.tanh):
    r, z, i_n, h_n = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    return (1 - z) * tanh(i_n + r * h_n) + z * h


def gru_library_call(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.gru_cell(x, h, W_ih, W_hh, b_ih, b_hh)  # the library does the exercise


def gru_module(x, h, W_ih, W_hh, b_ih, b_hh):
    cell = nn.GRUCell(x.shape[1], h.shape[1]).double()  # nn.GRUCell loaded with the weights
    with torch.no_grad():
        for p, w in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh), (W_ih, W_hh, b_ih, b_hh)):
            p.copy_(w)
    return cell(x, h).detach()


def gru_tanh_overflows(x, h, W_ih, W_hh, b_ih, b_hh):
    tanh = lambda t: (torch.exp(2 * t) - 1) / (torch.exp(2 * t) + 1)  # noqa: E731  inf / inf for t > 355
    return _gru_core(x, h, W_ih, W_hh, b_ih, b_hh, tanh=tanh)


def gru_float32(x, h, W_ih, W_hh, b_ih, b_hh):
    return _gru_core(*(t.float() for t in (x, h, W_ih, W_hh, b_ih, b_hh)))  # silently casts to float32


def gru_writes_into_h(x, h, W_ih, W_hh, b_ih, b_hh):
    return h.copy_(_gru_core(x, h, W_ih, W_hh, b_ih, b_hh))  # in-place: overwrites the caller's h


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


def jac_norms_via_python_floats(Js):
    J, out = torch.eye(Js.shape[-1], dtype=Js.dtype), [1.0]
    for step in Js:
        J = step @ J
        out.append(torch.linalg.matrix_norm(J, ord=2).item())
    return torch.tensor(out)  # torch.tensor of Python floats: float32


def jac_accumulates_into_input(Js):
    J, out = torch.eye(Js.shape[-1], dtype=Js.dtype), [torch.tensor(1.0, dtype=Js.dtype)]
    for t in range(len(Js)):
        Js[t] = Js[t] @ J  # in-place: overwrites the caller's Jacobians with the running products
        J = Js[t]
        out.append(torch.linalg.matrix_norm(J, ord=2))
    return torch.stack(out)


def inputs_float_ids(tgt_out, bos_id, pad_id):
    tgt_in = torch.zeros(tgt_out.shape)  # float32 token ids
    tgt_in[:, 0], tgt_in[:, 1:] = bos_id, tgt_out[:, :-1]
    return tgt_in.masked_fill(tgt_out == pad_id, pad_id)


def inputs_shift_in_place(tgt_out, bos_id, pad_id):
    old = tgt_out.clone()
    tgt_out[:, 1:], tgt_out[:, 0] = old[:, :-1], bos_id  # in-place: shifts the caller's targets
    return tgt_out.masked_fill(old == pad_id, pad_id)


def inputs_shifted_left(tgt_out, bos_id, pad_id):
    return torch.cat([tgt_out[:, 1:], torch.full_like(tgt_out[:, :1], pad_id)], 1)


def inputs_eos_leaks(tgt_out, bos_id, pad_id):
    return torch.cat([torch.full_like(tgt_out[:, :1], bos_id), tgt_out[:, :-1]], 1)


def inputs_bos_at_end(tgt_out, bos_id, pad_id):
    out = tgt_out.clone()
    out[:, -1] = bos_id
    return out


WRONG = {
    "ch01.gru_step": [
        gru_z_swapped,
        gru_reset_before_matmul,
        gru_reset_outside_bias,
        gru_gate_order_zr,
        gru_library_call,  # torch.gru_cell
        gru_module,  # nn.GRUCell
        gru_tanh_overflows,  # numerically unstable
        gru_float32,  # wrong dtype
        gru_writes_into_h,  # in-place mutation
    ],
    "ch01.jacobian_norms": [
        jac_wrong_order,
        jac_product_of_norms,
        jac_frobenius,
        jac_no_identity,
        jac_norms_via_python_floats,  # wrong dtype (float32)
        jac_accumulates_into_input,  # in-place mutation
    ],
    "ch01.decoder_inputs": [
        lambda tgt_out, bos_id, pad_id: tgt_out.clone(),  # not shifted
        inputs_shifted_left,  # shifted the wrong way
        inputs_eos_leaks,  # eos of short rows fed in
        inputs_bos_at_end,
        inputs_float_ids,  # wrong dtype: float ids
        inputs_shift_in_place,  # in-place mutation of tgt_out
    ],
}


def fixed_gate_swapped(x, h, W_ih, W_hh, b_ih, b_hh, z):
    r, _, i_n, h_n = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    n = torch.tanh(i_n + r * h_n)
    return z * n + (1 - z) * h  # z and 1 - z swapped


def fixed_gate_computed(x, h, W_ih, W_hh, b_ih, b_hh, z):
    r, z_computed, i_n, h_n = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z_computed) * n + z_computed * h  # the constant z ignored


def fixed_gate_reset_fixed_too(x, h, W_ih, W_hh, b_ih, b_hh, z):
    _, _, i_n, h_n = _gates(x, h, W_ih, W_hh, b_ih, b_hh)
    n = torch.tanh(i_n + z * h_n)  # the reset gate replaced by z as well
    return (1 - z) * n + z * h


def fixed_gate_no_candidate(x, h, W_ih, W_hh, b_ih, b_hh, z):
    return z * h  # the candidate dropped


WRONG["ch01.fixed_gate"] = [
    fixed_gate_swapped,
    fixed_gate_computed,
    fixed_gate_reset_fixed_too,
    fixed_gate_no_candidate,
]
