// What the CUDA headers and runtime give the engine's kernels, for a host C++ compiler, so
// that CI runs every kernel of kernels.cu and frames.cu on the CPU (emulation/mod.rs).
//
// A launch runs its blocks one after another and the threads of a block as fibers
// (ucontext), round-robin: a thread runs until it waits at a barrier, which are real ones:
// __syncthreads waits for the whole block, a warp shuffle or tensor-core product (mma16816)
// for the 32 lanes of the warp, twice (all have posted their operands; all have read). A
// lane that ends or a block that stops making progress while others wait is reported as a
// divergence. __shared__ variables are function statics, shared by the threads of the
// running block, and dynamic shared memory one static buffer. Half conversions are IEEE
// round-to-nearest (_Float16), which is what the PTX conversions do; float arithmetic is
// plain IEEE with contraction off (the tensor-core product sums its 16 terms in order).

#include <math.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define MASKDCPT_EMULATED

struct Dim3 {
    unsigned x, y, z;
};
static Dim3 blockIdx, threadIdx, blockDim, gridDim;

struct uint4 {
    unsigned x, y, z, w;
};
struct float4 {
    float x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline float rsqrtf(float v) { return 1.0f / sqrtf(v); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
// Blocks run one at a time and threads only switch at barriers, so an add is atomic.
static inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
static inline float to_f(unsigned short h) {
    _Float16 f;
    memcpy(&f, &h, 2);
    return (float)f;
}
static inline unsigned short to_t(float v) {
    _Float16 f = (_Float16)v;
    unsigned short h;
    memcpy(&h, &f, 2);
    return h;
}

struct Fiber {
    ucontext_t context;
    Dim3 thread;
    bool done;
    long syncs;     // __syncthreads passed
    long warp_ops;  // warp-wide operations (shuffles, mma) begun
};
static const size_t STACK_BYTES = 64 * 1024;
static std::vector<Fiber> fibers;
static std::vector<char> stacks;
static ucontext_t scheduler;
static size_t current;
static const std::function<void()>* kernel_body;
// Set when the threads of a warp meet a warp-wide operation out of step, or the block's
// threads wait on each other for ever (divergent barriers: what a GPU would deadlock or read
// garbage on); the launch returns it. `broken` then releases every wait so the block ends.
static int divergence;
static bool broken;
// Set whenever a thread reaches a barrier, gets past one or ends during a round of the
// scheduler; a round without it is a deadlock.
static bool progress;
static float lanes[1024];
static unsigned frag_a[1024][4], frag_b[1024][2];
static long posted[1024], consumed[1024];
static const unsigned short* matrix_rows[1024];
// Dynamic shared memory: the launch's bytes end where a guard band starts; both are filled
// with 0xff (NaN halves and floats) before every block, so a kernel that reads memory it did
// not write, or past its size, computes NaN, and one that writes past it is reported.
static const size_t SHARED_CAPACITY = 256 * 1024, SHARED_GUARD = 4096;
static unsigned char shared_arena[SHARED_CAPACITY + SHARED_GUARD] __attribute__((aligned(16)));
static unsigned char* dynamic_shared;
#define DYNAMIC_SHARED(name) unsigned char* name = dynamic_shared
#define __launch_bounds__(...)

static void fiber_main() {
    (*kernel_body)();
    fibers[current].done = true;
    progress = true;
}

// Yields to the other threads until `ready()` holds.
template <class Ready>
static void wait_until(Ready ready) {
    progress = true;
    while (!broken && !ready()) swapcontext(&fibers[current].context, &scheduler);
    progress = true;
}

static inline unsigned linear_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

// A barrier for the whole block (threads that ended count as arrived).
static void __syncthreads() {
    long mine = ++fibers[current].syncs;
    wait_until([&] {
        for (const Fiber& f : fibers)
            if (!f.done && f.syncs < mine) return false;
        return true;
    });
}

// Marks this thread's current warp operation in `mark` and waits for every lane of its warp
// to mark it too; a lane that ended without marking it is a divergence.
static void warp_meet(long* mark) {
    unsigned t = linear_thread(), first = t & ~31u, last = first + 32;
    if (last > fibers.size()) last = (unsigned)fibers.size();
    long op = fibers[current].warp_ops;
    mark[t] = op;
    wait_until([&] {
        for (unsigned l = first; l < last; l++) {
            if (mark[l] >= op) continue;
            if (!fibers[l].done) return false;
            divergence = 1;  // the lane ended without meeting this operation
        }
        return true;
    });
}

static float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    unsigned t = linear_thread();
    fibers[current].warp_ops++;
    lanes[t] = v;
    warp_meet(posted);
    float r = lanes[(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
    warp_meet(consumed);
    return r;
}

// mma.m16n8k16 (row-major A, column-major B, FP16 in, f32 accumulate) from the fragments
// the lanes hold, laid out as the PTX ISA gives them: A register r of lane 4g + i holds row
// g + 8·(r & 1), columns 2i + 8·(r >> 1) and the next; B register r holds rows (k) 2i + 8r
// and the next of column g; D element e holds row g + 8·(e >> 1), column 2i + (e & 1).
static float fragment_half(unsigned reg, int k) { return to_f((unsigned short)(reg >> (16 * (k & 1)))); }
static void mma16816(float* d, const unsigned* a, const unsigned* b) {
    unsigned t = linear_thread(), warp = t & ~31u, lane = t & 31u;
    fibers[current].warp_ops++;
    memcpy(frag_a[t], a, sizeof frag_a[t]);
    memcpy(frag_b[t], b, sizeof frag_b[t]);
    warp_meet(posted);
    float out[4];
    for (int e = 0; e < 4; e++) {
        int row = lane / 4 + 8 * (e >> 1), col = lane % 4 * 2 + (e & 1);
        float acc = d[e];
        for (int k = 0; k < 16; k++) {
            unsigned ra = frag_a[warp + row % 8 * 4 + k % 8 / 2][(row >= 8) + 2 * (k >= 8)];
            unsigned rb = frag_b[warp + col * 4 + k % 8 / 2][k >= 8];
            acc += fragment_half(ra, k) * fragment_half(rb, k);
        }
        out[e] = acc;
    }
    warp_meet(consumed);
    memcpy(d, out, sizeof out);
}

// ldmatrix.x4 (four 8×8 matrices of halves from shared memory): lane l posts the address of
// row l % 8 of matrix l / 8; register q of lane 4g + i receives row g, columns 2i and 2i + 1
// of matrix q.
static void ldmatrix_x4(unsigned* r, const unsigned short* row) {
    unsigned t = linear_thread(), warp = t & ~31u, lane = t & 31u;
    fibers[current].warp_ops++;
    matrix_rows[t] = row;
    warp_meet(posted);
    unsigned out[4];
    for (int q = 0; q < 4; q++) {
        const unsigned short* source = matrix_rows[warp + q * 8 + lane / 4];
        out[q] = source[lane % 4 * 2] | (unsigned)source[lane % 4 * 2 + 1] << 16;
    }
    warp_meet(consumed);
    memcpy(r, out, sizeof out);
}

// Runs `body` as every thread of the grid with `dims` = grid x, y, z, block x, y, z and
// dynamic shared bytes; returns 1 if a warp operation or barrier diverged or a block wrote
// past its dynamic shared memory, or if the block has more threads than CUDA allows (1024)
// or asks for more shared memory than the emulation holds, which it then does not run.
static int launch(const unsigned* dims, const std::function<void()>& body) {
    gridDim = {dims[0], dims[1], dims[2]};
    blockDim = {dims[3], dims[4], dims[5]};
    size_t threads = (size_t)blockDim.x * blockDim.y * blockDim.z;
    if (threads > 1024 || dims[6] % 16 != 0 || dims[6] > SHARED_CAPACITY) return 1;
    dynamic_shared = shared_arena + SHARED_CAPACITY - dims[6];
    kernel_body = &body;
    divergence = 0;
    fibers.assign(threads, Fiber{});
    stacks.resize(threads * STACK_BYTES);
    for (unsigned bz = 0; bz < gridDim.z; bz++)
        for (unsigned by = 0; by < gridDim.y; by++)
            for (unsigned bx = 0; bx < gridDim.x; bx++) {
                blockIdx = {bx, by, bz};
                memset(dynamic_shared, 0xff, dims[6] + SHARED_GUARD);
                for (size_t i = 0; i < threads; i++) {
                    Fiber& f = fibers[i];
                    getcontext(&f.context);
                    f.context.uc_stack.ss_sp = &stacks[i * STACK_BYTES];
                    f.context.uc_stack.ss_size = STACK_BYTES;
                    f.context.uc_link = &scheduler;
                    makecontext(&f.context, fiber_main, 0);
                    f.thread = {(unsigned)(i % blockDim.x), (unsigned)(i / blockDim.x % blockDim.y),
                                (unsigned)(i / blockDim.x / blockDim.y)};
                    f.done = false;
                    f.syncs = 0;
                    f.warp_ops = 0;
                    posted[i] = consumed[i] = 0;
                }
                broken = false;
                for (bool live = true; live;) {
                    live = false;
                    progress = false;
                    for (current = 0; current < threads; current++) {
                        if (fibers[current].done) continue;
                        threadIdx = fibers[current].thread;
                        swapcontext(&scheduler, &fibers[current].context);
                        live |= !fibers[current].done;
                    }
                    if (live && !progress) divergence = 1, broken = true;
                }
                for (size_t i = SHARED_CAPACITY; i < sizeof shared_arena; i++)
                    if (shared_arena[i] != 0xff) divergence = 1;
            }
    return divergence;
}
