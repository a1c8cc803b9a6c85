// TensorRT shim of maskdcpt-core's `tensorrt` feature (C interface in shim.h).
//
// Links nothing from TensorRT or CUDA: libnvinfer.so.<NV_TENSORRT_MAJOR> and libcudart are
// opened with dlopen when first needed, and only their C entry points are resolved
// (createInferBuilder_INTERNAL, createInferRuntime_INTERNAL, getInferLibVersion; cudaGetDevice,
// cudaDeviceGetAttribute, cudaMalloc/Free, cudaMemcpyAsync, cudaStream*); everything else is a virtual call on the objects
// they return. A host without TensorRT loads this code fine and gets an error naming the
// missing library.
//
// Networks are strongly typed on every supported version (TensorRT 10 through the creation
// flag; TensorRT 11 always), so the casts emitted by network.rs decide every precision: FP16
// engines have FP16 weights and tensors, with normalizations and means in FP32.

#include "shim.h"

#include <NvInfer.h>
#include <dlfcn.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if NV_TENSORRT_MAJOR < 10
#error "maskdcpt's TensorRT shim needs TensorRT 10 or newer"
#endif

// The layout Rust's `ffi.rs` declares (checked there by `structs_match_the_header`).
static_assert(sizeof(mdt_weights) == 24 && offsetof(mdt_weights, values) == 8 && offsetof(mdt_weights, count) == 16,
              "mdt_weights layout");
static_assert(sizeof(mdt_layer) == 96 && offsetof(mdt_layer, eps) == 40 && offsetof(mdt_layer, weight) == 48 &&
                  offsetof(mdt_layer, bias) == 72,
              "mdt_layer layout");
static_assert(sizeof(mdt_network) == 16 && offsetof(mdt_network, layer_count) == 8 && offsetof(mdt_network, output) == 12,
              "mdt_network layout");
static_assert(sizeof(mdt_profile) == 48 && sizeof(mdt_bytes) == 16, "mdt_profile and mdt_bytes layout");

namespace {

using namespace nvinfer1;

#define MDT_STR2(x) #x
#define MDT_STR(x) MDT_STR2(x)

int fail(char *err, size_t err_len, std::string const &message) {
    if (err_len > 0) {
        std::snprintf(err, err_len, "%s", message.c_str());
    }
    return 1;
}

// Keeps the last error TensorRT reported, for messages.
class Logger : public ILogger {
public:
    void log(Severity severity, AsciiChar const *msg) noexcept override {
        if (severity <= Severity::kERROR) {
            last = msg;
        }
    }
    std::string last;
};

// The TensorRT library, opened once (never closed: its global destructors must not run early).
struct Library {
    void *handle = nullptr;
    void *(*create_builder)(void *, int32_t) = nullptr;
    void *(*create_runtime)(void *, int32_t) = nullptr;
    int32_t (*version)() = nullptr;
    std::string error;
};

Library const &library() {
    static Library const lib = [] {
        Library l;
        char const *name = "libnvinfer.so." MDT_STR(NV_TENSORRT_MAJOR);
        l.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
        if (l.handle == nullptr) {
            l.error = std::string("TensorRT library not found: ") + name + " (" + dlerror() +
                      "); install TensorRT " MDT_STR(NV_TENSORRT_MAJOR) ".x or use the CPU backend";
            return l;
        }
        l.create_builder = reinterpret_cast<void *(*)(void *, int32_t)>(dlsym(l.handle, "createInferBuilder_INTERNAL"));
        l.create_runtime = reinterpret_cast<void *(*)(void *, int32_t)>(dlsym(l.handle, "createInferRuntime_INTERNAL"));
        l.version = reinterpret_cast<int32_t (*)()>(dlsym(l.handle, "getInferLibVersion"));
        if (l.create_builder == nullptr || l.create_runtime == nullptr || l.version == nullptr) {
            l.error = std::string(name) + " lacks the TensorRT entry points";
        } else if (l.version() / 10000 != NV_TENSORRT_MAJOR) {
            l.error = "TensorRT " + std::to_string(l.version()) + " found, but maskdcpt was built against TensorRT " +
                      MDT_STR(NV_TENSORRT_MAJOR);
        }
        return l;
    }();
    return lib;
}

template <typename T> struct Destroy {
    void operator()(T *p) const { delete p; }
};
template <typename T> using Ptr = std::unique_ptr<T, Destroy<T>>;

DataType data_type(int32_t t) { return t == MDT_F16 ? DataType::kHALF : DataType::kFLOAT; }

Weights weights(mdt_weights const &w) { return Weights{data_type(w.type), w.values, w.count}; }

Dims dims(std::initializer_list<int64_t> values) {
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values) {
        d.d[i++] = v;
    }
    return d;
}

