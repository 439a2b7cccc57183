#!/usr/bin/env bash
# Fuzzes one network parser with libFuzzer (Swift's -sanitize=fuzzer, with AddressSanitizer), growing
# its corpus in Tests/Fuzz/corpus/TARGET, which `swift test` replays.
#   Tests/Fuzz/run.sh sdp|rtcp|rtp|dtls|signal|json|turn [SECONDS]     (default 60)
#   Tests/Fuzz/run.sh --merge TARGET                          minimise the corpus in place
# The parsers' modules are compiled straight with swiftc: SwiftPM would apply the sanitizer to every
# tool the package builds, and those have no fuzz entry point.
set -euo pipefail
cd "$(dirname "$0")/../.."
merge=0
if [ "${1:-}" = "--merge" ]; then merge=1; shift; fi
target="${1:?usage: Tests/Fuzz/run.sh [--merge] sdp|rtcp|rtp|dtls|signal|json|turn [SECONDS]}"
seconds="${2:-60}"

out=.build-fuzz
mkdir -p "$out"
# swift-crypto (TURN's credentials) comes from the package's own debug build, uninstrumented: the
# fuzzer follows coverage in our code, not in the HMAC.
swift build --target Crypto >/dev/null
crypto_objects=$(find .build/debug/Crypto.build .build/debug/CryptoBoringWrapper.build .build/debug/CCryptoBoringSSL.build \
    .build/debug/CCryptoBoringSSLShims.build -name '*.o')
cflags=()
for f in $(pkg-config --cflags-only-I nice libsrtp2 openssl); do cflags+=(-Xcc "$f"); done
flags=(-sanitize=fuzzer,address -package-name tandem -Onone -gline-tables-only -parse-as-library -swift-version 6 -enable-upcoming-feature ExistentialAny
    -I "$out" -I .build/debug/Modules -I Sources/CNice -I Sources/COpenSSL -I Sources/CSRTP "${cflags[@]}")
module() {
    local name=$1
    shift
    swiftc "${flags[@]}" -wmo -module-name "$name" -emit-module -emit-module-path "$out/$name.swiftmodule" -c "$@" -o "$out/$name.o"
}
module TandemProtocol Sources/TandemProtocol/*.swift
module TandemMedia Sources/TandemMedia/*.swift
module TandemSTUN Sources/TandemSTUN/*.swift
module TandemFuzzTargets Tests/Fuzz/Targets/*.swift
swiftc "${flags[@]}" -DFUZZING -module-name tandem_fuzz -c Tests/Fuzz/Main/Fuzz.swift -o "$out/main.o"
# shellcheck disable=SC2046
swiftc -sanitize=fuzzer,address "$out"/*.o $crypto_objects -o "$out/tandem-fuzz" $(pkg-config --libs nice libsrtp2 openssl | sed 's/-pthread//g')

fuzzer=$out/tandem-fuzz
corpus="Tests/Fuzz/corpus/$target"
mkdir -p "$corpus"
export TANDEM_FUZZ_TARGET="$target"
if ((merge)); then
    scratch=$(mktemp -d)
    "$fuzzer" -merge=1 "$scratch" "$corpus"
    rm -rf "$corpus" && mv "$scratch" "$corpus"
else
    "$fuzzer" "$corpus" -max_total_time="$seconds" -max_len=8192 -timeout=10 -print_final_stats=1
fi
