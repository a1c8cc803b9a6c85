/*
 * libmaskdcpt C++17 wrapper: header-only RAII handles over maskdcpt.h. Failures throw
 * maskdcpt::Error, which carries the status and the library's message.
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef MASKDCPT_HPP
#define MASKDCPT_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "maskdcpt.h"

namespace maskdcpt {

/// A failed libmaskdcpt call: its status and message.
class Error : public std::runtime_error {
public:
    Error(maskdcpt_status status, const std::string &message) : std::runtime_error(message), status_(status) {}

    /// The status the call returned.
    maskdcpt_status status() const noexcept { return status_; }

private:
    maskdcpt_status status_;
};

namespace detail {

/// Throws maskdcpt::Error unless `status` is MASKDCPT_STATUS_OK.
inline void check(maskdcpt_status status) {
    if (status != MASKDCPT_STATUS_OK) {
        throw Error(status, std::string(maskdcpt_status_string(status)) + ": " + maskdcpt_last_error_message());
    }
}

/// Move-only owner of a handle freed by a pointer-nulling `Free(T **)`.
template <typename T, void (*Free)(T **)>
class Handle {
public:
    explicit Handle(T *handle = nullptr) noexcept : handle_(handle) {}
    Handle(Handle &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Handle &operator=(Handle &&other) noexcept {
        if (this != &other) {
            Free(&handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    ~Handle() { Free(&handle_); }

    /// The raw handle (still owned by this object).
    T *get() const noexcept { return handle_; }

private:
    T *handle_;
};

}  // namespace detail

/// The version of the library loaded at run time ("MAJOR.MINOR.PATCH").
inline std::string version() { return maskdcpt_version(); }

/// Throws unless the library loaded at run time has the ABI this header describes.
inline void check_abi() {
    if (!maskdcpt_abi_compatible()) {
        throw Error(MASKDCPT_STATUS_ABI_MISMATCH, "libmaskdcpt " + version() + " does not match maskdcpt.h " +
                                                      MASKDCPT_VERSION_STRING + ": rebuild against its header");
    }
}

/// An immutable loaded model; may be shared by threads and engines.
class Model {
public:
    /// Loads a `.pth` or `.safetensors` checkpoint (`param_key` as in maskdcpt_model_load_file).
    static Model load(const std::string &path, const char *param_key = nullptr) {
        maskdcpt_model *model = nullptr;
        detail::check(maskdcpt_model_load_file(path.c_str(), param_key, &model));
        return Model(model);
    }

    /// Loads a checkpoint held in memory (the bytes are copied).
    static Model from_memory(const void *data, std::size_t size, const char *param_key = nullptr) {
        maskdcpt_model *model = nullptr;
        detail::check(maskdcpt_model_load_memory(static_cast<const uint8_t *>(data), size, param_key, &model));
        return Model(model);
    }

    /// The model embedded in the library (docs/model-card.md).
    static Model load_default() {
        maskdcpt_model *model = nullptr;
        detail::check(maskdcpt_model_load_default(&model));
        return Model(model);
    }

    /// Architecture, size and capabilities.
    maskdcpt_model_info info() const {
        maskdcpt_model_info info;
        detail::check(maskdcpt_model_get_info(get(), &info));
        return info;
    }

    /// Name of degradation class `index` (models with a classification head).
    std::string class_name(std::size_t index) const {
        const char *name = nullptr;
        detail::check(maskdcpt_model_class_name(get(), index, &name));
        return name;
    }

    /// The raw handle (still owned by this object).
    const maskdcpt_model *get() const noexcept { return model_.get(); }

private:
    explicit Model(maskdcpt_model *model) noexcept : model_(model) {}
    detail::Handle<maskdcpt_model, maskdcpt_model_free> model_;
};

/// A network compiled for one backend. Internally synchronised: `restore` may be called from
/// several threads at once.
class Engine {
public:
    /// Builds an engine (it keeps no reference to `model`).
    explicit Engine(const Model &model, const maskdcpt_options &options = maskdcpt_options_default()) {
        maskdcpt_engine *engine = nullptr;
        detail::check(maskdcpt_engine_new(model.get(), &options, &engine));
        engine_ = detail::Handle<maskdcpt_engine, maskdcpt_engine_free>(engine);
    }

    /// Builds now what restoring `width × height` frames needs (workspace, buffers, tuned
    /// products, the CUDA graph), so that the first restore of that size does not pay for it.
    void prepare(std::size_t width, std::size_t height) const {
        detail::check(maskdcpt_engine_prepare(get(), width, height));
    }

    /// The memory restoring `width × height` frames needs (weights, and activations of the
    /// largest run: device memory on the CUDA backend), from the plan alone.
    maskdcpt_memory_estimate memory_estimate(std::size_t width, std::size_t height) const {
        maskdcpt_memory_estimate estimate{};
        detail::check(maskdcpt_engine_memory_estimate(get(), width, height, &estimate));
        return estimate;
    }

    /// The tile edge `width × height` frames run in with local tiling (the options' tile size,
    /// or the one an automatic tile size picks for that size); 0 when they run whole.
    std::uint32_t tile_size(std::size_t width, std::size_t height) const {
        std::uint32_t tile = 0;
        detail::check(maskdcpt_engine_tile_size(get(), width, height, &tile));
        return tile;
    }

        /// Restores `input` into `output` (host memory, same size, any pixel formats).
    void restore(const maskdcpt_image &input, const maskdcpt_image &output) const {
        detail::check(maskdcpt_restore(get(), &input, &output));
    }

    /// Restores `input` into `output`, frames in the engine's GPU memory, in the order of
    /// `cuda_stream` (a `cudaStream_t`; nullptr: the default stream). Returns once enqueued.
    /// CUDA backend only.
    void restore_device(const maskdcpt_image &input, const maskdcpt_image &output, void *cuda_stream = nullptr) const {
        detail::check(maskdcpt_restore_device(get(), &input, &output, cuda_stream));
    }

    /// Probability of each degradation class in `input` (names from `Model::class_name`).
    std::vector<float> classify(const maskdcpt_image &input) const {
        std::size_t count = 0;
        detail::check(maskdcpt_classify(get(), &input, nullptr, 0, &count));
        std::vector<float> probabilities(count);
        detail::check(maskdcpt_classify(get(), &input, probabilities.data(), probabilities.size(), &count));
        return probabilities;
    }

    /// The raw handle (still owned by this object).
    const maskdcpt_engine *get() const noexcept { return engine_.get(); }

private:
    detail::Handle<maskdcpt_engine, maskdcpt_engine_free> engine_;
};

/// A one-plane frame (RGB8, BGR8, RGBA8, BGRA8, RGB16 or RGB_F32) with `stride` bytes per row.
inline maskdcpt_image packed_image(maskdcpt_pixel_format format, std::size_t width, std::size_t height, void *data,
                                   std::size_t stride) {
    maskdcpt_image image{};
    image.format = format;
    image.width = width;
    image.height = height;
    image.planes[0] = data;
    image.strides[0] = stride;
    return image;
}

/// An NV12 frame: luma plane and interleaved Cb Cr plane, each with its row stride.
inline maskdcpt_image nv12_image(std::size_t width, std::size_t height, void *luma, std::size_t luma_stride,
                                 void *chroma, std::size_t chroma_stride,
                                 maskdcpt_yuv_matrix matrix = MASKDCPT_YUV_MATRIX_BT601_LIMITED) {
    maskdcpt_image image = packed_image(MASKDCPT_PIXEL_FORMAT_NV12, width, height, luma, luma_stride);
    image.yuv_matrix = matrix;
    image.planes[1] = chroma;
    image.strides[1] = chroma_stride;
    return image;
}

}  // namespace maskdcpt

#endif  // MASKDCPT_HPP