// Builds the layers of shim.h's records into `net`.
class NetworkBuilder {
public:
    explicit NetworkBuilder(INetworkDefinition &net) : net_(net) {}

    // Adds every layer; returns an empty string or the first problem.
    std::string add(mdt_network const &desc) {
        for (int32_t i = 0; i < desc.layer_count; ++i) {
            mdt_layer const &l = desc.layers[i];
            if ((l.kind != MDT_INPUT && l.kind != MDT_CONSTANT && (l.input < 0 || l.input >= i)) ||
                (l.kind == MDT_ELEMENTWISE && (l.input2 < 0 || l.input2 >= i))) {
                return "TensorRT network: layer " + std::to_string(i) + " reads a later layer";
            }
            ITensor *out = layer(l);
            if (out == nullptr) {
                return "TensorRT refused layer " + std::to_string(i) + " (kind " + std::to_string(l.kind) + ")";
            }
            tensors_.push_back(out);
        }
        if (desc.output < 0 || desc.output >= desc.layer_count) {
            return "TensorRT network: output index out of range";
        }
        ITensor *output = tensors_[desc.output];
        output->setName("output");
        net_.markOutput(*output);
        return {};
    }

private:
    ITensor *in(int32_t index) { return tensors_[index]; }

    // [H, W] of `x` (int64 shape tensor).
    ITensor *height_width(ITensor &x) {
        ITensor *shape = net_.addShape(x)->getOutput(0);
        ITensor *indices = constant_i64({2, 3});
        return net_.addGather(*shape, *indices, 0)->getOutput(0);
    }

    ITensor *constant_i64(std::vector<int64_t> values) {
        shape_values_.push_back(std::move(values));
        std::vector<int64_t> const &v = shape_values_.back();
        Weights w{DataType::kINT64, v.data(), static_cast<int64_t>(v.size())};
        return net_.addConstant(dims({static_cast<int64_t>(v.size())}), w)->getOutput(0);
    }

    ITensor *concat(ITensor *a, ITensor *b) {
        ITensor *parts[] = {a, b};
        return net_.addConcatenation(parts, 2)->getOutput(0);
    }

    ITensor *layer(mdt_layer const &l) {
        switch (l.kind) {
        case MDT_INPUT:
            return net_.addInput("input", DataType::kFLOAT, dims({1, 3, -1, -1}));
        case MDT_CAST:
            return net_.addCast(*in(l.input), data_type(l.op))->getOutput(0);
        case MDT_CONV: {
            IConvolutionLayer *c =
                net_.addConvolutionNd(*in(l.input), l.channels, dims({l.kernel, l.kernel}), weights(l.weight),
                                      l.bias.count > 0 ? weights(l.bias) : Weights{data_type(l.weight.type), nullptr, 0});
            if (c == nullptr) {
                return nullptr;
            }
            c->setStrideNd(dims({l.stride, l.stride}));
            c->setPaddingNd(dims({l.pad, l.pad}));
            c->setNbGroups(l.groups);
            return c->getOutput(0);
        }
        case MDT_NORMALIZE: {
            int64_t const c = l.weight.count;
            ITensor *scale = net_.addConstant(dims({1, c, 1, 1}), weights(l.weight))->getOutput(0);
            ITensor *shift = net_.addConstant(dims({1, c, 1, 1}), weights(l.bias))->getOutput(0);
            uint32_t const channel_axis = 1U << 1;
#if NV_TENSORRT_MAJOR >= 11
            INormalizationLayer *n = net_.addNormalizationV2(*in(l.input), *scale, *shift, channel_axis);
#else
            INormalizationLayer *n = net_.addNormalization(*in(l.input), *scale, *shift, channel_axis);
#endif
            if (n == nullptr) {
                return nullptr;
            }
            n->setEpsilon(l.eps);
            return n->getOutput(0);
        }
        case MDT_MEAN:
            return net_.addReduce(*in(l.input), ReduceOperation::kAVG, (1U << 2) | (1U << 3), true)->getOutput(0);
        case MDT_SLICE_CHANNELS: {
            ITensor &x = *in(l.input);
            ISliceLayer *s = net_.addSlice(x, dims({0, l.start, 0, 0}), dims({1, l.channels, 1, 1}), dims({1, 1, 1, 1}));
            s->setInput(2, *concat(constant_i64({1, l.channels}), height_width(x)));
            return s->getOutput(0);
        }
        case MDT_CONSTANT:
            return net_.addConstant(dims({1, l.channels, 1, 1}), weights(l.weight))->getOutput(0);
        case MDT_ELEMENTWISE: {
            ElementWiseOperation op = l.op == MDT_SUM ? ElementWiseOperation::kSUM : ElementWiseOperation::kPROD;
            return net_.addElementWise(*in(l.input), *in(l.input2), op)->getOutput(0);
        }
        case MDT_PIXEL_SHUFFLE: {
            // [1, 4C, H, W] → [C, 2, 2, H, W] → transpose (0, 3, 1, 4, 2) → [C, H, 2, W, 2] → [1, C, 2H, 2W].
            ITensor &x = *in(l.input);
            ITensor *hw = height_width(x);
            IShuffleLayer *split = net_.addShuffle(x);
            split->setInput(1, *concat(constant_i64({l.channels, 2, 2}), hw));
            split->setSecondTranspose(Permutation{{0, 3, 1, 4, 2}});
            ITensor *hw2 = net_.addElementWise(*hw, *constant_i64({2, 2}), ElementWiseOperation::kPROD)->getOutput(0);
            IShuffleLayer *merge = net_.addShuffle(*split->getOutput(0));
            merge->setInput(1, *concat(constant_i64({1, l.channels}), hw2));
            return merge->getOutput(0);
        }
        default:
            return nullptr;
        }
    }

