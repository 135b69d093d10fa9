#!/usr/bin/env bash
# Brings a Debian machine to the point where the IOC runs: system packages, TimescaleDB built from
# Debian's source package, PostgreSQL/Redis/Mosquitto started, a virtualenv with the project.
# Every step checks first and skips what is done, so a second run takes seconds.
#
#   bash deploy/bootstrap.sh demo   # set up, then run the demo (Ctrl-C stops it)
#   bash deploy/bootstrap.sh test   # set up, then run the whole test suite
#   bash deploy/bootstrap.sh setup  # set up only
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="$ROOT/var"
CACHE="${IOC_CACHE_DIR:-/var/cache/ioc}"
PGVER=15
mkdir -p "$VAR" "$CACHE"

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: this step needs root (apt-get / service start): re-run as root or with sudo" >&2
    exit 1
  fi
}

# ---------------------------------------------------------------- system packages
APT_PACKAGES=(
  postgresql-$PGVER postgresql-server-dev-$PGVER postgresql-client-$PGVER
  redis-server mosquitto mosquitto-clients
  cmake gcc make dpkg-dev libssl-dev xz-utils
  python3 python3-venv python3-dev
  chromium fonts-noto-core
  ffmpeg
  gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- TimescaleDB (Apache build)
PGLIB="$(/usr/lib/postgresql/$PGVER/bin/pg_config --pkglibdir)"
PGSHARE="$(/usr/lib/postgresql/$PGVER/bin/pg_config --sharedir)"
if ! ls "$PGLIB"/timescaledb-*.so >/dev/null 2>&1 || [ ! -f "$PGSHARE/extension/timescaledb.control" ]; then
  need_root
  step "building TimescaleDB from Debian's trixie source package (Apache-only)"
  TS="$CACHE/timescaledb"
  mkdir -p "$TS/lists/partial"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$TS/sources.list"
  APTO=(-o "Dir::Etc::SourceList=$TS/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$TS/lists" -o APT::Sandbox::User=root)
  apt-get "${APTO[@]}" update -qq
  rm -rf "$TS/src" && mkdir -p "$TS/src"
  (cd "$TS/src" && apt-get "${APTO[@]}" source -qq --download-only timescaledb >/dev/null \
     && dpkg-source -x --no-check ./*.dsc tsdb >/dev/null)
  (cd "$TS/src/tsdb" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAPACHE_ONLY=ON \
       -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
       -DPG_CONFIG=/usr/lib/postgresql/$PGVER/bin/pg_config >/dev/null 2>&1 \
     && cmake --build build -j"$(nproc)" >/dev/null 2>&1 && cmake --install build >/dev/null)
fi

# ---------------------------------------------------------------- PostgreSQL
PGCONF="/etc/postgresql/$PGVER/main/conf.d/timescaledb.conf"
pg_online() { pg_lsclusters -h 2>/dev/null | awk -v v=$PGVER '$1==v && $2=="main" {print $4}' | grep -q online; }
pg_restart=0
if [ ! -f "$PGCONF" ]; then
  need_root
  step "enabling timescaledb in shared_preload_libraries"
  mkdir -p "$(dirname "$PGCONF")"
  printf "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n" > "$PGCONF"
  pg_restart=1
fi
if ! pg_online; then
  need_root; step "starting PostgreSQL $PGVER"
  pg_ctlcluster --skip-systemctl-redirect $PGVER main start
elif [ $pg_restart = 1 ]; then
  step "restarting PostgreSQL $PGVER"
  pg_ctlcluster --skip-systemctl-redirect $PGVER main restart
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done

# Database role and secrets: generated once, kept in var/ioc.env (read by the settings).
ENVFILE="$VAR/ioc.env"
if [ ! -f "$ENVFILE" ]; then
  step "generating secrets in var/ioc.env"
  umask 077
  dbpw="$(head -c 18 /dev/urandom | base64 | tr -d '+/=')"
  apppw="$(head -c 18 /dev/urandom | base64 | tr -d '+/=')"
  mqpw="$(head -c 18 /dev/urandom | base64 | tr -d '+/=')"
  jwt="$(head -c 32 /dev/urandom | base64 | tr -d '+/=')"
  cat > "$ENVFILE" <<ENV
IOC_DATABASE_URL=postgresql://ioc:${dbpw}@127.0.0.1:5432/ioc
IOC_DATABASE_APP_PASSWORD=${apppw}
IOC_MQTT_PASSWORD=${mqpw}
IOC_JWT_SECRET=${jwt}
ENV
  umask 022
fi
# shellcheck disable=SC1090
. "$ENVFILE"
dbpw="$(printf '%s' "$IOC_DATABASE_URL" | sed -E 's#^postgresql://ioc:([^@]*)@.*#\1#')"
psql_su() { if [ "$(id -u)" = 0 ]; then su postgres -c "psql -qAtX -v ON_ERROR_STOP=1 $*"; else psql -qAtX -v ON_ERROR_STOP=1 -U postgres -h 127.0.0.1 "$@"; fi; }
if ! PGPASSWORD="$dbpw" psql -qAtX -h 127.0.0.1 -U ioc -d ioc -c "select 1" >/dev/null 2>&1; then
  step "creating PostgreSQL roles and database ioc"
  psql_su -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ioc') THEN
    CREATE ROLE ioc LOGIN CREATEDB CREATEROLE PASSWORD '${dbpw}';
  ELSE
    ALTER ROLE ioc LOGIN CREATEDB CREATEROLE PASSWORD '${dbpw}';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ioc_app') THEN
    CREATE ROLE ioc_app LOGIN PASSWORD '${IOC_DATABASE_APP_PASSWORD}';
  ELSE
    ALTER ROLE ioc_app LOGIN PASSWORD '${IOC_DATABASE_APP_PASSWORD}';
  END IF;
END \$\$;
GRANT ioc_app TO ioc WITH ADMIN OPTION;
SQL
  psql_su -d postgres -c "\"SELECT 1 FROM pg_database WHERE datname='ioc'\"" | grep -q 1 \
    || psql_su -d postgres -c "\"CREATE DATABASE ioc OWNER ioc\""
fi
# timescaledb's control file marks it trusted, so the database owner (ioc) creates it in each
# database it makes (the main one and every test run's own) without superuser rights.

# ---------------------------------------------------------------- Redis
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  step "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ioc.log
  for _ in $(seq 1 20); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.25; done
fi

# ---------------------------------------------------------------- Python environment
VENV="$ROOT/.venv"
stamp="$VENV/.ioc-installed"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtualenv .venv"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing the project and its dependencies into .venv"
  if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e "$ROOT[test]"; } \
       >"$VAR/pip.log" 2>&1; then
    tail -20 "$VAR/pip.log" >&2
    echo "error: pip install failed (full log: var/pip.log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

# ---------------------------------------------------------------- schema, site, broker
# Migrations, rollups, the site file into the database, and the project's own Mosquitto (the
# system broker, if any, is left alone: the IOC runs its own instance with authentication, ACLs
# generated from the site file and persistence under var/mosquitto).
"$VENV/bin/ioc" setup
# Real footage for the camera demo and tests: vtest.avi from Debian's opencv-doc (cached).
"$VENV/bin/python" -m analytics.vision.footage >/dev/null

case "${1:-setup}" in
  setup) step "set-up done" ;;
  demo)  shift; exec "$VENV/bin/ioc" demo "$@" ;;
  test)  shift; cd "$ROOT"; exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: bash deploy/bootstrap.sh [setup|demo|test]" >&2; exit 2 ;;
esac
