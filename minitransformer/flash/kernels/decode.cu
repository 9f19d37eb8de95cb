// decode.cu -- flash-decoding: a few new queries against a long KV cache.
//
// Chapter 8, "decoding with a KV cache". During generation each step has only
// T = 1..4 new queries per sequence but S = thousands of cached keys. One
// block per (sequence, head) would leave most of the GPU idle and walk the
// whole cache serially, so the cache is cut into n_splits pieces:
//
//   pass 1 (flash_decode_partial): block (split, b, kv head) reads its piece
//     of K and V once for *all* query heads of the group (grouped-query
//     attention: query head h reads kv head h / (H / H_kv)) and keeps, per
//     query row, a partial softmax: max m_s, sum l_s and the unnormalized
//     output o_s = sum_j exp(s_j - m_s) v_j;
//   pass 2 (flash_decode_combine): per query row, M = max_s m_s,
//     l = sum_s l_s exp(m_s - M), O = sum_s o_s exp(m_s - M) / l -- the same
//     rescaling as the online softmax, one level up.
//
// Inside a block, a key is handled by a group of GS = d / 8 lanes, each lane
// owning 8 of the d components (one 16-byte load in fp16); the dot product is
// summed over the group with shuffles. A group takes U keys per step (U loads of
// K and U of V in flight per lane), updates its running max once per step, and
// spends one exponential instruction per query row on them: lane u < U of the
// group computes key u's weight, lane U the rescaling factor, and the group
// shares the U + 1 results with shuffles (instead of every lane computing all of
// them). Each key group keeps its own running softmax; groups are merged with
// shuffles, then warps through shared memory.
//
// Layouts (contiguous): Q (B, H, T, d); K, V caches (B, H_kv, S_max, d) of
// which the first lengths[b] positions are valid (they include the T new
// tokens); O (B, H, T, d) in the input type; L (B, H, T) fp32; partials
// O_part (B*H*T, n_splits, d), m_part/l_part (B*H*T, n_splits) fp32, m in log2
// units. Causal (the default for generation): new query t sits at position
// lengths[b] - T + t and sees keys up to it.
// Types: DT = MT_F32, MT_F16 or MT_BF16; R = query rows per block (the launcher
// builds 1, 4 and 8: DECODE_ROWS in cupy_bridge.py; any R >= 1 compiles).
#include "fast_common.cuh"

// Eight consecutive elements starting at element idx, widened to float.
template <int DT> MT_DEV void load8(const void* base, long long idx, float x[8]) {
  if (DT == MT_F32) {
    const mt_u4* p = (const mt_u4*)((const float*)base + idx);
    const mt_u4 a = p[0], b = p[1];
    x[0] = __uint_as_float(a.x); x[1] = __uint_as_float(a.y);
    x[2] = __uint_as_float(a.z); x[3] = __uint_as_float(a.w);
    x[4] = __uint_as_float(b.x); x[5] = __uint_as_float(b.y);
    x[6] = __uint_as_float(b.z); x[7] = __uint_as_float(b.w);
  } else {
    const mt_u4 a = *(const mt_u4*)((const mt_u16*)base + idx);
    x[0] = lo_f<DT>(a.x); x[1] = hi_f<DT>(a.x); x[2] = lo_f<DT>(a.y); x[3] = hi_f<DT>(a.y);
    x[4] = lo_f<DT>(a.z); x[5] = hi_f<DT>(a.z); x[6] = lo_f<DT>(a.w); x[7] = hi_f<DT>(a.w);
  }
}

