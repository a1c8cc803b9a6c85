/*
 * Drives every kind of bad input through libmaskdcpt and checks that each returns the
 * documented status with a non-empty message, writes no output and leaks nothing (run it
 * under valgrind). Exits 0 when every check passes.
 *
 *   bad_inputs MODEL
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maskdcpt.h"

static int failures = 0;

/* Checks that `status` is `expected` and that a message explains it. */
static void expect(const char *what, maskdcpt_status status, maskdcpt_status expected) {
    const char *message = maskdcpt_last_error_message();
    if (status != expected || message[0] == '\0') {
        fprintf(stderr, "FAIL %s: got %s (%u), expected %s (%u), message \"%s\"\n", what,
                maskdcpt_status_string(status), (unsigned)status, maskdcpt_status_string(expected),
                (unsigned)expected, message);
        failures++;
    } else {
        printf("ok   %-40s %s: %s\n", what, maskdcpt_status_string(status), message);
    }
}

/* Records a failed plain condition. */
static void require(const char *what, int condition) {
    if (!condition) {
        fprintf(stderr, "FAIL %s\n", what);
        failures++;
    }
}

/* Reads a whole file into a malloc'ed buffer; returns NULL on failure. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *data = NULL;
    long size;
    if (f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (data = malloc((size_t)size)) != NULL && fread(data, 1, (size_t)size, f) == (size_t)size) {
        *len = (size_t)size;
    } else {
        free(data);
        data = NULL;
    }
    if (f) fclose(f);
    return data;
}

/* An RGB8 descriptor over `pixels` (width × height × 3 bytes). */
static maskdcpt_image rgb8(unsigned char *pixels, size_t width, size_t height) {
    maskdcpt_image image;
    memset(&image, 0, sizeof image);
    image.format = MASKDCPT_PIXEL_FORMAT_RGB8;
    image.width = width;
    image.height = height;
    image.planes[0] = pixels;
    image.strides[0] = width * 3;
    return image;
}

static void bad_models(const char *path) {
    maskdcpt_model *model = NULL;
    size_t len = 0;
    unsigned char *bytes = read_file(path, &len);
    const unsigned char garbage[] = "definitely not a checkpoint";

    expect("load_file(NULL path)", maskdcpt_model_load_file(NULL, NULL, &model), MASKDCPT_STATUS_NULL_POINTER);
    expect("load_file(NULL out)", maskdcpt_model_load_file(path, NULL, NULL), MASKDCPT_STATUS_NULL_POINTER);
    expect("load_file(missing file)", maskdcpt_model_load_file("/nonexistent/m.pth", NULL, &model),
           MASKDCPT_STATUS_IO);
    expect("load_file(bad param_key)", maskdcpt_model_load_file(path, "no_such_key", &model),
           MASKDCPT_STATUS_BAD_MODEL);
    expect("load_memory(NULL data)", maskdcpt_model_load_memory(NULL, 4, NULL, &model),
           MASKDCPT_STATUS_NULL_POINTER);
    expect("load_memory(0 bytes)", maskdcpt_model_load_memory(garbage, 0, NULL, &model),
           MASKDCPT_STATUS_INVALID_ARGUMENT);
    expect("load_memory(garbage)", maskdcpt_model_load_memory(garbage, sizeof garbage, NULL, &model),
           MASKDCPT_STATUS_BAD_MODEL);
    require("the model file is readable", bytes != NULL);
    if (bytes) {
        expect("load_memory(truncated model)", maskdcpt_model_load_memory(bytes, len / 2, NULL, &model),
               MASKDCPT_STATUS_BAD_MODEL);
        memset(bytes, 0xff, len < 16 ? len : 16);
        expect("load_memory(corrupted header)", maskdcpt_model_load_memory(bytes, len, NULL, &model),
               MASKDCPT_STATUS_BAD_MODEL);
    }
    require("no model is written on failure", model == NULL);
    free(bytes);
}

