#!/usr/bin/env bash
# Checks the container image (deploy/Dockerfile) the way it runs in production.
#
# With a Docker engine: builds the image, starts it with a read-only root filesystem, a tmpfs
# /tmp, uid 10001 and an admin token, waits for GET /healthz 200, GET /readyz 200 and the
# image's HEALTHCHECK to report healthy, then stops it (SIGTERM) and asserts it exited 0.
#
# Without one (`docker info` fails, as on the build machines): builds the release binary the
# image packages and runs it exactly as the image would — the config the image ships
# (deploy/docker/pivot.toml), the same environment, a private temp dir as /tmp — and checks the
# same things: /healthz and /readyz 200, the image's healthcheck script passing, an admin token
# being required on a non-loopback listener, and SIGTERM ending the process with status 0
# within its drain grace.
#
# Usage: scripts/check-docker.sh   (env: IMAGE=pivot:ci, STARTUP_TIMEOUT=60)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-pivot:ci}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
CONFIG=deploy/docker/pivot.toml
HEALTHCHECK=deploy/docker/healthcheck.sh
TOKEN="check-docker-$$-${RANDOM}${RANDOM}"

say() { printf 'check-docker: %s\n' "$*"; }
fail() {
  printf 'check-docker: FAIL: %s\n' "$*" >&2
  exit 1
}

# HTTP status of GET http://$1$2 (with X-Auth-Token $3 if given), over bash's /dev/tcp so that
# nothing beyond bash is needed; 000 when nothing answers.
http_status() {
  local target=$1 path=$2 token=${3:-} status
  status=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/${target%:*}/${target##*:}" || exit 1
    if [[ -n $token ]]; then
      printf 'GET %s HTTP/1.0\r\nHost: %s\r\nX-Auth-Token: %s\r\n\r\n' "$path" "$target" "$token" >&3
    else
      printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$target" >&3
    fi
    IFS=' ' read -r -t 5 _ code _ <&3 && printf '%s' "$code"
  ) || true
  printf '%s' "${status:-000}"
}

# Waits until GET $2 on $1 answers $3 (default 200), for at most STARTUP_TIMEOUT seconds.
wait_for() {
  local target=$1 path=$2 want=${3:-200} deadline=$((SECONDS + STARTUP_TIMEOUT)) got
  while :; do
    got=$(http_status "$target" "$path")
    [[ $got == "$want" ]] && { say "GET $path -> $got"; return 0; }
    ((SECONDS < deadline)) || fail "GET $path on $target answered $got, not $want, after ${STARTUP_TIMEOUT}s"
    if [[ -n ${still_running:-} ]] && ! "$still_running"; then
      fail "pivotd exited before GET $path answered $want"
    fi
    sleep 0.5
  done
}

