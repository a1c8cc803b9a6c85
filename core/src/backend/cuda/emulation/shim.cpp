// What the CUDA headers and runtime give the engine's kernels, for a host C++ compiler, so
// that CI runs every kernel of kernels.cu and frames.cu on the CPU (emulation/mod.rs).
//
// A launch runs its blocks one after another and the threads of a block as fibers
// (ucontext), round-robin: each thread runs until its next barrier point (__syncthreads, or
// either half of a warp shuffle), so all threads of a block pass their barriers in lockstep
// as on the GPU. __shared__ variables are function statics, shared by the threads of the
// running block. Half conversions are IEEE round-to-nearest (_Float16), which is what the
// PTX conversions do; float arithmetic is plain IEEE with contraction off.

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
    long phase;  // barrier points passed
};
static const size_t STACK_BYTES = 64 * 1024;
static std::vector<Fiber> fibers;
static std::vector<char> stacks;
static ucontext_t scheduler;
static size_t current;
static const std::function<void()>* kernel_body;
// Set when the threads of a warp reach a shuffle out of step (what a GPU would deadlock or
// read garbage on); the launch returns it.
static int divergence;
static float lanes[1024];
static long lane_phase[1024];

static void fiber_main() {
    (*kernel_body)();
    fibers[current].done = true;
}

static void barrier_point() {
    fibers[current].phase++;
    swapcontext(&fibers[current].context, &scheduler);
}

static inline void __syncthreads() { barrier_point(); }

static inline unsigned linear_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

static float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    unsigned t = linear_thread();
    lanes[t] = v;
    lane_phase[t] = fibers[current].phase;
    barrier_point();
    unsigned partner = (t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask);
    if (lane_phase[partner] != fibers[current].phase - 1) divergence = 1;
    float r = lanes[partner];
    barrier_point();
    return r;
}

// Runs `body` as every thread of the grid; returns 1 if a warp shuffle diverged or the block
// has more threads than CUDA allows (1024), which it then does not run.
static int launch(const unsigned* dims, const std::function<void()>& body) {
    gridDim = {dims[0], dims[1], dims[2]};
    blockDim = {dims[3], dims[4], dims[5]};
    size_t threads = (size_t)blockDim.x * blockDim.y * blockDim.z;
    if (threads > 1024) return 1;
    kernel_body = &body;
    divergence = 0;
    fibers.assign(threads, Fiber{});
    stacks.resize(threads * STACK_BYTES);
    for (unsigned bz = 0; bz < gridDim.z; bz++)
        for (unsigned by = 0; by < gridDim.y; by++)
            for (unsigned bx = 0; bx < gridDim.x; bx++) {
                blockIdx = {bx, by, bz};
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
                    f.phase = 0;
                }
                for (bool live = true; live;) {
                    live = false;
                    for (current = 0; current < threads; current++) {
                        if (fibers[current].done) continue;
                        threadIdx = fibers[current].thread;
                        swapcontext(&scheduler, &fibers[current].context);
                        live |= !fibers[current].done;
                    }
                }
            }
    return divergence;
}
