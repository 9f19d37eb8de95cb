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
// One block owns BC = 64 keys (4 warps x 16 keys) and loops over the query
// tiles. Each warp computes the *transposed* score tile S^T = K Q^T for its
// 16 keys, so that P^T and dS^T come out of the tensor cores already in the A
// fragment layout that dV += P^T dO and dK += dS^T Q need: dK and dV stay in
// registers for the whole loop. dQ needs dS the other way round; dS^T goes
// through shared memory once (16-bit), is read back with the transposing
// ldmatrix, and each block adds its share of dQ into an fp32 buffer with
// atomicAdd (several key blocks contribute to the same dQ rows).
//
// Layouts (contiguous): Q, dO (B, H, Nq, D); K, V (B, H_kv, Nk, D); LSE, Dvec
// (B, H, Nq) fp32; dQacc (B, H, Nq, D) fp32, zeroed by the caller, receives
// dQ; dK, dV (B, H, Nk, D) per *query* head (the caller sums the heads of a
// group under grouped-query attention). Causal: bottom-right, query i sees
// keys j <= i + (Nk - Nq); query tiles that see none of a block's keys are
// skipped.
// Launch: grid (ceil(Nk / 64), B * H), 128 threads, BwdCfg<D>::SMEM bytes.
#include "fast_common.cuh"

template <int D> struct BwdCfg {
  static constexpr int THREADS = 128;            // 4 warps
  static constexpr int BC = 64;                  // keys per block (16 per warp)
  static constexpr int BR = D <= 64 ? 64 : 32;   // queries per step (D = 128: fits sm_75's 64 KB)
  static constexpr int LD = D + 8;               // padded rows of K, V, Q, dO (halves)
  static constexpr int LDS = BR + 8;             // padded rows of dS^T (halves)
  static constexpr int SMEM = (2 * BC + 2 * BR) * LD * 2 + BC * LDS * 2 + 2 * BR * 4;
};

// D_i = sum_d dO[i][d] * O[i][d], one warp per row (the "preprocess" pass).
template <int D, int DT>
__global__ void __launch_bounds__(128)
flash_bwd_dot_do_o(const mt_u16* __restrict__ dO, const mt_u16* __restrict__ O,
                   float* __restrict__ Dvec, int rows) {
  const int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;                       // whole warp leaves together
  float acc = 0.f;
  for (int c = lane; c < D; c += 32)
    acc += to_float<DT>(dO[(long long)row * D + c]) * to_float<DT>(O[(long long)row * D + c]);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) Dvec[row] = acc;
}

