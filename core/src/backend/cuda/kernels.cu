// Kernels of the CUDA engine, compiled at run time with NVRTC (no headers, no nvcc).
//
// Feature maps are NHWC in `T`: IEEE half with MASKDCPT_FP16 defined, else float. Every
// arithmetic operation, every sum and every LayerNorm statistic is float: a half sum of
// squares overflows at activations of a few hundred, which is what breaks NAFNet under
// plain FP16 engines. The network input and output are planar float (3 × H × W per image).
// Channel counts are multiples of 8 and every thread moves 8 consecutive channels at once
// (16-byte loads in FP16); buffers are 256-byte aligned. Index arithmetic is 64-bit wherever
// an index can pass 2^31 (8 × 1920 × 1088 × 128 does).

typedef long long i64;

#ifdef MASKDCPT_FP16
typedef unsigned short T;
#ifndef MASKDCPT_EMULATED  // a host compiler's emulation (emulation/shim.cpp) brings its own
__device__ __forceinline__ float to_f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short to_t(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif
__device__ __forceinline__ void load8(const T* p, float* v) {
    uint4 raw = *reinterpret_cast<const uint4*>(p);
    const unsigned short* h = reinterpret_cast<const unsigned short*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = to_f(h[i]);
}
__device__ __forceinline__ void store8(T* p, const float* v) {
    uint4 raw;
    unsigned short* h = reinterpret_cast<unsigned short*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; i++) h[i] = to_t(v[i]);
    *reinterpret_cast<uint4*>(p) = raw;
}
#else
typedef float T;
__device__ __forceinline__ void load8(const T* p, float* v) {
    float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void store8(T* p, const float* v) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
#endif

// 8 consecutive f32 weights (32-byte aligned).
__device__ __forceinline__ void load8f(const float* p, float* v) {
    float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

// 8 consecutive f32 values stored (32-byte aligned).
__device__ __forceinline__ void store8f(float* p, const float* v) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ i64 global_index() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }

// Programmatic dependent launch (compute capability 9.0 and newer): the engine lets a kernel
// that follows another kernel in its stream start before that one has finished (see
// `instance.rs`), so that the launch and the first blocks' start overlap the predecessor's last
// blocks. Every kernel therefore begins here, before it touches device memory: it waits until
// its predecessor grid has completed and its writes are visible (a no-op when the kernel was
// launched the ordinary way), then lets its own successor be scheduled. The successor's blocks
// wait in turn, so the network's order of reads and writes is that of serial launches.
__device__ __forceinline__ void await_inputs() {
#if !defined(MASKDCPT_EMULATED) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// intro: 3×3 conv, zero padding, planar float image (n × 3 × h × w) → NHWC `cout` channels.
// w: [tap = ci*9 + ky*3 + kx][cout] (rearranged once), b: [cout]. A thread per pixel and 8
// output channels; neighbouring threads take the channel groups of a pixel, then the next
// pixels, so a warp stores whole pixels (contiguous NHWC rows, no partly written sectors left
// for a later pass over the map to complete) and its image loads stay within a few words.
extern "C" __global__ void conv_in(const float* __restrict__ img, const float* __restrict__ w,
                                   const float* __restrict__ b, T* __restrict__ out, int n, int h,
                                   int wd, int cout) {
    await_inputs();
    i64 pixels = (i64)n * h * wd;
    int groups = cout / 8;
    i64 idx = global_index();
    if (idx >= pixels * groups) return;
    int co = (int)(idx % groups) * 8;
    i64 p = idx / groups;
    int x = (int)(p % wd);
    i64 t = p / wd;
    int y = (int)(t % h);
    int im = (int)(t / h);
    float acc[8];
    load8f(b + co, acc);
    for (int ci = 0; ci < 3; ci++) {
        const float* plane = img + ((i64)im * 3 + ci) * h * wd;
        for (int dy = 0; dy < 3; dy++) {
            int yy = y + dy - 1;
            if (yy < 0 || yy >= h) continue;
            for (int dx = 0; dx < 3; dx++) {
                int xx = x + dx - 1;
                if (xx < 0 || xx >= wd) continue;
                float v = plane[(i64)yy * wd + xx], wv[8];
                load8f(w + (ci * 9 + dy * 3 + dx) * cout + co, wv);
#pragma unroll
                for (int j = 0; j < 8; j++) acc[j] += wv[j] * v;
            }
        }
    }
    store8(out + p * cout + co, acc);
}

// ending: 3×3 conv NHWC `cin` channels → 3 planar float channels, plus the planar residual
// (the network input). w: [tap = ky*3+kx][cin][3] (rearranged once), b: [3]. A thread per pixel.
extern "C" __global__ void conv_out(const T* __restrict__ x, const float* __restrict__ w,
                                    const float* __restrict__ b, const float* __restrict__ residual,
                                    float* __restrict__ out, int n, int h, int wd, int cin) {
    await_inputs();
    i64 p = global_index();
    if (p >= (i64)n * h * wd) return;
    int xq = (int)(p % wd);
    i64 t = p / wd;
    int y = (int)(t % h);
    int im = (int)(t / h);
    float a0 = b[0], a1 = b[1], a2 = b[2];
    for (int dy = 0; dy < 3; dy++) {
        int yy = y + dy - 1;
        if (yy < 0 || yy >= h) continue;
        for (int dx = 0; dx < 3; dx++) {
            int xx = xq + dx - 1;
            if (xx < 0 || xx >= wd) continue;
            const T* px = x + (((i64)im * h + yy) * wd + xx) * cin;
            const float* wt = w + (dy * 3 + dx) * cin * 3;
            for (int ci = 0; ci < cin; ci += 8) {
                // The 24 weights of channels ci..ci+8 (96 bytes from a 32-byte boundary: cin
                // is a multiple of 8), loaded as vectors: the same for every thread of a warp.
                float v[8], wv[24];
                load8(px + ci, v);
#pragma unroll
                for (int part = 0; part < 3; part++) load8f(wt + ci * 3 + part * 8, wv + part * 8);
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    a0 += wv[j * 3] * v[j];
                    a1 += wv[j * 3 + 1] * v[j];
                    a2 += wv[j * 3 + 2] * v[j];
                }
            }
        }
    }
    i64 plane = (i64)h * wd;
    i64 o = (i64)im * 3 * plane + (i64)y * wd + xq;
    out[o] = a0 + residual[o];
    out[o + plane] = a1 + residual[o + plane];
    out[o + 2 * plane] = a2 + residual[o + 2 * plane];
}

#define LN_LANES 8

// The sum of v over aligned groups of LANES lanes of a warp.
template <int LANES>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int offset = LANES / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// LayerNorm of one pixel's `c` channels at `row` into `out` (biased variance, two passes,
// float statistics), affine. LANES lanes per pixel (`lane` 0..LANES-1 of an aligned group of a
// warp), each taking 8 channels in turn; every lane of the warp calls it, those of a pixel
// past the last with `live` false (they only help the shuffles and write nothing).
template <int LANES = LN_LANES>
__device__ __forceinline__ void normalize_pixel(const T* row, const float* __restrict__ gamma,
                                                const float* __restrict__ beta, T* out, int c, float eps,
                                                int lane, bool live) {
    float v[8], s = 0.f;
    for (int i = lane * 8; live && i < c; i += LANES * 8) {
        load8(row + i, v);
#pragma unroll
        for (int j = 0; j < 8; j++) s += v[j];
    }
    float mean = group_sum<LANES>(s) / c, q = 0.f;
    for (int i = lane * 8; live && i < c; i += LANES * 8) {
        load8(row + i, v);
#pragma unroll
        for (int j = 0; j < 8; j++) q += (v[j] - mean) * (v[j] - mean);
    }
    float rstd = rsqrtf(group_sum<LANES>(q) / c + eps);
    if (!live) return;
    for (int i = lane * 8; i < c; i += LANES * 8) {
        float g[8], bb[8];
        load8(row + i, v);
        load8f(gamma + i, g);
        load8f(beta + i, bb);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = (v[j] - mean) * rstd * g[j] + bb[j];
        store8(out + i, v);
    }
}

// LayerNorm over the `c` channels of each pixel (normalize_pixel), LANES lanes per pixel;
// blockDim.x is a multiple of 32 and the grid covers whole warps.
template <int LANES>
__device__ __forceinline__ void layer_norm_lanes(const T* __restrict__ x, const float* __restrict__ gamma,
                                                 const float* __restrict__ beta, T* __restrict__ y, i64 pixels,
                                                 int c, float eps) {
    i64 p = global_index() / LANES;
    bool live = p < pixels;
    normalize_pixel<LANES>(x + (live ? p : 0) * c, gamma, beta, y + p * c, c, eps, threadIdx.x % LANES, live);
}

// 8 lanes per pixel (the LayerNorm of the fused kernels, bit for bit).
extern "C" __global__ void layer_norm(const T* __restrict__ x, const float* __restrict__ gamma,
                                      const float* __restrict__ beta, T* __restrict__ y, i64 pixels,
                                      int c, float eps) {
    await_inputs();
    layer_norm_lanes<LN_LANES>(x, gamma, beta, y, pixels, c, eps);
}

// A warp per pixel: four times the threads and a quarter of each lane's serial loads, for
// small maps of many channels (level 3 of 256 × 256 fills 32 blocks with 8 lanes, 128 with 32).
extern "C" __global__ void layer_norm_wide(const T* __restrict__ x, const float* __restrict__ gamma,
                                           const float* __restrict__ beta, T* __restrict__ y, i64 pixels,
                                           int c, float eps) {
    await_inputs();
    layer_norm_lanes<32>(x, gamma, beta, y, pixels, c, eps);
}

// Stores the block's sums of channels k..k+8 (each thread's `sum` over its pixels) in
// partials[im][k + i][blockIdx.x]: the block's rows of threads (blockDim.y) added in shared
// memory in order, no atomics, so pool_sum adds the same values in the same order every run.
__device__ __forceinline__ void pool_channel_sums(const float* sum, float* __restrict__ partials, int im, int k, int c) {
    __shared__ float partial[256][9];
    int slot = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
    for (int i = 0; i < 8; i++) partial[slot][i] = sum[i];
    __syncthreads();
    if (threadIdx.y == 0 && k < c) {
        float total[8];
#pragma unroll
        for (int i = 0; i < 8; i++) total[i] = sum[i];
        for (int r = 1; r < blockDim.y; r++) {
#pragma unroll
            for (int i = 0; i < 8; i++) total[i] += partial[r * blockDim.x + threadIdx.x][i];
        }
#pragma unroll
        for (int i = 0; i < 8; i++) partials[((i64)im * c + k + i) * gridDim.x + blockIdx.x] = total[i];
    }
}

#define DW_PIXELS 8

// Depthwise 3×3 (zero padding) on the 2c channels of `t`, SimpleGate (channel k times channel
// k + c) into `g` (c channels), and each block's per-image channel sums of `g` into `partials`
// (float, [n][c][gridDim.x]; pool_sum adds them up). wd: [tap][2c] (rearranged once), bd:
// [2c]. A thread runs 8 channels of DW_PIXELS consecutive pixels; block (channel groups ×
// pixel strips) = 256 threads, grid (pixel blocks, channel-group blocks, images).
extern "C" __global__ void dw_gate_pool(const T* __restrict__ t, const float* __restrict__ wd,
                                        const float* __restrict__ bd, T* __restrict__ g,
                                        float* __restrict__ partials, int h, int w, int c) {
    await_inputs();
    int k = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
    int im = blockIdx.z;
    i64 hw = (i64)h * w;
    i64 p0 = ((i64)blockIdx.x * blockDim.y + threadIdx.y) * DW_PIXELS;
    float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (k < c) {
        const T* src = t + (i64)im * hw * 2 * c;
        T* dst = g + (i64)im * hw * c;
        for (int j = 0; j < DW_PIXELS; j++) {
            i64 p = p0 + j;
            if (p >= hw) break;
            int y = (int)(p / w), x = (int)(p % w);
            float a[8], bb[8];
            load8f(bd + k, a);
            load8f(bd + c + k, bb);
            for (int dy = 0; dy < 3; dy++) {
                int yy = y + dy - 1;
                if (yy < 0 || yy >= h) continue;
                for (int dx = 0; dx < 3; dx++) {
                    int xx = x + dx - 1;
                    if (xx < 0 || xx >= w) continue;
                    const T* q = src + ((i64)yy * w + xx) * 2 * c;
                    const float* wt = wd + (dy * 3 + dx) * 2 * c;
                    float va[8], vb[8], wa[8], wb[8];
                    load8(q + k, va);
                    load8(q + c + k, vb);
                    load8f(wt + k, wa);
                    load8f(wt + c + k, wb);
#pragma unroll
                    for (int i = 0; i < 8; i++) {
                        a[i] += wa[i] * va[i];
                        bb[i] += wb[i] * vb[i];
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < 8; i++) {
                a[i] *= bb[i];
                sum[i] += a[i];
            }
            store8(dst + p * c + k, a);
        }
    }
    pool_channel_sums(sum, partials, im, k, c);
}

// One window row of a run of RUN pixels (see dw_rows): the row's three taps of weights (wrow:
// tap dx at wrow + dx · 2c) times input columns x0 - 1 .. x0 + RUN (col0: column x0 - 1 of
// the row at channel k; a column every `stride` values), added to the run's accumulators.
// CHECK skips columns outside 0 .. w - 1 (zero padding); without it every column is read.
template <int RUN, bool CHECK>
__device__ __forceinline__ void dw_window_row(const T* __restrict__ t, i64 col0, i64 stride,
                                              const float* __restrict__ wrow, int c, int x0, int w,
                                              float (&a)[RUN][8], float (&bb)[RUN][8]) {
    float wa[3][8], wb[3][8];
#pragma unroll
    for (int dx = 0; dx < 3; dx++) {
        load8f(wrow + dx * 2 * c, wa[dx]);
        load8f(wrow + dx * 2 * c + c, wb[dx]);
    }
#pragma unroll
    for (int col = 0; col < RUN + 2; col++) {
        if (CHECK) {
            int xx = x0 + col - 1;
            if (xx < 0 || xx >= w) continue;
        }
        const T* q = t + col0 + col * stride;
        float va[8], vb[8];
        load8(q, va);
        load8(q + c, vb);
        // Column col is tap dx of pixel col - dx; dx ascends, as in dw_gate_pool.
#pragma unroll
        for (int dx = 0; dx < 3; dx++) {
            int j = col - dx;
            if (j < 0 || j >= RUN) continue;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                a[j][i] += wa[dx][i] * va[i];
                bb[j][i] += wb[dx][i] * vb[i];
            }
        }
    }
}

// The three window rows of a run whose top-left input is `col0` (row y - 1, column x0 - 1);
// CHECK skips rows and columns outside the image.
template <int RUN, bool CHECK>
__device__ __forceinline__ void dw_window(const T* __restrict__ t, i64 col0, i64 stride,
                                          const float* __restrict__ wk, int c, int x0, int y, int h, int w,
                                          float (&a)[RUN][8], float (&bb)[RUN][8]) {
#pragma unroll
    for (int dy = 0; dy < 3; dy++) {
        if (CHECK && (y + dy - 1 < 0 || y + dy - 1 >= h)) continue;
        dw_window_row<RUN, CHECK>(t, col0 + dy * w * stride, stride, wk + dy * 3 * 2 * c, c, x0, w, a, bb);
    }
}

// What dw_gate_pool computes (`g` bit for bit: the taps of every pixel are added in the same
// order; the partial sums over other blocks of pixels), with a thread taking a run of RUN
// consecutive pixels of one row: the weights of each window row are loaded once per run and
// each input column once per window row, so a pixel costs 6 (RUN + 2) / RUN input and 18 / RUN
// weight loads of 8 values instead of 18 and 18, and a thread one division instead of one per
// pixel. Runs with their whole window inside the image (all but the border's) take a path
// without bounds checks whose loads are a fixed stride apart, so a column's address is one
// addition. Block (channel groups × runs), grid (run blocks, channel-group blocks, images); a
// row has ceil(w / RUN) runs. More pixels per run load less but hold more registers (fewer
// threads in flight): the engine times dw_gate_pool and dw_gate_pool_rows1/2/3/4 per shape and
// keeps the fastest (docs/perf.md).
template <int RUN>
__device__ __forceinline__ void dw_rows(const T* __restrict__ t, const float* __restrict__ wd,
                                        const float* __restrict__ bd, T* __restrict__ g,
                                        float* __restrict__ partials, int h, int w, int c) {
    int k = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
    int im = blockIdx.z;
    int runs_per_row = (w + RUN - 1) / RUN;
    i64 run = (i64)blockIdx.x * blockDim.y + threadIdx.y;
    float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (k < c && run < (i64)h * runs_per_row) {
        int y = (int)(run / runs_per_row), x0 = (int)(run % runs_per_row) * RUN;
        float a[RUN][8], bb[RUN][8], bias_a[8], bias_b[8];
        load8f(bd + k, bias_a);
        load8f(bd + c + k, bias_b);
#pragma unroll
        for (int j = 0; j < RUN; j++) {
#pragma unroll
            for (int i = 0; i < 8; i++) a[j][i] = bias_a[i], bb[j][i] = bias_b[i];
        }
        i64 stride = 2 * (i64)c;
        // Input row y - 1, column x0 - 1, channel k (before the image at its top-left corner;
        // the checked path reads no such column).
        i64 col0 = (((i64)im * h + y - 1) * w + x0 - 1) * stride + k;
        if (y >= 1 && y + 1 < h && x0 >= 1 && x0 + RUN < w) {
            dw_window<RUN, false>(t, col0, stride, wd + k, c, x0, y, h, w, a, bb);
        } else {
            dw_window<RUN, true>(t, col0, stride, wd + k, c, x0, y, h, w, a, bb);
        }
        T* dst = g + ((i64)im * h + y) * w * c;
#pragma unroll
        for (int j = 0; j < RUN; j++) {
            if (x0 + j >= w) break;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                a[j][i] *= bb[j][i];
                sum[i] += a[j][i];
            }
            store8(dst + (i64)(x0 + j) * c + k, a[j]);
        }
    }
    pool_channel_sums(sum, partials, im, k, c);
}

// Launch bounds: the block sizes depthwise.rs launches and, for runs of 2 to 4, the blocks per
// SM the kernels had before their unchecked paths (which hold more loads in flight and,
// unbounded, more registers: 152 / 142 / 184 on sm_90, a block per SM fewer each); runs of 1
// (for small maps: four times the threads of runs of 4) take 64 registers, 8 blocks per SM.
#define DW_ROWS_KERNEL(RUN, THREADS, BLOCKS_PER_SM)                                                  \
    extern "C" __global__ void __launch_bounds__(THREADS, BLOCKS_PER_SM)                               \
        dw_gate_pool_rows##RUN(const T* __restrict__ t, const float* __restrict__ wd,                  \
                               const float* __restrict__ bd, T* __restrict__ g,                        \
                               float* __restrict__ partials, int h, int w, int c) {                    \
        await_inputs();                                                                                \
        dw_rows<RUN>(t, wd, bd, g, partials, h, w, c);                                                 \
    }