// __launch_bounds__(128, 2): two blocks per SM is the goal (tests/test_kernel_resources.py);
// it caps nothing (2 x 128 threads x 255 registers fit), but without a minimum ptxas aimed
// too low on some instantiations (64 registers) and spilled 4-8 bytes.
template <int d, int DT, int R>
__global__ void __launch_bounds__(128, 2)
flash_decode_partial(const void* __restrict__ Q, const void* __restrict__ K,
                     const void* __restrict__ V, const int* __restrict__ lengths,
                     float* __restrict__ O_part, float* __restrict__ m_part, float* __restrict__ l_part,
                     int H, int H_kv, int T, int S_max, int n_splits, int split_len,
                     float scale, int is_causal) {
  constexpr int GS = d / 8;          // lanes per key
  constexpr int KPW = 32 / GS;       // key groups per warp
  // Keys per group per step: 2 (R = 8: 1; two take ptxas to its 255-register cap). 4 would
  // keep twice the loads in flight per lane but need ~105 registers at R = 1: 4 blocks per
  // SM instead of 7. Which is faster awaits a GPU (benchmarks/bench_decode.py).
  constexpr int U = R >= 8 ? 1 : 2;
  constexpr int KG = 4 * KPW * U;    // keys per block per step (4 warps)
  static_assert(U < GS, "a group needs a lane per key and one for the rescaling factor");
  __shared__ float s_m[4][R];                    // per warp: max, sum and output of each row
  __shared__ float s_l[4][R];
  __shared__ float s_acc[4][R][d];

  const int split = blockIdx.x, b = blockIdx.y / H_kv, hk = blockIdx.y % H_kv;
  const int G = H / H_kv;                                  // query heads per kv head
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int grp = warp * KPW + lane / GS, e0 = (lane % GS) * 8;
  const int gl = lane % GS, g0 = lane - gl;               // lane within the group, group's first lane
  const int len = lengths[b];
  const int s0 = split * split_len, s1 = min(len, s0 + split_len);
  const long long kv_base = (long long)(b * H_kv + hk) * S_max;

  // The R query rows of this block: rho-th row of the group (head-major, then t).
  float q[R][8], acc[R][8], m[R], l[R];
  int qpos[R];
  bool row_ok[R];
  const float sl2 = scale * 1.4426950408889634f;
  for (int r = 0; r < R; ++r) {
    const int rho = blockIdx.z * R + r;
    row_ok[r] = rho < G * T;
    const int h = hk * G + rho / T, t = rho % T;
    qpos[r] = len - T + t;
    if (row_ok[r]) load8<DT>(Q, ((long long)(b * H + h) * T + t) * d + e0, q[r]);
    for (int e = 0; e < 8; ++e) { q[r][e] = row_ok[r] ? q[r][e] * sl2 : 0.f; acc[r][e] = 0.f; }
    m[r] = mt_neg_inf();
    l[r] = 0.f;
  }

  // ---- pass over this split's keys, KG at a time (same trip count for every lane) ----
  for (int base = s0; base < s1; base += KG) {
    int j[U];
    bool k_ok[U];
    float kx[U][8], vx[U][8];
    for (int u = 0; u < U; ++u) {                          // all 2U loads issued before any use
      j[u] = base + u * 4 * KPW + grp;                     // the block's groups read consecutive keys
      k_ok[u] = j[u] < s1;
      if (k_ok[u]) {
        load8<DT>(K, (kv_base + j[u]) * d + e0, kx[u]);
        load8<DT>(V, (kv_base + j[u]) * d + e0, vx[u]);
      } else {
        for (int e = 0; e < 8; ++e) kx[u][e] = vx[u][e] = 0.f;
      }
    }
    for (int r = 0; r < R; ++r) {
      float sc[U];                                         // scores (log2 units), -inf if not visible
      float mx = m[r];
      for (int u = 0; u < U; ++u) {
        float dot = 0.f;
        for (int e = 0; e < 8; ++e) dot += q[r][e] * kx[u][e];
        for (int o = GS / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const bool visible = k_ok[u] && row_ok[r] && (!is_causal || j[u] <= qpos[r]);
        sc[u] = visible ? dot : mt_neg_inf();
        mx = fmaxf(mx, sc[u]);
      }
      // Online softmax over U keys at once: one exponential per lane, shared by the group.
      const float m_use = mx == mt_neg_inf() ? 0.f : mx;   // nothing visible yet: no rescaling
      float x = gl == U ? m[r] : mt_neg_inf();             // lane U: the factor for the old max
      for (int u = 0; u < U; ++u) x = gl == u ? sc[u] : x; // lane u: key u's weight
      const float ex = exp2f(x - m_use);
      const float alpha = __shfl_sync(0xffffffffu, ex, g0 + U);
      float psum = 0.f;
      for (int e = 0; e < 8; ++e) acc[r][e] *= alpha;
      for (int u = 0; u < U; ++u) {
        const float p = __shfl_sync(0xffffffffu, ex, g0 + u);
        psum += p;
        for (int e = 0; e < 8; ++e) acc[r][e] += p * vx[u][e];
      }
      l[r] = l[r] * alpha + psum;
      m[r] = mx;
    }
  }

  // ---- merge the key groups of a warp (lanes GS, 2 GS, ... apart) ----
  for (int o = GS; o < 32; o <<= 1) {
    for (int r = 0; r < R; ++r) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[r], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[r], o);
      float ao[8];
      for (int e = 0; e < 8; ++e) ao[e] = __shfl_xor_sync(0xffffffffu, acc[r][e], o);
      const float mn = fmaxf(m[r], mo);
      if (mn != mt_neg_inf()) {                            // both empty: nothing to do
        const float a = exp2f(m[r] - mn), c = exp2f(mo - mn);
        l[r] = l[r] * a + lo * c;
        for (int e = 0; e < 8; ++e) acc[r][e] = acc[r][e] * a + ao[e] * c;
        m[r] = mn;
      }
    }
  }
  if (lane < GS) {
    for (int r = 0; r < R; ++r) {
      for (int e = 0; e < 8; ++e) s_acc[warp][r][e0 + e] = acc[r][e];
      if (lane == 0) { s_m[warp][r] = m[r]; s_l[warp][r] = l[r]; }
    }
  }
  __syncthreads();

  // ---- merge the 4 warps, write this split's partials ----
  for (int idx = threadIdx.x; idx < R * d; idx += 128) {
    const int r = idx / d, x = idx % d, rho = blockIdx.z * R + r;
    if (rho >= G * T) continue;
    float M = mt_neg_inf();
    for (int w = 0; w < 4; ++w) M = fmaxf(M, s_m[w][r]);
    float o = 0.f, lsum = 0.f;
    if (M != mt_neg_inf()) {
      for (int w = 0; w < 4; ++w) {
        const float wgt = exp2f(s_m[w][r] - M);
        o += wgt * s_acc[w][r][x];
        lsum += wgt * s_l[w][r];
      }
    }
    const int h = hk * G + rho / T, t = rho % T;
    const long long row = (long long)(b * H + h) * T + t;
    O_part[(row * n_splits + split) * d + x] = o;
    if (x == 0) { m_part[row * n_splits + split] = M; l_part[row * n_splits + split] = lsum; }
  }
}

// Pass 2: one block of d threads per query row merges the n_splits partials.
template <int d, int DT>
__global__ void __launch_bounds__(128)
flash_decode_combine(const float* __restrict__ O_part, const float* __restrict__ m_part,
                     const float* __restrict__ l_part, void* __restrict__ O, float* __restrict__ L,
                     int n_splits) {
  const long long row = blockIdx.x;
  const int x = threadIdx.x;
  float M = mt_neg_inf();
  for (int s = 0; s < n_splits; ++s) M = fmaxf(M, m_part[row * n_splits + s]);
  float lsum = 0.f, o = 0.f;
  for (int s = 0; s < n_splits; ++s) {
    const float ms = m_part[row * n_splits + s];
    if (ms == mt_neg_inf()) continue;                      // a split past the valid length
    const float wgt = exp2f(ms - M);
    lsum += wgt * l_part[row * n_splits + s];
    o += wgt * O_part[(row * n_splits + s) * d + x];
  }
  o /= lsum;
  if (DT == MT_F32) ((float*)O)[row * d + x] = o;
  else ((mt_u16*)O)[row * d + x] = from_float<DT>(o);
  if (x == 0) L[row] = (M + log2f(lsum)) * 0.6931471805599453f;
}
