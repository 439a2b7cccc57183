#!/usr/bin/env bash
# Makes a development CA and a server certificate for localhost, 127.0.0.1 and ::1.
#   certs/make-dev.sh [DIR]    (default: certs/dev, which git ignores)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/certs/dev}"
bin="$root/.build/release/tandem"
[ -x "$bin" ] || bin="$root/.build/debug/tandem"
if [ ! -x "$bin" ]; then
    (cd "$root" && swift build -c release --product tandem)
    bin="$root/.build/release/tandem"
fi
exec "$bin" certs dev --out "$out"