DW_ROWS_KERNEL(1, 128, 8)
DW_ROWS_KERNEL(2, 256, 2)
DW_ROWS_KERNEL(3, 128, 4)
DW_ROWS_KERNEL(4, 128, 3)

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// The per-image channel sums: pool[j] = Σ_b partials[j][b] over the `blocks` partial sums of
// channel j (j = image · c + channel; `channels` of them), in a fixed order (each thread its
// stride of b in turn, then the warps' sums, then the warps in order): a block of 256 threads
// per channel, so a run's sums do not depend on scheduling.
extern "C" __global__ void pool_sum(const float* __restrict__ partials, float* __restrict__ pool, int blocks,
                                    i64 channels) {
    await_inputs();
    __shared__ float warps[8];
    i64 j = blockIdx.x;
    if (j >= channels) return;  // uniform over the block
    const float* row = partials + j * blocks;
    float acc = 0.f;
    for (int b = threadIdx.x; b < blocks; b += blockDim.x) acc += row[b];
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int i = 0; i < blockDim.x / 32; i++) total += warps[i];
        pool[j] = total;
    }
}

// Channel attention values s[im][o[k]] = b[o] + Σ_i W[o][i] · pool[im][i] / hw for N outputs
// by one warp, its lanes striding over W's rows together (W: [o][i], PyTorch layout; `mean`
// is pool[im]), each output's terms added in the same order whatever N: sca_vector and
// attention_weights both call it, so their attention values are the same bits.
template <int N>
__device__ __forceinline__ void attention_values(const float* __restrict__ mean, const float* __restrict__ w,
                                                 const float* __restrict__ b, const int* o, int c, float inv_hw,
                                                 int lane, float* out) {
    float acc[N];
#pragma unroll
    for (int k = 0; k < N; k++) acc[k] = 0.f;
    for (int i = lane; i < c; i += 32) {
        float m = mean[i];
#pragma unroll
        for (int k = 0; k < N; k++) acc[k] += w[(i64)o[k] * c + i] * m;
    }
#pragma unroll
    for (int k = 0; k < N; k++) out[k] = b[o[k]] + warp_sum(acc[k]) * inv_hw;
}

