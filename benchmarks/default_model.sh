#!/usr/bin/env bash
# The default model (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized): load time and memory, then
# offline throughput beside HF transformers on the same file and the machine's limits.
# Writes docs/results/default_model_*.json. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=docs/results
grep -o -w -E 'avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '
echo
python benchmarks/default_model_load.py --dtype auto > "$OUT/default_model_load_auto.json"
python benchmarks/default_model_load.py --dtype float32 > "$OUT/default_model_load_fp32.json"
for dtype in auto float32; do
    intaglio bench throughput --dtype "$dtype" --single-stream \
        --json-out "$OUT/default_model_single_stream_$dtype.json"
    intaglio bench throughput --dtype "$dtype" --num-requests 64 \
        --input-len 128 128 --output-len 128 128 --max-num-seqs 64 \
        --json-out "$OUT/default_model_batch64_$dtype.json"
done
