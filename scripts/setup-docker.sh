#!/usr/bin/env bash
# Make the Docker engine usable for Compound on Debian bookworm, as root. Idempotent.
#
# 1. apt-get install docker.io, runsc (gVisor) and debootstrap if any is missing;
# 2. register the runsc runtime (network off) in /etc/docker/daemon.json, merged with
#    whatever the file already holds;
# 3. start dockerd without a bridge or iptables rules if nothing answers `docker info`,
#    or make a running dockerd re-read daemon.json (SIGHUP reloads runtimes);
# 4. wait until the engine answers with the runsc runtime registered.
#
# Exits non-zero with a one-line reason on failure.
set -euo pipefail

DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/compound-dockerd.log
DOCKERD_PID=/run/compound-dockerd.pid
WAIT_S=60

say() { echo "setup-docker: $*" >&2; }
die() {
    echo "setup-docker: error: $*" >&2
    exit 1
}

# Debian's client talks to Debian's engine; a newer client elsewhere on PATH also works.
docker_cli() { command -v docker || echo /usr/bin/docker; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v runsc >/dev/null 2>&1 || [[ -x /usr/bin/runsc ]] || missing+=(runsc)
    command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "packages present: docker.io runsc debootstrap"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
    say "installing ${missing[*]} (apt-get update first)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || die "apt-get update failed"
    block_service_start
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
    unblock_service_start
}

# The docker.io package starts dockerd with its defaults (a bridge, iptables rules) when
# installed; a temporary policy-rc.d stops that so we start it below with ours.
POLICY_RC=/usr/sbin/policy-rc.d
OUR_POLICY_RC=""
block_service_start() {
    [[ -e $POLICY_RC ]] && return
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
    chmod +x "$POLICY_RC"
    OUR_POLICY_RC=$POLICY_RC
    trap unblock_service_start EXIT
}
unblock_service_start() {
    if [[ -n $OUR_POLICY_RC ]]; then
        rm -f "$OUR_POLICY_RC"
        OUR_POLICY_RC=""
    fi
}

runsc_path() {
    command -v runsc 2>/dev/null || echo /usr/bin/runsc
}

# Merge the runsc runtime into daemon.json; prints "changed" when the file was rewritten.
write_daemon_json() {
    local runsc
    runsc=$(runsc_path)
    mkdir -p "$(dirname "$DAEMON_JSON")"
    command -v python3 >/dev/null 2>&1 ||
        die "python3 is needed to merge $DAEMON_JSON (apt-get install python3)"
    python3 - "$DAEMON_JSON" "$runsc" <<'PY' || die "cannot update $DAEMON_JSON (is it valid JSON?)"
import json, os, sys

path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        text = f.read()
    config = json.loads(text) if text.strip() else {}
except FileNotFoundError:
    config = {}
want = {"path": runsc, "runtimeArgs": ["--network=none"]}
if config.get("runtimes", {}).get("runsc") == want:
    sys.exit(0)
config.setdefault("runtimes", {})["runsc"] = want
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
print("changed")
PY
}

engine_answers() {
    "$(docker_cli)" info >/dev/null 2>&1
}

runsc_registered() {
    "$(docker_cli)" info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

# Polls `check` once a second until it succeeds or WAIT_S passes.
wait_for() {
    local check=$1 what=$2 waited=0
    until "$check"; do
        if ((waited >= WAIT_S)); then
            return 1
        fi
        if ((waited % 5 == 0)); then
            say "waiting for $what (${waited}s of ${WAIT_S}s)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

start_dockerd() {
    say "starting dockerd (log: $DOCKERD_LOG)"
    # No bridge and no iptables: jobs always run with network mode none.
    setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $! >"$DOCKERD_PID"
    if ! wait_for engine_answers "dockerd to answer"; then
        die "dockerd did not answer within ${WAIT_S}s; last log line: $(tail -n 1 "$DOCKERD_LOG" 2>/dev/null)"
    fi
}

dockerd_pid() {
    local pid
    for file in /var/run/docker.pid "$DOCKERD_PID"; do
        pid=$(cat "$file" 2>/dev/null || true)
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            echo "$pid"
            return
        fi
    done
    pidof dockerd 2>/dev/null | awk '{print $1}'
}

reload_dockerd() {
    local pid
    pid=$(dockerd_pid)
    [[ -n $pid ]] || die "the engine answers but no local dockerd process was found to reload"
    say "asking dockerd (pid $pid) to reload $DAEMON_JSON"
    kill -HUP "$pid"
    wait_for runsc_registered "the runsc runtime to register" ||
        die "dockerd did not register the runsc runtime after a reload; restart dockerd"
}

main() {
    require_root
    install_packages
    local changed
    changed=$(write_daemon_json)
    [[ -n $changed ]] && say "registered the runsc runtime in $DAEMON_JSON"
    if engine_answers; then
        say "dockerd already answers"
        # A running dockerd only sees a changed daemon.json after a reload.
        if [[ -n $changed ]] || ! runsc_registered; then
            reload_dockerd
        fi
    else
        start_dockerd
        runsc_registered || reload_dockerd
    fi
    say "ok: engine $("$(docker_cli)" version --format '{{.Server.Version}}' 2>/dev/null), runtimes runc and runsc"
}

main "$@"