static void bad_options(const maskdcpt_model *model) {
    maskdcpt_engine *engine = NULL;
    maskdcpt_options options = maskdcpt_options_default();

    expect("engine_new(NULL model)", maskdcpt_engine_new(NULL, &options, &engine), MASKDCPT_STATUS_NULL_POINTER);
    expect("engine_new(NULL out)", maskdcpt_engine_new(model, &options, NULL), MASKDCPT_STATUS_NULL_POINTER);
    options.struct_size = sizeof options + 8;
    expect("engine_new(wrong struct_size)", maskdcpt_engine_new(model, &options, &engine),
           MASKDCPT_STATUS_ABI_MISMATCH);
    options = maskdcpt_options_default();
    options.tlc_train_size = 8;
    expect("engine_new(TLC crop under the size multiple)", maskdcpt_engine_new(model, &options, &engine),
           MASKDCPT_STATUS_INVALID_ARGUMENT);
    options = maskdcpt_options_default();
    options.backend = MASKDCPT_BACKEND_CUDA;
    expect("engine_new(CUDA backend, no GPU on this host)", maskdcpt_engine_new(model, &options, &engine), MASKDCPT_STATUS_UNSUPPORTED);
    options.backend = 1234;
    expect("engine_new(backend 1234)", maskdcpt_engine_new(model, &options, &engine),
           MASKDCPT_STATUS_INVALID_ARGUMENT);
    options = maskdcpt_options_default();
    options.precision = MASKDCPT_PRECISION_FP16;
    expect("engine_new(fp16 on the CPU)", maskdcpt_engine_new(model, &options, &engine),
           MASKDCPT_STATUS_UNSUPPORTED);
    require("no engine is written on failure", engine == NULL);
}

static void bad_images(const maskdcpt_engine *engine) {
    unsigned char in[8 * 8 * 3], out[8 * 8 * 3];
    maskdcpt_image good_in = rgb8(in, 8, 8), good_out = rgb8(out, 8, 8), bad;
    size_t i;

    memset(in, 100, sizeof in);
    memset(out, 7, sizeof out);
    expect("prepare(NULL engine)", maskdcpt_engine_prepare(NULL, 8, 8), MASKDCPT_STATUS_NULL_POINTER);
    expect("prepare(zero height)", maskdcpt_engine_prepare(engine, 8, 0), MASKDCPT_STATUS_INVALID_ARGUMENT);
    expect("memory_estimate(NULL out)", maskdcpt_engine_memory_estimate(engine, 8, 8, NULL),
           MASKDCPT_STATUS_NULL_POINTER);
    expect("tile_size(NULL out)", maskdcpt_engine_tile_size(engine, 8, 8, NULL), MASKDCPT_STATUS_NULL_POINTER);
    expect("restore(NULL engine)", maskdcpt_restore(NULL, &good_in, &good_out), MASKDCPT_STATUS_NULL_POINTER);
    expect("restore(NULL input)", maskdcpt_restore(engine, NULL, &good_out), MASKDCPT_STATUS_NULL_POINTER);
    expect("restore(NULL output)", maskdcpt_restore(engine, &good_in, NULL), MASKDCPT_STATUS_NULL_POINTER);
    bad = good_in;
    bad.planes[0] = NULL;
    expect("restore(NULL plane)", maskdcpt_restore(engine, &bad, &good_out), MASKDCPT_STATUS_NULL_POINTER);
    bad = good_in;
    bad.width = 0;
    expect("restore(zero width)", maskdcpt_restore(engine, &bad, &good_out), MASKDCPT_STATUS_INVALID_ARGUMENT);
    bad = good_in;
    bad.width = SIZE_MAX;
    expect("restore(huge width)", maskdcpt_restore(engine, &bad, &good_out), MASKDCPT_STATUS_INVALID_ARGUMENT);
    bad = good_in;
    bad.width = bad.height = (size_t)1 << 31;
    bad.strides[0] = bad.width * 3;
    expect("restore(2^31 × 2^31)", maskdcpt_restore(engine, &bad, &good_out), MASKDCPT_STATUS_INVALID_ARGUMENT);
    bad = good_in;
    bad.strides[0] = 8 * 3 - 1;
    expect("restore(stride < row)", maskdcpt_restore(engine, &bad, &good_out), MASKDCPT_STATUS_INVALID_ARGUMENT);
    bad = good_in;
    bad.format = 99;
    expect("restore(pixel format 99)", maskdcpt_restore(engine, &bad, &good_out), MASKDCPT_STATUS_INVALID_ARGUMENT);
    bad = good_out;
    bad.format = MASKDCPT_PIXEL_FORMAT_NV12;
    bad.width = 7;
    expect("restore(odd NV12)", maskdcpt_restore(engine, &good_in, &bad), MASKDCPT_STATUS_INVALID_ARGUMENT);
    bad = good_out;
    bad.height = 4;
    expect("restore(size mismatch)", maskdcpt_restore(engine, &good_in, &bad), MASKDCPT_STATUS_INVALID_ARGUMENT);
    expect("restore_device(CPU engine)", maskdcpt_restore_device(engine, &good_in, &good_out, NULL),
           MASKDCPT_STATUS_UNSUPPORTED);
    {
        float probabilities[8];
        size_t count = 0;
        expect("classify(no head)", maskdcpt_classify(engine, &good_in, probabilities, 8, &count),
               MASKDCPT_STATUS_UNSUPPORTED);
        expect("classify(NULL count)", maskdcpt_classify(engine, &good_in, probabilities, 8, NULL),
               MASKDCPT_STATUS_NULL_POINTER);
    }
    for (i = 0; i < sizeof out; i++) {
        if (out[i] != 7) {
            require("no output pixel is written on failure", 0);
            break;
        }
    }
    require("a good restore succeeds", maskdcpt_restore(engine, &good_in, &good_out) == MASKDCPT_STATUS_OK);
    require("success leaves an empty message", maskdcpt_last_error_message()[0] == '\0');
}

