"""The GPU launcher's checks, on the CPU: 16-byte alignment and the gridDim.y limit.

The fast and decode kernels read Q, K, V (and dO) 16 bytes at a time (``cp.async``,
vector loads, then ``ldmatrix`` from shared memory); CUDA limits gridDim.y, where the
kernels put batch x heads, to 65,535. The launchers check both before anything is
compiled or launched, so these tests call them with CPU tensors.
"""

from __future__ import annotations

import pytest
import torch

from minitransformer.flash import cupy_bridge as bridge


def _misaligned(shape, dtype=torch.float16, elements=1):
    """A contiguous view whose data starts ``elements`` elements past an aligned allocation."""
    n = 1
    for s in shape:
        n *= s
    base = torch.zeros(n + 16, dtype=dtype)
    assert base.data_ptr() % 16 == 0
    return base[elements : elements + n].view(shape)


def test_aligned_contiguous_tensors_pass() -> None:
    q = torch.zeros(2, 3, 5, 64, dtype=torch.float16)
    k = torch.zeros(2, 1, 7, 64, dtype=torch.bfloat16)
    bridge.check_vector_aligned("flash_fwd_fast<64, 0>", q=q, k=k, v=k)
    cache = torch.zeros(2, 1, 100, 32)[:, :, :40]  # a KVCache-style slice: rows contiguous, aligned
    bridge.check_vector_aligned("flash_decode_partial<32, 2, 1>", k_cache=cache)


def test_misaligned_view_is_rejected_with_the_fix() -> None:
    q = _misaligned((1, 2, 3, 64))
    assert q.is_contiguous() and q.data_ptr() % 16 == 2
    with pytest.raises(ValueError, match=r"q\.data_ptr\(\) % 16 = 2.*storage offset 1.*q\.clone\(\)"):
        bridge.check_vector_aligned("flash_fwd_fast<64, 0>", q=q)
    bridge.check_vector_aligned("flash_fwd_fast<64, 0>", q=q.clone())  # the advice works
    assert q.contiguous().data_ptr() == q.data_ptr()  # (and .contiguous() alone would not)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(1, 1, 64, 8, dtype=torch.float16).transpose(-1, -2),  # last dim not unit stride
        lambda: torch.zeros(1, 1, 8, 4, dtype=torch.float16),  # 8-byte rows
        lambda: torch.zeros(1, 1, 8, 68, dtype=torch.float16)[..., :64],  # 136-byte row stride
    ],
)
def test_rows_that_are_not_whole_16_byte_chunks_are_rejected(make) -> None:
    with pytest.raises(ValueError, match=r"k in rows of 16-byte chunks.*strides.*k\.contiguous\(\)"):
        bridge.check_vector_aligned("flash_fwd_fast<64, 0>", k=make())


def test_batch_chunks_respect_grid_y() -> None:
    assert bridge.batch_chunks(4, 8, "H") == [slice(0, 4)]
    chunks = bridge.batch_chunks(10_000, 32, "H")  # 320,000 blocks on y: several launches
    assert chunks[0] == slice(0, 65535 // 32) and chunks[-1].stop == 10_000
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    assert max((c.stop - c.start) * 32 for c in chunks) <= bridge.MAX_GRID_YZ
    with pytest.raises(ValueError, match="H=70000 exceeds CUDA's gridDim.y limit of 65,535"):
        bridge.batch_chunks(1, 70_000, "H")


def test_launchers_check_before_any_work() -> None:
    """No GPU here: the checks must fire before the launcher asks for a device or CuPy."""
    q = _misaligned((1, 2, 3, 64))
    k = torch.zeros(1, 2, 3, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="flash_fwd_fast<64, 0> reads q"):
        bridge.fast_forward(q, k, k, False, 0.125)
    with pytest.raises(ValueError, match="flash_bwd_fast<64, 0> reads dO"):
        bridge.fast_backward(k, k, k, k, q, torch.zeros(1, 2, 3), False, 0.125)
    with pytest.raises(ValueError, match="flash_decode_partial<64, 0, 1> reads q"):
        bridge.decode(q[:, :, :1], k, k, torch.tensor([3]), 0.125, 1, True)
    many = torch.zeros(1, 70_000, 1, 32, dtype=torch.float16)
    with pytest.raises(ValueError, match="gridDim.y"):
        bridge.fast_forward(many, many, many, False, 0.125)


@pytest.fixture
def recorded_launches(monkeypatch):
    """The launchers with CuPy and the GPU replaced by a recorder (and gridDim.y limited to 4)."""
    calls = []
    monkeypatch.setattr(bridge, "MAX_GRID_YZ", 4)
    monkeypatch.setattr(bridge, "device_index", lambda t: 0)
    monkeypatch.setattr(bridge, "device_arch", lambda i: 80)
    monkeypatch.setattr(bridge, "device_sm_count", lambda i: 108)
    monkeypatch.setattr(bridge, "_kernel", lambda filename, name, *a, **k: name)
    monkeypatch.setattr(bridge, "_launch", lambda fn, grid, block, args, smem, dev: calls.append((fn, grid, args)))
    return calls


def test_large_batches_are_launched_in_slices_of_whole_sequences(recorded_launches) -> None:
    B, H, H_kv, N, d = 5, 2, 1, 3, 32
    q = torch.zeros(B, H, N, d, dtype=torch.float16)
    k = torch.zeros(B, H_kv, N, d, dtype=torch.float16)
    bridge.fast_forward(q, k, k, False, 0.125)
    grids = [(grid, args[0].data_ptr()) for fn, grid, args in recorded_launches]
    # gridDim.y = sequences x H <= 4: batches [0, 2), [2, 4), [4, 5), each launch on its own view
    assert [g[1] for g, _ in grids] == [4, 4, 2]
    assert [p - q.data_ptr() for _, p in grids] == [0, 2 * H * N * d * 2, 4 * H * N * d * 2]
    recorded_launches.clear()
    bridge.fast_backward(q, k, k, q, q, torch.zeros(B, H, N), False, 0.125)
    bwd = [(fn, grid) for fn, grid, _ in recorded_launches if fn.startswith("flash_bwd_fast")]
    assert [grid[1] for _, grid in bwd] == [4, 1]  # per kv head: B x H_kv = 5 blocks on y
    recorded_launches.clear()
    bridge.decode(q[:, :, :1], k, k, torch.full((B,), N), 0.125, 1, True)
    dec = [(grid, args) for fn, grid, args in recorded_launches if fn.startswith("flash_decode_partial")]
    assert [grid[1] for grid, _ in dec] == [4, 1] and [len(args[3]) for _, args in dec] == [4, 1]  # lengths sliced
