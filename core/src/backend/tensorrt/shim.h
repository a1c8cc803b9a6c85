/* C interface of shim.cpp, the TensorRT shim of maskdcpt-core's `tensorrt` feature. Rust
 * declares the same items by hand in `ffi.rs`; keep the two in step. Every function returns 0
 * on success, or non-zero after writing a NUL-terminated message into `err` (`err_len` bytes). */
#ifndef MASKDCPT_TRT_SHIM_H
#define MASKDCPT_TRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* mdt_layer.kind: the records of network.rs `Layer`. */
enum {
    MDT_INPUT = 0,
    MDT_CAST = 1,
    MDT_CONV = 2,
    MDT_NORMALIZE = 3,
    MDT_MEAN = 4,
    MDT_SLICE_CHANNELS = 5,
    MDT_CONSTANT = 6,
    MDT_ELEMENTWISE = 7,
    MDT_PIXEL_SHUFFLE = 8
};
/* Element types (mdt_weights.type, cast targets). */
enum { MDT_F32 = 0, MDT_F16 = 1 };
/* Element-wise operations. */
enum { MDT_SUM = 0, MDT_PROD = 1 };

/* Host values of one weight tensor; `count` 0 means none. */
typedef struct mdt_weights {
    int32_t type;
    const void *values;
    int64_t count;
} mdt_weights;

/* One layer; fields a kind does not use are 0. `input`/`input2` index earlier layers. */
typedef struct mdt_layer {
    int32_t kind;
    int32_t input;
    int32_t input2;   /* ELEMENTWISE: second operand */
    int32_t channels; /* CONV: output channels; SLICE_CHANNELS, CONSTANT, PIXEL_SHUFFLE: output channels */
    int32_t kernel;   /* CONV */
    int32_t stride;   /* CONV */
    int32_t pad;      /* CONV */
    int32_t groups;   /* CONV */
    int32_t start;    /* SLICE_CHANNELS: first channel */
    int32_t op;       /* ELEMENTWISE: MDT_SUM/MDT_PROD; CAST: MDT_F32/MDT_F16 */
    float eps;        /* NORMALIZE */
    mdt_weights weight; /* CONV kernel, NORMALIZE scale, CONSTANT values */
    mdt_weights bias;   /* CONV bias, NORMALIZE shift */
} mdt_layer;

/* A network: input "input" FP32 [1, 3, H, W] (padded), output "output" FP32. */
typedef struct mdt_network {
    const mdt_layer *layers;
    int32_t layer_count;
    int32_t output;
} mdt_network;

/* Optimization profile in padded pixels. */
typedef struct mdt_profile {
    int64_t min_h, min_w, opt_h, opt_w, max_h, max_w;
} mdt_profile;

/* Bytes allocated by the shim; release with mdt_free. */
typedef struct mdt_bytes {
    uint8_t *data;
    size_t len;
} mdt_bytes;

/* The loaded library's version (major * 10000 + minor * 100 + patch). */
int mdt_library_version(int32_t *version, char *err, size_t err_len);
/* Compute capability of the current CUDA device (through libcudart, loaded at run time). */
int mdt_compute_capability(int32_t *major, int32_t *minor, char *err, size_t err_len);
/* Builds and serializes an engine. `timing_in` (may be empty) seeds the timing cache;
 * `timing_out` receives the updated one. */
int mdt_build(const mdt_network *network, const mdt_profile *profile, uint64_t workspace_bytes,
              const uint8_t *timing_in, size_t timing_in_len, mdt_bytes *engine, mdt_bytes *timing_out,
              char *err, size_t err_len);
/* Frees bytes returned by mdt_build. */
void mdt_free(mdt_bytes bytes);

/* A deserialized engine with one execution context. */
typedef struct mdt_runtime mdt_runtime;
int mdt_runtime_create(const uint8_t *engine, size_t len, mdt_runtime **out, char *err, size_t err_len);
/* Enqueues one run on `stream` (a cudaStream_t): `input` and `output` are device pointers to
 * FP32 [1, 3, height, width]. Returns once enqueued; synchronize the stream to wait. */
int mdt_runtime_enqueue(mdt_runtime *runtime, int64_t height, int64_t width, const float *input, float *output,
                        void *stream, char *err, size_t err_len);
/* Runs once on host memory: copies `input` (FP32 [1, 3, height, width]) to device buffers the
 * runtime keeps (grown on demand), enqueues on the runtime's own stream, copies the result to
 * `output` (same shape) and waits. */
int mdt_runtime_run_host(mdt_runtime *runtime, int64_t height, int64_t width, const float *input, float *output,
                         char *err, size_t err_len);
void mdt_runtime_destroy(mdt_runtime *runtime);

#ifdef __cplusplus
}
#endif

#endif
