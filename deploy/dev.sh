#!/usr/bin/env bash
# One entry point for a fresh Debian machine with Swift:
#   deploy/dev.sh run    builds and starts `tandem serve --dev` (embedded store, dev certificates made for you)
#   deploy/dev.sh test   installs what the tests need and runs every test
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(pkg-config libsqlite3-dev)

install_apt() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ((${#missing[@]})); then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

case "${1:-}" in
run)
    shift
    install_apt "${APT_PACKAGES[@]}"
    swift build -c release --product tandem
    exec .build/release/tandem serve --dev "$@"
    ;;
test)
    install_apt "${APT_PACKAGES[@]}"
    swift build --build-tests
    swift test --skip-build
    ;;
*)
    echo "usage: deploy/dev.sh run [serve options] | deploy/dev.sh test" >&2
    exit 2
    ;;
esac
