#!/usr/bin/env bash
# Private MariaDB and Redis for `make run` / `make cluster`.
#
#   scripts/services.sh start    start both (idempotent), create database `chat`
#   scripts/services.sh stop     stop both
#   scripts/services.sh status   show what runs (exit 0 only when both run)
#   scripts/services.sh env      print `export CHAT_DATABASE_URL=...` / `CHAT_REDIS_URL=...`
#
# Everything lives under $ROOT/.data/; servers listen on 127.0.0.1 only:
#   MariaDB on ${CHAT_MYSQL_PORT:-13306}, Redis on ${CHAT_REDIS_PORT:-16379}.
# The system MariaDB (3306) and Redis (6379) are never touched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DATA="$ROOT/.data"
MYSQL_PORT="${CHAT_MYSQL_PORT:-13306}"
REDIS_PORT="${CHAT_REDIS_PORT:-16379}"

MYSQL_DATADIR="$DATA/mysql"
MYSQL_SOCKET="$DATA/mysql.sock"
MYSQL_PIDFILE="$DATA/mysql.pid"
MYSQL_LOG="$DATA/mysql.log"
REDIS_DIR="$DATA/redis"
REDIS_PIDFILE="$DATA/redis.pid"
REDIS_LOG="$DATA/redis.log"

START_TIMEOUT=60 # seconds
STOP_TIMEOUT=60  # seconds

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# Options shared by mariadb-install-db and mariadbd (InnoDB file layout must match). A redo log
# of 512 MiB: with a small one, InnoDB must flush dirty pages to make room every few seconds
# under load, and commits stall behind it (the tail of the latency figures). Dirty pages are
# written back steadily and gently (from 10% of the buffer pool, at 200 pages/s when nothing
# presses): left alone (the default, no low-water mark) they pile up until the redo log is nearly
# full, and the flush that must then run at full speed delays commits by tens of milliseconds
# (docs/BENCHMARKS.md, round 2, eighth pass).
MYSQL_COMMON_OPTS=(
    --innodb-buffer-pool-size=512M
    --innodb-log-file-size=512M
    --innodb-data-file-path=ibdata1:12M:autoextend
    --character-set-server=utf8mb4
    --collation-server=utf8mb4_general_ci
)
USER_OPT=()
if [ "$(id -u)" -eq 0 ]; then
    USER_OPT=(--user=root)
fi

die() {
    echo "services: ERROR: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found; run 'make deps' (scripts/install-deps.sh)"
}

# pid_of <pidfile> <dir>: print the pid if that process runs with <dir> as its
# working directory (mariadbd chdirs to its datadir, redis-server to --dir), so
# a stale pid file can never lead us to another program, e.g. the system MariaDB.
pid_of() {
    local pidfile=$1 dir=$2 pid cwd
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] || return 1
    # Unreadable for a zombie or a vanished process.
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    [ "$cwd" = "$dir" ] || return 1
    echo "$pid"
}

