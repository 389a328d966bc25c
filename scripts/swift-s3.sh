#!/usr/bin/env bash
# A throwaway single-node OpenStack Swift with the S3 API (s3api + tempauth), for tests and for
# trying an S3 client by hand:
#
#   eval "$(scripts/swift-s3.sh start)"   # prints export lines (S3_ENDPOINT, AWS_*, HUBCACHE_TEST_S3_*)
#   scripts/swift-s3.sh status            # exit 0 when every daemon runs, 3 otherwise
#   scripts/swift-s3.sh env               # the export lines again
#   scripts/swift-s3.sh stop              # kills the daemons and removes the directory
#
# Everything lives in one directory: SWIFT_DIR, default ${TMPDIR:-/tmp}/hubcache-swift-s3-$UID
# (give each concurrent user of the box, e.g. a test run, its own SWIFT_DIR). Nothing outside it
# is written: no /etc/swift, /srv, /var/cache/swift, /var/run or syslog.
#
# Layout: etc/ (swift.conf, rings, one config per daemon), srv/d1 (the only device: a plain
# directory, mount_check = false), run/*.pid, log/*.log. One replica, part power 6, every server
# on its own free port of 127.0.0.1, `workers = 0` (one process each, no forking), running as the
# current user (`user =` is set to it: Swift would otherwise switch to the user `swift`).
#
# Needs Debian's swift-proxy, swift-object, swift-container and swift-account (Swift 2.30) and
# /usr/bin/python3 with them (SWIFT_PYTHON overrides). Debian ships no swift-init; each daemon is
# started from its own /usr/bin/swift-*-server entry point, through a small launcher that
#   - points Swift at etc/swift.conf: the servers read /etc/swift/swift.conf whatever their
#     `swift_dir` says (swift_dir only locates the rings);
#   - sends Swift's log records to log/<daemon>.log: Swift logs only to syslog (/dev/log, or UDP
#     to localhost:514 when /dev/log is missing) and closes stdio once it is up.
# The proxy's `cache` filter (required by tempauth) points at a memcached that is not there
# (127.0.0.1:1): every lookup misses, which costs a refused loopback connection and an error line
# in log/proxy.log per request. S3 requests need no cache (each is authenticated by its
# signature); Swift's own API does, for tempauth's tokens: GET /auth/v1.0 answers 503 here.
#
# S3 credentials (tempauth user test:tester, admin of account AUTH_test): access key "test:tester",
# secret "testing", region us-east-1, path-style addressing only (no storage_domain).
#
# SWIFT_S3_WATCH_PID=<pid> makes `start` leave a watchdog behind that runs `stop` once that process
# is gone, so a killed test run leaves nothing behind.
set -euo pipefail

ACCESS_KEY="test:tester"
SECRET_KEY="testing"
REGION="us-east-1"
DAEMONS=(account container object proxy)
PYTHON="${SWIFT_PYTHON:-/usr/bin/python3}"
DIR="${SWIFT_DIR:-${TMPDIR:-/tmp}/hubcache-swift-s3-$(id -u)}"
MARKER=".hubcache-swift-s3"
START_TIMEOUT="${SWIFT_S3_START_TIMEOUT:-60}" # seconds; generous: the box may be busy

usage() {
  echo "usage: $0 start|stop|status|env   (directory: SWIFT_DIR, now $DIR)" >&2
  exit 2
}

