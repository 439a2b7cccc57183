#!/usr/bin/env bash
# One entry point for a fresh Debian machine with Swift:
#   deploy/dev.sh run    builds and starts `tandem serve --dev` (embedded store, dev certificates made for you)
#   deploy/dev.sh test   installs what the tests need and runs every test
#   deploy/dev.sh cluster  starts a PostgreSQL server in ./data/cluster and two nodes on it, on loopback
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
cluster)
    # Two nodes on one PostgreSQL store, on loopback: Debian's PostgreSQL in ./data/cluster/postgres (as
    # the postgres user when run as root), nodes n1 and n2 in dev mode, one cluster secret made once.
    shift
    install_apt "${APT_PACKAGES[@]}" postgresql
    binary="${TANDEM_BIN:-}"
    if [ -z "$binary" ]; then
        swift build -c release --product tandem
        binary=.build/release/tandem
    fi
    root="$PWD/data/cluster"
    pg_port="${TANDEM_CLUSTER_PG_PORT:-55432}"
    pg_bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -1)
    mkdir -p "$root/postgres"
    as_postgres=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$root/postgres"
        as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
    if [ ! -d "$root/postgres/data" ]; then
        "${as_postgres[@]}" "$pg_bin/initdb" -D "$root/postgres/data" -U tandem --auth=trust -E UTF8 --no-instructions >/dev/null
    fi
    [ -s "$root/secret" ] || (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$root/secret")
    pids=()
    stop_all() {
        for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
        wait
    }
    trap stop_all EXIT INT TERM
    "${as_postgres[@]}" "$pg_bin/postgres" -D "$root/postgres/data" -p "$pg_port" -k "$root/postgres" \
        -c listen_addresses=127.0.0.1 >"$root/postgres/server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$pg_port") 2>/dev/null && break
        sleep 0.1
    done
    store="postgres://tandem@127.0.0.1:$pg_port/postgres?sslmode=disable"
    for node in 1 2; do
        # The node's own PID (not a pipe's), its lines marked with its name.
        TANDEM_CLUSTER_SECRET="$(cat "$root/secret")" "$binary" serve --dev --node "n$node" --listen "127.0.0.1:$((8441 + 2 * node))" \
            --data-dir "$root/n$node" --store "$store" "$@" > >(sed -u "s/^/n$node: /") 2>&1 &
        pids+=($!)
    done
    for port in 8443 8445; do
        for _ in $(seq 300); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
    done
    echo "cluster: PostgreSQL on 127.0.0.1:$pg_port (log $root/postgres/server.log)"
    echo "cluster: node n1 at https://127.0.0.1:8443 (trust $root/n1/certs/ca.pem), node n2 at https://127.0.0.1:8445 (trust $root/n2/certs/ca.pem)"
    echo "cluster: open https://127.0.0.1:8443/?session=try-it in one tab and https://127.0.0.1:8445/?session=try-it in another"
    wait
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
    echo "usage: deploy/dev.sh run [serve options] | deploy/dev.sh test | deploy/dev.sh cluster [serve options] | deploy/dev.sh docs" >&2
    exit 2
    ;;
esac
