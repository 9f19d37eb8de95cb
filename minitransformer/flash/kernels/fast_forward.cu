// fast_forward.cu -- FlashAttention-2 forward on tensor cores (fp16/bf16 in, fp32 accumulate).
//
// Chapter 8, "the fast kernel". Same algorithm as the teaching kernel
// (teaching_forward.cu) and the tiled NumPy reference: for a tile of Br query
// rows, stream the key/value tiles, keep a running row max m and row sum l,
// rescale the partial output by exp(m_old - m_new). What changes is *where
// the numbers live*:
//
//   * one block = Br = 64 query rows = 4 warps x 16 rows; a warp owns its 16
//     rows outright, so the row max/sum need only the 4 lanes of a quad;
//   * S = Q K^T and O += P V are mma.sync tensor-core instructions on 16x8x16
//     tiles; Q sits in registers (A fragments) for the whole loop;
//   * P never goes to memory: the C fragment of S, rounded to 16 bits, *is*
//     the A fragment that P V needs (see fast_common.cuh for the layouts);
//   * K and V tiles are double-buffered in shared memory with cp.async on
//     sm_80+ (the copy of tile j+1 runs while tile j is multiplied); on sm_75
//     the next tile is loaded into registers during the multiply instead;
//   * shared-memory rows are padded by 16 bytes so ldmatrix is conflict-free;
//   * causal: key tiles entirely above the diagonal are never visited.
//
// Layouts (contiguous): Q, O (B, H, N, d); K, V (B, H_kv, N_k, d), query head h
// reads kv head h / (H / H_kv); L (B, H, N) fp32, natural log. Causal uses
// the bottom-right convention: query i sees keys j <= i + (N_k - N).
// Launch: grid (ceil(N / 64), B * H), 128 threads, FwdCfg<d>::SMEM bytes of
// dynamic shared memory. Instantiated for d in {32, 64, 128} and DT in
// {MT_F16, MT_BF16 (sm_80+)} through NVRTC name expressions.
#include "fast_common.cuh"

template <int d> struct FwdCfg {
  static constexpr int THREADS = 128;                  // 4 warps
  static constexpr int Br = 64;                        // query rows per block (16 per warp)
  // Keys per tile: 64, except d = 128 on sm_75 where the register-staged
  // prefetch of 64 rows would not fit in registers.
  static constexpr int Bc = (d <= 64 || MT_SM >= 80) ? 64 : 32;
  static constexpr int STAGES = MT_SM >= 80 ? 2 : 1;  // K/V buffers in shared memory
  static constexpr int LD = d + 8;                     // padded row stride (halves)
  // Q is read into registers once, in the prologue. With two stages it borrows the second
  // K buffer, which is free until tile 1 is fetched: 85 -> 68 KB at d = 128, so two
  // blocks fit in an A100's 164 KB. One stage (sm_75): a buffer of its own.
  static constexpr int Q_ROWS = STAGES == 2 ? 0 : Br;
  static constexpr int SMEM = (Q_ROWS + 2 * STAGES * Bc) * LD * 2;  // bytes
  static_assert(STAGES == 1 || Br <= Bc, "Q must fit in one K buffer");
};