template <int D, int DT>
__global__ void __launch_bounds__(128)
flash_bwd_fast(const mt_u16* __restrict__ Q, const mt_u16* __restrict__ K,
               const mt_u16* __restrict__ V, const mt_u16* __restrict__ dO,
               const float* __restrict__ LSE, const float* __restrict__ Dvec,
               float* __restrict__ dQacc, mt_u16* __restrict__ dK, mt_u16* __restrict__ dV,
               int H, int H_kv, int Nq, int Nk, float scale, int causal) {
  typedef BwdCfg<D> C;
  constexpr int BR = C::BR, BC = C::BC, LD = C::LD, LDS = C::LDS, T = C::THREADS;
  extern __shared__ mt_u4 mt_smem[];             // dynamic: BwdCfg<D>::SMEM bytes
  mt_u16* sK = (mt_u16*)mt_smem;                 // [BC][LD]
  mt_u16* sV = sK + BC * LD;                     // [BC][LD]
  mt_u16* sQ = sV + BC * LD;                     // [BR][LD]
  mt_u16* sdO = sQ + BR * LD;                    // [BR][LD]
  mt_u16* sdS = sdO + BR * LD;                   // [BC][LDS]  dS^T: rows are keys
  float* sL = (float*)(sdS + BC * LDS);          // [BR] log-sum-exp, log2 units
  float* sD = sL + BR;                           // [BR] rowsum(dO * O)

  const int k0 = blockIdx.x * BC;                // first key of this block
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int hk = h / (H / H_kv);
  const mt_u16* Qg = Q + (long long)bh * Nq * D;
  const mt_u16* dOg = dO + (long long)bh * Nq * D;
  const mt_u16* Kg = K + (long long)(b * H_kv + hk) * Nk * D;
  const mt_u16* Vg = V + (long long)(b * H_kv + hk) * Nk * D;
  const float* Lg = LSE + (long long)bh * Nq;
  const float* Dg = Dvec + (long long)bh * Nq;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3, mi = lane >> 3, mr = lane & 7;
  const int off = Nk - Nq;
  const float sl2 = scale * 1.4426950408889634f;
  const int key_j[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};   // this lane's two key rows

  load_tile_async<BC, D, LD, T>(sK, Kg, k0, Nk);
  load_tile_async<BC, D, LD, T>(sV, Vg, k0, Nk);
  cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];              // this warp's 16 keys x D, in registers throughout
  for (int i = 0; i < D / 8; ++i)
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  // dQ tiling of a BR x D block over the 4 warps: MT row tiles of 16, each split in WN column parts.
  constexpr int MT = BR / 16, WN = 4 / MT, NTW = (D / 8) / WN;
  const int dq_mt = warp % MT, dq_n0 = (warp / MT) * NTW;

  // Causal: queries before k0 - off see none of these keys.
  const int q_first = causal ? max(0, k0 - off) : 0;
  for (int q0 = (q_first / BR) * BR; q0 < Nq; q0 += BR) {
    // ---- Q, dO, L, D of this query tile ----
    load_tile_async<BR, D, LD, T>(sQ, Qg, q0, Nq);
    load_tile_async<BR, D, LD, T>(sdO, dOg, q0, Nq);
    cp_async_commit();
    for (int r = threadIdx.x; r < BR; r += T) {
      const bool ok = q0 + r < Nq;              // missing rows: P = exp(. - inf) = 0
      sL[r] = ok ? Lg[q0 + r] * 1.4426950408889634f : __int_as_float(0x7f800000);
      sD[r] = ok ? Dg[q0 + r] : 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();

    // ---- S^T = K Q^T and dP^T = V dO^T: 16 keys x BR queries per warp ----
    float st[BR / 8][4], dpt[BR / 8][4];
    for (int i = 0; i < BR / 8; ++i)
      for (int e = 0; e < 4; ++e) st[i][e] = dpt[i][e] = 0.f;
    for (int kc = 0; kc < D / 16; ++kc) {
      mt_u32 ka[4], va[4];                       // this warp's K and V rows as A fragments
      ldmatrix_x4(ka, sK + (warp * 16 + mr + (mi & 1) * 8) * LD + kc * 16 + (mi >> 1) * 8);
      ldmatrix_x4(va, sV + (warp * 16 + mr + (mi & 1) * 8) * LD + kc * 16 + (mi >> 1) * 8);
      for (int nt = 0; nt < BR / 8; nt += 2) {
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
    for (int nt = 0; nt < BR / 8; ++nt)
      for (int e = 0; e < 4; ++e) {
        const int j = key_j[e >> 1], ic = nt * 8 + 2 * t + (e & 1), i = q0 + ic;
        const bool visible = j < Nk && i < Nq && (!causal || j <= i + off);
        const float p = visible ? exp2f(st[nt][e] * sl2 - sL[ic]) : 0.f;
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - sD[ic]);  // dS^T (scale applied at the end)
      }

    // ---- dV += P^T dO and dK += dS^T Q, straight from registers ----
    for (int kc = 0; kc < BR / 16; ++kc) {
      const mt_u32 pa[4] = {pack2<DT>(st[2 * kc][0], st[2 * kc][1]), pack2<DT>(st[2 * kc][2], st[2 * kc][3]),
                            pack2<DT>(st[2 * kc + 1][0], st[2 * kc + 1][1]),
                            pack2<DT>(st[2 * kc + 1][2], st[2 * kc + 1][3])};
      const mt_u32 da[4] = {pack2<DT>(dpt[2 * kc][0], dpt[2 * kc][1]), pack2<DT>(dpt[2 * kc][2], dpt[2 * kc][3]),
                            pack2<DT>(dpt[2 * kc + 1][0], dpt[2 * kc + 1][1]),
                            pack2<DT>(dpt[2 * kc + 1][2], dpt[2 * kc + 1][3])};
      for (int dt = 0; dt < D / 8; dt += 2) {
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
    for (int nt = 0; nt < BR / 8; ++nt)
      for (int r = 0; r < 2; ++r)
        *(mt_u32*)(sdS + (warp * 16 + g + 8 * r) * LDS + nt * 8 + 2 * t) =
            pack2<DT>(dpt[nt][2 * r], dpt[nt][2 * r + 1]);
    __syncthreads();

    float dq[NTW][4];
    for (int i = 0; i < NTW; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
    for (int kc = 0; kc < BC / 16; ++kc) {
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
      if (i < Nq) {
        float* row = dQacc + ((long long)bh * Nq + i) * D;
        for (int nn = 0; nn < NTW; ++nn) {
          atomicAdd(row + (dq_n0 + nn) * 8 + 2 * t, dq[nn][2 * r] * scale);
          atomicAdd(row + (dq_n0 + nn) * 8 + 2 * t + 1, dq[nn][2 * r + 1] * scale);
        }
      }
    }
    __syncthreads();                             // sQ, sdO, sdS, sL, sD are refilled next
  }

  // ---- epilogue: this block's keys of dK (scaled) and dV ----
  for (int r = 0; r < 2; ++r) {
    const int j = key_j[r];
    if (j < Nk) {
      mt_u16* dk_row = dK + ((long long)bh * Nk + j) * D;
      mt_u16* dv_row = dV + ((long long)bh * Nk + j) * D;
      for (int dt = 0; dt < D / 8; ++dt) {
        *(mt_u32*)(dk_row + dt * 8 + 2 * t) = pack2<DT>(dk[dt][2 * r] * scale, dk[dt][2 * r + 1] * scale);
        *(mt_u32*)(dv_row + dt * 8 + 2 * t) = pack2<DT>(dv[dt][2 * r], dv[dt][2 * r + 1]);
      }
    }
  }
}