// Channel attention vector s[im][o] (attention_values), a warp per output: what attend_ffn
// scales the gated features with.
extern "C" __global__ void sca_vector(const float* __restrict__ pool, const float* __restrict__ w,
                                      const float* __restrict__ b, float* __restrict__ s, int n, int c,
                                      float inv_hw) {
    await_inputs();
    i64 out = global_index() / 32;
    int lane = threadIdx.x % 32;
    if (out >= (i64)n * c) return;
    int o = (int)(out % c);
    float v;
    attention_values<1>(pool + (out / c) * c, w, b, &o, c, inv_hw, lane, &v);
    if (lane == 0) s[out] = v;
}

#define ATTENTION_CHANNELS 16

// Per-image conv3 weights with the channel attention folded in, from the channel sums in one
// launch: out[im][o][i] = w3[o][i] · s[im][i] (so conv3(g · s) is one product per image, with
// no pass over g). Block (ATTENTION_CHANNELS input channels, image) of 256 threads: its warps
// compute the group's attention values (attention_values, as sca_vector), then two threads a
// row write the group's 16 weights of every row o (32 bytes in FP16).
extern "C" __global__ void attention_weights(const float* __restrict__ pool, const float* __restrict__ w,
                                             const float* __restrict__ b, const T* __restrict__ w3,
                                             T* __restrict__ out, int c, float inv_hw) {
    await_inputs();
    __shared__ float s[ATTENTION_CHANNELS];
    int i0 = blockIdx.x * ATTENTION_CHANNELS;
    i64 im = blockIdx.y;
    int lane = threadIdx.x % 32, warps = blockDim.x / 32;
    // Each warp takes two of the group's values in one pass over W's rows (j and j + warps),
    // the second a repeat of the first where it is past the group or the channels.
    for (int j = threadIdx.x / 32; j < ATTENTION_CHANNELS; j += 2 * warps) {
        if (i0 + j >= c) break;  // uniform over the warp
        int j1 = j + warps;
        bool second = j1 < ATTENTION_CHANNELS && i0 + j1 < c;
        int o[2] = {i0 + j, second ? i0 + j1 : i0 + j};
        float v[2];
        attention_values<2>(pool + im * c, w, b, o, c, inv_hw, lane, v);
        if (lane == 0) {
            s[j] = v[0];
            if (second) s[j1] = v[1];
        }
    }
    __syncthreads();
    int half = threadIdx.x % 2;
    int i = i0 + half * 8;
    if (i >= c) return;  // c is a multiple of 8
    for (int o = threadIdx.x / 2; o < c; o += blockDim.x / 2) {
        float v[8];
        load8(w3 + (i64)o * c + i, v);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] *= s[half * 8 + j];
        store8(out + (im * c + o) * c + i, v);
    }
}

