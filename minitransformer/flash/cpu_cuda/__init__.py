"""Execute CUDA C kernels on the CPU: ``cuda_cpu.h`` (fibers, barriers, NaN-poisoned
shared memory) and ``runner`` (g++ compilation, ctypes launches on NumPy arrays)."""