    INetworkDefinition &net_;
    std::vector<ITensor *> tensors_;
    // Constant shape values must outlive the build.
    std::vector<std::vector<int64_t>> shape_values_;
};

int copy_out(IHostMemory const &memory, mdt_bytes *out) {
    out->len = memory.size();
    out->data = static_cast<uint8_t *>(std::malloc(out->len > 0 ? out->len : 1));
    if (out->data == nullptr) {
        return 1;
    }
    std::memcpy(out->data, memory.data(), out->len);
    return 0;
}

} // namespace

struct mdt_runtime {
    Logger logger;
    Ptr<IRuntime> runtime;
    Ptr<ICudaEngine> engine;
    Ptr<IExecutionContext> context;
    // For mdt_runtime_run_host: device buffers (grown on demand) and a private stream.
    void *device_input = nullptr;
    void *device_output = nullptr;
    size_t capacity = 0;
    cudaStream_t stream = nullptr;
    ~mdt_runtime();
};

extern "C" int mdt_library_version(int32_t *version, char *err, size_t err_len) {
    Library const &lib = library();
    if (!lib.error.empty()) {
        return fail(err, err_len, lib.error);
    }
    *version = lib.version();
    return 0;
}

namespace {

// The CUDA runtime, opened once with dlopen; only C entry points are resolved.
struct Cudart {
    void *handle = nullptr;
    int (*get_device)(int *) = nullptr;
    int (*attribute)(int *, int, int) = nullptr;
    int (*malloc)(void **, size_t) = nullptr;
    int (*free)(void *) = nullptr;
    int (*memcpy_async)(void *, void const *, size_t, int, cudaStream_t) = nullptr;
    int (*stream_create)(cudaStream_t *) = nullptr;
    int (*stream_synchronize)(cudaStream_t) = nullptr;
    int (*stream_destroy)(cudaStream_t) = nullptr;
    char const *(*error_string)(int) = nullptr;
};

Cudart const *cudart() {
    static Cudart const *const rt = []() -> Cudart const * {
        for (char const *name : {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"}) {
            void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
            if (h == nullptr) {
                continue;
            }
            auto *c = new Cudart;
            c->handle = h;
            c->get_device = reinterpret_cast<int (*)(int *)>(dlsym(h, "cudaGetDevice"));
            c->attribute = reinterpret_cast<int (*)(int *, int, int)>(dlsym(h, "cudaDeviceGetAttribute"));
            c->malloc = reinterpret_cast<int (*)(void **, size_t)>(dlsym(h, "cudaMalloc"));
            c->free = reinterpret_cast<int (*)(void *)>(dlsym(h, "cudaFree"));
            c->memcpy_async =
                reinterpret_cast<int (*)(void *, void const *, size_t, int, cudaStream_t)>(dlsym(h, "cudaMemcpyAsync"));
            c->stream_create = reinterpret_cast<int (*)(cudaStream_t *)>(dlsym(h, "cudaStreamCreate"));
            c->stream_synchronize = reinterpret_cast<int (*)(cudaStream_t)>(dlsym(h, "cudaStreamSynchronize"));
            c->stream_destroy = reinterpret_cast<int (*)(cudaStream_t)>(dlsym(h, "cudaStreamDestroy"));
            c->error_string = reinterpret_cast<char const *(*)(int)>(dlsym(h, "cudaGetErrorString"));
            if (c->get_device && c->attribute && c->malloc && c->free && c->memcpy_async && c->stream_create &&
                c->stream_synchronize && c->stream_destroy && c->error_string) {
                return c;
            }
            delete c;
        }
        return nullptr;
    }();
    return rt;
}

// "what: CUDA error text" for a failed CUDA runtime call.
std::string cuda_error(Cudart const &c, char const *what, int code) {
    return std::string(what) + " failed: " + c.error_string(code) + " (CUDA error " + std::to_string(code) + ")";
}

} // namespace

extern "C" int mdt_compute_capability(int32_t *major, int32_t *minor, char *err, size_t err_len) {
    Cudart const *c = cudart();
    if (c == nullptr) {
        return fail(err, err_len, "CUDA runtime library (libcudart.so) not found");
    }
    int device = 0;
    // cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76.
    if (c->get_device(&device) != 0 || c->attribute(major, 75, device) != 0 || c->attribute(minor, 76, device) != 0) {
        return fail(err, err_len, "no CUDA device");
    }
    return 0;
}

extern "C" int mdt_build(mdt_network const *network, mdt_profile const *profile, uint64_t workspace_bytes,
                         uint8_t const *timing_in, size_t timing_in_len, mdt_bytes *engine, mdt_bytes *timing_out,
                         char *err, size_t err_len) {
    Library const &lib = library();
    if (!lib.error.empty()) {
        return fail(err, err_len, lib.error);
    }
    Logger logger;
    Ptr<IBuilder> builder(static_cast<IBuilder *>(lib.create_builder(&logger, NV_TENSORRT_VERSION)));
    if (!builder) {
        return fail(err, err_len, "TensorRT could not create a builder: " + logger.last);
    }
#if NV_TENSORRT_MAJOR >= 11
    NetworkDefinitionCreationFlags const flags = 0; // always strongly typed
#else
    NetworkDefinitionCreationFlags const flags = 1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
#endif
    Ptr<INetworkDefinition> net(builder->createNetworkV2(flags));
    Ptr<IBuilderConfig> config(builder->createBuilderConfig());
    if (!net || !config) {
        return fail(err, err_len, "TensorRT could not create a network: " + logger.last);
    }
    std::string const problem = NetworkBuilder(*net).add(*network);
    if (!problem.empty()) {
        return fail(err, err_len, problem + (logger.last.empty() ? "" : ": " + logger.last));
    }
    IOptimizationProfile *p = builder->createOptimizationProfile();
    if (p == nullptr || !p->setDimensions("input", OptProfileSelector::kMIN, dims({1, 3, profile->min_h, profile->min_w})) ||
        !p->setDimensions("input", OptProfileSelector::kOPT, dims({1, 3, profile->opt_h, profile->opt_w})) ||
        !p->setDimensions("input", OptProfileSelector::kMAX, dims({1, 3, profile->max_h, profile->max_w})) ||
        config->addOptimizationProfile(p) < 0) {
        return fail(err, err_len, "TensorRT refused the optimization profile: " + logger.last);
    }
    if (workspace_bytes > 0) {
        config->setMemoryPoolLimit(MemoryPoolType::kWORKSPACE, workspace_bytes);
    }
    Ptr<ITimingCache> timing(config->createTimingCache(timing_in, timing_in_len));
    if (!timing || !config->setTimingCache(*timing, false)) {
        return fail(err, err_len, "TensorRT refused the timing cache: " + logger.last);
    }
    Ptr<IHostMemory> serialized(builder->buildSerializedNetwork(*net, *config));
    if (!serialized) {
        return fail(err, err_len, "TensorRT could not build the engine: " + logger.last);
    }
    Ptr<IHostMemory> timing_bytes(config->getTimingCache()->serialize());
    if (!timing_bytes || copy_out(*serialized, engine) != 0) {
        return fail(err, err_len, "out of host memory copying the TensorRT engine");
    }
    if (copy_out(*timing_bytes, timing_out) != 0) {
        std::free(engine->data);
        return fail(err, err_len, "out of host memory copying the TensorRT timing cache");
    }
    return 0;
}

extern "C" void mdt_free(mdt_bytes bytes) { std::free(bytes.data); }

extern "C" int mdt_runtime_create(uint8_t const *engine, size_t len, mdt_runtime **out, char *err, size_t err_len) {
    Library const &lib = library();
    if (!lib.error.empty()) {
        return fail(err, err_len, lib.error);
    }
    std::unique_ptr<mdt_runtime> rt(new mdt_runtime);
    rt->runtime.reset(static_cast<IRuntime *>(lib.create_runtime(&rt->logger, NV_TENSORRT_VERSION)));
    if (rt->runtime) {
        rt->engine.reset(rt->runtime->deserializeCudaEngine(engine, len));
    }
    if (rt->engine) {
        rt->context.reset(rt->engine->createExecutionContext());
    }
    if (!rt->context) {
        return fail(err, err_len, "TensorRT could not load the engine: " + rt->logger.last);
    }
    *out = rt.release();
    return 0;
}

extern "C" int mdt_runtime_enqueue(mdt_runtime *rt, int64_t height, int64_t width, float const *input, float *output,
                                   void *stream, char *err, size_t err_len) {
    IExecutionContext &c = *rt->context;
    if (!c.setInputShape("input", dims({1, 3, height, width})) ||
        !c.setTensorAddress("input", const_cast<float *>(input)) || !c.setTensorAddress("output", output) ||
        !c.enqueueV3(static_cast<cudaStream_t>(stream))) {
        return fail(err, err_len, "TensorRT could not run " + std::to_string(height) + "×" + std::to_string(width) + ": " +
                                      rt->logger.last);
    }
    return 0;
}

mdt_runtime::~mdt_runtime() {
    if (Cudart const *c = cudart()) {
        if (stream != nullptr) {
            c->stream_synchronize(stream);
            c->stream_destroy(stream);
        }
        c->free(device_input);
        c->free(device_output);
    }
}

extern "C" int mdt_runtime_run_host(mdt_runtime *rt, int64_t height, int64_t width, float const *input, float *output,
                                    char *err, size_t err_len) {
    Cudart const *c = cudart();
    if (c == nullptr) {
        return fail(err, err_len, "CUDA runtime library (libcudart.so) not found");
    }
    size_t const bytes = static_cast<size_t>(3 * height * width) * sizeof(float);
    int code = 0;
    if (rt->stream == nullptr && (code = c->stream_create(&rt->stream)) != 0) {
        return fail(err, err_len, cuda_error(*c, "cudaStreamCreate", code));
    }
    if (bytes > rt->capacity) {
        c->free(rt->device_input);
        c->free(rt->device_output);
        rt->device_input = rt->device_output = nullptr;
        rt->capacity = 0;
        if ((code = c->malloc(&rt->device_input, bytes)) != 0 || (code = c->malloc(&rt->device_output, bytes)) != 0) {
            return fail(err, err_len, cuda_error(*c, "cudaMalloc of the image buffers", code));
        }
        rt->capacity = bytes;
    }
    // cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2.
    if ((code = c->memcpy_async(rt->device_input, input, bytes, 1, rt->stream)) != 0) {
        return fail(err, err_len, cuda_error(*c, "copying the image to the GPU", code));
    }
    if (mdt_runtime_enqueue(rt, height, width, static_cast<float const *>(rt->device_input),
                            static_cast<float *>(rt->device_output), rt->stream, err, err_len) != 0) {
        c->stream_synchronize(rt->stream);
        return 1;
    }
    if ((code = c->memcpy_async(output, rt->device_output, bytes, 2, rt->stream)) != 0 ||
        (code = c->stream_synchronize(rt->stream)) != 0) {
        return fail(err, err_len, cuda_error(*c, "running the engine and copying the result back", code));
    }
    return 0;
}

extern "C" void mdt_runtime_destroy(mdt_runtime *rt) {
    if (rt != nullptr) {
        // Members are destroyed in reverse order: context, engine, runtime.
        delete rt;
    }
}
