// The flash-attention backward pass: the fp32 teaching kernels of chapter 8.
//
// Kernels (the launcher in minitransformer/flash depends on these exact signatures):
//
//   extern "C" __global__ void flash_bwd_preprocess(
//       const float* __restrict__ O,    // (B, H, N, d)  forward output
//       const float* __restrict__ dO,   // (B, H, N, d)  gradient of the loss w.r.t. O
//       float* __restrict__ Dvec,       // (B, H, N)     output: D = rowsum(dO * O)
//       int rows, int d)                // rows = B * H * N
//   grid = ceil(rows / (blockDim.x / 32)), block = any multiple of 32 (128: 4 rows per block),
//   no shared memory. One warp per row.
//
//   extern "C" __global__ void flash_bwd_teaching(
//       const float* __restrict__ Q,    // (B, H,    N,   d)
//       const float* __restrict__ K,    // (B, H_kv, N_k, d)
//       const float* __restrict__ V,    // (B, H_kv, N_k, d)
//       const float* __restrict__ dO,   // (B, H,    N,   d)
//       const float* __restrict__ L,    // (B, H,    N)   log-sum-exp saved by flash_fwd_teaching
//       const float* __restrict__ Dvec, // (B, H,    N)   from flash_bwd_preprocess
//       float* __restrict__ dQ,         // (B, H,    N,   d)  MUST BE ZEROED: accumulated with atomicAdd
//       float* __restrict__ dK,         // (B, H_kv, N_k, d)  output (summed over the query-head group)
//       float* __restrict__ dV,         // (B, H_kv, N_k, d)  output
//       int H, int H_kv, int N, int N_k, int d, int Br, int Bc, float scale, int is_causal)
//   grid  = (Tc, B * H_kv) with Tc = ceil(N_k / Bc): one block per (key tile j, batch, key head)
//   block = any multiple of 32 threads (tiles.BACKWARD_THREADS = 256)
//   dynamic shared memory = tiles.backward_smem_bytes(Br, Bc, d)
//       = 4 * (2*Bc*(d+1) + 2*Bc*d + Br*(d+1) + Br*d + 2*Br*Bc + 2*Br) bytes
//
// The math, with S = scale * Q K^T, P = softmax(S) = exp(S - L), dO given:
//     dV = P^T dO
//     dP = dO V^T
//     dS = P * (dP - D),   D = rowsum(dO * O)   (= rowsum(P * dP), the softmax's Jacobian)
//     dQ = scale * dS K
//     dK = scale * dS^T Q
// P is never stored: it is recomputed tile by tile from Q, K and the saved L.
//
// Why this split (FlashAttention-2's): a block owns ONE key tile K_j, V_j and loops over
// all the query tiles Q_i that see it (and over the query heads sharing the key head), so
// dK_j and dV_j are sums that stay in the block's shared memory and are written once, with
// no conflict between blocks. dQ_i, on the other hand, receives a contribution from every
// key tile, i.e. from many blocks running at the same time: those are added to global
// memory with atomicAdd (order-dependent in the last bits, like PyTorch's own kernels).
// The alternative is a second kernel looping the other way round (query tiles outer) that
// recomputes P once more to form dQ without atomics: deterministic, but ~1.4x the work.
//
// D is computed first by a separate, tiny kernel (it needs the whole row of dO and O,
// which a key-tile block never sees in one piece).

#define NEG_INF __int_as_float(0xff800000)   // -infinity

// ------------------------------------------------------------------------------------
// D = rowsum(dO * O): one warp per row; the lanes stride over the d columns
// (coalesced), then a shuffle-down tree adds the 32 partial sums into lane 0.
// ------------------------------------------------------------------------------------
extern "C" __global__ void flash_bwd_preprocess(
    const float* __restrict__ O, const float* __restrict__ dO, float* __restrict__ Dvec,
    int rows, int d)
{
    const int warps_per_block = blockDim.x / 32;
    const int row  = blockIdx.x * warps_per_block + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;                     // whole warps leave together

    float acc = 0.0f;
    for (int x = lane; x < d; x += 32)
        acc += dO[(size_t)row * d + x] * O[(size_t)row * d + x];
    for (int offset = 16; offset > 0; offset /= 2)          // 16, 8, 4, 2, 1
        acc += __shfl_down_sync(0xffffffff, acc, offset);   // lane 0 ends with the total
    if (lane == 0) Dvec[row] = acc;
}

