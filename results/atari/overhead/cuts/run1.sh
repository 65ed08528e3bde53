#!/bin/bash
# one replay: name label seed args...
name=$1; lab=$2; seed=$3; shift 3
out=$(cd /work/bench-wt && /work/main/.venv/bin/python scripts/bench_atari_refits.py "$@" 2>/dev/null | tail -1)
echo "{\"variant\": \"$name\", \"labels\": \"$lab\", \"seed\": $seed, \"result\": $out}" >> /work/bench_runs/grid1/results.jsonl
