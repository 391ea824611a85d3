# Shared set-up steps for scripts/run and scripts/test. Sourced, not run.
# Each step checks first and installs only what is missing (Debian/Ubuntu,
# as root; otherwise it says exactly what to install).

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        say "need root for: $*"; return 1; fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        say "Rust is not installed: install it with rustup (https://rustup.rs), then rerun."
        exit 1
    fi
}

# The PostgreSQL server binaries (initdb, pg_ctl): the embedded cluster and the
# test fallback need them.
pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

ensure_postgres_binaries() {
    if [ -n "$(pg_bindir)" ] || command -v initdb >/dev/null; then return 0; fi
    say "installing PostgreSQL (apt-get install postgresql)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
}

# The Redis tests start their own redis-server on a free port (so they can
# stop it mid-test): they need the binary, not a running service.
ensure_redis_server() {
    if command -v redis-server >/dev/null; then return 0; fi
    say "installing Redis (apt-get install redis-server)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}

ensure_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then return 0; fi
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked
}

# Makes TENANTRY_TEST_DATABASE_URL point at a PostgreSQL server the tests may
# create databases in: the one given, the machine's on 127.0.0.1:5432, or a
# private cluster started under target/ for this run.
ensure_test_database() {
    if [ -n "${TENANTRY_TEST_DATABASE_URL:-}" ]; then return 0; fi
    if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 -U postgres; then
        export TENANTRY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
        return 0
    fi
    # A machine cluster that is installed but stopped.
    if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
        say "starting the machine's PostgreSQL cluster"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
        sleep 2
        if pg_isready -q -h 127.0.0.1 -p 5432; then
            export TENANTRY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
            return 0
        fi
    fi
    ensure_postgres_binaries
    local bin dir port=54329 user
    bin=$(pg_bindir)
    dir="$(pwd)/target/test-pg"
    user=$(id -un)
    say "starting a private PostgreSQL for the tests in $dir (port $port)"
    mkdir -p "$dir"
    local run=()
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$dir"; chmod o+x "$(pwd)" "$(pwd)/target"
        run=(runuser -u postgres --)
        user=postgres
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
    fi
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c max_connections=300" \
        start >/dev/null || true
    export TENANTRY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# schemathesis, the independent fuzzer that reads /openapi.json (PyPI).
ensure_schemathesis() {
    if command -v schemathesis >/dev/null; then return 0; fi
    say "installing schemathesis (pip)"
    python3 -m pip install -q --disable-pip-version-check 'schemathesis>=4,<5' 2>&1 | grep -v "^WARNING: Running pip as" >&2 || true
    command -v schemathesis >/dev/null || { say "schemathesis did not install"; return 1; }
}
