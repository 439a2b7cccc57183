#!/usr/bin/env bash
# Fuzzes one network parser with libFuzzer (Swift's -sanitize=fuzzer, with AddressSanitizer), growing
# its corpus in Tests/Fuzz/corpus/TARGET, which `swift test` replays.
#   Tests/Fuzz/run.sh sdp|rtcp|rtp|dtls|signal|json|turn [SECONDS]     (default 60)
#   Tests/Fuzz/run.sh --merge TARGET                          minimise the corpus in place
# The parsers' modules are compiled straight with swiftc: SwiftPM would apply the sanitizer to every
# tool the package builds, and those have no fuzz entry point. Optimised, as the server runs them (an
# unoptimised Swift parser runs several times slower, and the fuzzer with it).
set -euo pipefail
cd "$(dirname "$0")/../.."
merge=0
if [ "${1:-}" = "--merge" ]; then merge=1; shift; fi
target="${1:?usage: Tests/Fuzz/run.sh [--merge] sdp|rtcp|rtp|dtls|signal|json|turn [SECONDS]}"
seconds="${2:-60}"

# TANDEM_FUZZ_ASAN=0 builds without AddressSanitizer (into .build-fuzz-noasan): several times faster for
# targets whose code has no unsafe pointers or C calls to watch, where Swift's own checks trap anyway.
sanitizers=fuzzer,address
out=.build-fuzz
if [ "${TANDEM_FUZZ_ASAN:-1}" = 0 ]; then sanitizers=fuzzer; out=.build-fuzz-noasan; fi
mkdir -p "$out"
# swift-crypto (TURN's credentials) comes from the package's own release build, uninstrumented: the
# fuzzer follows coverage in our code, not in the HMAC, and an unoptimised HMAC would be most of the time.
swift build -c release --target Crypto >/dev/null
crypto_objects=$(find .build/release/Crypto.build .build/release/CryptoBoringWrapper.build .build/release/CCryptoBoringSSL.build \
    .build/release/CCryptoBoringSSLShims.build -name '*.o')
flags=(-sanitize=$sanitizers -package-name tandem -O -gline-tables-only -parse-as-library -swift-version 6 -enable-upcoming-feature ExistentialAny
    -I "$out" -I .build/release/Modules)
module() {
    local name=$1
    shift
    swiftc "${flags[@]}" -wmo -module-name "$name" -emit-module -emit-module-path "$out/$name.swiftmodule" -c "$@" -o "$out/$name.o"
}
module TandemProtocol Sources/TandemProtocol/*.swift
module TandemMediaCore Sources/TandemMediaCore/*.swift
module TandemSTUN Sources/TandemSTUN/*.swift
module TandemTURN Sources/TandemTURN/*.swift
module TandemFuzzTargets Tests/Fuzz/Targets/*.swift
pure=(TandemProtocol TandemMediaCore TandemSTUN TandemTURN TandemFuzzTargets)
if [ "$target" = dtls ]; then
    # DTLS needs the media relay's C libraries (OpenSSL, and what TandemMedia links beside it).
    for f in $(pkg-config --cflags-only-I nice libsrtp2 openssl); do flags+=(-Xcc "$f"); done
    flags+=(-I Sources/CNice -I Sources/COpenSSL -I Sources/CSRTP)
    module TandemMedia Sources/TandemMedia/*.swift
    module TandemFuzzDTLS Tests/Fuzz/DTLSTarget/*.swift
    swiftc "${flags[@]}" -DFUZZING -DWITH_DTLS -module-name tandem_fuzz -c Tests/Fuzz/Main/Fuzz.swift -o "$out/main-dtls.o"
    objects=("${pure[@]/#/$out/}")
    # shellcheck disable=SC2046
    swiftc -sanitize=$sanitizers "${objects[@]/%/.o}" "$out/TandemMedia.o" "$out/TandemFuzzDTLS.o" "$out/main-dtls.o" $crypto_objects \
        -o "$out/tandem-fuzz-dtls" $(pkg-config --libs nice libsrtp2 openssl | sed 's/-pthread//g')
    fuzzer=$out/tandem-fuzz-dtls
else
    # The other targets' binary links no C library but swift-crypto's own.
    swiftc "${flags[@]}" -DFUZZING -module-name tandem_fuzz -c Tests/Fuzz/Main/Fuzz.swift -o "$out/main.o"
    objects=("${pure[@]/#/$out/}")
    swiftc -sanitize=$sanitizers "${objects[@]/%/.o}" "$out/main.o" $crypto_objects -o "$out/tandem-fuzz"
    fuzzer=$out/tandem-fuzz
fi
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