int main(int argc, char **argv) {
    maskdcpt_model *model = NULL;
    maskdcpt_engine *engine = NULL;
    maskdcpt_model_info info;
    const char *name = NULL;
    maskdcpt_options options = maskdcpt_options_default();

    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    require("ABI matches the header", maskdcpt_abi_compatible());
    require("unknown statuses have a description", strcmp(maskdcpt_status_string(4242), "unknown status") == 0);
    bad_models(argv[1]);
    options.threads = 1;
    if (maskdcpt_model_load_file(argv[1], NULL, &model) != MASKDCPT_STATUS_OK ||
        maskdcpt_engine_new(model, &options, &engine) != MASKDCPT_STATUS_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], maskdcpt_last_error_message());
        return 1;
    }
    expect("get_info(NULL out)", maskdcpt_model_get_info(model, NULL), MASKDCPT_STATUS_NULL_POINTER);
    require("get_info succeeds", maskdcpt_model_get_info(model, &info) == MASKDCPT_STATUS_OK && !info.has_classifier);
    expect("class_name(no head)", maskdcpt_model_class_name(model, 0, &name), MASKDCPT_STATUS_UNSUPPORTED);
    require("no class name is written on failure", name == NULL);
    bad_options(model);
    bad_images(engine);

    /* Double free through the pointer-nulling helpers is harmless; NULL is a no-op. */
    maskdcpt_engine_free(&engine);
    maskdcpt_engine_free(&engine);
    maskdcpt_model_free(&model);
    maskdcpt_model_free(&model);
    maskdcpt_model_free(NULL);
    maskdcpt_engine_free(NULL);
    require("free sets the pointers to NULL", model == NULL && engine == NULL);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("all bad inputs were refused cleanly\n");
    return 0;
}
