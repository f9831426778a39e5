#!/usr/bin/env bash
# `make run`: starts pgdog-router. With --config or PGDOG_CONFIG it runs
# against that configuration. Without, it starts its own PostgreSQL primary
# and streaming replica in a temporary data folder, renders its configuration
# into .run/ with pgdog-config-gen (values file .run/values.toml), and runs
# the router in the foreground until Ctrl-C, then stops PostgreSQL and removes
# the data folder.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/build/bin/pgdog-router"
GEN="$ROOT/build/bin/pgdog-config-gen"

if [ "${1:-}" = "--config" ] || [ -n "${PGDOG_CONFIG:-}" ]; then
    exec "$BIN" "$@"
fi

PGBIN=$(pg_config --bindir 2>/dev/null || true)
if [ ! -x "$PGBIN/initdb" ]; then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ ! -x "$PGBIN/initdb" ]; then
    echo "make run: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    exit 1
fi

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_free() {
    python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

DATA=$(mktemp -d "${TMPDIR:-/tmp}/pgdog-run.XXXXXX")
chmod 755 "$DATA"
[ "$(id -u)" = 0 ] && chown postgres: "$DATA"
PRIMARY_PORT=$(free_port)
REPLICA_PORT=$(free_port)

cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$DATA/replica" -m immediate stop >/dev/null 2>&1 || true
    as_pg "$PGBIN/pg_ctl" -D "$DATA/primary" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DATA"
}
trap cleanup EXIT

echo "starting PostgreSQL primary on 127.0.0.1:$PRIMARY_PORT (data in $DATA)"
as_pg "$PGBIN/initdb" --no-sync -U postgres --auth-local=trust --auth-host=scram-sha-256 -D "$DATA/primary" >"$DATA/initdb.log"
cat >>"$DATA/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PRIMARY_PORT
unix_socket_directories = '$DATA'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
wal_level = replica
max_wal_senders = 5
hot_standby = on
CONF
# Local throwaway cluster: the router logs in with a password, replication is trusted.
cat >"$DATA/primary/pg_hba.conf" <<HBA
local all all trust
host replication all 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
as_pg "$PGBIN/pg_ctl" -D "$DATA/primary" -l "$DATA/primary.log" -w start >/dev/null
as_pg "$PGBIN/psql" -XAtq -h "$DATA" -p "$PRIMARY_PORT" -U postgres -d postgres \
    -c "CREATE ROLE pgdog LOGIN SUPERUSER PASSWORD 'pgdog'" -c "CREATE DATABASE pgdog OWNER pgdog"

echo "starting PostgreSQL replica on 127.0.0.1:$REPLICA_PORT"
as_pg "$PGBIN/pg_basebackup" -w -c fast -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DATA/replica" -R -X stream >/dev/null
cat >>"$DATA/replica/postgresql.conf" <<CONF
port = $REPLICA_PORT
CONF
as_pg "$PGBIN/pg_ctl" -D "$DATA/replica" -l "$DATA/replica.log" -w start >/dev/null

PORT=${PGDOG_PORT:-5432}
port_free "$PORT" || PORT=$(free_port)
ADMIN_PORT=${PGDOG_ADMIN_PORT:-6432}
port_free "$ADMIN_PORT" || ADMIN_PORT=$(free_port)
METRICS_PORT=${PGDOG_METRICS_PORT:-9090}
port_free "$METRICS_PORT" || METRICS_PORT=$(free_port)
API_PORT=${PGDOG_API_PORT:-8080}
port_free "$API_PORT" || API_PORT=$(free_port)

# The configuration is rendered from the product templates by
# pgdog-config-gen, so every `make run` exercises it: a values file describes
# this cluster. Variables describing the cluster cannot be overridden from the
# environment; the others can (POOL_MODE=session make run). PGDOG_LOG_LEVEL
# is left to the router, which also accepts directives (info,pgdog_router=debug).
mkdir -p "$ROOT/.run"
cat >"$ROOT/.run/values.toml" <<VALUES
# Written by scripts/run-local.sh for its local cluster; pgdog-config-gen
# renders config/pgdog.toml.tmpl and config/users.toml.tmpl with it into
# .run/pgdog.toml and .run/users.toml.
ClusterName = "local"
Namespace = "local"
DatabaseName = "pgdog"
ListenHost = "127.0.0.1"
Port = $PORT
AdminPort = $ADMIN_PORT
MetricsPort = $METRICS_PORT
ApiPort = $API_PORT
PrimaryHost = "127.0.0.1"
PostgresPort = $PRIMARY_PORT
ReplicaHost = "127.0.0.1"
ReplicaPort = $REPLICA_PORT
PoolMode = "transaction"
MaxPoolSize = 20
AppUser = "pgdog"
AppPasswordEnv = "PGDOG_APP_PASSWORD"
# The local user may use the admin console too (psql -p AdminPort -U pgdog).
AdminUsers = "pgdog"
VALUES

config_gen() {
    env -u CLUSTER_NAME -u NAMESPACE -u DATABASE_NAME -u PGDOG_HOST -u PRIMARY_HOST -u REPLICA_HOST \
        -u PGDOG_POSTGRES_PORT -u PGDOG_REPLICA_PORT -u APP_USER -u APP_PASSWORD_ENV -u PGDOG_LOG_LEVEL \
        -u ADMIN_USERS \
        PGDOG_PORT="$PORT" PGDOG_ADMIN_PORT="$ADMIN_PORT" PGDOG_METRICS_PORT="$METRICS_PORT" PGDOG_API_PORT="$API_PORT" \
        "$GEN" -values "$ROOT/.run/values.toml" "$@"
}
config_gen -template "$ROOT/config/pgdog.toml.tmpl" -output "$ROOT/.run/pgdog.toml"
config_gen -template "$ROOT/config/users.toml.tmpl" -output "$ROOT/.run/users.toml" -config "$ROOT/.run/pgdog.toml"
echo "configuration: .run/pgdog.toml and .run/users.toml, rendered by pgdog-config-gen from .run/values.toml"

echo
echo "pgdog-router on 127.0.0.1:$PORT — connect with:"
echo "    PGPASSWORD=pgdog psql -h 127.0.0.1 -p $PORT -U pgdog pgdog"
echo "Admin console: PGPASSWORD=pgdog psql -h 127.0.0.1 -p $ADMIN_PORT -U pgdog   (SHOW POOLS;)"
echo "Metrics:       curl http://127.0.0.1:$METRICS_PORT/metrics"
echo "API:           curl http://127.0.0.1:$API_PORT/readyz"
echo "Ctrl-C stops the router and the local PostgreSQL."
echo
set +e
PGDOG_APP_PASSWORD=pgdog PGDOG_PORT=$PORT PGDOG_ADMIN_PORT=$ADMIN_PORT PGDOG_METRICS_PORT=$METRICS_PORT PGDOG_API_PORT=$API_PORT \
    "$BIN" --config "$ROOT/.run/pgdog.toml" --users "$ROOT/.run/users.toml" &
ROUTER=$!
trap 'kill -TERM $ROUTER 2>/dev/null' INT TERM
wait $ROUTER
wait $ROUTER 2>/dev/null
exit 0