// ------------------------------------------------------------------------------------
// dQ, dK, dV for one key tile.
// ------------------------------------------------------------------------------------
extern "C" __global__ void flash_bwd_teaching(
    const float* __restrict__ Q, const float* __restrict__ K, const float* __restrict__ V,
    const float* __restrict__ dO, const float* __restrict__ L, const float* __restrict__ Dvec,
    float* __restrict__ dQ, float* __restrict__ dK, float* __restrict__ dV,
    int H, int H_kv, int N, int N_k, int d, int Br, int Bc, float scale, int is_causal)
{
    // ---- Who am I? ---------------------------------------------------------------
    const int j    = blockIdx.x;                 // key tile index, 0 .. Tc-1
    const int bkv  = blockIdx.y;                 // batch * H_kv + key head
    const int b    = bkv / H_kv;
    const int h_kv = bkv % H_kv;
    const int G    = H / H_kv;                   // query heads per key head (1 without GQA)
    const int tid  = threadIdx.x;
    const int nthreads = blockDim.x;
    const int col0 = j * Bc;                     // first key of the tile

    const float* Kh = K + (size_t)bkv * N_k * d;
    const float* Vh = V + (size_t)bkv * N_k * d;

    // ---- Shared memory, carved into the tiles (see tiles.backward_smem_bytes) --------
    // Rows read "one row per thread" (Ks, Vs by the lanes of a warp; Qs by threads of
    // different rows) are padded to d+1 floats so that the lanes hit different banks.
    extern __shared__ float smem[];
    float* Ks  = smem;                           // [Bc][d+1]  K_j
    float* Vs  = Ks  + Bc * (d + 1);             // [Bc][d+1]  V_j
    float* dKs = Vs  + Bc * (d + 1);             // [Bc][d]    dK_j accumulator
    float* dVs = dKs + Bc * d;                   // [Bc][d]    dV_j accumulator
    float* Qs  = dVs + Bc * d;                   // [Br][d+1]  Q_i
    float* dOs = Qs  + Br * (d + 1);             // [Br][d]    dO_i
    float* Ps  = dOs + Br * d;                   // [Br][Bc]   P  = exp(S - L)
    float* dSs = Ps  + Br * Bc;                  // [Br][Bc]   dS = P * (dP - D)
    float* Ls  = dSs + Br * Bc;                  // [Br]       L_i
    float* Ds  = Ls  + Br;                       // [Br]       D_i

    // ---- Load K_j, V_j (zeros past the end); zero the accumulators ------------------
    // Thread tid owns the elements e = tid, tid + nthreads, ... of the Bc x d tiles:
    // the same elements of dKs and dVs in step (3) below, so the accumulators are private
    // to their thread and need no barrier of their own.
    for (int e = tid; e < Bc * d; e += nthreads) {
        const int c = e / d, x = e % d;
        const bool ok = col0 + c < N_k;
        Ks[c * (d + 1) + x] = ok ? Kh[(size_t)(col0 + c) * d + x] : 0.0f;
        Vs[c * (d + 1) + x] = ok ? Vh[(size_t)(col0 + c) * d + x] : 0.0f;
        dKs[e] = 0.0f;
        dVs[e] = 0.0f;
    }
    // (The first barrier of the loop below publishes K_j and V_j.)

    const int Tr = (N + Br - 1) / Br;
    // Causal: query tile i sees key col0 only if its last row (i+1)*Br - 1 >= col0.
    const int i_start = is_causal ? col0 / Br : 0;

    for (int g = 0; g < G; ++g) {                // the query heads that share this key head
        const int bh = b * H + h_kv * G + g;
        const float* Qh  = Q    + (size_t)bh * N * d;
        const float* dOh = dO   + (size_t)bh * N * d;
        const float* Lh  = L    + (size_t)bh * N;
        const float* Dh  = Dvec + (size_t)bh * N;
        float*       dQh = dQ   + (size_t)bh * N * d;

        for (int i = i_start; i < Tr; ++i) {
            const int row0 = i * Br;

            // (1) Load Q_i, dO_i, L_i, D_i (zeros past the end of the sequence).
            for (int e = tid; e < Br * d; e += nthreads) {
                const int rr = e / d, x = e % d;
                const bool ok = row0 + rr < N;
                Qs[rr * (d + 1) + x] = ok ? Qh[(size_t)(row0 + rr) * d + x] : 0.0f;
                dOs[rr * d + x]      = ok ? dOh[(size_t)(row0 + rr) * d + x] : 0.0f;
            }
            for (int rr = tid; rr < Br; rr += nthreads) {
                const bool ok = row0 + rr < N;
                Ls[rr] = ok ? Lh[row0 + rr] : 0.0f;
                Ds[rr] = ok ? Dh[row0 + rr] : 0.0f;
            }
            // Barrier 1: step (2) reads rows loaded by other threads.
            __syncthreads();

            // (2) P and dS for the Br x Bc (query, key) pairs, one pair per thread at a time.
            //     Consecutive threads take consecutive keys c of the same query row.
            for (int e = tid; e < Br * Bc; e += nthreads) {
                const int rr = e / Bc, c = e % Bc;
                const int row = row0 + rr, col = col0 + c;
                float p = 0.0f, ds = 0.0f;       // masked pairs: P = 0, so dS = 0
                if (row < N && col < N_k && (!is_causal || col <= row)) {
                    float s = 0.0f, dp = 0.0f;
                    for (int x = 0; x < d; ++x) {
                        s  += Qs[rr * (d + 1) + x] * Ks[c * (d + 1) + x];
                        dp += dOs[rr * d + x]      * Vs[c * (d + 1) + x];
                    }
                    p  = expf(s * scale - Ls[rr]);           // the softmax, recomputed from L
                    ds = p * (dp - Ds[rr]);
                }
                Ps[e]  = p;
                dSs[e] = ds;
            }
            // Barrier 2: steps (3) and (4) read whole columns / rows of P and dS.
            __syncthreads();

            // (3) dV_j += P^T dO_i and dK_j += scale * dS^T Q_i: thread owns elements (c, x).
            for (int e = tid; e < Bc * d; e += nthreads) {
                const int c = e / d, x = e % d;
                float dv = 0.0f, dk = 0.0f;
                for (int rr = 0; rr < Br; ++rr) {
                    dv += Ps[rr * Bc + c]  * dOs[rr * d + x];
                    dk += dSs[rr * Bc + c] * Qs[rr * (d + 1) + x];
                }
                dVs[e] += dv;
                dKs[e] += scale * dk;
            }

            // (4) dQ_i += scale * dS K_j: thread owns elements (rr, x); other blocks (other
            //     key tiles) add to the same dQ rows at the same time, hence atomicAdd.
            for (int e = tid; e < Br * d; e += nthreads) {
                const int rr = e / d, x = e % d;
                if (row0 + rr < N) {
                    float acc = 0.0f;
                    for (int c = 0; c < Bc; ++c)
                        acc += dSs[rr * Bc + c] * Ks[c * (d + 1) + x];
                    atomicAdd(&dQh[(size_t)(row0 + rr) * d + x], scale * acc);
                }
            }
            // Barrier 3: the next query tile overwrites Qs, dOs, Ps, dSs, Ls, Ds.
            __syncthreads();
        }
    }

    // ---- Write dK_j, dV_j: each thread its own accumulator elements -----------------
    for (int e = tid; e < Bc * d; e += nthreads) {
        const int c = e / d, x = e % d;
        if (col0 + c < N_k) {
            dK[((size_t)bkv * N_k + col0 + c) * d + x] = dKs[e];
            dV[((size_t)bkv * N_k + col0 + c) * d + x] = dVs[e];
        }
    }
}
