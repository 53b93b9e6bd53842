#!/usr/bin/env bash
# Serving sweep: start `intaglio serve` on loopback, load it at several Poisson request rates
# with `intaglio bench serve`, stop it. Results go to runs/serve/<model>_rate<R>.json.
#   benchmarks/serve_sweep.sh default "0.5 1 2 4"     # the embedded default model
#   benchmarks/serve_sweep.sh 120m "0.25 0.5 1"        # random ~120M Llama, bf16
set -euo pipefail
MODEL=${1:-default}
RATES=${2:-"1 2 4"}
NUM_PROMPTS=${NUM_PROMPTS:-48}
PORT=${PORT:-8123}
OUT=runs/serve
mkdir -p "$OUT"

args=()
if [[ "$MODEL" == "120m" ]]; then
  folder=$(mktemp -d)
  python -c "from pathlib import Path; from intaglio.bench.random_model import build_random_llama; build_random_llama('120m', Path('$folder'))"
  args=(--model "$folder" --dtype bfloat16)
fi

source "$(dirname "$0")/serve_lib.sh"
trap 'kill ${server:-} 2>/dev/null; wait ${server:-} 2>/dev/null || true' EXIT
start_server "$PORT" "${args[@]}" ${SERVE_ARGS:-}

for rate in $RATES; do
  intaglio bench serve --base-url "http://127.0.0.1:$PORT" --request-rate "$rate" \
    --num-prompts "$NUM_PROMPTS" --input-len 128 --output-len 64 --range-ratio 0.5 \
    --slo-ttft-ms 1000 --slo-tpot-ms 100 --json-out "$OUT/${MODEL}_rate${rate}.json"
done
