#!/usr/bin/env bash
# Cross-compile the core freestanding for rv32imc (ESP32-C3's ISA) with Debian's
# gcc-riscv64-unknown-elf and picolibc; report text/data/bss; fail if an allocator is linked; run
# it under qemu-system-riscv32 when that is installed (qemu-system-misc).
#
#   firmware/rv32/build.sh OUT_DIR [KISSFFT_SRC]
#
# KISSFFT_SRC: KissFFT's sources (kiss_fft.c, kiss_fftr.c), the version Debian packages; by default
# what scripts/services/firmware-toolchain.sh unpacked (never copied into the repository).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR [KISSFFT_SRC]}
kiss=${2:-${OUTPOST_KISSFFT_SRC:-/var/cache/outpost/kissfft-src}}
core="$here/../components/node_core"
[ -f "$kiss/kiss_fftr.c" ] || { echo "KissFFT sources not found in $kiss: run scripts/services/firmware-toolchain.sh" >&2; exit 1; }
mkdir -p "$out/include"
# jsmn is header-only (Debian's libjsmn-dev): use that one header, not the host's whole /usr/include.
cp /usr/include/jsmn.h "$out/include/jsmn.h"
cc=riscv64-unknown-elf-gcc
arch=(-march=rv32imc -mabi=ilp32 -Os -ffunction-sections -fdata-sections --specs=picolibc.specs)
kissdefs=(-Dkiss_fft_scalar=float "-DKISS_FFT_MALLOC=node_no_malloc" "-DKISS_FFT_FREE=node_no_free"
          -include "$here/no_malloc.h")
objs=()
for src in "$kiss/kiss_fft.c" "$kiss/kiss_fftr.c"; do
    obj="$out/$(basename "$src" .c).o"
    $cc "${arch[@]}" "${kissdefs[@]}" -I"$kiss" -c "$src" -o "$obj"
    objs+=("$obj")
done
for src in "$core"/src/*.cpp "$core/adapters/kiss_real_fft.cpp" "$here/main.cpp"; do
    obj="$out/$(basename "$src" .cpp).o"
    $cc -x c++ -std=c++17 "${arch[@]}" -fno-exceptions -fno-rtti -fno-threadsafe-statics -fno-use-cxa-atexit \
        -Wall -Wextra -Werror -Wno-missing-field-initializers -Wno-double-promotion \
        "${kissdefs[@]}" -I"$core/include" -I"$core/adapters" -I"$kiss" -I"$out/include" \
        -c "$src" -o "$obj"
    objs+=("$obj")
done
# ESP32-C3's budget: an OTA app slot of 1.5 MiB of flash and 320 KiB of its 400 KiB SRAM (the rest is
# Wi-Fi's, the stacks' and TFLM's arena): the link fails if the core does not fit.
$cc "${arch[@]}" --oslib=semihost -Wl,--defsym=__flash=0x42000000 -Wl,--defsym=__flash_size=0x180000 \
    -Wl,--defsym=__ram=0x3FC80000 -Wl,--defsym=__ram_size=0x50000 -Wl,--gc-sections -Wl,-Map="$out/node.map" "${objs[@]}" -lm -o "$out/node.elf"
riscv64-unknown-elf-size "$out/node.elf" | tee "$out/size.txt"
# The core must not link an allocator at all: no malloc/calloc/realloc/free, no operator new.
if riscv64-unknown-elf-nm "$out/node.elf" | grep -Ew '(malloc|calloc|realloc|free|_Znwj|_Znaj|_Znwm|_Znam)$' >"$out/alloc.txt"; then
    echo "FAIL: the rv32 image links an allocator:" >&2
    cat "$out/alloc.txt" >&2
    exit 1
fi
echo "OK: no allocator linked"

# The same objects linked for QEMU's rv32 'virt' machine (RAM at 0x80000000, exit code through
# semihosting) and run: the core executes on an rv32imc CPU, not only compiles for it.
if command -v qemu-system-riscv32 >/dev/null; then
    $cc "${arch[@]}" --oslib=semihost --crt0=semihost -Wl,--defsym=__flash=0x80000000 \
        -Wl,--defsym=__flash_size=0x200000 -Wl,--defsym=__ram=0x80200000 -Wl,--defsym=__ram_size=0x100000 \
        -Wl,--gc-sections "${objs[@]}" -lm -o "$out/node-qemu.elf"
    if ! timeout 120 qemu-system-riscv32 -machine virt -cpu rv32 -bios none -kernel "$out/node-qemu.elf" -nographic \
        -semihosting-config enable=on,target=native -monitor none -serial none >"$out/qemu.txt" 2>&1; then
        echo "FAIL: the rv32 image did not run to completion under qemu-system-riscv32:" >&2
        cat "$out/qemu.txt" >&2
        exit 1
    fi
    cat "$out/qemu.txt"
fi
