#!/bin/bash
# CPU seconds and peak RSS of running processes, sampled every 20 s into a CSV, until all have exited.
# For runs timed from outside (e.g. the two arms of `bench_atari.py --parallel`, which wait4 does not see):
#
#   scripts/watch_usage.sh usage.csv learned=PID true=PID
#
# Columns: t (unix s), arm, utime_s, stime_s, vmhwm_kb (the process's peak RSS so far). The last row of
# each arm is its total (to within one sampling interval).
set -u
out=$1; shift
echo "t,arm,utime_s,stime_s,vmhwm_kb" > "$out"
tick=$(getconf CLK_TCK)
alive() { for pair in "$@"; do kill -0 "${pair#*=}" 2>/dev/null && return 0; done; return 1; }
while alive "$@"; do
  for pair in "$@"; do
    arm=${pair%%=*}; pid=${pair#*=}
    [ -r "/proc/$pid/stat" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
    [ -n "$hwm" ] || continue  # a zombie: exited, not yet reaped
    echo "$(date +%s),$arm,$(awk -v x="$u" -v k="$tick" 'BEGIN{printf "%.2f", x/k}'),$(awk -v x="$s" -v k="$tick" 'BEGIN{printf "%.2f", x/k}'),$hwm" >> "$out"
  done
  sleep 20
done
