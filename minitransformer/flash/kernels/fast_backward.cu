// fast_backward.cu -- FlashAttention-2 backward on tensor cores (fp16/bf16 in, fp32 accumulate).
//
// Chapter 8, "the fast kernel, backward". The algorithm is the one of
// teaching_backward.cu and of flash_backward_numpy: nothing of size N x N is
// stored; P is recomputed tile by tile from Q, K and the log-sum-exp L saved
// by the forward pass:
//
//   P   = exp(scale * Q K^T - L)            (rows: queries, columns: keys)
//   dV += P^T dO        dP = dO V^T         dS = P * (dP - D),  D = rowsum(dO * O)
//   dK += scale * dS^T Q                    dQ += scale * dS K
//
// One block owns Bc = 64 keys (4 warps x 16 keys) of one kv head and loops
// over the query tiles of every query head that shares it (grouped-query
// attention: G = H / H_kv heads), so dK and dV are summed over the group in
// fp32 registers and written once per kv head. On sm_80+ the Q and dO tiles
// are double-buffered with cp.async: the copy of the next step's tiles runs
// while the tensor cores work on this one (sm_75: plain copies). Each warp computes the *transposed* score tile S^T = K Q^T for its
// 16 keys, so that P^T and dS^T come out of the tensor cores already in the A
// fragment layout that dV += P^T dO and dK += dS^T Q need: dK and dV stay in
// registers for the whole loop. dQ needs dS the other way round; dS^T goes
// through shared memory once (16-bit), is read back with the transposing
// ldmatrix, and each block adds its share of dQ into an fp32 buffer with
// atomicAdd (several key blocks contribute to the same dQ rows).
//
// Layouts (contiguous): Q, dO (B, H, N, d); K, V, dK, dV (B, H_kv, N_k, d);
// L, Dvec (B, H, N) fp32; dQacc (B, H, N, d) fp32, zeroed by the caller,
// receives dQ. Causal: bottom-right, query i sees keys j <= i + (N_k - N);
// query tiles that see none of a block's keys are skipped.
// Launch: grid (ceil(N_k / 64), B * H_kv), 128 threads, BwdCfg<d>::SMEM bytes.
#include "fast_common.cuh"

template <int d> struct BwdCfg {
  static constexpr int THREADS = 128;            // 4 warps
  static constexpr int Bc = 64;                  // keys per block (16 per warp)
  // Queries per step: 64, or 32 where that would not fit: d = 128 (sm_75's 64 KB per block)
  // and d = 64 on sm_75 (two blocks per SM need at most 32 KB each).
  static constexpr int Br = (d <= 32 || (d <= 64 && MT_SM >= 80)) ? 64 : 32;
  static constexpr int LD = d + 8;               // padded rows of K, V, Q, dO (halves)
  static constexpr int LDS = Br + 8;             // padded rows of dS^T (halves)
  static constexpr int STAGES = MT_SM >= 80 ? 2 : 1;  // Q/dO buffers (cp.async double buffering)
  // sm_75: dS^T borrows the Q and dO buffers, free once dK and dV are updated (one more
  // barrier per step); sm_80+ is limited by registers to 2 blocks anyway: a buffer of its own.
  static constexpr bool DS_IN_Q = MT_SM < 80;
  static constexpr int DS_HALVES = DS_IN_Q ? 0 : Bc * LDS;
  static constexpr int SMEM = (2 * Bc + 2 * STAGES * Br) * LD * 2 + DS_HALVES * 2 + 2 * Br * 4;
  static_assert(!DS_IN_Q || Bc * LDS <= 2 * Br * LD, "dS^T must fit in the Q and dO buffers");
};

// D_i = sum_d dO[i][d] * O[i][d], one warp per row (the "preprocess" pass).
template <int d, int DT>
__global__ void __launch_bounds__(128)
flash_bwd_dot_do_o(const mt_u16* __restrict__ dO, const mt_u16* __restrict__ O,
                   float* __restrict__ Dvec, int rows) {
  const int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;                       // whole warp leaves together
  float acc = 0.f;
  for (int c = lane; c < d; c += 32)
    acc += to_float<DT>(dO[(long long)row * d + c]) * to_float<DT>(O[(long long)row * d + c]);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) Dvec[row] = acc;
}

