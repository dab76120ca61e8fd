# Source me: installs and starts what the tests need, then exports the database's URL.
#   Debian's chromium (Playwright drives it; never `playwright install`) and PostgreSQL for the
#   review app; docker-compose (1.29, needs no Docker daemon) to check docker/compose.yaml.
#   EOCAP_TEST_POSTGRES_URL points the PostgreSQL tests at the started server.
# `make test` sources it before pytest (so `.ci/run` gets it through `make test`).
#
# Idempotent and quick: once everything is installed and PostgreSQL answers, sourcing it again
# only checks (well under a second, no root needed). The first time it installs Debian packages
# (apt, as root or through sudo) and creates and starts a PostgreSQL cluster.
# Without root or sudo: run `sudo bash .ci/services.sh` once, then `make test` as yourself.
# What it cannot provide it names in one line and goes on; the tests that need it then fail,
# each with one line naming this script. It never stops the caller (safe under `set -e`).
#   EOCAP_TEST_SKIP_SERVICES=1   installs and starts nothing (a running PostgreSQL is still used);
#                                the tests whose service is missing are SKIPPED.
#   EOCAP_TEST_POSTGRES_URL=...  already set: that server is used, PostgreSQL is not installed.
_eocap_warn() { echo "eocap services: $*" >&2; }
_eocap_apt_install() {
    echo "eocap services: installing $* (apt; first time only)" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null ||
        { $sudo apt-get update -q >/dev/null &&
          DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null; }
}
_eocap_pg_answers() {
    command -v psql >/dev/null &&
        PGCONNECT_TIMEOUT=5 psql "$1" -tAc 'SELECT 1' 2>/dev/null | grep -q 1
}
_eocap_services() {
    local sudo="" need=() version missing=() url="postgresql://eocap:eocap@127.0.0.1:5432/eocap_test"
    local fix="run \`sudo bash .ci/services.sh\`, then \`make test\`"
    # Quick path: everything is there already (a second `make test`, `.ci/run`, a non-root user).
    local want_pg=1
    [ -n "${EOCAP_TEST_POSTGRES_URL:-}" ] && want_pg=""
    if [ -n "$want_pg" ] && _eocap_pg_answers "$url"; then
        export EOCAP_TEST_POSTGRES_URL="$url"
        want_pg=""
    fi
    if [ "${EOCAP_TEST_SKIP_SERVICES:-}" = 1 ]; then
        _eocap_warn "EOCAP_TEST_SKIP_SERVICES=1: nothing installed or started;" \
            "the tests whose PostgreSQL, Chromium or docker-compose is missing will be SKIPPED"
        return 0
    fi
    command -v chromium >/dev/null || need+=(chromium)
    [ -z "$want_pg" ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
    if [ ${#need[@]} -eq 0 ] && [ -z "$want_pg" ] && command -v docker-compose >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
            sudo=sudo
        else
            _eocap_warn "not root and no sudo: cannot install or start the test services; $fix"
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        _eocap_warn "no apt-get: install chromium, postgresql and docker-compose yourself" \
            "(or set EOCAP_TEST_POSTGRES_URL to a server of yours)"
        return 0
    fi
    [ ${#need[@]} -eq 0 ] || _eocap_apt_install "${need[@]}" || _eocap_warn "apt could not install ${need[*]}"
    # Without recommends: they would add the Docker daemon (docker.io), which config never uses.
    command -v docker-compose >/dev/null || _eocap_apt_install --no-install-recommends docker-compose ||
        _eocap_warn "apt could not install docker-compose"
    if [ -n "$want_pg" ] && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        { pg_lsclusters -h 2>/dev/null | grep -q "^$version main" ||
            $sudo pg_createcluster "$version" main >/dev/null; } &&
        { pg_lsclusters -h | grep -q "^$version main .* online" ||
            $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start; } &&
        { $sudo su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='eocap'\"" | grep -q 1 ||
            $sudo su postgres -c "psql -q -c \"CREATE ROLE eocap LOGIN PASSWORD 'eocap' CREATEDB\""; } &&
        { $sudo su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='eocap_test'\"" | grep -q 1 ||
            $sudo su postgres -c "createdb -O eocap eocap_test"; }
        if _eocap_pg_answers "$url"; then
            export EOCAP_TEST_POSTGRES_URL="$url"
        else
            _eocap_warn "PostgreSQL did not start or does not answer at $url"
        fi
    fi
    command -v chromium >/dev/null || missing+=(chromium)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    [ -n "${EOCAP_TEST_POSTGRES_URL:-}" ] || missing+=(PostgreSQL)
    [ ${#missing[@]} -eq 0 ] || _eocap_warn "still missing: ${missing[*]}; their tests will fail"
    return 0
}
_eocap_services || true
