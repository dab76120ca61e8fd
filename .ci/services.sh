# Source me: installs and starts what the review app's tests need, then exports its URL.
#   Debian's chromium (Playwright drives it; never `playwright install`) and PostgreSQL.
#   EOCAP_TEST_POSTGRES_URL points the PostgreSQL tests at the started server.
# `.ci/run` sources it; locally: `. .ci/services.sh && make test`.
_eocap_services() {
    local sudo="" need=() version
    [ "$(id -u)" = 0 ] || sudo=sudo
    command -v chromium >/dev/null || need+=(chromium)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]} (apt)" >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}" >/dev/null ||
            { $sudo apt-get update -q >/dev/null &&
              DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
    fi
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    pg_lsclusters -h 2>/dev/null | grep -q "^$version main" || $sudo pg_createcluster "$version" main >/dev/null
    pg_lsclusters -h | grep -q "^$version main .* online" ||
        $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start
    $sudo su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='eocap'\"" | grep -q 1 ||
        $sudo su postgres -c "psql -q -c \"CREATE ROLE eocap LOGIN PASSWORD 'eocap' CREATEDB\""
    $sudo su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='eocap_test'\"" | grep -q 1 ||
        $sudo su postgres -c "createdb -O eocap eocap_test"
    export EOCAP_TEST_POSTGRES_URL="postgresql://eocap:eocap@127.0.0.1:5432/eocap_test"
}
_eocap_services
