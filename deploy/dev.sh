#!/usr/bin/env bash
# One entry point for a fresh Debian machine with Swift:
#   deploy/dev.sh run    builds and starts `tandem serve --dev` (embedded store, dev certificates made for you)
#   deploy/dev.sh test   installs what the tests need and runs every test
#   deploy/dev.sh docs   writes the README's settings tables and deploy/tandem.jsonc from the settings' declarations
set -euo pipefail
cd "$(dirname "$0")/.."

# The media relay links libnice (on GLib), the system OpenSSL (DTLS) and libsrtp2.
APT_PACKAGES=(pkg-config libsqlite3-dev libnice-dev libglib2.0-dev libssl-dev libsrtp2-dev)
# coturn's client tools (turnutils_uclient, turnutils_peer) test our TURN service; headless Chromium
# runs the browser client and the demo page; iproute2's `ip` makes the tests' network namespaces;
# the PostgreSQL store's tests start servers of their own from Debian's postgresql binaries.
TEST_APT_PACKAGES=(coturn chromium chromium-driver iproute2 postgresql)

install_apt() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if ((${#missing[@]})); then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
        # coturn and postgresql are here for their tools and binaries: on a machine with systemd their
        # packages also start servers (TURN on 3478, which `deploy/dev.sh run` needs). Stop the ones
        # this script just installed.
        if [ -d /run/systemd/system ]; then
            for service in coturn postgresql; do
                case " ${missing[*]} " in *" $service "*) $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true ;; esac
            done
        fi
    fi
}

case "${1:-}" in
run)
    shift
    # TANDEM_BIN: an already built binary instead of a release build (the tests start this script with theirs).
    binary="${TANDEM_BIN:-}"
    if [ -z "$binary" ]; then
        install_apt "${APT_PACKAGES[@]}"
        swift build -c release --product tandem
        binary=.build/release/tandem
    fi
    # TURN on loopback too, so that the demo's ICE servers work out of the box, and a stand-in of
    # Daily's REST API, so that sessions can move to the SFU.
    extra=()
    case " $* " in *" --turn-listen"*) ;; *) extra+=(--turn-listen 127.0.0.1:3478) ;; esac
    case " $* " in *" --sfu-"*) ;; *) extra+=(--sfu-standin 127.0.0.1:8444) ;; esac
    exec "$binary" serve --dev "${extra[@]}" "$@"
    ;;
test)
    install_apt "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"
    command -v node >/dev/null || install_apt nodejs
    # Every test talks to loopback or to namespaces it made: never through a proxy the caller may set.
    export no_proxy="127.0.0.1,localhost,::1,10.77.0.0/16${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1,10.77.0.0/16${NO_PROXY:+,$NO_PROXY}"
    swift build --build-tests
    swift test --skip-build
    # The browser client's pure parts (protocol state machine, backoff, stats), in node's test runner
    # (clients/js/package.json makes its files ES modules for any node from 18 on).
    node --test clients/js/test/*.test.js
    # End to end: independent WebRTC peers (aiortc) and headless Chromium through a running `tandem serve`.
    if [ ! -x .venv/bin/python ] || ! cmp -s Tests/e2e/requirements.txt .venv/requirements.txt; then
        python3 -c 'import ensurepip, venv' 2>/dev/null || install_apt python3-venv
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -r Tests/e2e/requirements.txt
        cp Tests/e2e/requirements.txt .venv/requirements.txt
    fi
    TANDEM_BIN="$PWD/.build/debug/tandem" .venv/bin/python -m pytest -q Tests/e2e
    ;;
docs)
    install_apt "${APT_PACKAGES[@]}"
    swift build --product tandem
    .build/debug/tandem settings --jsonc >deploy/tandem.jsonc
    # ENVIRON, not -v: awk would read backslashes in the tables as escapes.
    TABLES="$(.build/debug/tandem settings --markdown)" awk '
        /^<!-- settings:begin/ { print; print ENVIRON["TABLES"]; skip = 1; next }
        /^<!-- settings:end/ { skip = 0 }
        !skip' README.md >README.md.new
    mv README.md.new README.md
    ;;
*)
    echo "usage: deploy/dev.sh run [serve options] | deploy/dev.sh test | deploy/dev.sh docs" >&2
    exit 2
    ;;
esac