template <int d, int DT>
__global__ void __launch_bounds__(128)
flash_fwd_fast(const mt_u16* __restrict__ Q, const mt_u16* __restrict__ K,
               const mt_u16* __restrict__ V, mt_u16* __restrict__ O, float* __restrict__ L,
               int H, int H_kv, int N, int N_k, float scale, int is_causal) {
  typedef FwdCfg<d> C;
  constexpr int Br = C::Br, Bc = C::Bc, LD = C::LD, STAGES = C::STAGES, T = C::THREADS;
  extern __shared__ mt_u4 mt_smem[];      // dynamic: FwdCfg<d>::SMEM bytes, 16-byte aligned
  mt_u16* sK = (mt_u16*)mt_smem;          // [STAGES][Bc][LD]
  mt_u16* sV = sK + STAGES * Bc * LD;     // [STAGES][Bc][LD]
  mt_u16* sQ = STAGES == 2 ? sK + Bc * LD : sV + Bc * LD;   // [Br][LD]: K buffer 1, or its own

  const int q0 = blockIdx.x * Br;                      // first query row of this block
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int hk = h / (H / H_kv);                       // grouped-query: shared kv head
  const mt_u16* Qg = Q + (long long)bh * N * d;
  const mt_u16* Kg = K + (long long)(b * H_kv + hk) * N_k * d;
  const mt_u16* Vg = V + (long long)(b * H_kv + hk) * N_k * d;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;               // fragment coordinates
  const int mi = lane >> 3, mr = lane & 7;             // ldmatrix: matrix index, row in it
  const int off = N_k - N;                             // causal diagonal offset
  // Causal tile skipping: the last key any row of this block sees is q0 + Br - 1 + off.
  const int kv_end = is_causal ? min(N_k, q0 + Br + off) : N_k;
  const int n_kb = (kv_end + Bc - 1) / Bc;

  // ---- prologue: Q and the first K/V tile into shared memory, Q on into registers ----
  mt_u32 q_frag[d / 16][4];                            // Q as A fragments, loaded once
#if MT_SM >= 80
  load_tile_async<Br, d, LD, T>(sQ, Qg, q0, N);
  cp_async_commit();                                   // group 1: Q
  load_tile_async<Bc, d, LD, T>(sK, Kg, 0, N_k);
  load_tile_async<Bc, d, LD, T>(sV, Vg, 0, N_k);
  cp_async_commit();                                   // group 2: K/V tile 0, still in flight below
  cp_async_wait<1>();                                  // Q has landed
#else
  load_tile_async<Br, d, LD, T>(sQ, Qg, q0, N);    // plain copies below sm_80
  load_tile_async<Bc, d, LD, T>(sK, Kg, 0, N_k);
  load_tile_async<Bc, d, LD, T>(sV, Vg, 0, N_k);
#endif
  __syncthreads();
  for (int kc = 0; kc < d / 16; ++kc)
    ldmatrix_x4(q_frag[kc], sQ + (warp * 16 + mr + (mi & 1) * 8) * LD + kc * 16 + (mi >> 1) * 8);
#if MT_SM >= 80
  __syncthreads();                                     // Q read by every warp: sQ is K buffer 1 again
#endif

  const float sl2 = scale * 1.4426950408889634f;      // scores in log2 units: exp2 is cheaper
  float o_acc[d / 8][4];                               // this warp's 16 x d output, d/8 C tiles
  for (int i = 0; i < d / 8; ++i) o_acc[i][0] = o_acc[i][1] = o_acc[i][2] = o_acc[i][3] = 0.f;
  float m_r[2] = {mt_neg_inf(), mt_neg_inf()};         // running max of rows g and g + 8
  float l_r[2] = {0.f, 0.f};                           // running sum (this lane's columns only)
  const int row_i[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

  for (int kb = 0; kb < n_kb; ++kb) {
    const int stage = STAGES == 2 ? (kb & 1) : 0;
    const mt_u16* sKs = sK + stage * Bc * LD;
    const mt_u16* sVs = sV + stage * Bc * LD;
#if MT_SM >= 80
    // Start tile kb + 1 into the other buffer, then wait for tile kb only.
    if (kb + 1 < n_kb) {
      const int nxt = (kb + 1) & 1;
      load_tile_async<Bc, d, LD, T>(sK + nxt * Bc * LD, Kg, (kb + 1) * Bc, N_k);
      load_tile_async<Bc, d, LD, T>(sV + nxt * Bc * LD, Vg, (kb + 1) * Bc, N_k);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();                                   // everyone's copies have landed
#else
    // Turing: fetch tile kb + 1 into registers now; it is stored after the multiply.
    RegTile<Bc, d, T> k_next, v_next;
    if (kb + 1 < n_kb) {
      load_tile_regs<Bc, d, T>(k_next, Kg, (kb + 1) * Bc, N_k);
      load_tile_regs<Bc, d, T>(v_next, Vg, (kb + 1) * Bc, N_k);
    }
#endif
    // ---- S = Q K^T for this warp's 16 rows x Bc keys ----
    float s[Bc / 8][4];
    for (int i = 0; i < Bc / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
    for (int kc = 0; kc < d / 16; ++kc) {
      for (int nt = 0; nt < Bc / 8; nt += 2) {
        // Rows of K are columns of K^T: plain ldmatrix gives B fragments for two key tiles.
        mt_u32 kf[4];
        ldmatrix_x4(kf, sKs + (nt * 8 + mr + (mi >> 1) * 8) * LD + kc * 16 + (mi & 1) * 8);
        mma_k16<DT>(s[nt], q_frag[kc], kf);
        mma_k16<DT>(s[nt + 1], q_frag[kc], kf + 2);
      }
    }

    // ---- mask (past N_k, above the diagonal), online softmax ----
    const int k0 = kb * Bc;
    const bool masked = k0 + Bc > N_k || (is_causal && k0 + Bc - 1 > q0 + off);
    for (int nt = 0; nt < Bc / 8; ++nt)
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + nt * 8 + 2 * t + (e & 1), i = row_i[e >> 1];
        s[nt][e] = (masked && (j >= N_k || (is_causal && j > i + off))) ? mt_neg_inf() : s[nt][e] * sl2;
      }
    for (int r = 0; r < 2; ++r) {
      float mx = m_r[r];
      for (int nt = 0; nt < Bc / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = quad_max(mx);                               // the 4 lanes of a quad share a row
      const float m_use = mx == mt_neg_inf() ? 0.f : mx;   // a row with nothing visible yet
      const float alpha = exp2f(m_r[r] - m_use);       // rescales what was accumulated so far
      m_r[r] = mx;
      float rs = 0.f;
      for (int nt = 0; nt < Bc / 8; ++nt) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] - m_use);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_use);
        rs += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l_r[r] = l_r[r] * alpha + rs;
      for (int dt = 0; dt < d / 8; ++dt) { o_acc[dt][2 * r] *= alpha; o_acc[dt][2 * r + 1] *= alpha; }
    }

    // ---- O += P V: P straight from registers ----
    for (int kc = 0; kc < Bc / 16; ++kc) {
      // C tiles 2kc and 2kc+1 (keys 16kc..16kc+15) = one A fragment.
      const mt_u32 pa[4] = {pack2<DT>(s[2 * kc][0], s[2 * kc][1]), pack2<DT>(s[2 * kc][2], s[2 * kc][3]),
                            pack2<DT>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                            pack2<DT>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
      for (int dt = 0; dt < d / 8; dt += 2) {
        // V is (key x d) row-major; as B (k = key, n = d) it needs the transposing ldmatrix.
        mt_u32 vf[4];
        ldmatrix_x4_trans(vf, sVs + (kc * 16 + mr + (mi & 1) * 8) * LD + dt * 8 + (mi >> 1) * 8);
        mma_k16<DT>(o_acc[dt], pa, vf);
        mma_k16<DT>(o_acc[dt + 1], pa, vf + 2);
      }
    }

#if MT_SM >= 80
    __syncthreads();                                   // this buffer is refilled next iteration
#else
    if (kb + 1 < n_kb) {
      __syncthreads();                                 // all warps are done with the tile
      store_tile_regs<Bc, d, LD, T>(sK, k_next);
      store_tile_regs<Bc, d, LD, T>(sV, v_next);
      __syncthreads();
    }
#endif
  }

  // ---- epilogue: O = acc / l, L = m + log l (natural log) ----
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(l_r[r]);
    const int i = row_i[r];
    if (i < N) {
      const float inv = 1.f / l;
      mt_u16* orow = O + ((long long)bh * N + i) * d;
      for (int dt = 0; dt < d / 8; ++dt)
        *(mt_u32*)(orow + dt * 8 + 2 * t) = pack2<DT>(o_acc[dt][2 * r] * inv, o_acc[dt][2 * r + 1] * inv);
      if (t == 0) L[(long long)bh * N + i] = m_r[r] * 0.6931471805599453f + logf(l);
    }
  }
}