log() { printf 'swift-s3: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --- prerequisites ------------------------------------------------------------

check_installed() {
  local missing=() d
  for d in "${DAEMONS[@]}"; do
    [[ -x "/usr/bin/swift-$d-server" ]] || missing+=("swift-$d")
  done
  [[ -x "$PYTHON" ]] || missing+=("$PYTHON")
  if ((${#missing[@]} > 0)); then
    die "not installed: ${missing[*]} (Debian: apt-get install --no-install-recommends swift-proxy swift-object swift-container swift-account)"
  fi
}

# --- state --------------------------------------------------------------------

pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# All daemons have a live pid.
running() {
  local d
  [[ -f "$DIR/$MARKER" ]] || return 1
  for d in "${DAEMONS[@]}"; do alive "$(pid_of "$d")" || return 1; done
}

# The directory holds one of our instances (or nothing): safe to kill its pids and remove it.
ours_or_absent() {
  [[ ! -e "$DIR" ]] || [[ -f "$DIR/$MARKER" ]] || [[ -z "$(ls -A "$DIR")" ]]
}

print_env() {
  local port
  port="$(cat "$DIR/etc/proxy.port")"
  cat <<EOF
export S3_ENDPOINT=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
export HUBCACHE_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export HUBCACHE_TEST_S3_ACCESS_KEY_ID=$ACCESS_KEY
export HUBCACHE_TEST_S3_SECRET_ACCESS_KEY=$SECRET_KEY
export HUBCACHE_TEST_S3_REGION=$REGION
EOF
}

# --- stop ---------------------------------------------------------------------

# Kills every pid under run/ (TERM, then KILL after 5 s) and removes the directory.
cmd_stop() {
  ours_or_absent || die "$DIR is not a swift-s3 directory; not touching it"
  [[ -d "$DIR" ]] || return 0
  local f pid pids=()
  for f in "$DIR"/run/*.pid; do
    [[ -e "$f" ]] || continue
    pid="$(cat "$f")"
    # The watchdog runs `stop` as itself (exec): do not kill this very process.
    [[ -n "$pid" && "$pid" != "$$" ]] && alive "$pid" && pids+=("$pid")
  done
  if ((${#pids[@]} > 0)); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + 5))
    while ((SECONDS < deadline)); do
      local left=()
      for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
      ((${#left[@]} == 0)) && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
  fi
  rm -rf "$DIR"
  log "stopped; removed $DIR"
}

# --- start --------------------------------------------------------------------

# Four free ports of 127.0.0.1 (account container object proxy). Closed again before the
# daemons bind them: a port taken in between makes its daemon exit (bind_timeout = 2), and
# `start` tries again with new ports.
pick_ports() {
  "$PYTHON" - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))
PY
}

write_launcher() {
  cat >"$DIR/etc/launch.py" <<'PY'
# launch.py SWIFT_DIR LOG_FILE /usr/bin/swift-X-server CONF [ACCOUNT_PORT,CONTAINER_PORT,OBJECT_PORT]
# Runs that entry point with SWIFT_DIR/swift.conf instead of /etc/swift/swift.conf and its log
# records in LOG_FILE. Given ports, first writes the account, container and object rings of one
# device each (the proxy needs them; the storage servers do not), saving the separate Python
# start-up, Swift import and three swift-ring-builder runs per ring this would otherwise cost.
import logging, runpy, sys

swift_dir, log_file, entry, conf = sys.argv[1:5]
from swift.common import utils  # noqa: E402 (reads nothing that matters before set_swift_dir)


class FileLogHandler(logging.FileHandler):
    """Stands in for Swift's syslog handler (same constructor arguments, ignored)."""

    def __init__(self, *args, **kwargs):
        super().__init__(log_file)


utils.ThreadSafeSysLogHandler = FileLogHandler
utils.set_swift_dir(swift_dir)  # before storage policies and constraints are loaded

if len(sys.argv) > 5:
    from swift.common.ring import RingBuilder
    for name, port in zip(('account', 'container', 'object'), sys.argv[5].split(',')):
        builder = RingBuilder(6, 1, 1)  # part power 6, 1 replica, min_part_hours 1
        builder.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port),
                         'device': 'd1', 'weight': 1, 'meta': ''})
        builder.rebalance()
        builder.save('%s/%s.builder' % (swift_dir, name))
        builder.get_ring().save('%s/%s.ring.gz' % (swift_dir, name))

sys.argv = [entry, conf]
runpy.run_path(entry, run_name='__main__')
PY
}

write_configs() {
  local account_port=$1 container_port=$2 object_port=$3 proxy_port=$4 user
  user="$(id -un)"
  local etc="$DIR/etc"
  # A fresh random hash path prefix/suffix per instance, as a real cluster would have.
  cat >"$etc/swift.conf" <<EOF
[swift-hash]
swift_hash_path_prefix = $(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
swift_hash_path_suffix = $(od -An -N8 -tx8 /dev/urandom | tr -d ' ')

[storage-policy:0]
name = Policy-0
default = yes

[swift-constraints]
EOF
  local name port
  for name in account container object; do
    case "$name" in
      account) port=$account_port ;;
      container) port=$container_port ;;
      object) port=$object_port ;;
    esac
    cat >"$etc/$name-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
bind_timeout = 2
workers = 0
user = $user
swift_dir = $etc
devices = $DIR/srv
mount_check = false
disable_fallocate = true
log_name = $name-server
log_level = INFO

[pipeline:main]
pipeline = healthcheck $name-server

[app:$name-server]
use = egg:swift#$name

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
  done
  # Pipeline: Swift's all-in-one development setup, trimmed to what S3 needs; s3api right before
  # tempauth, slo after them (multipart uploads are SLO manifests of "<bucket>+segments" objects).
  cat >"$etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $proxy_port
bind_timeout = 2
workers = 0
user = $user
swift_dir = $etc
log_name = proxy-server
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = $REGION

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $SECRET_KEY .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:1

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
[filter:symlink]
use = egg:swift#symlink
EOF
  printf '%s\n' "$proxy_port" >"$etc/proxy.port"
}

# HTTP GET /healthcheck on 127.0.0.1:$1 answers "200" (bash's /dev/tcp: no curl needed).
healthy() {
  local status
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /healthcheck HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  IFS=' ' read -r -t 5 _ status _ <&3 || status=""
  exec 3>&- 3<&-
  [[ "$status" == "200" ]]
}

# A SigV4-signed S3 round trip through the proxy: create a bucket, put, get and delete an
# object, delete the bucket. Proves s3api, tempauth and all three rings and servers work.
s3_probe() {
  "$PYTHON" - "http://127.0.0.1:$1" "$ACCESS_KEY" "$SECRET_KEY" "$REGION" <<'PY'
import datetime, hashlib, hmac, sys, urllib.error, urllib.parse, urllib.request

endpoint, access_key, secret_key, region = sys.argv[1:5]
host = urllib.parse.urlsplit(endpoint).netloc


def h(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def s3(method, path, body=b''):
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime('%Y%m%dT%H%M%SZ'), now.strftime('%Y%m%d')
    payload = hashlib.sha256(body).hexdigest()
    headers = {'host': host, 'x-amz-content-sha256': payload, 'x-amz-date': amz_date}
    signed = ';'.join(sorted(headers))
    canonical = '\n'.join([method, urllib.parse.quote(path), '',
                           ''.join('%s:%s\n' % (k, headers[k]) for k in sorted(headers)),
                           signed, payload])
    scope = '%s/%s/s3/aws4_request' % (day, region)
    to_sign = '\n'.join(['AWS4-HMAC-SHA256', amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = h(h(h(h(('AWS4' + secret_key).encode(), day), region), 's3'), 'aws4_request')
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers['authorization'] = 'AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s' % (
        access_key, scope, signed, signature)
    del headers['host']
    req = urllib.request.Request(endpoint + path, data=body if method == 'PUT' else None,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        sys.exit('%s %s: %s %s' % (method, path, e.code, e.read().decode(errors='replace')))


bucket = '/swift-s3-probe'
s3('PUT', bucket)
s3('PUT', bucket + '/probe', b'probe')
status, body = s3('GET', bucket + '/probe')
if body != b'probe':
    sys.exit('GET returned %r' % body)
s3('DELETE', bucket + '/probe')
s3('DELETE', bucket)
PY
}

# Starts the four daemons on new free ports and waits until each answers /healthcheck.
# Returns 2 when a daemon could not bind its port (taken since it was picked), 1 on other failures.
launch() {
  rm -rf "$DIR"/{etc,run,log}
  mkdir -p "$DIR"/{etc,srv/d1,run,log}
  local ports
  ports="$(pick_ports)" || { log "$PYTHON could not find free ports"; return 1; }
  # shellcheck disable=SC2086 # four port numbers
  write_configs $ports
  write_launcher
  # shellcheck disable=SC2206 # four port numbers
  local port_list=($ports) i d
  # Every address Swift deals with is the literal 127.0.0.1: skip eventlet's DNS module, a good
  # part of each daemon's start-up time.
  export EVENTLET_NO_GREENDNS=yes
  for i in 0 1 2 3; do
    d="${DAEMONS[$i]}"
    local rings=()
    [[ "$d" == proxy ]] && rings=("${port_list[0]},${port_list[1]},${port_list[2]}")
    # Its own session, out of reach of signals to the caller's terminal or process group: only
    # `stop` ends it. (setsid does not fork here, as a background job of a script is no process
    # group leader, so $! is the daemon's pid.)
    setsid "$PYTHON" "$DIR/etc/launch.py" "$DIR/etc" "$DIR/log/$d.log" "/usr/bin/swift-$d-server" \
      "$DIR/etc/$d-server.conf" "${rings[@]}" </dev/null >>"$DIR/log/$d.out" 2>&1 &
    echo $! >"$DIR/run/$d.pid"
    disown $! # no "Killed" job report when a failed attempt is cleared away
  done
  local deadline=$((SECONDS + START_TIMEOUT))
  for i in 0 1 2 3; do
    d="${DAEMONS[$i]}"
    until healthy "${port_list[$i]}"; do
      if ! alive "$(pid_of "$d")"; then
        if grep -qs "Could not bind to" "$DIR/log/$d.out" "$DIR/log/$d.log"; then
          log "port ${port_list[$i]} of the $d server was taken meanwhile"
          return 2
        fi
        log "$d server exited; its output:"
        cat "$DIR/log/$d.out" "$DIR/log/$d.log" >&2 2>/dev/null || true
        return 1
      fi
      if ((SECONDS > deadline)); then
        log "$d server not healthy after ${START_TIMEOUT}s; its log:"
        cat "$DIR/log/$d.out" "$DIR/log/$d.log" >&2 2>/dev/null || true
        return 1
      fi
      sleep 0.1
    done
  done
  if ! s3_probe "${port_list[3]}" >&2; then
    log "S3 round trip failed; proxy log:"
    tail -n 50 "$DIR/log/proxy.log" >&2 || true
    return 1
  fi
}

# Kills the daemons of a failed attempt (the directory stays).
kill_daemons() {
  local d pid
  for d in "${DAEMONS[@]}"; do
    pid="$(pid_of "$d")"
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  done
  return 0
}

cmd_start() {
  if running; then
    log "already running in $DIR"
    print_env
    return 0
  fi
  check_installed
  ours_or_absent || die "$DIR exists and is not a swift-s3 directory; set SWIFT_DIR to a new or empty one"
  # A half-started or half-stopped instance: clear it out first.
  [[ -e "$DIR" ]] && cmd_stop
  local t0=$SECONDS attempt rc
  mkdir -p "$DIR"
  touch "$DIR/$MARKER"
  for attempt in 1 2 3; do
    rc=0
    launch || rc=$?
    ((rc == 0)) && break
    kill_daemons
    if ((rc != 2 || attempt == 3)); then
      cmd_stop
      exit 1
    fi
  done
  if [[ -n "${SWIFT_S3_WATCH_PID:-}" ]]; then
    local watched="$SWIFT_S3_WATCH_PID" self
    self="$(readlink -f "${BASH_SOURCE[0]}")"
    # Polls once a second (a watchdog, not a test's synchronisation); `exec` so that `stop`
    # recognises its own pid in run/watchdog.pid.
    SWIFT_DIR="$DIR" setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -d "$2" ]]; do sleep 1; done; [[ -d "$2" ]] && exec "$3" stop' \
      watchdog "$watched" "$DIR" "$self" </dev/null >>"$DIR/log/watchdog.out" 2>&1 &
    echo $! >"$DIR/run/watchdog.pid"
    disown $!
  fi
  log "running in $DIR (proxy on 127.0.0.1:$(cat "$DIR/etc/proxy.port"); started in $((SECONDS - t0))s)"
  print_env
}

cmd_status() {
  if [[ ! -f "$DIR/$MARKER" ]]; then
    echo "not running (no $DIR)"
    return 3
  fi
  local d pid rc=0
  for d in "${DAEMONS[@]}"; do
    pid="$(pid_of "$d")"
    if alive "$pid"; then echo "$d: running (pid $pid)"; else
      echo "$d: not running"
      rc=3
    fi
  done
  return "$rc"
}

cmd_env() {
  running || die "not running in $DIR (run: $0 start)"
  print_env
}

(($# == 1)) || usage
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