port_open() { # port_open <port>: true when something accepts TCP connections on 127.0.0.1:<port>
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

mysql_cli() {
    mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$MYSQL_PORT" -uroot "$@"
}

log_tail() {
    echo "---- last lines of $1 ----" >&2
    tail -n 30 "$1" >&2 2>/dev/null || true
    echo "----" >&2
}

# stop_pid <pid> <name>: SIGTERM, bounded wait, then SIGKILL.
stop_pid() {
    local pid=$1 name=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null || grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
            echo "$name stopped (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not stop within ${STOP_TIMEOUT}s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

start_mysql() {
    need mariadbd
    need mariadb-install-db
    need mariadb
    local pid
    if pid=$(pid_of "$MYSQL_PIDFILE" "$MYSQL_DATADIR"); then
        echo "MariaDB already running (pid $pid, port $MYSQL_PORT)"
    else
        if port_open "$MYSQL_PORT"; then
            die "port $MYSQL_PORT is already in use by another program; set CHAT_MYSQL_PORT to a free port"
        fi
        mkdir -p "$DATA"
        if [ ! -d "$MYSQL_DATADIR/mysql" ]; then
            echo "initialising MariaDB datadir $MYSQL_DATADIR"
            rm -rf "$MYSQL_DATADIR.tmp"
            if ! mariadb-install-db --no-defaults "${USER_OPT[@]}" \
                --datadir="$MYSQL_DATADIR.tmp" \
                --auth-root-authentication-method=normal --skip-test-db \
                "${MYSQL_COMMON_OPTS[@]}" >"$DATA/mysql-install.log" 2>&1; then
                log_tail "$DATA/mysql-install.log"
                die "mariadb-install-db failed"
            fi
            rm -rf "$MYSQL_DATADIR"
            mv "$MYSQL_DATADIR.tmp" "$MYSQL_DATADIR"
        fi
        rm -f "$MYSQL_PIDFILE" "$MYSQL_SOCKET"
        # setsid: detach from the terminal so Ctrl-C of `make run` leaves it alone.
        setsid mariadbd --no-defaults "${USER_OPT[@]}" \
            --datadir="$MYSQL_DATADIR" \
            --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
            --socket="$MYSQL_SOCKET" --pid-file="$MYSQL_PIDFILE" \
            --log-error="$MYSQL_LOG" --tmpdir="$DATA" \
            --skip-name-resolve --max-connections=500 \
            --innodb-flush-log-at-trx-commit=1 \
            --innodb-flush-neighbors=0 \
            --innodb-io-capacity=200 --innodb-max-dirty-pages-pct-lwm=10 \
            "${MYSQL_COMMON_OPTS[@]}" \
            </dev/null >>"$MYSQL_LOG" 2>&1 &
        local launched=$! i
        echo "starting MariaDB on 127.0.0.1:$MYSQL_PORT (pid $launched, log $MYSQL_LOG)"
        for ((i = 0; ; i++)); do
            if mysql_cli -e 'select 1' >/dev/null 2>&1; then
                break
            fi
            if ! kill -0 "$launched" 2>/dev/null; then
                log_tail "$MYSQL_LOG"
                die "MariaDB exited during start-up"
            fi
            if ((i >= START_TIMEOUT * 10)); then
                log_tail "$MYSQL_LOG"
                die "MariaDB not ready after ${START_TIMEOUT}s (pid $launched still running; 'scripts/services.sh stop' to stop it)"
            fi
            sleep 0.1
        done
        echo "MariaDB ready"
    fi
    mysql_cli -e 'CREATE DATABASE IF NOT EXISTS chat CHARACTER SET utf8mb4' ||
        die "could not create database chat"
}

start_redis() {
    need redis-server
    need redis-cli
    local pid i
    if pid=$(pid_of "$REDIS_PIDFILE" "$REDIS_DIR"); then
        echo "Redis already running (pid $pid, port $REDIS_PORT)"
        return 0
    fi
    if port_open "$REDIS_PORT"; then
        die "port $REDIS_PORT is already in use by another program; set CHAT_REDIS_PORT to a free port"
    fi
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PIDFILE"
    # "-::1": listen on ::1 too when IPv6 is available (optional bind address).
    if ! redis-server --port "$REDIS_PORT" --bind 127.0.0.1 -::1 \
        --dir "$REDIS_DIR" --daemonize yes \
        --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
        --save "" --appendonly no </dev/null; then
        log_tail "$REDIS_LOG"
        die "redis-server failed to start"
    fi
    echo "starting Redis on 127.0.0.1:$REDIS_PORT (log $REDIS_LOG)"
    for ((i = 0; ; i++)); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
            break
        fi
        if ((i >= START_TIMEOUT * 10)); then
            log_tail "$REDIS_LOG"
            die "Redis not ready after ${START_TIMEOUT}s"
        fi
        sleep 0.1
    done
    echo "Redis ready"
}

cmd_start() {
    start_mysql
    start_redis
}

cmd_stop() {
    local pid
    if pid=$(pid_of "$MYSQL_PIDFILE" "$MYSQL_DATADIR"); then
        stop_pid "$pid" MariaDB
    else
        echo "MariaDB not running"
    fi
    if pid=$(pid_of "$REDIS_PIDFILE" "$REDIS_DIR"); then
        stop_pid "$pid" Redis
    else
        echo "Redis not running"
    fi
    rm -f "$REDIS_PIDFILE"
}

cmd_status() {
    local pid rc=0
    if pid=$(pid_of "$MYSQL_PIDFILE" "$MYSQL_DATADIR"); then
        echo "MariaDB: running (pid $pid) on 127.0.0.1:$MYSQL_PORT, datadir $MYSQL_DATADIR"
    else
        echo "MariaDB: stopped"
        rc=3
    fi
    if pid=$(pid_of "$REDIS_PIDFILE" "$REDIS_DIR"); then
        echo "Redis:   running (pid $pid) on 127.0.0.1:$REDIS_PORT, dir $REDIS_DIR"
    else
        echo "Redis:   stopped"
        rc=3
    fi
    return $rc
}

cmd_env() {
    echo "export CHAT_DATABASE_URL=mysql://root@127.0.0.1:$MYSQL_PORT/chat"
    echo "export CHAT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
