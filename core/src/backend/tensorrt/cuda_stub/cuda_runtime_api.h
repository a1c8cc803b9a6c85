/* Stand-in for the CUDA runtime header, used by core/build.rs only when no CUDA toolkit
 * headers are found: it declares just the opaque handle types the TensorRT headers name. The
 * shim calls no CUDA function through headers (it resolves libcudart with dlsym). */
#ifndef MASKDCPT_CUDA_RUNTIME_API_STUB_H
#define MASKDCPT_CUDA_RUNTIME_API_STUB_H
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
#endif