// SimpleGate: g[p][k] = t[p][k] · t[p][k + c] (t has 2c channels), 8 channels per thread.
extern "C" __global__ void gate(const T* __restrict__ t, T* __restrict__ g, i64 pixels, int c) {
    await_inputs();
    i64 idx = global_index() * 8;
    if (idx >= pixels * c) return;
    i64 p = idx / c;
    int k = (int)(idx % c);
    float a[8], b[8];
    load8(t + p * 2 * c + k, a);
    load8(t + p * 2 * c + c + k, b);
#pragma unroll
    for (int j = 0; j < 8; j++) a[j] *= b[j];
    store8(g + idx, a);
}

// TLC channel attention (upstream NAFNet's `NAFNetLocal`, core/src/tlc.rs): the mean of every
// pixel's window of the gated map, as sliding sums along rows (`window_row_sums`), then along
// columns (`window_means`). Along a side of `len` pixels with windows of `k` (at most `len`),
// pixel i takes the window starting at clamp(i − (k − 1) / 2, 0, len − k): the valid means,
// centred, their edges repeated. A thread slides one group of 8 channels over `seg`
// consecutive pixels of a side, the sums in double, so no drift builds up over a long side.
__device__ __forceinline__ int window_start(int i, int k, int len) {
    int start = i - (k - 1) / 2;
    start = start < 0 ? 0 : start;
    return start < len - k ? start : len - k;
}
// Sums of the windows of pixels first .. first + count − 1: `read(i, v)` gives pixel i's 8
// values, `write(i, sums)` takes its window's sums.
template <typename Read, typename Write>
__device__ __forceinline__ void slide_window(Read read, Write write, int len, int k, int first, int count) {
    double sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float v[8];
    int start = window_start(first, k, len);
    for (int j = start; j < start + k; j++) {
        read(j, v);
#pragma unroll
        for (int m = 0; m < 8; m++) sum[m] += v[m];
    }
    for (int i = first; i < first + count; i++) {
        // Consecutive pixels' windows start at most one apart.
        for (int s = window_start(i, k, len); start < s; start++) {
            float out[8];
            read(start + k, v);
            read(start, out);
#pragma unroll
            for (int m = 0; m < 8; m++) sum[m] += (double)v[m] - (double)out[m];
        }
        write(i, sum);
    }
}

