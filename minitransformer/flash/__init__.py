"""Flash attention, from the tiled NumPy reference to the CUDA kernels.

The pieces (each module imports only what it needs; nothing here loads CuPy):

* ``tiled_numpy`` -- the FlashAttention-2 loop nest in NumPy, the reference that
  chapter 8 steps through (``flash_forward_numpy``, ``flash_backward_numpy``,
  ``flash_forward_steps``).
* ``tiled_torch`` -- the same loop nest in PyTorch, with an autograd Function
  whose backward is the tiled backward (``flash_attention_torch``).
* ``tiles`` -- how the kernels' tile sizes ``Br``, ``Bc`` are chosen from the
  device's shared-memory limit.
* ``kernels/teaching_*.cu`` -- the fp32 teaching kernels read in chapter 8.
* ``cpu_cuda`` -- runs those exact ``.cu`` sources on the CPU (g++, fibers,
  NaN-poisoned shared memory), so they are executed and tested without a GPU.
* ``kernels/fast_*.cu``, ``kernels/decode.cu`` -- the fp16/bf16 tensor-core kernels
  and the split-KV decode kernel; ``cupy_bridge`` compiles and launches them.
* ``api`` -- ``flash_attention`` and ``flash_decode``, the entry points.
"""

from .api import flash_attention, flash_decode

__all__ = ["flash_attention", "flash_decode"]
