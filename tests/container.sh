#!/usr/bin/env bash
# Container test (not part of `cargo test`): builds the image from the
# Dockerfile, runs it with a named volume and a mounted config, waits for the
# HEALTHCHECK command to pass, produces and consumes through the published
# port, restarts the container, checks the data survived, checks the broker
# runs as non-root, and checks HEALTHCHECK/VOLUME/EXPOSE/config path against
# docs/operations.md.
#
#   bash tests/container.sh                 # podman (see ../shared/tools/container-env)
#   ENGINE=docker bash tests/container.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-podman}
IMAGE=${IMAGE:-strata:test}
NAME=strata-container-test
VOLUME=strata-container-test-data
PORT=${PORT:-17400}
# Host networking by default (this sandbox has no bridge networking); set
# NETWORK=bridge to publish ports with -p instead.
NETWORK=${NETWORK:-host}
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }

remove_container() {
  "$ENGINE" rm -f "$NAME" >/dev/null 2>&1 || true
  "$ENGINE" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}
remove_container
tmp=$(mktemp -d)
trap 'remove_container; rm -rf "$tmp"' EXIT

build_flags=()
if [ "$ENGINE" = podman ]; then
  # docker format keeps HEALTHCHECK; local base images only; this sandbox's limits.
  build_flags=(--format docker --pull=never --network host
    --ulimit "nofile=$(ulimit -Hn | sed 's/unlimited/16384/'):$(ulimit -Hn | sed 's/unlimited/16384/')")
fi
echo "== building $IMAGE"
"$ENGINE" build "${build_flags[@]}" -t "$IMAGE" . >"$tmp/build.log" 2>&1 || { tail -40 "$tmp/build.log"; exit 1; }
ok "image builds"

# A mounted config: the image's defaults plus 3 partitions per new topic, so
# we can tell it is the file in use.
"$ENGINE" run --rm --no-healthcheck --entrypoint cat "$IMAGE" /etc/strata/strata.toml >"$tmp/strata.toml"
sed -i -e 's/^partitions = 1$/partitions = 3/' "$tmp/strata.toml"
if [ "$NETWORK" = host ]; then
  sed -i -e "s/^listen = \"0.0.0.0:7400\"/listen = \"127.0.0.1:$PORT\"/" \
         -e 's/^metrics_listen = .*/metrics_listen = ""/' "$tmp/strata.toml"
  net=(--network host)
  addr="127.0.0.1:$PORT"
else
  net=(-p "127.0.0.1:$PORT:7400")
  addr="127.0.0.1:$PORT"
fi
chmod 644 "$tmp/strata.toml"

# podman without systemd cannot schedule health timers (it says so on stderr);
# `podman healthcheck run` below runs the image's HEALTHCHECK directly.
run_broker() {
  "$ENGINE" run -d --name "$NAME" "${net[@]}" \
    -v "$VOLUME:/var/lib/strata" -v "$tmp/strata.toml:/etc/strata/strata.toml:ro" \
    "$IMAGE" serve --config /etc/strata/strata.toml >/dev/null
}
cli() { "$ENGINE" run --rm -i --no-healthcheck --network host --entrypoint strata "$IMAGE" "$@" --addr "$addr"; }

wait_healthy() {
  for _ in $(seq 1 60); do
    if "$ENGINE" exec "$NAME" strata health --config /etc/strata/strata.toml >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  "$ENGINE" logs "$NAME" | tail -20
  return 1
}

run_broker
if wait_healthy; then ok "HEALTHCHECK command passes"; else fail "broker never became healthy"; exit 1; fi
if [ "$ENGINE" = podman ] && "$ENGINE" healthcheck run "$NAME" >/dev/null 2>&1; then
  ok "podman healthcheck run (the image's HEALTHCHECK) passes"
elif [ "$ENGINE" = podman ]; then
  fail "podman healthcheck run"
fi

uid=$("$ENGINE" exec "$NAME" id -u)
if [ "$uid" != 0 ]; then ok "broker runs as uid $uid (non-root)"; else fail "broker runs as root"; fi

cli topic create events >/dev/null
# awk reads all of it: with `head`, the container's output could hit a closed
# pipe, and pipefail made that a failure of the whole script.
parts=$(cli topic describe events | awk 'NR == 1 {print $4}')
if [ "$parts" = 3 ]; then ok "the mounted config is in effect (3 partitions)"; else fail "mounted config not used (partitions=$parts)"; fi

printf 'k1:hello\nk2:durable\nk3:world\n' | cli produce events --key-separator : >/dev/null 2>&1
before=$(cli consume events | sort)
if [ "$(echo "$before" | wc -l)" = 3 ]; then ok "produce and consume through the port"; else fail "consume got: $before"; fi

"$ENGINE" restart "$NAME" >/dev/null
if wait_healthy; then ok "healthy after restart"; else fail "not healthy after restart"; fi
after=$(cli consume events | sort)
if [ "$before" = "$after" ]; then ok "data survived the restart on the volume"; else fail "after restart: $after"; fi
# Read the logs whole first: `grep -q` stops at the match, and under
# pipefail the log writer's broken pipe would fail the check.
logs=$("$ENGINE" logs "$NAME" 2>&1)
if grep -q "clean_shutdown=true" <<<"$logs"; then ok "restart was a clean stop (SIGTERM)"; else fail "no clean stop on restart"; fi

# Image metadata matches docs/operations.md.
inspect() { "$ENGINE" image inspect --format "$1" "$IMAGE"; }
doc=docs/operations.md
volume=$(inspect '{{json .Config.Volumes}}')
ports=$(inspect '{{json .Config.ExposedPorts}}')
health=$(inspect '{{json .Config.Healthcheck}}')
grep -q '/var/lib/strata' <<<"$volume" && grep -q '/var/lib/strata' "$doc" && ok "VOLUME /var/lib/strata (documented)" || fail "VOLUME: $volume"
grep -q '7400/tcp' <<<"$ports" && grep -q '9400/tcp' <<<"$ports" && grep -q '7400' "$doc" && grep -q '9400' "$doc" \
  && ok "EXPOSE 7400 9400 (documented)" || fail "EXPOSE: $ports"
grep -q 'strata' <<<"$health" && grep -q 'health' <<<"$health" && grep -q '/etc/strata/strata.toml' <<<"$health" \
  && grep -q 'strata health --config /etc/strata/strata.toml' "$doc" \
  && ok "HEALTHCHECK runs strata health (documented)" || fail "HEALTHCHECK: $health"
"$ENGINE" run --rm --no-healthcheck --entrypoint test "$IMAGE" -f /etc/strata/strata.toml && grep -q '/etc/strata/strata.toml' "$doc" \
  && ok "config at /etc/strata/strata.toml (documented)" || fail "config path"

echo "container: $passed passed, $failed failed"
[ "$failed" = 0 ]