// __launch_bounds__(128, 2): two blocks per SM is the goal (tests/test_kernel_resources.py);
// it caps nothing (2 x 128 threads x 255 registers fit), but without a minimum ptxas aimed
// lower on sm_75 (168 registers at d = 64) and spilled.
template <int d, int DT>
__global__ void __launch_bounds__(128, 2)
flash_bwd_fast(const mt_u16* __restrict__ Q, const mt_u16* __restrict__ K,
               const mt_u16* __restrict__ V, const mt_u16* __restrict__ dO,
               const float* __restrict__ L, const float* __restrict__ Dvec,
               float* __restrict__ dQacc, mt_u16* __restrict__ dK, mt_u16* __restrict__ dV,
               int H, int H_kv, int N, int N_k, float scale, int is_causal) {
  typedef BwdCfg<d> C;
  constexpr int Br = C::Br, Bc = C::Bc, LD = C::LD, LDS = C::LDS, T = C::THREADS;
  constexpr int STAGES = C::STAGES;
  extern __shared__ mt_u4 mt_smem[];             // dynamic: BwdCfg<d>::SMEM bytes
  mt_u16* sK = (mt_u16*)mt_smem;                 // [Bc][LD]
  mt_u16* sV = sK + Bc * LD;                     // [Bc][LD]
  mt_u16* sQb = sV + Bc * LD;                    // [STAGES][Br][LD]
  mt_u16* sdOb = sQb + STAGES * Br * LD;         // [STAGES][Br][LD]
  mt_u16* sdS = C::DS_IN_Q ? sQb : sdOb + STAGES * Br * LD;   // [Bc][LDS]  dS^T: rows are keys
  float* sL = (float*)(sdOb + STAGES * Br * LD + C::DS_HALVES);  // [Br] log-sum-exp, log2 units
  float* sD = sL + Br;                           // [Br] rowsum(dO * O)

  const int k0 = blockIdx.x * Bc;                // first key of this block
  const int bkv = blockIdx.y, b = bkv / H_kv, hk = bkv % H_kv;
  const int G = H / H_kv;                        // query heads sharing this kv head
  const mt_u16* Kg = K + (long long)bkv * N_k * d;
  const mt_u16* Vg = V + (long long)bkv * N_k * d;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3, mi = lane >> 3, mr = lane & 7;
  const int off = N_k - N;
  const float sl2 = scale * 1.4426950408889634f;
  const int key_j[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};   // this lane's two key rows

  load_tile_async<Bc, d, LD, T>(sK, Kg, k0, N_k);
  load_tile_async<Bc, d, LD, T>(sV, Vg, k0, N_k);

  float dk[d / 8][4], dv[d / 8][4];              // this warp's 16 keys x d, in registers throughout
  for (int i = 0; i < d / 8; ++i)
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  // dQ tiling of a Br x d block over the 4 warps: MT row tiles of 16, each split in WN column parts.
  constexpr int MT = Br / 16, WN = 4 / MT, NTW = (d / 8) / WN;
  const int dq_mt = warp % MT, dq_n0 = (warp / MT) * NTW;

  // The steps: (query head of the group, query tile) pairs, head-major. Causal: query
  // tiles before k0 - off see none of these keys and are skipped.
  const int qt_first = is_causal ? max(0, k0 - off) / Br : 0;
  const int n_qt = max(0, (N + Br - 1) / Br - qt_first);     // query tiles per head
  const int n_steps = G * n_qt;
  // Q and dO of step `step` into buffer `stage` (cp.async on sm_80+, plain copies on sm_75).
  auto load_step = [&](int step, int stage) {
    const long long bh = (long long)b * H + hk * G + step / n_qt;
    const int q0 = (qt_first + step % n_qt) * Br;
    load_tile_async<Br, d, LD, T>(sQb + stage * Br * LD, Q + bh * N * d, q0, N);
    load_tile_async<Br, d, LD, T>(sdOb + stage * Br * LD, dO + bh * N * d, q0, N);
  };
  if (n_steps > 0) load_step(0, 0);
  cp_async_commit();                             // one group: K, V and the first Q, dO

  for (int step = 0; step < n_steps; ++step) {
    const int stage = STAGES == 2 ? (step & 1) : 0;
    const mt_u16* sQ = sQb + stage * Br * LD;
    const mt_u16* sdO = sdOb + stage * Br * LD;
    const long long bh = (long long)b * H + hk * G + step / n_qt;
    const int q0 = (qt_first + step % n_qt) * Br;
    const float* Lg = L + bh * N;
    const float* Dg = Dvec + bh * N;
#if MT_SM >= 80
    // ---- start the next step's Q and dO into the other buffer; wait for this step's only ----
    if (step + 1 < n_steps) {
      load_step(step + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
#else
    if (step > 0) load_step(step, 0);            // sm_75: the copy of step 0 came with K, V
#endif
    // ---- L, D of this query tile ----
    for (int r = threadIdx.x; r < Br; r += T) {
      const bool ok = q0 + r < N;               // missing rows: P = exp(. - inf) = 0
      sL[r] = ok ? Lg[q0 + r] * 1.4426950408889634f : __int_as_float(0x7f800000);
      sD[r] = ok ? Dg[q0 + r] : 0.f;
    }
    __syncthreads();

    // ---- S^T = K Q^T and dP^T = V dO^T: 16 keys x Br queries per warp ----
    float st[Br / 8][4], dpt[Br / 8][4];
    for (int i = 0; i < Br / 8; ++i)
      for (int e = 0; e < 4; ++e) st[i][e] = dpt[i][e] = 0.f;
    for (int kc = 0; kc < d / 16; ++kc) {
      mt_u32 ka[4], va[4];                       // this warp's K and V rows as A fragments
      ldmatrix_x4(ka, sK + (warp * 16 + mr + (mi & 1) * 8) * LD + kc * 16 + (mi >> 1) * 8);
      ldmatrix_x4(va, sV + (warp * 16 + mr + (mi & 1) * 8) * LD + kc * 16 + (mi >> 1) * 8);
      for (int nt = 0; nt < Br / 8; nt += 2) {
        mt_u32 qf[4], of[4];                     // Q, dO rows as B fragments (columns of Q^T)
        ldmatrix_x4(qf, sQ + (nt * 8 + mr + (mi >> 1) * 8) * LD + kc * 16 + (mi & 1) * 8);
        ldmatrix_x4(of, sdO + (nt * 8 + mr + (mi >> 1) * 8) * LD + kc * 16 + (mi & 1) * 8);
        mma_k16<DT>(st[nt], ka, qf);
        mma_k16<DT>(st[nt + 1], ka, qf + 2);
        mma_k16<DT>(dpt[nt], va, of);
        mma_k16<DT>(dpt[nt + 1], va, of + 2);
      }
    }

    // ---- P^T = exp2(S^T * scale * log2 e - L), masked; dS^T = P^T (dP^T - D) ----
    for (int nt = 0; nt < Br / 8; ++nt)
      for (int e = 0; e < 4; ++e) {
        const int j = key_j[e >> 1], ic = nt * 8 + 2 * t + (e & 1), i = q0 + ic;
        const bool visible = j < N_k && i < N && (!is_causal || j <= i + off);
        const float p = visible ? exp2f(st[nt][e] * sl2 - sL[ic]) : 0.f;
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - sD[ic]);  // dS^T (scale applied at the end)
      }

    // ---- dV += P^T dO and dK += dS^T Q, straight from registers ----
    for (int kc = 0; kc < Br / 16; ++kc) {
      const mt_u32 pa[4] = {pack2<DT>(st[2 * kc][0], st[2 * kc][1]), pack2<DT>(st[2 * kc][2], st[2 * kc][3]),
                            pack2<DT>(st[2 * kc + 1][0], st[2 * kc + 1][1]),
                            pack2<DT>(st[2 * kc + 1][2], st[2 * kc + 1][3])};
      const mt_u32 da[4] = {pack2<DT>(dpt[2 * kc][0], dpt[2 * kc][1]), pack2<DT>(dpt[2 * kc][2], dpt[2 * kc][3]),
                            pack2<DT>(dpt[2 * kc + 1][0], dpt[2 * kc + 1][1]),
                            pack2<DT>(dpt[2 * kc + 1][2], dpt[2 * kc + 1][3])};
      for (int dt = 0; dt < d / 8; dt += 2) {
        mt_u32 of[4], qf[4];                     // dO, Q as B (k = query, n = d): transposing ldmatrix
        ldmatrix_x4_trans(of, sdO + (kc * 16 + mr + (mi & 1) * 8) * LD + dt * 8 + (mi >> 1) * 8);
        ldmatrix_x4_trans(qf, sQ + (kc * 16 + mr + (mi & 1) * 8) * LD + dt * 8 + (mi >> 1) * 8);
        mma_k16<DT>(dv[dt], pa, of);
        mma_k16<DT>(dv[dt + 1], pa, of + 2);
        mma_k16<DT>(dk[dt], da, qf);
        mma_k16<DT>(dk[dt + 1], da, qf + 2);
      }
    }

    // ---- dS^T -> shared memory, then dQ += dS K for the whole block ----
    if (C::DS_IN_Q) __syncthreads();             // sm_75: dS^T overwrites Q and dO, still being read
    for (int nt = 0; nt < Br / 8; ++nt)
      for (int r = 0; r < 2; ++r)
        *(mt_u32*)(sdS + (warp * 16 + g + 8 * r) * LDS + nt * 8 + 2 * t) =
            pack2<DT>(dpt[nt][2 * r], dpt[nt][2 * r + 1]);
    __syncthreads();

    float dq[NTW][4];
    for (int i = 0; i < NTW; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
    for (int kc = 0; kc < Bc / 16; ++kc) {
      mt_u32 dsa[4];                             // dS (query x key) = transpose of what is stored
      ldmatrix_x4_trans(dsa, sdS + (kc * 16 + mr + (mi >> 1) * 8) * LDS + dq_mt * 16 + (mi & 1) * 8);
      for (int nn = 0; nn < NTW; nn += 2) {
        mt_u32 kf[4];                            // K as B (k = key, n = d)
        ldmatrix_x4_trans(kf, sK + (kc * 16 + mr + (mi & 1) * 8) * LD + (dq_n0 + nn) * 8 + (mi >> 1) * 8);
        mma_k16<DT>(dq[nn], dsa, kf);
        mma_k16<DT>(dq[nn + 1], dsa, kf + 2);
      }
    }
    for (int r = 0; r < 2; ++r) {
      const int i = q0 + dq_mt * 16 + g + 8 * r;
      if (i < N) {
        float* row = dQacc + (bh * N + i) * d;
        for (int nn = 0; nn < NTW; ++nn) {
          atomicAdd(row + (dq_n0 + nn) * 8 + 2 * t, dq[nn][2 * r] * scale);
          atomicAdd(row + (dq_n0 + nn) * 8 + 2 * t + 1, dq[nn][2 * r + 1] * scale);
        }
      }
    }
    __syncthreads();                             // sQ, sdO, sdS, sL, sD are refilled next
  }

  // ---- epilogue: this block's keys of dK (scaled) and dV ----
  // Must unroll: left as a loop (bf16's longer pack2 tipped NVRTC's unroller at d = 128),
  // dk[dt][2 * r] is indexed by a run-time r and dk, dv, key_j go to a 528-byte stack frame.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = key_j[r];
    if (j < N_k) {
      mt_u16* dk_row = dK + ((long long)bkv * N_k + j) * d;
      mt_u16* dv_row = dV + ((long long)bkv * N_k + j) * d;
      for (int dt = 0; dt < d / 8; ++dt) {
        *(mt_u32*)(dk_row + dt * 8 + 2 * t) = pack2<DT>(dk[dt][2 * r] * scale, dk[dt][2 * r + 1] * scale);
        *(mt_u32*)(dv_row + dt * 8 + 2 * t) = pack2<DT>(dv[dt][2 * r], dv[dt][2 * r + 1]);
      }
    }
  }
}
