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

__device__ __forceinline__ i64 global_index() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }

// intro: 3×3 conv, zero padding, planar float image (n × 3 × h × w) → NHWC `cout` channels.
// w: [tap = ci*9 + ky*3 + kx][cout] (rearranged once), b: [cout]. A thread per pixel and 8
// output channels; neighbouring threads take neighbouring pixels of one channel group, so
// their weight loads coincide and their image loads are contiguous.
extern "C" __global__ void conv_in(const float* __restrict__ img, const float* __restrict__ w,
                                   const float* __restrict__ b, T* __restrict__ out, int n, int h,
                                   int wd, int cout) {
    i64 pixels = (i64)n * h * wd;
    i64 idx = global_index();
    if (idx >= pixels * (cout / 8)) return;
    int co = (int)(idx / pixels) * 8;
    i64 p = idx % pixels;
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
                float v[8];
                load8(px + ci, v);
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    a0 += wt[(ci + j) * 3] * v[j];
                    a1 += wt[(ci + j) * 3 + 1] * v[j];
                    a2 += wt[(ci + j) * 3 + 2] * v[j];
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

__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int offset = LN_LANES / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// LayerNorm over the `c` channels of each pixel (biased variance, two passes, float
// statistics), affine. Eight lanes per pixel, each taking 8 channels in turn; blockDim.x is
// a multiple of 32 and the grid covers whole warps (lanes past the last pixel only help the
// shuffles).
extern "C" __global__ void layer_norm(const T* __restrict__ x, const float* __restrict__ gamma,
                                      const float* __restrict__ beta, T* __restrict__ y, i64 pixels,
                                      int c, float eps) {
    i64 p = global_index() / LN_LANES;
    int lane = threadIdx.x % LN_LANES;
    bool live = p < pixels;
    const T* row = x + (live ? p : 0) * c;
    float v[8], s = 0.f;
    for (int i = lane * 8; live && i < c; i += LN_LANES * 8) {
        load8(row + i, v);
#pragma unroll
        for (int j = 0; j < 8; j++) s += v[j];
    }
    float mean = group_sum(s) / c, q = 0.f;
    for (int i = lane * 8; live && i < c; i += LN_LANES * 8) {
        load8(row + i, v);
#pragma unroll
        for (int j = 0; j < 8; j++) q += (v[j] - mean) * (v[j] - mean);
    }
    float rstd = rsqrtf(group_sum(q) / c + eps);
    if (!live) return;
    for (int i = lane * 8; i < c; i += LN_LANES * 8) {
        float g[8], bb[8];
        load8(row + i, v);
        load8f(gamma + i, g);
        load8f(beta + i, bb);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = (v[j] - mean) * rstd * g[j] + bb[j];
        store8(y + p * c + i, v);
    }
}

#define DW_PIXELS 8

// Depthwise 3×3 (zero padding) on the 2c channels of `t`, SimpleGate (channel k times channel
// k + c) into `g` (c channels), and the per-image channel sums of `g` added into `pool` (float,
// zeroed before). wd: [tap][2c] (rearranged once), bd: [2c]. A thread runs 8 channels of
// DW_PIXELS consecutive pixels; block (channel groups × pixel strips) = 256 threads, grid
// (pixel blocks, channel-group blocks, images).
extern "C" __global__ void dw_gate_pool(const T* __restrict__ t, const float* __restrict__ wd,
                                        const float* __restrict__ bd, T* __restrict__ g,
                                        float* __restrict__ pool, int h, int w, int c) {
    __shared__ float partial[256][9];
    int k = (blockIdx.y * blockDim.x + threadIdx.x) * 8;
    int im = blockIdx.z;
    i64 hw = (i64)h * w;
    i64 p0 = ((i64)blockIdx.x * blockDim.y + threadIdx.y) * DW_PIXELS;
    int slot = threadIdx.y * blockDim.x + threadIdx.x;
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
#pragma unroll
    for (int i = 0; i < 8; i++) partial[slot][i] = sum[i];
    __syncthreads();
    if (threadIdx.y == 0 && k < c) {
        for (int r = 1; r < blockDim.y; r++) {
#pragma unroll
            for (int i = 0; i < 8; i++) sum[i] += partial[r * blockDim.x + threadIdx.x][i];
        }
#pragma unroll
        for (int i = 0; i < 8; i++) atomicAdd(pool + (i64)im * c + k + i, sum[i]);
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Channel attention vector: s[im][o] = b[o] + Σ_i W[o][i] · pool[im][i] / hw. A warp per
// output, its lanes striding over the inputs of W's row (W: [o][i], PyTorch layout).
extern "C" __global__ void sca_vector(const float* __restrict__ pool, const float* __restrict__ w,
                                      const float* __restrict__ b, float* __restrict__ s, int n, int c,
                                      float inv_hw) {
    i64 out = global_index() / 32;
    int lane = threadIdx.x % 32;
    if (out >= (i64)n * c) return;
    int o = (int)(out % c);
    const float* mean = pool + (out / c) * c;
    const float* row = w + (i64)o * c;
    float acc = 0.f;
    for (int i = lane; i < c; i += 32) acc += row[i] * mean[i];
    acc = warp_sum(acc);
    if (lane == 0) s[out] = b[o] + acc * inv_hw;
}

// Per-image conv3 weights with the attention folded in: out[im][o][i] = w[o][i] · s[im][i]
// (so conv3(g · s) is one product per image, with no pass over g).
extern "C" __global__ void scale_weights(const T* __restrict__ w, const float* __restrict__ s,
                                         T* __restrict__ out, int n, int c) {
    i64 idx = global_index() * 8;
    i64 square = (i64)c * c;
    if (idx >= n * square) return;
    i64 im = idx / square;
    int i = (int)(idx % c);
    float v[8], sv[8];
    load8(w + idx % square, v);
    load8f(s + im * c + i, sv);
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] *= sv[j];
    store8(out + idx, v);
}

// SimpleGate: g[p][k] = t[p][k] · t[p][k + c] (t has 2c channels), 8 channels per thread.
extern "C" __global__ void gate(const T* __restrict__ t, T* __restrict__ g, i64 pixels, int c) {
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

// PixelShuffle(2) of t (n × h × w × 4c) added into out (n × 2h × 2w × c, the skip, in place):
// channel 4k + 2i + j of low-resolution pixel (y, x) lands in channel k of pixel (2y+i, 2x+j).
// A thread per low-resolution pixel and 8 output channels (32 source channels).
extern "C" __global__ void shuffle_add(const T* __restrict__ t, T* __restrict__ out, int n, int h,
                                       int w, int c) {
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

// ---- Caller frames in device memory (maskdcpt_restore_device) ----
//
// The conversions mirror src/pixels.rs operation for operation (round-to-nearest intrinsics,
// so no multiply-add is contracted), so a frame restored on the device gets the bytes the
// host path writes for the same network output.

// A frame: mirrors `FrameArgs` in frames.rs (104 bytes).
struct Frame {
    unsigned long long planes[3];  // device address of each plane
    i64 strides[3];                // bytes between row starts
    int width, height;
    int kind;                      // 0 packed, 1 planar f32, 2 NV12
    int sample;                    // packed: 0 u8, 1 u16, 2 f32
    int channels;                  // packed: samples per pixel
    int rgb[3];                    // packed: sample index of R, G and B
    int alpha;                     // packed: sample index of alpha, or -1
    float kr, kb, offset, luma_scale, chroma_scale;  // NV12 matrix and range
};

__device__ __forceinline__ const unsigned char* frame_row(const Frame& f, int plane, int y) {
    return reinterpret_cast<const unsigned char*>(f.planes[plane]) + (i64)y * f.strides[plane];
}

__device__ __forceinline__ unsigned char* frame_row_mut(const Frame& f, int plane, int y) {
    return reinterpret_cast<unsigned char*>(f.planes[plane]) + (i64)y * f.strides[plane];
}

__device__ __forceinline__ float clamp01(float v) { return fminf(fmaxf(v, 0.0f), 1.0f); }

// Source index of output index i on an axis of length n (image.rs `pad_index`); -1 is a zero.
__device__ __forceinline__ int pad_index(int i, int n, int reflect) {
    if (i < n) return i;
    if (!reflect) return -1;
    if (n == 1) return 0;
    int period = 2 * (n - 1), r = i % period;
    return r < n ? r : period - r;
}

// YuvMatrix::to_rgb.
__device__ void yuv_to_rgb(const Frame& f, int y, int cb, int cr, float* rgb) {
    float luma = __fdiv_rn(__fsub_rn((float)y, f.offset), f.luma_scale);
    float u = __fdiv_rn(__fsub_rn((float)cb, 128.0f), f.chroma_scale);
    float v = __fdiv_rn(__fsub_rn((float)cr, 128.0f), f.chroma_scale);
    float r = __fadd_rn(luma, __fmul_rn(__fmul_rn(2.0f, __fsub_rn(1.0f, f.kr)), v));
    float b = __fadd_rn(luma, __fmul_rn(__fmul_rn(2.0f, __fsub_rn(1.0f, f.kb)), u));
    float g = __fdiv_rn(__fsub_rn(__fsub_rn(luma, __fmul_rn(f.kr, r)), __fmul_rn(f.kb, b)),
                        __fsub_rn(__fsub_rn(1.0f, f.kr), f.kb));
    rgb[0] = clamp01(r), rgb[1] = clamp01(g), rgb[2] = clamp01(b);
}

// YuvMatrix::luma of clamped RGB.
__device__ __forceinline__ float frame_luma(const Frame& f, const float* rgb) {
    float r = clamp01(rgb[0]), g = clamp01(rgb[1]), b = clamp01(rgb[2]);
    float kg = __fsub_rn(__fsub_rn(1.0f, f.kr), f.kb);
    return __fadd_rn(__fadd_rn(__fmul_rn(f.kr, r), __fmul_rn(kg, g)), __fmul_rn(f.kb, b));
}

// pixels.rs `code`: rounded (half away from zero) and clamped to [0, 255]; NaN gives 0.
__device__ __forceinline__ unsigned char code8(float v) {
    return (unsigned char)fminf(fmaxf(roundf(v), 0.0f), 255.0f);
}

// Sample i of a packed row as a value (integers scaled to [0, 1]).
__device__ __forceinline__ float read_sample(int sample, const unsigned char* row, int i) {
    if (sample == 0) return __fdiv_rn((float)row[i], 255.0f);
    if (sample == 1) return __fdiv_rn((float)reinterpret_cast<const unsigned short*>(row)[i], 65535.0f);
    return reinterpret_cast<const float*>(row)[i];
}

// Stores v as sample i of a packed row (integers clamped to [0, 1], scaled and rounded).
__device__ __forceinline__ void write_sample(int sample, unsigned char* row, int i, float v) {
    if (sample == 0) {
        row[i] = (unsigned char)roundf(__fmul_rn(clamp01(v), 255.0f));
    } else if (sample == 1) {
        reinterpret_cast<unsigned short*>(row)[i] = (unsigned short)roundf(__fmul_rn(clamp01(v), 65535.0f));
    } else {
        reinterpret_cast<float*>(row)[i] = v;
    }
}

// pixels.rs `decode` of pixel (x, y).
__device__ void frame_pixel(const Frame& f, int x, int y, float* rgb) {
    if (f.kind == 0) {
        const unsigned char* row = frame_row(f, 0, y);
        for (int c = 0; c < 3; c++) rgb[c] = read_sample(f.sample, row, x * f.channels + f.rgb[c]);
    } else if (f.kind == 1) {
        for (int c = 0; c < 3; c++) rgb[c] = reinterpret_cast<const float*>(frame_row(f, c, y))[x];
    } else {
        const unsigned char* chroma = frame_row(f, 1, y / 2);
        yuv_to_rgb(f, frame_row(f, 0, y)[x], chroma[x & ~1], chroma[x | 1], rgb);
    }
}

// frame → the network's planar float input (1 × 3 × h × w), padded bottom/right (reflect
// or zero, image.rs `pad_planar_into`). A thread per padded pixel.
extern "C" __global__ void frame_in(Frame f, float* __restrict__ img, int h, int w, int reflect) {
    i64 i = global_index();
    i64 plane = (i64)h * w;
    if (i >= plane) return;
    int y = (int)(i / w), x = (int)(i % w);
    int sy = pad_index(y, f.height, reflect), sx = pad_index(x, f.width, reflect);
    float rgb[3] = {0.0f, 0.0f, 0.0f};
    if (sy >= 0 && sx >= 0) frame_pixel(f, sx, sy, rgb);
    for (int c = 0; c < 3; c++) img[c * plane + i] = rgb[c];
}

// The network's planar float output (3 × h × w) → the top-left width × height of frame `f`
// (pixels.rs `encode`); alpha comes from `src` when it has alpha, else 255. RGB formats: a
// thread per pixel; NV12: a thread per 2×2 block.
extern "C" __global__ void frame_out(const float* __restrict__ img, int h, int w, Frame f, Frame src) {
    i64 i = global_index();
    i64 plane = (i64)h * w;
    if (f.kind == 2) {
        int bw = f.width / 2;
        if (i >= (i64)bw * (f.height / 2)) return;
        int x = 2 * (int)(i % bw), y = 2 * (int)(i / bw);
        float block[4][3];
        for (int k = 0; k < 4; k++) {
            int px = x + (k & 1), py = y + (k >> 1);
            for (int c = 0; c < 3; c++) block[k][c] = img[c * plane + (i64)py * w + px];
            frame_row_mut(f, 0, py)[px] = code8(__fadd_rn(f.offset, __fmul_rn(f.luma_scale, frame_luma(f, block[k]))));
        }
        float mean[3];
        for (int c = 0; c < 3; c++) {
            float sum = clamp01(block[0][c]);
            for (int k = 1; k < 4; k++) sum = __fadd_rn(sum, clamp01(block[k][c]));
            mean[c] = __fdiv_rn(sum, 4.0f);
        }
        float luma = frame_luma(f, mean);
        float u = __fdiv_rn(__fsub_rn(clamp01(mean[2]), luma), __fmul_rn(2.0f, __fsub_rn(1.0f, f.kb)));
        float v = __fdiv_rn(__fsub_rn(clamp01(mean[0]), luma), __fmul_rn(2.0f, __fsub_rn(1.0f, f.kr)));
        unsigned char* chroma = frame_row_mut(f, 1, y / 2);
        chroma[x] = code8(__fadd_rn(128.0f, __fmul_rn(f.chroma_scale, u)));
        chroma[x + 1] = code8(__fadd_rn(128.0f, __fmul_rn(f.chroma_scale, v)));
        return;
    }
    if (i >= (i64)f.width * f.height) return;
    int y = (int)(i / f.width), x = (int)(i % f.width);
    i64 at = (i64)y * w + x;
    if (f.kind == 1) {
        for (int c = 0; c < 3; c++) reinterpret_cast<float*>(frame_row_mut(f, c, y))[x] = img[c * plane + at];
        return;
    }
    unsigned char* row = frame_row_mut(f, 0, y);
    for (int c = 0; c < 3; c++) write_sample(f.sample, row, x * f.channels + f.rgb[c], img[c * plane + at]);
    if (f.alpha >= 0) {
        unsigned char a = 255;
        if (src.kind == 0 && src.alpha >= 0) a = frame_row(src, 0, y)[x * src.channels + src.alpha];
        row[x * f.channels + f.alpha] = a;
    }
}
