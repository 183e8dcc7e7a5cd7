#!/usr/bin/env bash
# A real Ray cluster on this machine: a head and N worker nodes (separate raylets) on 127.0.0.1,
# dashboard on loopback, token authentication on. Lets multi-node behaviour be tried on one box.
#
# To run: cluster/local.sh up 1      # head + 1 worker, 1 CPU each
#         cluster/local.sh up 2 --isolated   # workers share no disk with the head (as on a real cluster)
#         cluster/local.sh down      # stop every node it started
#         cluster/local.sh objectstore up | down   # an S3-compatible store on loopback (moto's server)
#
# Every node keeps its Ray files under $CAVIAR_CLUSTER_DIR/ray, which is also how `down` finds
# exactly this cluster's processes (and no other Ray on the machine).
# Settings (environment): CAVIAR_CLUSTER_DIR (state, default /tmp/caviar-cluster; keep it short:
# Ray's socket paths must stay under 108 characters),
# RAY_HEAD_PORT (6379), RAY_DASHBOARD_PORT (8265), CAVIAR_NODE_CPUS (1), RAY (the ray command),
# CAVIAR_STORE_PORT (9000) and CAVIAR_STORE_BUCKET (caviar) for the object store.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ray_cmd=${RAY:-$here/../.venv/bin/ray}
[ -x "$ray_cmd" ] || ray_cmd=ray
state=${CAVIAR_CLUSTER_DIR:-/tmp/caviar-cluster}
head_port=${RAY_HEAD_PORT:-6379}
dash_port=${RAY_DASHBOARD_PORT:-8265}
cpus=${CAVIAR_NODE_CPUS:-1}
export RAY_AUTH_MODE=token  # never off
# Jobs run `python -m caviar`: make `python` the one whose ray started the nodes
PATH="$(cd "$(dirname "$(command -v "$ray_cmd")")" && pwd):$PATH"
export PATH

die() { echo "local.sh: $*" >&2; exit 2; }

# Every node gets its own block of ports so several raylets can share one machine.
node_ports() {  # $1 = node index (0 = head)
  local base=$((head_port + 1000 + 100 * $1))
  echo "--node-manager-port $base --object-manager-port $((base + 1))" \
       "--dashboard-agent-listen-port $((base + 2)) --dashboard-agent-grpc-port $((base + 3))" \
       "--metrics-export-port $((base + 4)) --runtime-env-agent-port $((base + 5))" \
       "--min-worker-port $((base + 10)) --max-worker-port $((base + 99))"
}

