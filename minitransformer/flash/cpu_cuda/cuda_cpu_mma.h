// cuda_cpu_mma.h -- what the fast (tensor-core) kernels need on the CPU beyond cuda_cpu.h.
//
// Used after cuda_cpu.h (fast_runner.py puts this text in front of the kernel
// source, which g++ compiles with `-include cuda_cpu.h`), with
// MT_CPU_EMULATION defined. fast_common.cuh then routes its PTX wrappers here:
//
//   * mma.sync and ldmatrix need no help: under MT_CPU_EMULATION their bodies
//     in fast_common.cuh are written with __shfl_sync, which cuda_cpu.h turns
//     into meeting points of the 32 lanes -- each lane fetches the fragment
//     elements it needs from the lanes that hold them, exactly as laid out in
//     the PTX ISA;
//   * fp16 <-> float: the compiler's _Float16 (round to nearest even);
//   * cp.async: each thread keeps a queue of its pending 16-byte copies. A copy
//     fills its destination with NaN when it is issued and lands only when the
//     thread waits for its group (cp.async.wait_group N: all but the N most
//     recent committed groups). A kernel that reads a tile before waiting, or
//     before the __syncthreads that makes other threads' copies visible, reads
//     NaN; one that refills a buffer others still read poisons their reads.
#pragma once

namespace mtcpu_mma {

inline float f16_to_float(unsigned short h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
inline unsigned short float_to_f16(float f) {
    const _Float16 x = (_Float16)f;
    unsigned short h;
    memcpy(&h, &x, 2);
    return h;
}

constexpr int kMaxPending = 256;               // copies in flight per thread

struct PendingCopy {
    void* dst;
    const void* src;
    bool valid;                                // false: 16 zero bytes (cp.async with src-size 0)
    int group;                                 // -1 until committed
};

struct CopyQueue {
    uint3 block;                               // the block the queue belongs to
    unsigned long long launch;
    int n, committed;
    PendingCopy copy[kMaxPending];
};

inline CopyQueue* queues() { static CopyQueue q[::mtcpu::kMaxThreads]; return q; }

// The current thread's queue, emptied when the thread starts a new block or launch.
inline CopyQueue& my_queue() {
    ::mtcpu::Runtime& R = ::mtcpu::rt();
    CopyQueue& q = queues()[R.current];
    const uint3 b = ::mtcpu::g_blockIdx;
    const unsigned long long launch = (unsigned long long)(uintptr_t)R.thunk_arg;
    if (q.block.x != b.x || q.block.y != b.y || q.block.z != b.z || q.launch != launch || q.n < 0) {
        q.block = b;
        q.launch = launch;
        q.n = 0;
        q.committed = 0;
    }
    return q;
}

inline void land(const PendingCopy& c) {
    if (c.valid) memcpy(c.dst, c.src, 16);
    else memset(c.dst, 0, 16);
}

}  // namespace mtcpu_mma

inline float mt_emu_f16_to_float(unsigned short h) { return mtcpu_mma::f16_to_float(h); }
inline unsigned short mt_emu_float_to_f16(float f) { return mtcpu_mma::float_to_f16(f); }

inline void mt_emu_cp_async_16(void* smem, const void* gmem, bool valid) {
    mtcpu_mma::CopyQueue& q = mtcpu_mma::my_queue();
    if (q.n == mtcpu_mma::kMaxPending)
        ::mtcpu::fail("more than %d cp.async copies in flight in one thread (missing cp.async.wait_group?)",
                      mtcpu_mma::kMaxPending);
    q.copy[q.n++] = {smem, gmem, valid, -1};
    memset(smem, 0xff, 16);                    // not there yet: NaN until the wait
}

inline void mt_emu_cp_async_commit() {
    mtcpu_mma::CopyQueue& q = mtcpu_mma::my_queue();
    ++q.committed;
    for (int i = 0; i < q.n; ++i)
        if (q.copy[i].group < 0) q.copy[i].group = q.committed;
}

inline void mt_emu_cp_async_wait(int n_in_flight) {
    mtcpu_mma::CopyQueue& q = mtcpu_mma::my_queue();
    const int done_upto = q.committed - n_in_flight;  // groups 1 .. done_upto must have landed
    int kept = 0;
    for (int i = 0; i < q.n; ++i) {
        const mtcpu_mma::PendingCopy& c = q.copy[i];
        if (c.group >= 1 && c.group <= done_upto) mtcpu_mma::land(c);
        else q.copy[kept++] = c;
    }
    q.n = kept;
}