// The pixels a thread of a window pass slides over: `outer` groups of `across` lines of `len`
// pixels (rows, or the columns of an image side by side), a group `outer_stride` values after
// the one before and line `a` of a group `a · c` values after its first. Neighbouring threads
// take the channel groups of a line, then neighbouring lines, then the next stretch of `seg`
// pixels. A thread's 8 channels of its line start at `base`, its pixels at `first` (`count`).
struct WindowStretch {
    i64 base;
    int first, count;
};
__device__ __forceinline__ bool thread_stretch(int outer, int across, int len, int c, int seg, i64 outer_stride,
                                               WindowStretch* s) {
    int groups = c / 8, stretches = (len + seg - 1) / seg;
    i64 idx = global_index();
    if (idx >= (i64)outer * stretches * across * groups) return false;
    int ch = (int)(idx % groups) * 8;
    i64 q = idx / groups;
    int line = (int)(q % across);
    q /= across;
    s->first = (int)(q % stretches) * seg;
    s->count = seg < len - s->first ? seg : len - s->first;
    s->base = q / stretches * outer_stride + (i64)line * c + ch;
    return true;
}

// Window sums along each row of the gated map g (n × h × w × c) into `sums` (f32, same
// layout), windows of `k` columns: a thread per row, stretch of `seg` columns and 8 channels.
extern "C" __global__ void window_row_sums(const T* __restrict__ g, float* __restrict__ sums, int n, int h,
                                           int w, int c, int k, int seg) {
    await_inputs();
    WindowStretch s;
    if (!thread_stretch(n * h, 1, w, c, seg, (i64)w * c, &s)) return;
    slide_window([&](int x, float* v) { load8(g + s.base + (i64)x * c, v); },
                 [&](int x, const double* sum) {
                     float o[8];
#pragma unroll
                     for (int m = 0; m < 8; m++) o[m] = (float)sum[m];
                     store8f(sums + s.base + (i64)x * c, o);
                 },
                 w, k, s.first, s.count);
}

// Window means from the row sums (n × h × w × c, f32): sums along each column over windows of
// `k` rows, divided by `area` (the window's pixels), into `means` (n × h × w × c). A thread
// per image, stretch of `seg` rows, column and 8 channels; neighbouring threads read
// neighbouring pixels of a row.
extern "C" __global__ void window_means(const float* __restrict__ sums, T* __restrict__ means, int n, int h,
                                        int w, int c, int k, int seg, int area) {
    await_inputs();
    i64 row = (i64)w * c;
    WindowStretch s;
    if (!thread_stretch(n, w, h, c, seg, h * row, &s)) return;
    slide_window([&](int y, float* v) { load8f(sums + s.base + y * row, v); },
                 [&](int y, const double* sum) {
                     float o[8];
#pragma unroll
                     for (int m = 0; m < 8; m++) o[m] = (float)(sum[m] / area);
                     store8(means + s.base + y * row, o);
                 },
                 h, k, s.first, s.count);
}

// x[i] *= s[i] over `count` values (a multiple of 8), 8 per thread: the gated map scaled by
// TLC's per-pixel attention.
extern "C" __global__ void multiply(T* __restrict__ x, const T* __restrict__ s, i64 count) {
    await_inputs();
    i64 idx = global_index() * 8;
    if (idx >= count) return;
    float a[8], b[8];
    load8(x + idx, a);
    load8(s + idx, b);
#pragma unroll
    for (int j = 0; j < 8; j++) a[j] *= b[j];
    store8(x + idx, a);
}