# node.drain_grace_s of the shipped config (pivotd's default, 25, when it does not set one).
drain_grace_s() {
  local value
  value=$(sed -n 's/^[[:space:]]*drain_grace_s[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$CONFIG" | head -n1)
  printf '%s' "${value:-25}"
}

# --- with a Docker engine ----------------------------------------------------------------------

container=""
docker_cleanup() {
  if [[ -n $container ]]; then
    docker rm -f "$container" >/dev/null 2>&1 || true
  fi
}

container_running() { [[ $(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null) == true ]]; }

check_with_docker() {
  say "Docker engine found: building $IMAGE from deploy/Dockerfile"
  DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t "$IMAGE" .

  trap docker_cleanup EXIT
  container=$(docker run -d \
    --read-only --tmpfs /tmp \
    --user 10001:10001 \
    --cap-drop ALL --security-opt no-new-privileges \
    -e PIVOT_API__ADMIN_TOKEN="$TOKEN" \
    -p 127.0.0.1::8080 \
    "$IMAGE")
  say "started container ${container:0:12}"
  local port
  port=$(docker port "$container" 8080/tcp | head -n1)
  port=${port##*:}
  [[ -n $port ]] || fail "no published port for 8080/tcp"
  local target="127.0.0.1:$port"

  still_running=container_running
  wait_for "$target" /healthz
  wait_for "$target" /readyz
  local status
  status=$(http_status "$target" /v2/accounts/00000000000000000000000000000000/channels "$TOKEN")
  [[ $status == 200 ]] || fail "GET /v2/…/channels with the admin token answered $status"

  local uid
  uid=$(docker exec "$container" id -u)
  [[ $uid == 10001 ]] || fail "the container runs as uid $uid, not 10001"

  say "waiting for the image's HEALTHCHECK"
  local deadline=$((SECONDS + STARTUP_TIMEOUT)) health
  while :; do
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$container")
    [[ $health == healthy ]] && break
    [[ $health == none ]] && fail "the image has no HEALTHCHECK"
    ((SECONDS < deadline)) || fail "HEALTHCHECK status is '$health' after ${STARTUP_TIMEOUT}s"
    sleep 1
  done
  say "HEALTHCHECK: healthy"

  local grace
  grace=$(($(drain_grace_s) + 10))
  say "docker stop (SIGTERM, ${grace}s before SIGKILL)"
  docker stop -t "$grace" "$container" >/dev/null
  local code
  code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
  [[ $code == 0 ]] || {
    docker logs --tail 50 "$container" >&2 || true
    fail "pivotd exited $code after SIGTERM"
  }
  say "exited 0 after SIGTERM"
  say "OK: image $IMAGE builds, runs read-only as uid 10001, is healthy and ready, drains on SIGTERM"
}

# --- without one -------------------------------------------------------------------------------

pid=""
work=""
fallback_cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [[ -n $work ]]; then
    rm -rf "$work"
  fi
}

process_running() { kill -0 "$pid" 2>/dev/null; }

# Starts target/release/pivotd as the image's CMD would, with extra environment "$@"; sets pid.
start_node() {
  env -i PATH="$PATH" HOME="$work" TMPDIR="$work/tmp" HOSTNAME=check-docker "$@" \
    target/release/pivotd serve --config "$CONFIG" >"$work/stdout" 2>"$work/stderr" &
  pid=$!
}

check_without_docker() {
  say "no Docker engine: building and starting the release binary the image would package instead"
  cargo build --release --locked -p pivotd

  work=$(mktemp -d)
  mkdir -m 0700 "$work/tmp"
  trap fallback_cleanup EXIT

  # The image's config listens on all interfaces: without a token pivotd must refuse to start.
  start_node PIVOT_API__LISTEN=0.0.0.0:0
  local code=0
  wait "$pid" || code=$?
  pid=""
  [[ $code != 0 ]] || fail "pivotd started on 0.0.0.0 without any API token"
  grep -q 'no api.admin_token or api.tokens' "$work/stderr" ||
    fail "pivotd refused to start without a token but did not say why: $(cat "$work/stderr")"
  say "without a token on 0.0.0.0: refused (exit $code)"

  # Port 0 picks a free port; pivotd prints the address it bound.
  start_node PIVOT_API__LISTEN=0.0.0.0:0 PIVOT_API__ADMIN_TOKEN="$TOKEN"
  local deadline=$((SECONDS + STARTUP_TIMEOUT)) bound=""
  while [[ -z $bound ]]; do
    bound=$(sed -n 's/.* listening on http:\/\/\([^ ]*\).*/\1/p' "$work/stdout" | head -n1)
    [[ -n $bound ]] && break
    process_running || fail "pivotd exited at startup: $(cat "$work/stderr")"
    ((SECONDS < deadline)) || fail "pivotd printed no listening address in ${STARTUP_TIMEOUT}s"
    sleep 0.2
  done
  local port=${bound##*:}
  local target="127.0.0.1:$port"
  say "pivotd (pid $pid) listening on $bound"

  still_running=process_running
  wait_for "$target" /healthz
  wait_for "$target" /readyz
  local status
  status=$(http_status "$target" /v2/accounts/00000000000000000000000000000000/channels)
  [[ $status == 401 ]] || fail "GET /v2/…/channels without a token answered $status, not 401"
  status=$(http_status "$target" /v2/accounts/00000000000000000000000000000000/channels "$TOKEN")
  [[ $status == 200 ]] || fail "GET /v2/…/channels with the admin token answered $status"
  say "API: 401 without the token, 200 with it"

  # The image's HEALTHCHECK script, with the environment the container would give it.
  PIVOT_API__LISTEN="0.0.0.0:$port" bash "$HEALTHCHECK" ||
    fail "the image's healthcheck script ($HEALTHCHECK) failed against a healthy node"
  # …and it must fail when nothing listens.
  if PIVOT_API__LISTEN="0.0.0.0:1" bash "$HEALTHCHECK" 2>/dev/null; then
    fail "the healthcheck script passed with nothing listening"
  fi
  say "healthcheck script: passes on the node, fails with nothing listening"

  local grace
  grace=$(drain_grace_s)
  say "SIGTERM; node.drain_grace_s is ${grace}s"
  kill -TERM "$pid"
  local started=$SECONDS
  deadline=$((SECONDS + grace + 10))
  while process_running; do
    ((SECONDS < deadline)) || fail "pivotd still running $((SECONDS - started))s after SIGTERM"
    sleep 0.2
  done
  code=0
  wait "$pid" || code=$?
  pid=""
  [[ $code == 0 ]] || {
    tail -n 20 "$work/stderr" >&2
    fail "pivotd exited $code after SIGTERM"
  }
  grep -q '"draining' "$work/stderr" || fail "no drain logged after SIGTERM"
  say "exited 0, $((SECONDS - started))s after SIGTERM"
  say "OK: the binary the image packages starts from the image's config, is healthy and ready, drains on SIGTERM"
}

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  check_with_docker
else
  check_without_docker
fi
