#!/usr/bin/env bash
# KV sharing and scheduling-policy benchmarks (issue: prefix cache, forks, priorities,
# interleaving), each scenario against its baseline, on the 120M random Llama in fp32.
# Usage: benchmarks/scheduling_sweep.sh [out_dir]   (default docs/results)
set -euo pipefail
out=${1:-docs/results}
mkdir -p "$out"
common=(bench scheduling --random-config 120m --dtype float32 --num-threads 1
        --kv-cache-memory-gib 3)
python -m intaglio.cli.main "${common[@]}" --scenario shared-prefix --num-requests 64 \
  --prefix-len 1024 --unique-len 64 --output-len 16 --json-out "$out/scheduling-shared-prefix.json"
python -m intaglio.cli.main "${common[@]}" --scenario n-samples --n 8 --prefix-len 1024 \
  --output-len 64 --json-out "$out/scheduling-n-samples.json"
python -m intaglio.cli.main "${common[@]}" --scenario priority --num-requests 48 \
  --input-len 128 --output-len 32 --request-rate 2 --high-fraction 0.2 --max-num-seqs 4 \
  --json-out "$out/scheduling-priority.json"
python -m intaglio.cli.main "${common[@]}" --scenario interleave --num-requests 40 \
  --input-len 256 --output-len 32 --request-rate 1 --max-num-batched-tokens 256 \
  --json-out "$out/scheduling-interleave.json"
