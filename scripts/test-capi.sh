#!/usr/bin/env bash
# C ABI checks, run by scripts/test.sh after the Rust tests (needs target/release/maskdcpt):
# header drift against the pinned cbindgen, the header compiled as C99 and C++17 and included
# twice, installation into a temporary prefix (soname, pkg-config, CMake package), the samples
# built with CMake against it, the C sample's output byte-identical to `maskdcpt restore`, and
# valgrind memcheck over both samples and the bad-input run.
set -euo pipefail
cd "$(dirname "$0")/.."

CBINDGEN_VERSION=0.29.4
MODEL=tests/golden/maskdcpt_w8.pth

scripts/setup-tools.sh
if [ "$(cbindgen --version 2> /dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== header drift (cbindgen $CBINDGEN_VERSION)"
cbindgen --quiet --config ffi/cbindgen.toml --crate maskdcpt-ffi --output "$tmp/maskdcpt.h" ffi
if ! diff -u include/maskdcpt.h "$tmp/maskdcpt.h"; then
    echo "include/maskdcpt.h differs from ffi/src: regenerate it with" >&2
    echo "  cbindgen --config ffi/cbindgen.toml --crate maskdcpt-ffi --output include/maskdcpt.h ffi" >&2
    exit 1
fi

echo "== header as C99 and C++17, included twice"
gcc -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude -c ffi/tests/c/header_twice.c -o "$tmp/c99.o"
g++ -std=c++17 -Wall -Wextra -Werror -pedantic -Iinclude -c ffi/tests/c/header_twice.cpp -o "$tmp/cxx17.o"

echo "== install"
prefix=$tmp/prefix
scripts/install.sh --prefix "$prefix"
version=$(sed -n 's/^#define MASKDCPT_VERSION_STRING "\(.*\)"$/\1/p' include/maskdcpt.h)
readelf -d "$prefix/lib/libmaskdcpt.so" | grep -q "SONAME.*\[libmaskdcpt.so.${version%%.*}\]"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion maskdcpt)" = "$version" ]
# shellcheck disable=SC2046 # word splitting of the flags is intended
gcc -std=c99 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags maskdcpt) samples/restore_image.c \
    $(pkg-config --libs maskdcpt) -Wl,-rpath,"$prefix/lib" -o "$tmp/restore_image_pkgconfig"

echo "== samples (CMake find_package against the installed package)"
build=$tmp/build
cmake -S samples -B "$build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$build" -j 2 > /dev/null

echo "== C sample vs maskdcpt restore, byte for byte"
python3 scripts/sample_ppm.py "$tmp/in.ppm"
run=0
for options in "" "--tile 16 --sca global" "--tile 16 --tile-overlap 8 --sca local" "--tlc 16" \
    "--tile auto --tile-overlap 8 --sca local" "--tile 16 --tile-overlap 8 --sca local --tile-blend" \
    "--tlc-sampled 16"; do
    run=$((run + 1))
    # shellcheck disable=SC2086 # word splitting of the options is intended
    target/release/maskdcpt restore -m "$MODEL" -i "$tmp/in.ppm" -o "$tmp/cli$run.ppm" --threads 2 $options
    for sample in restore_image restore_image_static; do
        # shellcheck disable=SC2086
        "$build/$sample" "$MODEL" "$tmp/in.ppm" "$tmp/$sample$run.ppm" --threads 2 $options
        cmp "$tmp/cli$run.ppm" "$tmp/$sample$run.ppm"
    done
    echo "identical: ${options:-whole image} (shared and static library)"
done
for changed in "3 6 --tile-blend" "1 7 --tlc-sampled 16"; do
    read -r a b what <<< "$changed"
    if cmp -s "$tmp/cli$a.ppm" "$tmp/cli$b.ppm"; then
        echo "$what changed nothing" >&2
        exit 1
    fi
done
if cmp -s "$tmp/cli1.ppm" "$tmp/cli4.ppm"; then
    echo "--tlc 16 changed nothing: the sample's windows must be smaller than its maps" >&2
    exit 1
fi
# Without a memory limit the sample's image fits whole: automatic tiles leave it untiled.
cmp "$tmp/cli1.ppm" "$tmp/cli5.ppm"
"$tmp/restore_image_pkgconfig" "$MODEL" "$tmp/in.ppm" "$tmp/pkgconfig.ppm" --threads 2
cmp "$tmp/cli1.ppm" "$tmp/pkgconfig.ppm"
"$build/frame_loop" "$MODEL" --frames 10 --threads 2
# A memory budget under the whole frame's run: tiles picked by the library.
"$build/frame_loop" "$MODEL" --frames 2 --threads 2 --width 640 --height 480 --memory-limit-mb 24 | tee "$tmp/budget.log"
grep -q "frames run in tiles of" "$tmp/budget.log"

echo "== valgrind memcheck"
# Engine worker threads exit just after maskdcpt_engine_free returns; at process exit their
# thread-local blocks can show as "possibly lost", which is not a leak and not reported.
vg=(valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-possibly-lost=no)
"${vg[@]}" "$build/restore_image" "$MODEL" "$tmp/in.ppm" "$tmp/valgrind.ppm" --threads 2
"${vg[@]}" "$build/restore_image" "$MODEL" "$tmp/in.ppm" "$tmp/valgrind-tlc.ppm" --threads 2 --tlc 16
cmp "$tmp/cli4.ppm" "$tmp/valgrind-tlc.ppm"
"${vg[@]}" "$build/frame_loop" "$MODEL" --frames 3 --width 64 --height 48 --threads 2
# Restormer, PromptIR and SwinIR checkpoints through the same sample: the CLI's bytes, clean
# under valgrind.
for weights in tests/golden/restormer/restormer_w8.pth tests/golden/restormer/promptir_w8.pth \
    tests/golden/swinir/swinir_w12_heads.safetensors; do
    net=$(basename "${weights%.*}")
    target/release/maskdcpt restore -m "$weights" -i "$tmp/in.ppm" -o "$tmp/cli-$net.ppm" --threads 2
    "${vg[@]}" "$build/restore_image" "$weights" "$tmp/in.ppm" "$tmp/$net.ppm" --threads 2
    cmp "$tmp/cli-$net.ppm" "$tmp/$net.ppm"
    echo "identical: a $net checkpoint (under valgrind)"
done
# The embedded default model, with its classification head (C++ Engine::classify).
"${vg[@]}" "$build/frame_loop" default --frames 2 --width 64 --height 48 --threads 2 | tee "$tmp/classify.log"
grep -q "last input frame: " "$tmp/classify.log"
"${vg[@]}" "$build/bad_inputs" "$MODEL" > "$tmp/bad_inputs.log" || { cat "$tmp/bad_inputs.log"; exit 1; }
tail -n 1 "$tmp/bad_inputs.log"
echo "C ABI checks passed"
