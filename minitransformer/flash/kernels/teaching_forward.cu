// The flash-attention forward pass: the fp32 teaching kernel of chapter 8.
//
// Kernel (the launcher in minitransformer/flash depends on this exact signature):
//
//   extern "C" __global__ void flash_fwd_teaching(
//       const float* __restrict__ Q,   // (B, H,    N,   d)  contiguous
//       const float* __restrict__ K,   // (B, H_kv, N_k, d)  contiguous
//       const float* __restrict__ V,   // (B, H_kv, N_k, d)  contiguous
//       float* __restrict__ O,         // (B, H,    N,   d)  output
//       float* __restrict__ L,         // (B, H,    N)       output: log-sum-exp of each row
//       int H, int H_kv, int N, int N_k, int d,   // heads, key heads (H % H_kv == 0), lengths, head dim <= 128
//       int Br, int Bc,                // query rows / key rows per tile (from tiles.choose_tiles)
//       float scale,                   // usually 1 / sqrt(d)
//       int is_causal)                 // 1: query r sees keys 0..r (needs N_k == N)
//
//   grid  = (Tr, B * H)  with Tr = ceil(N / Br): one block per (query tile i, batch, head)
//   block = 32 * Br threads: ONE WARP PER QUERY ROW of the tile
//   dynamic shared memory = 4 * (Br*d + Bc*(d+1) + Bc*d + Br*Bc) bytes
//                         = tiles.forward_smem_bytes(Br, Bc, d)
//
// The algorithm (FlashAttention-2 order, the loop nest of tiled_numpy.flash_forward_numpy):
// the block owns the Br query rows Q_i. It walks over the key tiles j = 0, 1, ...;
// for each, all threads copy K_j and V_j into shared memory, then every warp
// updates its row's running max m, running sum l and un-normalised output o:
//     m_new = max(m, max_c s_c)            s_c = scale * q . k_c
//     p_c   = exp(s_c - m_new)
//     l     = exp(m - m_new) * l + sum_c p_c
//     o     = exp(m - m_new) * o + sum_c p_c v_c
// and at the end writes O = o / l and L = m + log(l).
//
// Who does what inside a warp (its row r, 32 lanes):
//   * scores: the lanes split the Bc keys of the tile, lane computes s_c for
//     c = lane, lane + 32, ... (a full d-long dot product each);
//   * max: a butterfly of __shfl_xor_sync gives every lane the row max;
//   * output: the lanes split the d output columns, lane owns columns
//     x = lane, lane + 32, lane + 64, lane + 96 (hence d <= 128), in registers.
// Between the two the probabilities p_c travel through shared memory (the row
// Ps[r][0..Bc)), written by the lane that computed them and read by all 32
// lanes: that is what the __syncwarp() is for.
//
// Everything is plain CUDA C that NVRTC compiles (no #include; NVRTC has no
// standard library and rejects INFINITY, so -inf is spelled as its bit pattern),
// and that the CPU emulation in ../cpu_cuda executes unchanged.

#define NEG_INF __int_as_float(0xff800000)   // -infinity
#define MAX_COLS_PER_LANE 4                  // 4 x 32 lanes = head dims up to 128

