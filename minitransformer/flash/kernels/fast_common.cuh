// fast_common.cuh -- the building blocks of the fast (tensor-core) kernels.
//
// Chapter 8, "the fast kernel". Everything the fast kernels do that is not
// plain C++ goes through the tiny functions in this file:
//
//   half/bfloat16 <-> float conversions      to_float<DT>, pack2<DT>
//   tensor-core matrix multiply-accumulate   mma_m16n8k8_f16, mma_m16n8k16_f16,
//                                            mma_m16n8k16_bf16, mma_k16<DT>
//   shared memory -> register fragments      ldmatrix_x4, ldmatrix_x4_trans,
//                                            ldmatrix_x2, ldmatrix_x2_trans
//   asynchronous global -> shared copies     cp_async_16, cp_async_commit,
//                                            cp_async_wait<N>
//
// Each has two bodies. On the GPU it is one inline-PTX instruction. Under
// MT_PTX_VIA_SHUFFLES (set automatically by MT_CPU_EMULATION) it is plain
// CUDA C++ that reproduces the same *warp-level* semantics -- the register
// fragment layouts of the PTX ISA -- with __shfl_sync alone. That lets the
// kernels' exact source run on the CPU through the host-side emulation header
// (minitransformer/flash/cpu_cuda/cuda_cpu_mma.h), where every shuffle is a
// meeting point of the 32 lanes; and, compiled for a GPU with
// -DMT_PTX_VIA_SHUFFLES, it lets a GPU test check the emulation against the
// real instructions.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"); lane =
// 4 * g + t, i.e. g = lane / 4 ("groupID"), t = lane % 4 ("threadID_in_group"):
//   A (16 x 16, row-major)  a0 = A[g][2t..2t+1]     a1 = A[g+8][2t..2t+1]
//                           a2 = A[g][2t+8..2t+9]   a3 = A[g+8][2t+8..2t+9]
//   B (16 x 8, "col")       b0 = B[2t..2t+1][g]     b1 = B[2t+8..2t+9][g]
//   C, D (16 x 8, fp32)     c0, c1 = C[g][2t..2t+1] c2, c3 = C[g+8][2t..2t+1]
// m16n8k8 is the first half of that: A = {a0, a1}, B = {b0}. So one m16n8k16
// is exactly two m16n8k8 (k = 0..7, then 8..15): that is how sm_75 (Turing,
// the T4), which has no f16 m16n8k16, runs the same kernel.
#pragma once

// ----------------------------------------------------------------------------
// Which architecture's code path. NVRTC defines __CUDA_ARCH__ (750, 800, 900);
// the CPU emulation picks a path with -DMT_SM=75 or -DMT_SM=80.
#if defined(__CUDA_ARCH__)
#define MT_SM (__CUDA_ARCH__ / 10)
#elif !defined(MT_SM)
#define MT_SM 80
#endif

#if defined(MT_CPU_EMULATION) && !defined(MT_PTX_VIA_SHUFFLES)
#define MT_PTX_VIA_SHUFFLES 1
#endif

#define MT_DEV __device__ __forceinline__

typedef unsigned short mt_u16;   // the bits of one fp16 or bf16 number
typedef unsigned int mt_u32;     // two of them, packed (low half = first)

// Element types, as template arguments: the kernels are instantiated per type.
#define MT_F16 0
#define MT_BF16 1
#define MT_F32 2   // the decode kernel only

// 16 bytes, the unit of every vectorized copy.
struct __align__(16) mt_u4 { mt_u32 x, y, z, w; };

// -inf without INFINITY (NVRTC rejects the macro): the bit pattern 0xff800000.
MT_DEV float mt_neg_inf() { return __int_as_float(0xff800000); }

// ----------------------------------------------------------------------------
// Conversions. fp16 uses the hardware's cvt on the GPU and the compiler's
// _Float16 on the CPU. bf16 is the top half of a float32: widening is a shift;
// narrowing rounds to nearest even in integer arithmetic (same on both).
MT_DEV float f16_to_float(mt_u16 h) {
#if defined(MT_CPU_EMULATION)
  return mt_emu_f16_to_float(h);
#else
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#endif
}

MT_DEV mt_u16 float_to_f16(float f) {
#if defined(MT_CPU_EMULATION)
  return mt_emu_float_to_f16(f);
#else
  mt_u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#endif
}

