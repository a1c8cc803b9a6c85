/*
 * Restores a binary PPM (P6, 8-bit) image with libmaskdcpt and writes a binary PPM.
 *
 *   restore_image MODEL INPUT.ppm OUTPUT.ppm [--threads N] [--tile N|auto] [--tile-overlap N]
 *                 [--sca global|local] [--tile-blend] [--tlc TRAIN] [--tlc-sampled TRAIN]
 *                 [--param-key K]
 *
 * The output is byte-identical to `maskdcpt restore -m MODEL -i INPUT.ppm -o OUTPUT.ppm` with
 * the same options.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maskdcpt.h"

/* An 8-bit RGB image in memory. */
typedef struct {
    size_t width, height;
    unsigned char *pixels;
} rgb_image;

/* Skips whitespace and `#` comments in a PNM header. */
static void skip_space(FILE *f) {
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {
            }
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            ungetc(c, f);
            return;
        }
    }
}

/* Reads a header number; returns 0 on failure. */
static size_t read_number(FILE *f) {
    unsigned long value = 0;
    skip_space(f);
    if (fscanf(f, "%lu", &value) != 1) {
        return 0;
    }
    return (size_t)value;
}

/* Reads a P6 file with maxval 255; returns 0 on success and prints the reason otherwise. */
static int read_ppm(const char *path, rgb_image *image) {
    FILE *f = fopen(path, "rb");
    char magic[3] = {0};
    size_t maxval, bytes;
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    if (fread(magic, 1, 2, f) != 2 || strcmp(magic, "P6") != 0) {
        fprintf(stderr, "%s: not a binary PPM (P6) file\n", path);
        fclose(f);
        return 1;
    }
    image->width = read_number(f);
    image->height = read_number(f);
    maxval = read_number(f);
    if (image->width == 0 || image->height == 0 || maxval != 255 || fgetc(f) == EOF ||
        image->width > ((size_t)-1) / 3 / image->height) {
        fprintf(stderr, "%s: unsupported PPM header (need width, height > 0 and maxval 255)\n", path);
        fclose(f);
        return 1;
    }
    bytes = image->width * image->height * 3;
    image->pixels = malloc(bytes);
    if (!image->pixels || fread(image->pixels, 1, bytes, f) != bytes) {
        fprintf(stderr, "%s: truncated pixel data\n", path);
        free(image->pixels);
        image->pixels = NULL;
        fclose(f);
        return 1;
    }
    fclose(f);
    return 0;
}

/* Writes a P6 file (header spelled as `maskdcpt restore` writes it). */
static int write_ppm(const char *path, const rgb_image *image) {
    size_t bytes = image->width * image->height * 3;
    FILE *f = fopen(path, "wb");
    int failed;
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    failed = fprintf(f, "P6\n%lu %lu 255\n", (unsigned long)image->width, (unsigned long)image->height) < 0 ||
             fwrite(image->pixels, 1, bytes, f) != bytes;
    failed |= fclose(f) != 0;
    if (failed) {
        fprintf(stderr, "%s: write failed\n", path);
    }
    return failed;
}

/* An RGB8 descriptor of `image`. */
static maskdcpt_image describe(const rgb_image *image) {
    maskdcpt_image d;
    memset(&d, 0, sizeof d);
    d.format = MASKDCPT_PIXEL_FORMAT_RGB8;
    d.width = image->width;
    d.height = image->height;
    d.planes[0] = image->pixels;
    d.strides[0] = image->width * 3;
    return d;
}

/* Prints a failed call's status and message; returns 1. */
static int report(const char *what, maskdcpt_status status) {
    fprintf(stderr, "%s: %s: %s\n", what, maskdcpt_status_string(status), maskdcpt_last_error_message());
    return 1;
}

/* Parses a non-negative number option value; returns 0 on success. */
static int parse_count(const char *name, const char *text, uint32_t *value) {
    char *end;
    unsigned long v = strtoul(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v > 0xffffffffUL) {
        fprintf(stderr, "%s: expected a number, got `%s`\n", name, text);
        return 1;
    }
    *value = (uint32_t)v;
    return 0;
}

