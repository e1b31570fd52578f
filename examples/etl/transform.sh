#!/bin/sh
# transform WORKER WORKERS: aggregate the shards that fall to this worker (round robin:
# shard K goes to worker ((K - 1) mod WORKERS) + 1) into .work/<run id>/agg/part-WORKER.csv,
# one line per region: region,orders,units,revenue.
set -eu

: "${STRATOFLOW_RUN_ID:?run this script through stratoflow}"
worker=${1:?usage: transform.sh WORKER WORKERS}
workers=${2:?usage: transform.sh WORKER WORKERS}
work="${ETL_WORK_ROOT:-.work}/$STRATOFLOW_RUN_ID"

if [ ! -d "$work/raw" ]; then
    echo "transform-$worker: no input folder $work/raw (did generate run?)" >&2
    exit 1
fi
mkdir -p "$work/agg"
part="$work/agg/part-$worker.csv"

mine=""
for file in "$work"/raw/shard-*.csv; do
    [ -f "$file" ] || continue
    n=${file##*/shard-}
    n=${n%.csv}
    n=$(expr "$n" + 0)
    if [ $(( (n - 1) % workers + 1 )) -eq "$worker" ]; then
        mine="$mine $file"
    fi
done

if [ -z "$mine" ]; then
    : > "$part"
    echo "transform-$worker: no shard for this worker"
    exit 0
fi

# shellcheck disable=SC2086 # $mine is a list of paths without spaces
awk -F, '
FNR == 1 { next }                       # header of each shard
{
    orders[$3] += 1
    units[$3] += $5
    revenue[$3] += $5 * $6
}
END {
    for (r in orders) printf "%s,%d,%d,%.2f\n", r, orders[r], units[r], revenue[r]
}' $mine | sort > "$part"

count=$(echo $mine | wc -w | tr -d ' ')
lines=0
for file in $mine; do
    lines=$(( lines + $(wc -l < "$file") - 1 ))
done
echo "transform-$worker: wrote $part"
echo "transform-$worker: $count shard(s), $lines rows -> $(wc -l < "$part" | tr -d ' ') regions"