MT_DEV float bf16_to_float(mt_u16 h) { return __uint_as_float(((mt_u32)h) << 16); }

MT_DEV mt_u16 float_to_bf16(float f) {
  mt_u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (mt_u16)((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
  return (mt_u16)(u >> 16);
}

template <int DT> MT_DEV float to_float(mt_u16 h) {
  return DT == MT_BF16 ? bf16_to_float(h) : f16_to_float(h);
}
template <int DT> MT_DEV mt_u16 from_float(float f) {
  return DT == MT_BF16 ? float_to_bf16(f) : float_to_f16(f);
}
// Two floats -> one register of two 16-bit numbers (lo is the lower column).
template <int DT> MT_DEV mt_u32 pack2(float lo, float hi) {
  return (mt_u32)from_float<DT>(lo) | ((mt_u32)from_float<DT>(hi) << 16);
}
template <int DT> MT_DEV float lo_f(mt_u32 x) { return to_float<DT>((mt_u16)(x & 0xffffu)); }
template <int DT> MT_DEV float hi_f(mt_u32 x) { return to_float<DT>((mt_u16)(x >> 16)); }

// ----------------------------------------------------------------------------
// Shuffle helpers for the emulated bodies (a pointer is shuffled as two words).
#if defined(MT_PTX_VIA_SHUFFLES)
MT_DEV const void* shfl_ptr(const void* p, int src_lane) {
  unsigned long long u = (unsigned long long)p;
  mt_u32 lo = __shfl_sync(0xffffffffu, (mt_u32)(u & 0xffffffffull), src_lane);
  mt_u32 hi = __shfl_sync(0xffffffffu, (mt_u32)(u >> 32), src_lane);
  return (const void*)(((unsigned long long)hi << 32) | lo);
}
MT_DEV mt_u32 lane_id() { return threadIdx.x & 31u; }

// D = A * B + C for one m16n8 tile over KP pairs of k (KP = 4: k8, KP = 8: k16),
// gathering each product's operands from the lanes that hold them.
template <int DT, int KP>
MT_DEV void mma_by_shuffles(float c[4], const mt_u32* a, const mt_u32* b) {
  const int lane = (int)lane_id(), g = lane >> 2, t = lane & 3;
  float d0 = c[0], d1 = c[1], d2 = c[2], d3 = c[3];
  for (int kp = 0; kp < KP; ++kp) {                 // k = 2 kp, 2 kp + 1
    const int src_t = kp & 3, hi = kp >> 2;         // kp >= 4: a2/a3 and b1
    const mt_u32 a_g  = __shfl_sync(0xffffffffu, hi ? a[2] : a[0], g * 4 + src_t);       // A[g][k]
    const mt_u32 a_g8 = __shfl_sync(0xffffffffu, hi ? a[3] : a[1], g * 4 + src_t);       // A[g+8][k]
    const mt_u32 b_n0 = __shfl_sync(0xffffffffu, hi ? b[1] : b[0], (2 * t) * 4 + src_t);     // B[k][2t]
    const mt_u32 b_n1 = __shfl_sync(0xffffffffu, hi ? b[1] : b[0], (2 * t + 1) * 4 + src_t); // B[k][2t+1]
    d0 += lo_f<DT>(a_g) * lo_f<DT>(b_n0) + hi_f<DT>(a_g) * hi_f<DT>(b_n0);
    d1 += lo_f<DT>(a_g) * lo_f<DT>(b_n1) + hi_f<DT>(a_g) * hi_f<DT>(b_n1);
    d2 += lo_f<DT>(a_g8) * lo_f<DT>(b_n0) + hi_f<DT>(a_g8) * hi_f<DT>(b_n0);
    d3 += lo_f<DT>(a_g8) * lo_f<DT>(b_n1) + hi_f<DT>(a_g8) * hi_f<DT>(b_n1);
  }
  c[0] = d0; c[1] = d1; c[2] = d2; c[3] = d3;
}

// ldmatrix: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; lane 4g+t
// receives M_i[g][2t..2t+1] (or, transposed, M_i[2t][g] and M_i[2t+1][g]).
template <int NMAT, bool TRANS>
MT_DEV void ldmatrix_by_shuffles(mt_u32* r, const void* smem_row) {
  const int lane = (int)lane_id(), g = lane >> 2, t = lane & 3;
  for (int i = 0; i < NMAT; ++i) {
    if (!TRANS) {
      const mt_u16* row = (const mt_u16*)shfl_ptr(smem_row, i * 8 + g);
      r[i] = (mt_u32)row[2 * t] | ((mt_u32)row[2 * t + 1] << 16);
    } else {
      const mt_u16* row0 = (const mt_u16*)shfl_ptr(smem_row, i * 8 + 2 * t);
      const mt_u16* row1 = (const mt_u16*)shfl_ptr(smem_row, i * 8 + 2 * t + 1);
      r[i] = (mt_u32)row0[g] | ((mt_u32)row1[g] << 16);
    }
  }
}
#endif  // MT_PTX_VIA_SHUFFLES

// ----------------------------------------------------------------------------
// Tensor-core multiply-accumulate, c += a * b, fp32 accumulators.

// m16n8k8, f16 inputs: sm_75 and later (Turing's only f16 shape with fp32 C).
MT_DEV void mma_m16n8k8_f16(float c[4], const mt_u32 a[2], mt_u32 b) {
#if defined(MT_PTX_VIA_SHUFFLES)
  const mt_u32 a4[4] = {a[0], a[1], 0u, 0u}, b2[2] = {b, 0u};
  mma_by_shuffles<MT_F16, 4>(c, a4, b2);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(b));
#endif
}

// m16n8k16, f16 inputs: sm_80 and later.
MT_DEV void mma_m16n8k16_f16(float c[4], const mt_u32 a[4], const mt_u32 b[2]) {
#if defined(MT_PTX_VIA_SHUFFLES)
  mma_by_shuffles<MT_F16, 8>(c, a, b);
#elif MT_SM >= 80
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // never instantiated below sm_80: mma_k16 splits it in two
#endif
}

// m16n8k16, bf16 inputs: sm_80 and later (there is no bf16 on sm_75).
MT_DEV void mma_m16n8k16_bf16(float c[4], const mt_u32 a[4], const mt_u32 b[2]) {
#if defined(MT_PTX_VIA_SHUFFLES)
  mma_by_shuffles<MT_BF16, 8>(c, a, b);
#elif MT_SM >= 80
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

// The one the kernels call: a 16x8x16 step in the element type DT.
template <int DT> MT_DEV void mma_k16(float c[4], const mt_u32 a[4], const mt_u32 b[2]) {
  if (DT == MT_BF16) {
    mma_m16n8k16_bf16(c, a, b);
  } else {
#if MT_SM >= 80
    mma_m16n8k16_f16(c, a, b);
#else
    const mt_u32 a_lo[2] = {a[0], a[1]}, a_hi[2] = {a[2], a[3]};
    mma_m16n8k8_f16(c, a_lo, b[0]);   // k = 0..7
    mma_m16n8k8_f16(c, a_hi, b[1]);   // k = 8..15
#endif
  }
}

// ----------------------------------------------------------------------------
// ldmatrix: four (or two) 8x8 matrices of 16-bit numbers from shared memory
// into fragments. Every lane passes the address of one row (lanes 0-7 rows of
// matrix 0, 8-15 of matrix 1, ...; for .x2 only lanes 0-15 count). Rows must
// be 16-byte aligned.
#if !defined(MT_PTX_VIA_SHUFFLES)
MT_DEV mt_u32 smem_addr(const void* p) { return (mt_u32)__cvta_generic_to_shared(p); }
#endif

MT_DEV void ldmatrix_x4(mt_u32 r[4], const void* smem_row) {
#if defined(MT_PTX_VIA_SHUFFLES)
  ldmatrix_by_shuffles<4, false>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(smem_row)));
#endif
}

