#!/bin/bash
# the first 480 s of pong-500k seed 3's learned arm, allocator default vs trim 128 MiB, side by side; vmhwm sampled
cd /work/bench-wt2
P=/work/main/.venv/bin/python
rm -rf /work/bench_runs/rss-probe; mkdir -p /work/bench_runs/rss-probe
PREFRL_MALLOC=default $P -m prefrl.cli train --task pong-500k --seed 3 --labels 1500 --query novelty --steps 500000 --no-video --eval-episodes 0 --run-dir /work/bench_runs/rss-probe/default > /work/bench_runs/rss-probe/default.log 2>&1 &
A=$!
$P -m prefrl.cli train --task pong-500k --seed 3 --labels 1500 --query novelty --steps 500000 --no-video --eval-episodes 0 --run-dir /work/bench_runs/rss-probe/trim128 > /work/bench_runs/rss-probe/trim128.log 2>&1 &
B=$!
/work/main/scripts/watch_usage.sh /work/bench_runs/rss-probe/usage.csv default=$A trim128=$B &
sleep 480
kill $A $B
wait
