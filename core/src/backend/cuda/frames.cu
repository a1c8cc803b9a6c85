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
