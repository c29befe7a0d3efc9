#!/usr/bin/env bash
# Install, only when missing, the system packages this project needs:
#   - MariaDB server + client (mariadbd, mariadb-install-db, mariadb)
#   - Redis (redis-server, redis-cli)
#   - HAProxy (haproxy; the load-balancer test runs deploy/haproxy.cfg)
#   - OpenSSL (openssl; the TLS tests make their certificates with it)
#   - telnet (optional, for talking to the chat server by hand)
#   - with --bench: Mosquitto (the peer `make bench` compares against), and matplotlib (the plot)
# Idempotent and fast (<1 s) when everything is already present.
set -euo pipefail

# mariadbd lives in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
fi

# "package:command command ..." -- a package is needed when any command is missing.
REQUIRED=(
    "mariadb-server:mariadbd mariadb-install-db"
    "mariadb-client:mariadb"
    "redis-server:redis-server redis-cli"
    "haproxy:haproxy"
    "openssl:openssl"
)
OPTIONAL=(
    "telnet:telnet"
)
if [ "${1:-}" = "--bench" ]; then
    REQUIRED+=("mosquitto:mosquitto")
fi

missing_required=()
missing_optional=()

check() { # check <array-name-of-missing> <spec>
    local -n out=$1
    local pkg=${2%%:*} cmds=${2#*:} cmd path ok=1
    for cmd in $cmds; do
        if path=$(command -v "$cmd" 2>/dev/null); then
            echo "found     $cmd ($path)"
        else
            ok=0
        fi
    done
    if [ "$ok" -eq 0 ]; then
        out+=("$pkg")
    fi
}

for spec in "${REQUIRED[@]}"; do check missing_required "$spec"; done
for spec in "${OPTIONAL[@]}"; do check missing_optional "$spec"; done
# The benchmark draws its scale curve with matplotlib (scripts/plot-bench.py).
if [ "${1:-}" = "--bench" ]; then
    # The system Python: the one python3-matplotlib installs into (not a pyenv or venv one).
    if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
        echo "found     python3 matplotlib"
    else
        missing_required+=("python3-matplotlib")
    fi
fi

if [ ${#missing_required[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
    echo "install-deps: missing packages (${missing_required[*]} ${missing_optional[*]})" \
        "and not root (no sudo available); install them by hand" >&2
    [ ${#missing_required[@]} -eq 0 ] && exit 0
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep package maintainer scripts from starting system services (the system
# MariaDB/Redis are not used by this project). Only when no policy exists yet.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    created_policy=1
fi

echo "install-deps: apt-get update"
"${SUDO[@]}" apt-get update -qq

apt_install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

if [ ${#missing_required[@]} -gt 0 ]; then
    apt_install "${missing_required[@]}"
    for pkg in "${missing_required[@]}"; do echo "installed $pkg"; done
fi

for pkg in "${missing_optional[@]}"; do
    if apt_install "$pkg"; then
        echo "installed $pkg"
    else
        echo "install-deps: WARNING: could not install optional package $pkg" >&2
    fi
done

# Verify the required commands are now there.
status=0
for spec in "${REQUIRED[@]}"; do
    for cmd in ${spec#*:}; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            echo "install-deps: ERROR: $cmd still missing after installing ${spec%%:*}" >&2
            status=1
        fi
    done
done
exit $status
