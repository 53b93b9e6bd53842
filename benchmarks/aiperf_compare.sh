#!/usr/bin/env bash
# Load generators side by side: NVIDIA's `aiperf` and `intaglio bench serve` drive the same
# `intaglio serve` (default model) with the same workload (streaming completions, fixed input
# and output lengths, EOS ignored) at each concurrency, one after the other; a table compares
# what each measured. aiperf lives in its own environment (it pins its own dependencies):
#   python -m venv ../venv-aiperf && ../venv-aiperf/bin/pip install aiperf
#   AIPERF=../venv-aiperf/bin/aiperf benchmarks/aiperf_compare.sh "1 4 16"
set -euo pipefail
CONCURRENCIES=${1:-"1 4 16"}
AIPERF=${AIPERF:-aiperf}
REQUESTS_PER_SLOT=${REQUESTS_PER_SLOT:-4}  # requests per unit of concurrency
INPUT_LEN=${INPUT_LEN:-128}
OUTPUT_LEN=${OUTPUT_LEN:-64}
PORT=${PORT:-8124}
OUT=${OUT:-runs/aiperf}
mkdir -p "$OUT"

# aiperf counts tokens with a Hugging Face tokenizer folder: the served model's, saved locally.
tokenizer=$(mktemp -d)
python -c "
from intaglio.model.checkpoint import load_tokenizer, resolve_model_path
load_tokenizer(resolve_model_path(None)).save_pretrained('$tokenizer')"

# No prefix caching: aiperf's prompts share text and ours do not, so hits would make the
# two workloads differ.
source "$(dirname "$0")/serve_lib.sh"
trap 'kill ${server:-} 2>/dev/null; wait ${server:-} 2>/dev/null || true; rm -rf "$tokenizer"' EXIT
start_server "$PORT" --no-prefix-caching ${SERVE_ARGS:-}
model=$(curl -sf "http://127.0.0.1:$PORT/v1/models" | python -c "import json,sys; print(json.load(sys.stdin)['data'][0]['id'])")

# Each client's own CPU seconds (user + system, its child processes included): on a machine with
# few cores the load generator competes with the server for them.
TIMEFORMAT=%U+%S
for c in $CONCURRENCIES; do
  n=$((c * REQUESTS_PER_SLOT))
  { time intaglio bench serve --base-url "http://127.0.0.1:$PORT" --max-concurrency "$c" \
    --num-prompts "$n" --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN" --range-ratio 0 \
    --json-out "$OUT/intaglio_c$c.json"; } 2>"$OUT/intaglio_c$c.cpu"
  { time "$AIPERF" profile --url "http://127.0.0.1:$PORT" --model "$model" --tokenizer "$tokenizer" \
    --endpoint-type completions --streaming --concurrency "$c" --request-count "$n" \
    --warmup-request-count "$c" \
    --prompt-input-tokens-mean "$INPUT_LEN" --prompt-input-tokens-stddev 0 \
    --prompt-output-tokens-mean "$OUTPUT_LEN" --prompt-output-tokens-stddev 0 \
    --extra-inputs ignore_eos:true --use-legacy-max-tokens --use-server-token-count \
    --no-server-metrics --no-gpu-telemetry --ui-type none \
    --output-artifact-dir "$OUT/aiperf_c$c" >"$OUT/aiperf_c$c.log" 2>&1; } 2>"$OUT/aiperf_c$c.cpu"
done
python benchmarks/aiperf_table.py "$OUT" $CONCURRENCIES