MT_DEV void ldmatrix_x4_trans(mt_u32 r[4], const void* smem_row) {
#if defined(MT_PTX_VIA_SHUFFLES)
  ldmatrix_by_shuffles<4, true>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(smem_row)));
#endif
}

MT_DEV void ldmatrix_x2(mt_u32 r[2], const void* smem_row) {
#if defined(MT_PTX_VIA_SHUFFLES)
  ldmatrix_by_shuffles<2, false>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(smem_row)));
#endif
}

MT_DEV void ldmatrix_x2_trans(mt_u32 r[2], const void* smem_row) {
#if defined(MT_PTX_VIA_SHUFFLES)
  ldmatrix_by_shuffles<2, true>(r, smem_row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(smem_row)));
#endif
}

// ----------------------------------------------------------------------------
// cp.async (sm_80+): copy 16 bytes global -> shared without passing through
// registers; the copy lands some time before the matching cp_async_wait.
// valid == false writes 16 zero bytes instead (reads nothing): that is how a
// partial tile's missing rows become zeros.
MT_DEV void cp_async_16(void* smem, const void* gmem, bool valid) {
#if defined(MT_CPU_EMULATION) && MT_SM >= 80
  mt_emu_cp_async_16(smem, gmem, valid);   // deferred, with NaN until the wait
#elif defined(MT_PTX_VIA_SHUFFLES) || MT_SM < 80
  mt_u4 z = {0u, 0u, 0u, 0u};
  *(mt_u4*)smem = valid ? *(const mt_u4*)gmem : z;
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
               :: "r"(smem_addr(smem)), "l"(gmem), "r"(valid ? 16 : 0));