extern "C" __global__ void flash_fwd_teaching(
    const float* __restrict__ Q, const float* __restrict__ K, const float* __restrict__ V,
    float* __restrict__ O, float* __restrict__ L,
    int H, int H_kv, int N, int N_k, int d, int Br, int Bc, float scale, int is_causal)
{
    // ---- Who am I? ---------------------------------------------------------------
    const int i    = blockIdx.x;                 // query tile index, 0 .. Tr-1
    const int bh   = blockIdx.y;                 // batch * H + head
    const int b    = bh / H;
    const int h    = bh % H;
    const int h_kv = h / (H / H_kv);             // grouped-query: the key head of this query head
    const int tid  = threadIdx.x;
    const int nthreads = blockDim.x;             // 32 * Br
    const int warp = tid / 32;                   // the tile row this warp owns, 0 .. Br-1
    const int lane = tid % 32;

    const int row0 = i * Br;                     // first query row of the tile
    const int r    = row0 + warp;                // this warp's query row
    const bool row_valid = r < N;                // the last tile may be short: extra warps only help load

    const float* Qh = Q + (size_t)bh * N * d;                          // this head's (N, d) block
    const float* Kh = K + ((size_t)b * H_kv + h_kv) * N_k * d;         // (N_k, d)
    const float* Vh = V + ((size_t)b * H_kv + h_kv) * N_k * d;

    // ---- Shared memory: one buffer, carved into four tiles -------------------------
    // Ks rows are padded to d+1 floats: the 32 lanes of a warp read 32 different key
    // rows at the same column x, and with a stride of d+1 those land in 32 different
    // banks (with a stride of d, a multiple of 32, they would all hit one bank).
    extern __shared__ float smem[];
    float* Qs = smem;                            // [Br][d]     query tile Q_i
    float* Ks = Qs + Br * d;                     // [Bc][d+1]   key tile K_j (padded)
    float* Vs = Ks + Bc * (d + 1);               // [Bc][d]     value tile V_j
    float* Ps = Vs + Bc * d;                     // [Br][Bc]    scores, then probabilities
    float* Prow = Ps + warp * Bc;                // this warp's row of Ps

    // ---- Load Q_i once: all threads, consecutive threads read consecutive floats ----
    // (coalesced global reads). Rows past the end of the sequence are filled with
    // zeros so that the tile holds no garbage.
    for (int e = tid; e < Br * d; e += nthreads) {
        const int rr = e / d, x = e % d;
        Qs[rr * d + x] = (row0 + rr < N) ? Qh[(size_t)(row0 + rr) * d + x] : 0.0f;
    }
    // No barrier here: the barrier after the first K/V load (below) also makes Q_i visible.

    // ---- The row's running statistics, in registers (identical in all 32 lanes) ----
    float m = NEG_INF;                           // running max of the row's scores
    float l = 0.0f;                              // running sum of exp(s - m)
    float o[MAX_COLS_PER_LANE];                  // this lane's columns of the un-normalised output
    for (int t = 0; t < MAX_COLS_PER_LANE; ++t) o[t] = 0.0f;

    // ---- Loop over key tiles ----------------------------------------------------------
    const int Tc = (N_k + Bc - 1) / Bc;
    const int last_row = min(row0 + Br, N) - 1;
    // Causal tile skipping: tile j holds keys j*Bc ..; it matters only if j*Bc <= last_row.
    const int Tc_i = is_causal ? min(Tc, last_row / Bc + 1) : Tc;

    for (int j = 0; j < Tc_i; ++j) {
        const int col0 = j * Bc;                 // first key of the tile

        // (1) All threads copy K_j and V_j into shared memory (zeros past the end).
        for (int e = tid; e < Bc * d; e += nthreads) {
            const int c = e / d, x = e % d;
            const bool ok = col0 + c < N_k;
            Ks[c * (d + 1) + x] = ok ? Kh[(size_t)(col0 + c) * d + x] : 0.0f;
            Vs[c * d + x]       = ok ? Vh[(size_t)(col0 + c) * d + x] : 0.0f;
        }
        // Barrier 1: every warp reads every key row, loaded by other threads, so
        // nobody may start computing before ALL of K_j, V_j (and, on j = 0, Q_i) is in.
        __syncthreads();

        if (row_valid) {                         // the same for all 32 lanes of the warp
            // (2) Scores: lane computes s_c for its keys c = lane, lane+32, ...
            //     masked keys (past N_k, or after the query when causal) get -inf.
            float tile_max = NEG_INF;
            for (int c = lane; c < Bc; c += 32) {
                const int col = col0 + c;
                float s = NEG_INF;
                if (col < N_k && (!is_causal || col <= r)) {
                    float dot = 0.0f;
                    for (int x = 0; x < d; ++x)
                        dot += Qs[warp * d + x] * Ks[c * (d + 1) + x];
                    s = dot * scale;
                }
                Prow[c] = s;
                tile_max = fmaxf(tile_max, s);
            }
            // (3) Row max across the warp: after 5 butterfly steps every lane holds it.
            for (int offset = 16; offset > 0; offset /= 2)
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffff, tile_max, offset));
            // m_new is finite: tile 0 always holds a visible key (key 0, seen by every row).
            const float m_new = fmaxf(m, tile_max);
            const float alpha = expf(m - m_new);          // rescales the old l and o (0 on tile 0)

            // (4) Probabilities, written over the lane's own scores.
            for (int c = lane; c < Bc; c += 32)
                Prow[c] = expf(Prow[c] - m_new);           // exp(-inf) = 0 for masked keys
            // The next step reads ALL Bc probabilities of the row, written by all 32 lanes.
            __syncwarp();

            // (5) o = alpha * o + P V_j for the lane's columns; every lane also adds up
            //     the row sum of P (the same numbers in the same order: the same l everywhere).
            float row_sum = 0.0f;
            float pv[MAX_COLS_PER_LANE];
            for (int t = 0; t < MAX_COLS_PER_LANE; ++t) pv[t] = 0.0f;
            for (int c = 0; c < Bc; ++c) {
                const float p = Prow[c];                   // broadcast: all lanes read one address
                row_sum += p;
                for (int t = 0; t < MAX_COLS_PER_LANE; ++t) {
                    const int x = lane + 32 * t;
                    if (x < d) pv[t] += p * Vs[c * d + x]; // consecutive lanes, consecutive banks
                }
            }
            l = alpha * l + row_sum;
            for (int t = 0; t < MAX_COLS_PER_LANE; ++t) o[t] = alpha * o[t] + pv[t];
            m = m_new;
        }
        // Barrier 2: the next iteration overwrites Ks and Vs; every warp must be done
        // reading this tile first (and done reading its Ps row before rewriting it).
        __syncthreads();
    }

    // ---- Epilogue: normalise once, save the log-sum-exp for the backward pass ----------
    if (row_valid) {
        float* Oh = O + ((size_t)bh * N + r) * d;
        for (int t = 0; t < MAX_COLS_PER_LANE; ++t) {
            const int x = lane + 32 * t;
            if (x < d) Oh[x] = o[t] / l;
        }
        if (lane == 0) L[(size_t)bh * N + r] = m + logf(l);
    }
}
