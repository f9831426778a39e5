#!/usr/bin/env bash
# pgdog-router health check, usable as a Kubernetes exec liveness probe.
#
#   scripts/health-check.sh [-v]
#
# Required checks (any failure: exit 1):
#   1. pg_isready on PGDOG_HOST:PGDOG_PORT;
#   2. `SELECT 1` through the router with psql as the health user.
# Optional checks (logged, never failing):
#   3. the admin console answers SHOW POOLS;
#   4. /metrics on PGDOG_METRICS_PORT answers with the metric prefix;
#   5. a pgdog-router process is running (skipped where pgrep is missing).
# Exit 0 healthy, 1 unhealthy. -v prints every check; without it only
# failures are printed (to stderr).
#
# Environment (the router's own variables, plus the probe's credentials):
#   PGDOG_HOST (127.0.0.1; 0.0.0.0 and :: mean this host), PGDOG_PORT (5432),
#   PGDOG_ADMIN_PORT (6432), PGDOG_METRICS_PORT (9090),
#   PGDOG_HEALTH_USER (pgdog), PGDOG_HEALTH_PASSWORD, PGDOG_HEALTH_DATABASE
#   (the user name), PGDOG_ADMIN_USER (pgdog_admin), PGDOG_ADMIN_PASSWORD,
#   PGDOG_METRICS_PREFIX (orochi_pgdog), PGDOG_HEALTH_TIMEOUT (seconds, 5).
set -u

verbose=0
case "${1:-}" in
    -v | --verbose) verbose=1 ;;
    "") ;;
    -h | --help)
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [-v]" >&2
        exit 1
        ;;
esac

host=${PGDOG_HOST:-127.0.0.1}
case "$host" in 0.0.0.0 | "::" | "") host=127.0.0.1 ;; esac
port=${PGDOG_PORT:-5432}
admin_port=${PGDOG_ADMIN_PORT:-6432}
metrics_port=${PGDOG_METRICS_PORT:-9090}
user=${PGDOG_HEALTH_USER:-pgdog}
database=${PGDOG_HEALTH_DATABASE:-$user}
admin_user=${PGDOG_ADMIN_USER:-pgdog_admin}
prefix=${PGDOG_METRICS_PREFIX:-orochi_pgdog}
timeout=${PGDOG_HEALTH_TIMEOUT:-5}
export PGCONNECT_TIMEOUT=$timeout

healthy=1

ok() { [ "$verbose" = 1 ] && echo "ok:   $*"; return 0; }
fail() { echo "FAIL: $*" >&2; healthy=0; }
warn() { echo "warn: $*" >&2; }

# 1. required: the client port accepts connections.
if out=$(pg_isready -h "$host" -p "$port" -t "$timeout" 2>&1); then
    ok "pg_isready $host:$port: $out"
else
    fail "pg_isready $host:$port: $out"
fi

# 2. required: a query goes through to PostgreSQL.
if [ "$healthy" = 1 ]; then
    out=$(PGPASSWORD=${PGDOG_HEALTH_PASSWORD:-} psql -X -A -t -q -w -h "$host" -p "$port" -U "$user" -d "$database" \
        -c "SELECT 1" 2>&1)
    if [ "$out" = "1" ]; then
        ok "SELECT 1 through the router as $user/$database"
    else
        fail "SELECT 1 through the router as $user/$database: $out"
    fi
fi

# 3. optional: the admin console.
out=$(PGPASSWORD=${PGDOG_ADMIN_PASSWORD:-} psql -X -A -t -q -w -h "$host" -p "$admin_port" -U "$admin_user" \
    -c "SHOW POOLS" 2>&1)
if [ $? -eq 0 ]; then
    ok "admin console $host:$admin_port answers SHOW POOLS"
else
    warn "admin console $host:$admin_port: SHOW POOLS failed: $(echo "$out" | head -n 1)"
fi

# 4. optional: metrics.
metrics=""
if command -v curl >/dev/null 2>&1; then
    metrics=$(curl -fsS --max-time "$timeout" "http://$host:$metrics_port/metrics" 2>&1)
elif exec 3<>"/dev/tcp/$host/$metrics_port" 2>/dev/null; then
    printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    metrics=$(timeout "$timeout" cat <&3)
    exec 3<&-
fi
if printf '%s\n' "$metrics" | grep -q "^${prefix}_"; then
    ok "/metrics on $host:$metrics_port answers with prefix ${prefix}_"
else
    warn "/metrics on $host:$metrics_port has no ${prefix}_ metrics"
fi

# 5. optional: the process.
if command -v pgrep >/dev/null 2>&1; then
    if pgrep -x pgdog-router >/dev/null 2>&1; then
        ok "pgdog-router process running"
    else
        warn "no pgdog-router process found (another PID namespace?)"
    fi
fi

if [ "$healthy" = 1 ]; then
    [ "$verbose" = 1 ] && echo "healthy"
    exit 0
fi
echo "unhealthy" >&2
exit 1
