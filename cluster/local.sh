#!/usr/bin/env bash
# A local Ray head for development, with the same security settings as the cloud clusters:
# token authentication on (RAY_AUTH_MODE=token), dashboard/job API bound to 127.0.0.1.
#
#   cluster/local.sh              start a head on this machine (NUM_CPUS, NUM_GPUS, NODE_IP from the env)
#   cluster/local.sh stop         stop it (same as `ray stop`)
#   cluster/local.sh status       `ray status` against it
#
# Uses the repository's .venv when it exists, else `ray` on PATH (override with RAY=/path/to/ray).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${RAY:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/ray" ]]; then RAY="$ROOT/.venv/bin/ray"; else RAY="ray"; fi
fi
NUM_CPUS="${NUM_CPUS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}"
NUM_GPUS="${NUM_GPUS:-}"
NODE_IP="${NODE_IP:-127.0.0.1}"   # a dev head that other machines cannot join
PORT="${PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"

export RAY_AUTH_MODE=token

case "${1:-start}" in
  stop)
    exec "$RAY" stop
    ;;
  status)
    exec "$RAY" status --address "$NODE_IP:$PORT"
    ;;
  start)
    ;;
  -h|--help|help)
    sed -n '2,9p' "$0"
    exit 0
    ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac

# The token every client and node presents (~/.ray/auth_token, created once, readable by you only).
if [[ ! -s "$HOME/.ray/auth_token" && -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
  "$RAY" get-auth-token --generate >/dev/null
  chmod 600 "$HOME/.ray/auth_token"
fi

gpu_args=()
if [[ -n "$NUM_GPUS" ]]; then gpu_args=(--num-gpus="$NUM_GPUS"); fi

RAY_AUTH_MODE=token "$RAY" start --head \
  --port="$PORT" \
  --node-ip-address="$NODE_IP" \
  --dashboard-host=127.0.0.1 \
  --dashboard-port="$DASHBOARD_PORT" \
  --num-cpus="$NUM_CPUS" \
  ${gpu_args[@]+"${gpu_args[@]}"} \
  --disable-usage-stats

cat <<EOF

Ray head running (token auth on; dashboard and job API on http://127.0.0.1:$DASHBOARD_PORT only).

Submit a job from the repository root (the working tree is uploaded with the job, minus what
.gitignore lists; the job runs in a copy of it, so give absolute paths or URIs for data):

  RAY_AUTH_MODE=token $RAY job submit --address http://127.0.0.1:$DASHBOARD_PORT --working-dir . \\
      -- python jobs/extract.py $ROOT/out/sample/astronaut.mp4 --out $ROOT/out/src

  RAY_AUTH_MODE=token $RAY job list --address http://127.0.0.1:$DASHBOARD_PORT
  RAY_AUTH_MODE=token $RAY job logs --address http://127.0.0.1:$DASHBOARD_PORT --follow JOB_ID

Or run the CLI against it directly:  RAY_ADDRESS=$NODE_IP:$PORT RAY_AUTH_MODE=token dflray extract ...
Logs: /tmp/ray/session_latest/logs (job drivers: job-driver-*.log)
Stop: $0 stop   (or: ray stop)
EOF