// PixelShuffle(2) of t (n × h × w × 4c) added into out (n × 2h × 2w × c, the skip, in place):
// channel 4k + 2i + j of low-resolution pixel (y, x) lands in channel k of pixel (2y+i, 2x+j).
// A thread per low-resolution pixel and 8 output channels (32 source channels).
extern "C" __global__ void shuffle_add(const T* __restrict__ t, T* __restrict__ out, int n, int h,
                                       int w, int c) {
    await_inputs();
    int groups = c / 8;
    i64 idx = global_index();
    if (idx >= (i64)n * h * w * groups) return;
    int k = (int)(idx % groups) * 8;
    i64 q = idx / groups;
    int x = (int)(q % w);
    q /= w;
    int y = (int)(q % h);
    i64 im = q / h;
    float src[32];
    const T* from = t + ((im * h + y) * w + x) * 4 * c + 4 * k;
#pragma unroll
    for (int v = 0; v < 4; v++) load8(from + 8 * v, src + 8 * v);
#pragma unroll
    for (int i = 0; i < 2; i++) {
#pragma unroll
        for (int j = 0; j < 2; j++) {
            T* to = out + ((im * 2 * h + 2 * y + i) * 2 * w + 2 * x + j) * c + k;
            float o[8];
            load8(to, o);
#pragma unroll
            for (int m = 0; m < 8; m++) o[m] += src[4 * m + 2 * i + j];
            store8(to, o);
        }
    }
}

// ---- Fused tensor-core kernels: stretches of a NAFBlock in one launch (FP16 storage, sm_80+) ----
#if defined(MASKDCPT_FP16) && (defined(MASKDCPT_EMULATED) || __CUDA_ARCH__ >= 800)

#ifndef MASKDCPT_EMULATED  // the CPU emulation brings its own (emulation/shim.cpp)
// d += a · b for one warp: a 16×16 row-major FP16 tile, b 16×8 column-major, d 16×8 float;
// the fragments laid out as the PTX ISA gives them for mma.m16n8k16.
__device__ __forceinline__ void mma16816(float* d, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// Four 8×8 FP16 matrices from shared memory into one register each (ldmatrix.x4): lane l
// gives the address of row l % 8 of matrix l / 8 (16-byte aligned); register q of lane 4g + i
// receives row g, columns 2i and 2i + 1 of matrix q, as the PTX ISA lays it out.
__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const T* row) {
    unsigned address;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(address) : "l"(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}
#define DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

#define TILE_ROWS 64    // pixels per block: four 16-row mma tiles
#define TILE_WARPS 4
#define TILE_OUTPUTS 4  // 8-channel output tiles a warp accumulates at once

// Row stride, in halves, of a shared tile of `c` channels: c rounded up to the mma's k of 16
// (the columns past c are zero) plus 8, so that the 8 rows one fragment load touches fall in
// distinct banks.
__device__ __forceinline__ int tile_stride(int c) { return (c + 15) / 16 * 16 + 8; }

// Zeroes the padding columns (c up to the multiple of 16) of the shared tile `tile`, which
// the products read as k.
__device__ __forceinline__ void tile_zero_padding(T* tile, int c) {
    int stride = tile_stride(c), padded = stride - 8;
    for (int r = threadIdx.x; r < TILE_ROWS; r += blockDim.x) {
        for (int i = c; i < padded; i++) tile[r * stride + i] = 0;
    }
}

// The pixels p0.. of `x` (c channels) normalised as layer_norm does (normalize_pixel) into the
// shared tile `normed` (padding columns zeroed before). Rows past the last pixel are left as
// they are: they only feed outputs that are not stored. Every thread of the block takes
// part; a barrier follows.
__device__ __forceinline__ void tile_normalize(const T* x, const float* __restrict__ gamma,
                                               const float* __restrict__ beta, T* normed, i64 p0, i64 pixels,
                                               int c, float eps) {
    int stride = tile_stride(c);
    for (int r = threadIdx.x / LN_LANES; r < TILE_ROWS; r += blockDim.x / LN_LANES) {
        bool live = p0 + r < pixels;
        normalize_pixel(x + (live ? p0 + r : 0) * c, gamma, beta, normed + r * stride, c, eps,
                        threadIdx.x % LN_LANES, live);
    }
    __syncthreads();
}

// The B fragments of chunk k0 (columns k0..k0+15) for the output tiles at rows wrow[t] of the
// weight matrix `w` ([rows][k] row-major; k a multiple of 8, so a chunk's second 8 columns
// may be missing and read as zero); tiles with a negative wrow get zeros, never multiplied.
__device__ __forceinline__ void tile_b_fragments(const T* __restrict__ w, int k, int k0, const int* wrow,
                                                 unsigned fb[TILE_OUTPUTS][2]) {
    int lane = threadIdx.x % 32, group = lane / 4, pair = lane % 4 * 2;
    bool upper = k0 + 8 < k;
#pragma unroll
    for (int t = 0; t < TILE_OUTPUTS; t++) {
        const T* col = w + (i64)(wrow[t] + group) * k + k0 + pair;
        bool live = wrow[t] >= 0;
        fb[t][0] = live ? *reinterpret_cast<const unsigned*>(col) : 0u;
        fb[t][1] = live && upper ? *reinterpret_cast<const unsigned*>(col + 8) : 0u;
    }
}

// acc[m][t] += rows 16m..16m+15 of the shared tile `a` (row stride `stride` halves) times the
// rows wrow[t]..wrow[t]+7 of the weight matrix `w` ([rows][k] row-major, the mma's column-major
// B; k a multiple of 8): TILE_ROWS × 8·TILE_OUTPUTS outputs per warp. A tile whose wrow is
// negative is skipped (the same for every lane of a warp). The next chunk's B fragments (from
// global memory) are loaded while the current chunk's products run.
__device__ __forceinline__ void tile_product(const T* a, int stride, const T* __restrict__ w, int k,
                                             const int* wrow, float acc[4][TILE_OUTPUTS][4]) {
    int lane = threadIdx.x % 32;
    unsigned fb[TILE_OUTPUTS][2];
    tile_b_fragments(w, k, 0, wrow, fb);
    for (int k0 = 0; k0 < k; k0 += 16) {
        unsigned next[TILE_OUTPUTS][2];
        if (k0 + 16 < k) tile_b_fragments(w, k, k0 + 16, wrow, next);
        // A fragment m: rows 16m..16m+15, columns k0..k0+15 as four 8×8 matrices (rows 0-7 and
        // 8-15 of columns k0.., then of k0 + 8..), each lane giving one matrix row's address.
        unsigned fa[4][4];
#pragma unroll
        for (int m = 0; m < 4; m++) ldmatrix_x4(fa[m], a + (m * 16 + lane % 16) * stride + k0 + lane / 16 * 8);
#pragma unroll
        for (int t = 0; t < TILE_OUTPUTS; t++) {
            if (wrow[t] < 0) continue;
#pragma unroll
            for (int m = 0; m < 4; m++) mma16816(acc[m][t], fa[m], fb[t]);
        }
        if (k0 + 16 < k) {
#pragma unroll
            for (int t = 0; t < TILE_OUTPUTS; t++) fb[t][0] = next[t][0], fb[t][1] = next[t][1];
        }
    }
}

// Output channels a block's warps produce at once: TILE_WARPS · TILE_OUTPUTS tiles of 8.
#define TILE_CHUNK (TILE_WARPS * TILE_OUTPUTS * 8)

// out[p][n] = a[p] · w[n] + bias[n] (+ out[p][n] when `accumulate`) for the block's pixels
// p0.. (those before `pixels`) and the rows of `w` ([n_out][k]) in chunks split, split +
// splits, ... of TILE_CHUNK (all of them when splits is 1): products over the shared tile `a`,
// sums in float, one rounding to T. `out` has `n_out` channels per pixel.
__device__ __forceinline__ void tile_product_store(const T* a, int stride, const T* __restrict__ w, int k,
                                                   int n_out, const T* __restrict__ bias, T* out, i64 p0,
                                                   i64 pixels, bool accumulate, int split, int splits) {
    int warp = threadIdx.x / 32, group = threadIdx.x % 32 / 4, pair = threadIdx.x % 4 * 2;
    int tiles = n_out / 8;
    for (int base = split * TILE_CHUNK / 8; base < tiles; base += splits * TILE_CHUNK / 8) {
        int wrow[TILE_OUTPUTS];
#pragma unroll
        for (int t = 0; t < TILE_OUTPUTS; t++) {
            int tile = base + warp + t * TILE_WARPS;
            wrow[t] = tile < tiles ? tile * 8 : -1;
        }
        float acc[4][TILE_OUTPUTS][4] = {};
        tile_product(a, stride, w, k, wrow, acc);
#pragma unroll
        for (int t = 0; t < TILE_OUTPUTS; t++) {
            if (wrow[t] < 0) continue;
            int n = wrow[t] + pair;
            float b[2] = {to_f(bias[n]), to_f(bias[n + 1])};
#pragma unroll
            for (int m = 0; m < 4; m++) {
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    i64 p = p0 + m * 16 + group + half * 8;
                    if (p >= pixels) continue;
                    unsigned* q = reinterpret_cast<unsigned*>(out + p * n_out + n);
                    unsigned old = accumulate ? *q : 0u, y2 = 0;
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = acc[m][t][half * 2 + e] + b[e];
                        if (accumulate) v += to_f((unsigned short)(old >> (16 * e)));
                        y2 |= (unsigned)to_t(v) << (16 * e);
                    }
                    *q = y2;
                }
            }
        }
    }
}

