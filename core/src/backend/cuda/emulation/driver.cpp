// Entry points of the emulated kernels (after shim.cpp, kernels.cu and frames.cu): each runs
// its kernel over the grid `dims` (grid x, y, z, block x, y, z, dynamic shared bytes) with
// the arguments the engine passes, and returns what `launch` (shim.cpp) reports.

extern "C" int emulate_conv_in(const unsigned* dims, const float* img, const float* w, const float* b, T* out,
                               int n, int h, int wd, int cout) {
    return launch(dims, [&] { conv_in(img, w, b, out, n, h, wd, cout); });
}
extern "C" int emulate_conv_out(const unsigned* dims, const T* x, const float* w, const float* b,
                                const float* residual, float* out, int n, int h, int wd, int cin) {
    return launch(dims, [&] { conv_out(x, w, b, residual, out, n, h, wd, cin); });
}
extern "C" int emulate_layer_norm(const unsigned* dims, const T* x, const float* gamma, const float* beta, T* y,
                                  i64 pixels, int c, float eps) {
    return launch(dims, [&] { layer_norm(x, gamma, beta, y, pixels, c, eps); });
}
extern "C" int emulate_layer_norm_wide(const unsigned* dims, const T* x, const float* gamma, const float* beta,
                                       T* y, i64 pixels, int c, float eps) {
    return launch(dims, [&] { layer_norm_wide(x, gamma, beta, y, pixels, c, eps); });
}
extern "C" int emulate_dw_gate_pool(const unsigned* dims, const T* t, const float* wd, const float* bd, T* g,
                                    float* partials, int h, int w, int c) {
    return launch(dims, [&] { dw_gate_pool(t, wd, bd, g, partials, h, w, c); });
}
extern "C" int emulate_dw_gate_pool_rows1(const unsigned* dims, const T* t, const float* wd, const float* bd,
                                          T* g, float* partials, int h, int w, int c) {
    return launch(dims, [&] { dw_gate_pool_rows1(t, wd, bd, g, partials, h, w, c); });
}
extern "C" int emulate_dw_gate_pool_rows2(const unsigned* dims, const T* t, const float* wd, const float* bd,
                                          T* g, float* partials, int h, int w, int c) {
    return launch(dims, [&] { dw_gate_pool_rows2(t, wd, bd, g, partials, h, w, c); });
}
extern "C" int emulate_dw_gate_pool_rows3(const unsigned* dims, const T* t, const float* wd, const float* bd,
                                          T* g, float* partials, int h, int w, int c) {
    return launch(dims, [&] { dw_gate_pool_rows3(t, wd, bd, g, partials, h, w, c); });
}
extern "C" int emulate_dw_gate_pool_rows4(const unsigned* dims, const T* t, const float* wd, const float* bd,
                                          T* g, float* partials, int h, int w, int c) {
    return launch(dims, [&] { dw_gate_pool_rows4(t, wd, bd, g, partials, h, w, c); });
}
extern "C" int emulate_pool_sum(const unsigned* dims, const float* partials, float* pool, int blocks, i64 channels) {
    return launch(dims, [&] { pool_sum(partials, pool, blocks, channels); });
}
extern "C" int emulate_sca_vector(const unsigned* dims, const float* pool, const float* w, const float* b,
                                  float* s, int n, int c, float inv_hw) {
    return launch(dims, [&] { sca_vector(pool, w, b, s, n, c, inv_hw); });
}
extern "C" int emulate_attention_weights(const unsigned* dims, const float* pool, const float* w, const float* b,
                                         const T* w3, T* out, int c, float inv_hw) {
    return launch(dims, [&] { attention_weights(pool, w, b, w3, out, c, inv_hw); });
}
extern "C" int emulate_gate(const unsigned* dims, const T* t, T* g, i64 pixels, int c) {
    return launch(dims, [&] { gate(t, g, pixels, c); });
}
extern "C" int emulate_window_row_sums(const unsigned* dims, const T* g, float* sums, int n, int h, int w, int c,
                                       int k, int seg) {
    return launch(dims, [&] { window_row_sums(g, sums, n, h, w, c, k, seg); });
}
extern "C" int emulate_window_means(const unsigned* dims, const float* sums, T* means, int n, int h, int w, int c,
                                    int k, int seg, int area) {
    return launch(dims, [&] { window_means(sums, means, n, h, w, c, k, seg, area); });
}
extern "C" int emulate_multiply(const unsigned* dims, T* x, const T* s, i64 count) {
    return launch(dims, [&] { multiply(x, s, count); });
}
extern "C" int emulate_shuffle_add(const unsigned* dims, const T* t, T* out, int n, int h, int w, int c) {
    return launch(dims, [&] { shuffle_add(t, out, n, h, w, c); });
}
extern "C" int emulate_frame_in(const unsigned* dims, const Frame* f, float* img, int h, int w, int reflect) {
    return launch(dims, [&] { frame_in(*f, img, h, w, reflect); });
}
extern "C" int emulate_frame_out(const unsigned* dims, const float* img, int h, int w, const Frame* f,
                                 const Frame* src) {
    return launch(dims, [&] { frame_out(img, h, w, *f, *src); });
}
#ifdef MASKDCPT_FP16
extern "C" int emulate_ffn(const unsigned* dims, T* x, const float* gamma, const float* beta, const T* w4,
                           const T* b4, const T* w5, const T* b5, i64 pixels, int c, float eps) {
    return launch(dims, [&] { ffn(x, gamma, beta, w4, b4, w5, b5, pixels, c, eps); });
}
extern "C" int emulate_attend_ffn(const unsigned* dims, T* x, const T* g, const float* s, const T* w3,
                                  const T* b3, i64 hw, const float* gamma, const float* beta, const T* w4,
                                  const T* b4, const T* w5, const T* b5, i64 pixels, int c, float eps) {
    return launch(dims, [&] { attend_ffn(x, g, s, w3, b3, hw, gamma, beta, w4, b4, w5, b5, pixels, c, eps); });
}
extern "C" int emulate_norm_conv1(const unsigned* dims, const T* x, const float* gamma, const float* beta,
                                  const T* w1, const T* b1, T* expanded, i64 pixels, int c, float eps) {
    return launch(dims, [&] { norm_conv1(x, gamma, beta, w1, b1, expanded, pixels, c, eps); });
}
extern "C" int emulate_norm_gate(const unsigned* dims, const T* x, const float* gamma, const float* beta,
                                 const T* w4, const T* b4, T* gated, i64 pixels, int c, float eps) {
    return launch(dims, [&] { norm_gate(x, gamma, beta, w4, b4, gated, pixels, c, eps); });
}
#endif
