#!/usr/bin/env bash
# Builds libmaskdcpt (release) and installs it for C and C++ programs:
#   lib/libmaskdcpt.so.X.Y.Z (+ libmaskdcpt.so.X soname and libmaskdcpt.so links), lib/libmaskdcpt.a,
#   include/maskdcpt.h, include/maskdcpt.hpp, lib/pkgconfig/maskdcpt.pc,
#   lib/cmake/maskdcpt/maskdcpt-config.cmake (+ -config-version.cmake).
# Usage: scripts/install.sh [--prefix DIR]   (default /usr/local)
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a folder}; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)

version=$(sed -n 's/^#define MASKDCPT_VERSION_STRING "\(.*\)"$/\1/p' include/maskdcpt.h)
IFS=. read -r major minor _ <<< "$version"

# One build gives the .so, the .a and the system libraries the .a needs.
build_log=$(cargo rustc --release --quiet -p maskdcpt-ffi --lib -- --print native-static-libs 2>&1) ||
    { echo "$build_log" >&2; exit 1; }
static_libs=$(echo "$build_log" | sed -n 's/.*native-static-libs: //p' | tail -n 1)
[ -n "$static_libs" ] || { echo "install.sh: could not learn the static library's dependencies" >&2; exit 1; }
static_libs_cmake=$(echo "$static_libs" | sed -e 's/-l//g' -e 's/ /;/g')

lib=$prefix/lib
install -d "$lib/pkgconfig" "$lib/cmake/maskdcpt" "$prefix/include"
install -m 755 target/release/libmaskdcpt.so "$lib/libmaskdcpt.so.$version"
ln -sfn "libmaskdcpt.so.$version" "$lib/libmaskdcpt.so.$major"
ln -sfn "libmaskdcpt.so.$major" "$lib/libmaskdcpt.so"
install -m 644 target/release/libmaskdcpt.a "$lib/libmaskdcpt.a"
install -m 644 include/maskdcpt.h include/maskdcpt.hpp "$prefix/include/"

fill() {
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@MINOR@|$minor|g" \
        -e "s|@STATIC_LIBS@|$static_libs|g" -e "s|@STATIC_LIBS_CMAKE@|$static_libs_cmake|g" "$1" > "$2"
    chmod 644 "$2"
}
fill ffi/packaging/maskdcpt.pc.in "$lib/pkgconfig/maskdcpt.pc"
fill ffi/packaging/maskdcpt-config.cmake.in "$lib/cmake/maskdcpt/maskdcpt-config.cmake"
fill ffi/packaging/maskdcpt-config-version.cmake.in "$lib/cmake/maskdcpt/maskdcpt-config-version.cmake"
echo "installed libmaskdcpt $version into $prefix"