#endif
}

// Close the group of copies issued so far by this thread.
MT_DEV void cp_async_commit() {
#if defined(MT_CPU_EMULATION) && MT_SM >= 80
  mt_emu_cp_async_commit();
#elif !defined(MT_PTX_VIA_SHUFFLES) && MT_SM >= 80
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Wait until at most N of this thread's committed groups are still in flight.
// (Other threads' copies need a __syncthreads() after this to be visible.)
template <int N> MT_DEV void cp_async_wait() {
#if defined(MT_CPU_EMULATION) && MT_SM >= 80
  mt_emu_cp_async_wait(N);
#elif !defined(MT_PTX_VIA_SHUFFLES) && MT_SM >= 80
  asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
#endif
}

// ----------------------------------------------------------------------------
// Small helpers shared by the kernels.

// Max and sum over the 4 lanes of a quad (the lanes holding one row of C).
MT_DEV float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
MT_DEV float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Tile copies. A tile is rows [row0, row0 + ROWS) of a row-major (n_rows x d)
// matrix `g`, stored in shared memory with row stride LD (LD = d + 8: eight
// halves of padding per row put the 8 rows an ldmatrix reads in 8 different
// bank groups, so it is conflict-free). Rows at or past n_rows become zeros:
// that is all "any N" costs the kernels.
template <int ROWS, int d, int LD, int THREADS>
MT_DEV void load_tile_async(mt_u16* smem, const mt_u16* g, int row0, int n_rows) {
  constexpr int CPR = d / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < ROWS * CPR; c += THREADS) {
    const int r = c / CPR, col = (c % CPR) * 8;
    const bool ok = row0 + r < n_rows;
    cp_async_16(smem + r * LD + col, g + (long long)(ok ? row0 + r : 0) * d + col, ok);
  }
}

// The same copy in two halves, through registers (sm_75 has no cp.async):
// issue the global loads early, store to shared memory once the tile in
// shared memory is no longer being read.
template <int ROWS, int d, int THREADS> struct RegTile {
  static constexpr int CHUNKS = ROWS * (d / 8) / THREADS;   // 16-byte chunks per thread
  mt_u4 v[CHUNKS];
};

template <int ROWS, int d, int THREADS>
MT_DEV void load_tile_regs(RegTile<ROWS, d, THREADS>& t, const mt_u16* g, int row0, int n_rows) {
  constexpr int CPR = d / 8;
  for (int i = 0; i < RegTile<ROWS, d, THREADS>::CHUNKS; ++i) {
    const int c = threadIdx.x + i * THREADS, r = c / CPR, col = (c % CPR) * 8;
    const mt_u4 zero = {0u, 0u, 0u, 0u};
    t.v[i] = row0 + r < n_rows ? *(const mt_u4*)(g + (long long)(row0 + r) * d + col) : zero;
  }
}

template <int ROWS, int d, int LD, int THREADS>
MT_DEV void store_tile_regs(mt_u16* smem, const RegTile<ROWS, d, THREADS>& t) {
  constexpr int CPR = d / 8;
  for (int i = 0; i < RegTile<ROWS, d, THREADS>::CHUNKS; ++i) {
    const int c = threadIdx.x + i * THREADS, r = c / CPR, col = (c % CPR) * 8;
    *(mt_u4*)(smem + r * LD + col) = t.v[i];
  }
}