// The pixels p0.. of the block (those before `pixels`) normalised into the dynamic shared
// tile, its padding columns zeroed: the start of norm_conv1 and norm_gate, which then multiply
// the returned tile.
__device__ __forceinline__ const T* normalized_tile(const T* x, const float* __restrict__ gamma,
                                                    const float* __restrict__ beta, i64 p0, i64 pixels, int c,
                                                    float eps) {
    DYNAMIC_SHARED(shared);
    T* normed = reinterpret_cast<T*>(shared);
    tile_zero_padding(normed, c);
    tile_normalize(x, gamma, beta, normed, p0, pixels, c, eps);
    return normed;
}

// The first half's entry: LayerNorm then conv1 (w1 [2c][c], bias in half) into `expanded`
// (2c channels per pixel), for TILE_ROWS pixels per block of TILE_WARPS warps, the
// normalised pixels kept in shared memory (one tile, TILE_ROWS · tile_stride(c) halves):
// layer_norm followed by the product, in one launch that does not store the normalised map.
// Grid (pixel tiles, output splits): block y stores the TILE_CHUNK-channel chunks y,
// y + gridDim.y, ... of the 2c outputs, so small maps with many channels fill the GPU, each
// split normalising its pixels again.
extern "C" __global__ void __launch_bounds__(TILE_WARPS * 32)
    norm_conv1(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
               const T* __restrict__ w1, const T* __restrict__ b1, T* __restrict__ expanded, i64 pixels,
               int c, float eps) {
    await_inputs();
    i64 p0 = (i64)blockIdx.x * TILE_ROWS;
    const T* normed = normalized_tile(x, gamma, beta, p0, pixels, c, eps);
    tile_product_store(normed, tile_stride(c), w1, c, 2 * c, b1, expanded, p0, pixels, false, blockIdx.y,
                       gridDim.y);
}

// Step 2 of the feed-forward half over a normalised tile (see ffn): conv4 on the tensor cores,
// a warp taking 8-channel groups j with their gate partners j + c, each output rounded to half
// as the product would store it, then gated (as `gate`) into `gated` (rows `gated_stride`
// halves apart; rows from `rows` on are not written): the gate groups in the passes split,
// split + splits, ... of 2 · TILE_WARPS groups (all of them when splits is 1).
__device__ __forceinline__ void tile_gate(const T* normed, const T* __restrict__ w4, const T* __restrict__ b4,
                                          int c, T* gated, i64 gated_stride, i64 rows, int split, int splits) {
    int stride = tile_stride(c);
    int warp = threadIdx.x / 32, group = threadIdx.x % 32 / 4, pair = threadIdx.x % 4 * 2;
    int units = c / 8;  // 8-channel gate groups; a warp takes two per pass
    for (int base = split * 2 * TILE_WARPS; base < units; base += splits * 2 * TILE_WARPS) {
        int u0 = base + warp, u1 = u0 + TILE_WARPS;
        int wrow[TILE_OUTPUTS] = {u0 < units ? u0 * 8 : -1, u0 < units ? u0 * 8 + c : -1,
                                  u1 < units ? u1 * 8 : -1, u1 < units ? u1 * 8 + c : -1};
        float acc[4][TILE_OUTPUTS][4] = {};
        tile_product(normed, stride, w4, c, wrow, acc);
#pragma unroll
        for (int t = 0; t < TILE_OUTPUTS; t += 2) {
            if (wrow[t] < 0) continue;
            int j = wrow[t] + pair;
            float ba[2] = {to_f(b4[j]), to_f(b4[j + 1])}, bb[2] = {to_f(b4[j + c]), to_f(b4[j + c + 1])};
#pragma unroll
            for (int m = 0; m < 4; m++) {
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int row = m * 16 + group + half * 8;
                    if (row >= rows) continue;
                    unsigned g2 = 0;
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float a = to_f(to_t(acc[m][t][half * 2 + e] + ba[e]));
                        float b = to_f(to_t(acc[m][t + 1][half * 2 + e] + bb[e]));
                        g2 |= (unsigned)to_t(a * b) << (16 * e);
                    }
                    *reinterpret_cast<unsigned*>(gated + row * gated_stride + j) = g2;
                }
            }
        }
    }
}

