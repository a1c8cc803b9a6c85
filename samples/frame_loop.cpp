// Restores a sequence of synthetic NV12 camera frames with the C++ wrapper and prints frames per
// second (restore time only), as an ISP loop would: one engine, buffers allocated once and reused.
//
//   frame_loop MODEL [--frames N] [--width W] [--height H] [--threads N] [--memory-limit-mb N]
//
// With a memory limit, frames run in the largest local tiles whose memory fits it (whole when
// they fit), as a camera pipeline with a fixed memory budget would.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "maskdcpt.hpp"

namespace {

/// Frame size and count, engine threads.
struct Settings {
    std::string model;
    std::size_t frames = 30, width = 320, height = 240;
    std::uint32_t threads = 0;
    std::uint64_t memory_limit_mb = 0;
};

/// Parses the command line; throws std::invalid_argument on a bad one.
Settings parse(int argc, char **argv) {
    if (argc < 2) throw std::invalid_argument("missing MODEL");
    Settings s;
    s.model = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string name = argv[i];
        const unsigned long value = std::stoul(argv[i + 1]);
        if (name == "--frames") s.frames = value;
        else if (name == "--width") s.width = value;
        else if (name == "--height") s.height = value;
        else if (name == "--threads") s.threads = static_cast<std::uint32_t>(value);
        else if (name == "--memory-limit-mb") s.memory_limit_mb = value;
        else throw std::invalid_argument("unknown option " + name);
    }
    if (argc % 2 != 0) throw std::invalid_argument(std::string(argv[argc - 1]) + " needs a value");
    return s;
}

/// An NV12 frame owning its planes (rows packed: stride = width).
struct Nv12Frame {
    std::size_t width, height;
    std::vector<std::uint8_t> luma, chroma;

    Nv12Frame(std::size_t w, std::size_t h) : width(w), height(h), luma(w * h), chroma(w * h / 2) {}

    maskdcpt_image image() { return maskdcpt::nv12_image(width, height, luma.data(), width, chroma.data(), width); }
};

/// Draws frame `t` of a moving gradient with a little noise, like a sensor would deliver.
void synthesise(Nv12Frame &frame, std::size_t t) {
    std::uint32_t noise = 0x9e3779b9u + static_cast<std::uint32_t>(t);
    for (std::size_t y = 0; y < frame.height; y++) {
        for (std::size_t x = 0; x < frame.width; x++) {
            noise = noise * 1664525u + 1013904223u;
            const std::size_t level = 16 + (x + y + 4 * t) % 200 + (noise >> 29);
            frame.luma[y * frame.width + x] = static_cast<std::uint8_t>(level);
        }
    }
    for (std::size_t i = 0; i < frame.chroma.size(); i += 2) {
        frame.chroma[i] = static_cast<std::uint8_t>(128 + (i / 2 + t) % 32);
        frame.chroma[i + 1] = static_cast<std::uint8_t>(128 - (i / 2 + 3 * t) % 32);
    }
}

}  // namespace

int main(int argc, char **argv) {
    try {
        const Settings s = parse(argc, argv);
        maskdcpt::check_abi();
        // "default" is the small model embedded in the library (it also classifies degradations).
        const maskdcpt::Model model =
            s.model == "default" ? maskdcpt::Model::load_default() : maskdcpt::Model::load(s.model);
        maskdcpt_options options = maskdcpt_options_default();
        options.threads = s.threads;
        if (s.memory_limit_mb > 0) {
            options.tile_size = MASKDCPT_TILE_SIZE_AUTO;
            options.sca_mode = MASKDCPT_SCA_MODE_LOCAL;
            options.memory_limit = s.memory_limit_mb << 20;
        }
        const maskdcpt::Engine engine(model, options);
        // What a frame of this size needs, known before anything is allocated.
        const maskdcpt_memory_estimate need = engine.memory_estimate(s.width, s.height);
        std::printf("memory per frame size: weights %.1f MB, activations %.1f MB\n", need.weight_bytes / 1e6,
                    need.activation_bytes / 1e6);
        if (s.memory_limit_mb > 0) {
            const std::uint32_t tile = engine.tile_size(s.width, s.height);
            if (tile == 0) std::printf("frames fit %llu MiB whole\n", static_cast<unsigned long long>(s.memory_limit_mb));
            else std::printf("frames run in tiles of %u pixels to fit %llu MiB\n", tile,
                             static_cast<unsigned long long>(s.memory_limit_mb));
        }
        // Build what this frame size needs before the loop, so the first frame is not slower.
        engine.prepare(s.width, s.height);

        Nv12Frame input(s.width, s.height), output(s.width, s.height);
        std::uint64_t checksum = 0;
        std::chrono::duration<double> elapsed{0};
        for (std::size_t t = 0; t < s.frames; t++) {
            synthesise(input, t);
            const auto start = std::chrono::steady_clock::now();
            engine.restore(input.image(), output.image());
            elapsed += std::chrono::steady_clock::now() - start;
            for (std::uint8_t v : output.luma) checksum = checksum * 31 + v;
        }
        std::printf("libmaskdcpt %s: %zu NV12 frames of %zux%zu in %.3f s: %.2f frames per second (checksum %016llx)\n",
                    maskdcpt::version().c_str(), s.frames, s.width, s.height, elapsed.count(),
                    static_cast<double>(s.frames) / elapsed.count(), static_cast<unsigned long long>(checksum));
        if (model.info().has_classifier) {
            const std::vector<float> p = engine.classify(input.image());
            std::size_t top = 0;
            for (std::size_t i = 1; i < p.size(); i++) top = p[i] > p[top] ? i : top;
            std::printf("last input frame: %s (%.1f %%)\n", model.class_name(top).c_str(), 100.0 * p[top]);
        }
        return 0;
    } catch (const maskdcpt::Error &e) {
        std::fprintf(stderr, "frame_loop: %s (status %u)\n", e.what(), static_cast<unsigned>(e.status()));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "frame_loop: %s\nusage: %s MODEL|default [--frames N] [--width W] [--height H] [--threads N]\n",
                     e.what(), argv[0]);
    }
    return 1;
}