/* Applies the command-line options after the three positional arguments. */
static int parse_options(int argc, char **argv, maskdcpt_options *options, const char **param_key) {
    int i;
    for (i = 4; i < argc; i++) {
        const char *name = argv[i], *value;
        if (strcmp(name, "--tile-blend") == 0) {
            options->tile_blend = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s needs a value\n", name);
            return 1;
        }
        value = argv[++i];
        if (strcmp(name, "--threads") == 0) {
            if (parse_count(name, value, &options->threads)) return 1;
        } else if (strcmp(name, "--tile") == 0 && strcmp(value, "auto") == 0) {
            options->tile_size = MASKDCPT_TILE_SIZE_AUTO;
        } else if (strcmp(name, "--tile") == 0) {
            if (parse_count(name, value, &options->tile_size)) return 1;
        } else if (strcmp(name, "--tile-overlap") == 0) {
            if (parse_count(name, value, &options->tile_overlap)) return 1;
        } else if (strcmp(name, "--sca") == 0 && strcmp(value, "global") == 0) {
            options->sca_mode = MASKDCPT_SCA_MODE_GLOBAL;
        } else if (strcmp(name, "--sca") == 0 && strcmp(value, "local") == 0) {
            options->sca_mode = MASKDCPT_SCA_MODE_LOCAL;
        } else if (strcmp(name, "--tlc") == 0) {
            if (parse_count(name, value, &options->tlc_train_size)) return 1;
        } else if (strcmp(name, "--tlc-sampled") == 0) {
            if (parse_count(name, value, &options->tlc_sampled_train_size)) return 1;
        } else if (strcmp(name, "--param-key") == 0) {
            *param_key = value;
        } else {
            fprintf(stderr, "unknown option %s %s\n", name, value);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    maskdcpt_options options = maskdcpt_options_default();
    const char *param_key = NULL;
    maskdcpt_model *model = NULL;
    maskdcpt_engine *engine = NULL;
    rgb_image input = {0, 0, NULL}, output = {0, 0, NULL};
    maskdcpt_image in_desc, out_desc;
    maskdcpt_status status;
    int failed = 1;

    if (argc < 4 || parse_options(argc, argv, &options, &param_key)) {
        fprintf(stderr,
                "usage: %s MODEL INPUT.ppm OUTPUT.ppm [--threads N] [--tile N|auto] [--tile-overlap N] "
                "[--sca global|local] [--tile-blend] [--tlc TRAIN] [--tlc-sampled TRAIN] [--param-key K]\n",
                argv[0]);
        return 2;
    }
    if (!maskdcpt_abi_compatible()) {
        fprintf(stderr, "libmaskdcpt %s does not match maskdcpt.h %s\n", maskdcpt_version(), MASKDCPT_VERSION_STRING);
        return 1;
    }
    if (read_ppm(argv[2], &input)) {
        return 1;
    }
    output = input;
    output.pixels = malloc(input.width * input.height * 3);
    if (!output.pixels) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    if ((status = maskdcpt_model_load_file(argv[1], param_key, &model)) != MASKDCPT_STATUS_OK) {
        report(argv[1], status);
        goto done;
    }
    if ((status = maskdcpt_engine_new(model, &options, &engine)) != MASKDCPT_STATUS_OK) {
        report("engine", status);
        goto done;
    }
    in_desc = describe(&input);
    out_desc = describe(&output);
    if ((status = maskdcpt_restore(engine, &in_desc, &out_desc)) != MASKDCPT_STATUS_OK) {
        report(argv[2], status);
        goto done;
    }
    failed = write_ppm(argv[3], &output);
done:
    maskdcpt_engine_free(&engine);
    maskdcpt_model_free(&model);
    free(input.pixels);
    free(output.pixels);
    return failed;
}