// Steps 2 and 3 of the feed-forward half over a normalised tile (see ffn): tile_gate into the
// shared tile `gated`, then conv5 over that, its bias and the residual added in float into x,
// stored once.
__device__ __forceinline__ void tile_feed_forward(const T* normed, T* gated, const T* __restrict__ w4,
                                                  const T* __restrict__ b4, const T* __restrict__ w5,
                                                  const T* __restrict__ b5, T* x, i64 p0, i64 pixels, int c) {
    int stride = tile_stride(c);
    tile_gate(normed, w4, b4, c, gated, stride, TILE_ROWS, 0, 1);
    __syncthreads();
    tile_product_store(gated, stride, w5, c, c, b5, x, p0, pixels, true, 0, 1);
}

// LayerNorm, conv4 and SimpleGate (ffn's first steps, the same bits) into the gated map `gated`
// (c channels per pixel), for conv5 to follow as a product: TILE_ROWS pixels per block, grid
// (pixel tiles, splits), block y taking the gate passes y, y + gridDim.y, ... of 64 gated
// channels each, so small maps with many channels fill the GPU.
extern "C" __global__ void __launch_bounds__(TILE_WARPS * 32)
    norm_gate(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
              const T* __restrict__ w4, const T* __restrict__ b4, T* __restrict__ gated, i64 pixels, int c,
              float eps) {
    await_inputs();
    i64 p0 = (i64)blockIdx.x * TILE_ROWS;
    const T* normed = normalized_tile(x, gamma, beta, p0, pixels, c, eps);
    tile_gate(normed, w4, b4, c, gated + p0 * c, c, pixels - p0, blockIdx.y, gridDim.y);
}

// x += conv5(SimpleGate(conv4(LayerNorm(x)))) in place on `pixels` pixels of `c` channels
// (γ folded into conv5; w4 [2c][c], w5 [c][c] row-major, biases in half), TILE_ROWS pixels
// per block of TILE_WARPS warps, with nothing between the steps leaving shared memory: the
// block's pixels normalised (tile_normalize) into the tile `normed`, then tile_feed_forward.
// Dynamic shared memory: two tiles, 2 · TILE_ROWS · tile_stride(c) halves.
extern "C" __global__ void __launch_bounds__(TILE_WARPS * 32)
    ffn(T* x, const float* __restrict__ gamma, const float* __restrict__ beta, const T* __restrict__ w4,
        const T* __restrict__ b4, const T* __restrict__ w5, const T* __restrict__ b5, i64 pixels, int c,
        float eps) {
    await_inputs();
    DYNAMIC_SHARED(shared);
    T* normed = reinterpret_cast<T*>(shared);
    T* gated = normed + TILE_ROWS * tile_stride(c);
    i64 p0 = (i64)blockIdx.x * TILE_ROWS;
    tile_zero_padding(normed, c);
    tile_zero_padding(gated, c);
    tile_normalize(x, gamma, beta, normed, p0, pixels, c, eps);
    tile_feed_forward(normed, gated, w4, b4, w5, b5, x, p0, pixels, c);
}

// The whole second half of a NAFBlock in place on x: x += conv3(g · s) (the gated features
// `g` of the depthwise step scaled by their image's attention vector s [n][c], β folded into
// w3 and b3; `hw` pixels per image), then the feed-forward half as ffn. The scaled features
// are rounded to half in shared memory (the launches round W3 · diag(s) instead); x is
// stored after conv3, and read back (by this block only) for the LayerNorm.
extern "C" __global__ void __launch_bounds__(TILE_WARPS * 32)
    attend_ffn(T* x, const T* __restrict__ g, const float* __restrict__ s, const T* __restrict__ w3,
               const T* __restrict__ b3, i64 hw, const float* __restrict__ gamma, const float* __restrict__ beta,
               const T* __restrict__ w4, const T* __restrict__ b4, const T* __restrict__ w5,
               const T* __restrict__ b5, i64 pixels, int c, float eps) {
    await_inputs();
    DYNAMIC_SHARED(shared);
    int stride = tile_stride(c);
    T* normed = reinterpret_cast<T*>(shared);
    T* gated = normed + TILE_ROWS * stride;
    i64 p0 = (i64)blockIdx.x * TILE_ROWS;
    tile_zero_padding(normed, c);
    tile_zero_padding(gated, c);
    int groups = c / 8;
    for (int i = threadIdx.x; i < TILE_ROWS * groups; i += blockDim.x) {
        int r = i / groups, k = i % groups * 8;
        i64 p = p0 + r;
        float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, sv[8];
        if (p < pixels) {
            load8(g + p * c + k, v);
            load8f(s + p / hw * c + k, sv);
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] *= sv[j];
        }
        store8(gated + r * stride + k, v);
    }
    __syncthreads();
    tile_product_store(gated, stride, w3, c, c, b3, x, p0, pixels, true, 0, 1);
    __syncthreads();
    tile_normalize(x, gamma, beta, normed, p0, pixels, c, eps);
    tile_feed_forward(normed, gated, w4, b4, w5, b5, x, p0, pixels, c);
}
#endif
