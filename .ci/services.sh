# Source me: installs and starts what the tests need, then exports the database's URL.
#   Debian's chromium (Playwright drives it; never `playwright install`) and PostgreSQL for the
#   review app; docker-compose (1.29, needs no Docker daemon) to check docker/compose.yaml.
#   EOCAP_TEST_POSTGRES_URL points the PostgreSQL tests at the started server.
# `.ci/run` sources it; locally: `. .ci/services.sh && make test`.
_eocap_apt_install() {
    echo "installing $* (apt)" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null ||
        { $sudo apt-get update -q >/dev/null &&
          DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null; }
}
_eocap_services() {
    local sudo="" need=() version
    [ "$(id -u)" = 0 ] || sudo=sudo
    command -v chromium >/dev/null || need+=(chromium)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
    [ ${#need[@]} -eq 0 ] || _eocap_apt_install "${need[@]}"
    # Without recommends: they would add the Docker daemon (docker.io), which config never uses.
    command -v docker-compose >/dev/null || _eocap_apt_install --no-install-recommends docker-compose
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
