#!/bin/sh
# report: write a small text report of the run next to its data, print it, and end with
# a one-line headline (the line `stratoflow run` shows in its table).
set -eu

: "${STRATOFLOW_RUN_ID:?run this script through stratoflow}"
work="${ETL_WORK_ROOT:-.work}/$STRATOFLOW_RUN_ID"
summary="$work/summary.csv"
report="$work/report.txt"

[ -f "$summary" ] || { echo "report: $summary is missing (did load run?)" >&2; exit 1; }

{
    echo "Sales report"
    echo "workflow:     ${STRATOFLOW_WORKFLOW_ID:-?}"
    echo "run:          $STRATOFLOW_RUN_ID"
    echo "logical date: ${STRATOFLOW_LOGICAL_DATE:-?}"
    echo "parameters:   shards=${STRATOFLOW_PARAM_SHARDS:-?}" \
        "rows=${STRATOFLOW_PARAM_ROWS:-?} seed=${STRATOFLOW_PARAM_SEED:-?}"
    echo
    # summary.csv: a header, then region,orders,units,revenue sorted by revenue.
    awk -F, '
        NR > 1 { line[NR] = $0; total += $4 }
        END {
            printf "%-8s %7s %7s %12s %6s\n", "region", "orders", "units", "revenue", "share"
            for (i = 2; i <= NR; i++) {
                split(line[i], f, ",")
                printf "%-8s %7d %7d %12.2f %5.1f%%\n", f[1], f[2], f[3], f[4], 100 * f[4] / total
            }
        }' "$summary"
} > "$report"

cat "$report"
echo
echo "report written to $report"
awk -F, '
    NR == 2 { top = $1; best = $4 }
    NR > 1  { total += $4 }
    END     { printf "report: top region %s, %.1f%% of revenue %.2f\n", top, 100 * best / total, total }
' "$summary"