# --isolated: a worker node runs in a mount namespace of its own (unshare; root), with empty private
# folders over the project's results/, the system temp folder and Ray's temp folder. What a trial
# there reads of the driver's then comes through Ray or the storage, never a path on this disk.
# A project that itself lies under /tmp (a fresh clone there) is bound back over the empty /tmp:
# the node's Ray runs from the project's .venv.
isolated() {  # "$@" = the command to run so
  [ "$(id -u)" = 0 ] || die "--isolated needs root (unshare -m)"
  PROJECT="$(cd "$here/.." && pwd -P)" STATE_RAY="$state/ray" unshare -m --propagation private bash -c '
    set -e
    hold=
    case "$PROJECT/" in /tmp/*)
      hold=$(mktemp -d -p /run 2>/dev/null || mktemp -d -p /var/tmp)
      mount --bind "$PROJECT" "$hold" ;;
    esac
    mount -t tmpfs tmpfs /tmp
    if [ -n "$hold" ]; then mkdir -p "$PROJECT" && mount --move "$hold" "$PROJECT" && rmdir "$hold"; fi
    for folder in "$PROJECT/results" "$STATE_RAY"; do mkdir -p "$folder" && mount -t tmpfs tmpfs "$folder"; done
    exec "$@"' isolated "$@"
}

up() {
  local workers=${1:-1} wrap=()
  [[ $workers =~ ^[0-9]+$ ]] || die "up takes a number of worker nodes, got '$workers'"
  case "${2:-}" in
    "") ;;
    --isolated) wrap=(isolated) ;;
    *) die "up takes N and optionally --isolated, got '$2'" ;;
  esac
  mkdir -p "$state"
  [ -f "$state/nodes" ] && die "a cluster from $state is up already; run: $0 down"
  if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
    "$ray_cmd" get-auth-token --generate >/dev/null
  fi
  # shellcheck disable=SC2046
  "$ray_cmd" start --head --node-ip-address 127.0.0.1 --port "$head_port" \
    --dashboard-host 127.0.0.1 --dashboard-port "$dash_port" --ray-client-server-port $((head_port + 2)) \
    --num-cpus "$cpus" --num-gpus 0 --disable-usage-stats --temp-dir "$state/ray" $(node_ports 0) \
    >"$state/head.log" 2>&1 \
    || { cat "$state/head.log" >&2; die "the head did not start"; }
  echo "head 0 $((head_port + 1000))" >"$state/nodes"
  for i in $(seq 1 "$workers"); do
    # shellcheck disable=SC2046
    "${wrap[@]}" "$ray_cmd" start --address "127.0.0.1:$head_port" --node-ip-address 127.0.0.1 \
      --num-cpus "$cpus" --num-gpus 0 --disable-usage-stats --temp-dir "$state/ray" $(node_ports "$i") \
      >"$state/worker-$i.log" 2>&1 \
      || { cat "$state/worker-$i.log" >&2; down; die "worker $i did not start"; }
    echo "worker $i $((head_port + 1000 + 100 * i))" >>"$state/nodes"
  done
  echo "Ray head on 127.0.0.1:$head_port with $workers worker node(s), $cpus CPU(s) each${wrap:+, sharing no disk}"
  echo "dashboard / jobs: http://127.0.0.1:$dash_port   (token: ~/.ray/auth_token or RAY_AUTH_TOKEN)"
}

descendants() {  # $@ = pids; prints them and all their children, recursively
  local pid
  for pid in "$@"; do
    echo "$pid"
    # shellcheck disable=SC2046
    descendants $(pgrep -P "$pid" || true)
  done
}

ours() {  # pids of this cluster: files under our temp dir or talking to our GCS port, and their
  # children (agents rename themselves, e.g. ray::DashboardAgent, so only parentage finds them)
  # shellcheck disable=SC2046
  descendants $({ pgrep -f -- "$state/ray" || true; pgrep -f -- "address[= ][^ ]*:$head_port( |$)" || true; }) |
    sort -u
}

down() {
  # `ray stop` would stop every Ray on the machine; stop only this cluster's processes
  local pids
  pids=$(ours)
  if [ -z "$pids" ] && [ ! -f "$state/nodes" ]; then
    echo "no cluster from $state is up; nothing to stop"
    return 0
  fi
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    # raylets and workers leave within a second; the GCS and the autoscaler monitor can sit on
    # SIGTERM for 10 s and more, and hold no state worth waiting for (results live in storage):
    # 4 s, then SIGKILL
    for _ in $(seq 1 8); do
      [ -z "$(ours)" ] && break
      sleep 0.5
    done
    pids=$(ours)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  fi
  rm -f "$state/nodes"
  echo "cluster stopped"
}

store_port=${CAVIAR_STORE_PORT:-9000}
bucket=${CAVIAR_STORE_BUCKET:-caviar}
python_cmd="$(dirname "$(command -v "$ray_cmd")")/python"

objectstore() {  # $1 = up | down: moto's S3 server on 127.0.0.1, one bucket, throwaway keys
  case "${1:-}" in
    up)
      [ -f "$state/store.pid" ] && kill -0 "$(cat "$state/store.pid")" 2>/dev/null &&
        die "an object store from $state is up already; run: $0 objectstore down"
      mkdir -p "$state"
      "$(dirname "$python_cmd")/moto_server" -H 127.0.0.1 -p "$store_port" >"$state/store.log" 2>&1 &
      echo $! >"$state/store.pid"
      AWS_ACCESS_KEY_ID=caviar AWS_SECRET_ACCESS_KEY=caviar-secret AWS_DEFAULT_REGION=us-east-1 \
        "$python_cmd" - "http://127.0.0.1:$store_port" "$bucket" <<'PY' || { cat "$state/store.log" >&2; objectstore down; die "the object store did not start"; }
import sys, time, boto3, botocore
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint)
for _ in range(100):  # the server answers within a second or two; then the bucket
    try:
        s3.create_bucket(Bucket=bucket)
        break
    except botocore.exceptions.EndpointConnectionError:
        time.sleep(0.2)
else:
    sys.exit(1)
PY
      echo "object store on http://127.0.0.1:$store_port, bucket $bucket; for caviar:"
      echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$store_port AWS_ACCESS_KEY_ID=caviar AWS_SECRET_ACCESS_KEY=caviar-secret AWS_DEFAULT_REGION=us-east-1"
      echo "then: --set storage=s3://$bucket/experiments"
      ;;
    down)
      if [ -f "$state/store.pid" ]; then
        kill "$(cat "$state/store.pid")" 2>/dev/null || true
        rm -f "$state/store.pid"
        echo "object store stopped"
      else
        echo "no object store from $state is up; nothing to stop"
      fi
      ;;
    *) die "usage: $0 objectstore up | down" ;;
  esac
}

case "${1:-}" in
  up) up "${2:-1}" "${3:-}" ;;
  down) down ;;
  objectstore) objectstore "${2:-}" ;;
  *) die "usage: $0 up N [--isolated] | down | objectstore up|down" ;;
esac
