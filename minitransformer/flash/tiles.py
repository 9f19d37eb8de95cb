"""Choosing the tile sizes ``Br`` x ``Bc`` of the teaching kernels.

A block of the forward kernel keeps, in shared memory, one query tile
``Q_i`` (``Br x d``), one key tile ``K_j`` (``Bc x (d+1)``: one float of
padding per row so that 32 lanes reading 32 different key rows hit 32
different memory banks), one value tile ``V_j`` (``Bc x d``) and the
probabilities ``P`` of the tile (``Br x Bc``). The backward kernel keeps
``K_j, V_j`` (padded), the accumulators ``dK_j, dV_j``, one query tile
``Q_i`` (padded) with its ``dO_i``, the tiles ``P`` and ``dS`` and the row
statistics ``L_i`` and ``D_i``. The byte counts below are exactly how the
kernels carve up their ``extern __shared__`` buffer (see the ``.cu`` files).

Nothing is hard-coded: :func:`choose_tiles` takes the device's shared-memory
limit per block (``cupy.cuda.Device().attributes['MaxSharedMemoryPerBlock']``,
48 KiB on every CUDA GPU, or the opt-in maximum
``MaxSharedMemoryPerBlockOptin``, e.g. 64 KiB on a T4, 163 KiB on an A100,
227 KiB on an H100, which the launcher must then grant with
``cudaFuncSetAttribute(..., MaxDynamicSharedMemorySize, bytes)``) and picks
the largest tiles that fit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TileConfig",
    "FlashTiles",
    "forward_smem_bytes",
    "backward_smem_bytes",
    "forward_threads",
    "BACKWARD_THREADS",
    "PREPROCESS_THREADS",
    "MAX_HEAD_DIM",
    "choose_tiles",
]

FLOAT_BYTES = 4
MAX_HEAD_DIM = 128  # a lane owns at most 4 of the d output columns (4 x 32 = 128)
MAX_BR_FORWARD = 16  # one warp per query row: 16 rows = 512 threads per block
BACKWARD_THREADS = 256  # the backward kernel's block size (any multiple of 32 works)
PREPROCESS_THREADS = 128  # D = rowsum(dO * O): one warp per row, 4 rows per block


@dataclass(frozen=True)
class TileConfig:
    """One kernel's launch shape: ``Br`` query rows and ``Bc`` key rows per tile.

    The teaching kernels' tiles (:func:`choose_tiles`) and the fast kernels' launch
    shapes (:func:`~minitransformer.flash.cupy_bridge.fast_forward_config`,
    :func:`~minitransformer.flash.cupy_bridge.fast_backward_config`) share it.
    """

    Br: int
    Bc: int
    threads: int  # threads per block
    smem_bytes: int  # dynamic shared memory per block


@dataclass(frozen=True)
class FlashTiles:
    """The tiles of the forward and of the backward teaching kernels."""

    forward: TileConfig
    backward: TileConfig


def forward_smem_bytes(Br: int, Bc: int, d: int) -> int:
    """Shared memory of one forward block: ``Qs[Br][d] Ks[Bc][d+1] Vs[Bc][d] Ps[Br][Bc]``."""
    return FLOAT_BYTES * (Br * d + Bc * (d + 1) + Bc * d + Br * Bc)


def backward_smem_bytes(Br: int, Bc: int, d: int) -> int:
    """Shared memory of one backward block.

    ``Ks[Bc][d+1] Vs[Bc][d+1] dKs[Bc][d] dVs[Bc][d] Qs[Br][d+1] dOs[Br][d]
    Ps[Br][Bc] dSs[Br][Bc] Ls[Br] Ds[Br]``.
    """
    return FLOAT_BYTES * (2 * Bc * (d + 1) + 2 * Bc * d + Br * (d + 1) + Br * d + 2 * Br * Bc + 2 * Br)


def forward_threads(Br: int) -> int:
    """The forward kernel runs one warp (32 threads) per query row of the tile."""
    return 32 * Br


def _cap(size: int, seq_len: int | None) -> int:
    """No point in a tile longer than the sequence (rounded up to a power of two)."""
    if seq_len is None:
        return size
    pow2 = 1
    while pow2 < seq_len:
        pow2 *= 2
    return min(size, pow2)


def choose_tiles(head_dim: int, shared_mem_per_block_bytes: int, *, seq_len: int | None = None) -> FlashTiles:
    """Pick ``Br`` and ``Bc`` for the teaching kernels from the shared-memory limit.

    The rule: among power-of-two tiles, take the largest tile area ``Br * Bc``
    whose shared memory fits (each key/value tile loaded from global memory is
    then reused by as many query rows as possible); on a tie prefer the larger
    ``Bc`` for the forward pass (fewer tiles, fewer barriers) and the larger
    ``Bc`` for the backward pass too (its block owns a key tile and
    accumulates ``dK_j, dV_j`` for it). The forward ``Br`` is at most 16
    (one warp per row, 512 threads per block).

    Args:
        head_dim: ``d``, 1 .. 128.
        shared_mem_per_block_bytes: the bytes of shared memory a block may use.
        seq_len: if given, tiles are not made longer than the sequence needs.

    Returns:
        :class:`FlashTiles` with the forward and backward :class:`TileConfig`.

    Raises:
        ValueError: for a head dim above 128 or a limit too small for any tile.
    """
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim={head_dim} is not supported by the teaching kernels (1 .. {MAX_HEAD_DIM})")
    if shared_mem_per_block_bytes <= 0:
        raise ValueError(f"shared_mem_per_block_bytes={shared_mem_per_block_bytes} must be positive")
    d = head_dim
    sizes = (64, 32, 16, 8, 4, 2, 1)

    def best(smem, max_br: int) -> tuple[int, int] | None:
        fits = [
            (Br * Bc, Bc, Br)
            for Br in sizes
            for Bc in sizes
            if Br <= _cap(max_br, seq_len) and Bc <= _cap(64, seq_len) and smem(Br, Bc, d) <= shared_mem_per_block_bytes
        ]
        if not fits:
            return None
        _, Bc, Br = max(fits)
        return Br, Bc

    fwd = best(forward_smem_bytes, MAX_BR_FORWARD)
    bwd = best(backward_smem_bytes, 64)
    if fwd is None or bwd is None:
        raise ValueError(
            f"shared_mem_per_block_bytes={shared_mem_per_block_bytes} is too small "
            f"for even a 1 x 1 tile at head_dim={head_dim}"
        )
    return FlashTiles(
        forward=TileConfig(fwd[0], fwd[1], forward_threads(fwd[0]), forward_smem_bytes(*fwd, d)),
        backward=TileConfig(bwd[0], bwd[1], BACKWARD_THREADS, backward_smem_bytes(*bwd, d)),
    )
