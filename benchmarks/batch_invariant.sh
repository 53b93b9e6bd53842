#!/usr/bin/env bash
# The batch-invariant mode on the default model (SmolLM2-135M-Instruct, bf16), one thread:
# its cost in throughput, and how many of 48 concurrent chat answers differ from the same
# request answered alone, with and without it. Writes docs/results/batch_invariant_*.json.
# Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=docs/results
grep -o -w -E 'avx512[a-z0-9_]*|amx[a-z0-9_]*' /proc/cpuinfo | sort -u | tr '\n' ' '
echo
for mode in --no-batch-invariant --batch-invariant; do
    name=${mode#--}
    intaglio bench throughput --dtype bfloat16 --num-threads 1 --skip-hf "$mode" \
        --single-stream --json-out "$OUT/batch_invariant_single_stream_$name.json"
    intaglio bench throughput --dtype bfloat16 --num-threads 1 --skip-hf "$mode" \
        --num-requests 64 --input-len 128 128 --output-len 128 128 --max-num-seqs 64 \
        --json-out "$OUT/batch_invariant_batch64_$name.json"
    intaglio bench throughput --dtype bfloat16 --num-threads 1 --skip-hf "$mode" \
        --single-stream --input-len 1024 1024 --output-len 16 16 \
        --json-out "$OUT/batch_invariant_prefill1024_$name.json"
done
python -m intaglio.bench.batch_invariance --num-threads 1
python -m intaglio.bench.batch_invariance --num-threads 1 --batch-invariant
