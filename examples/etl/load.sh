#!/bin/sh
# load: the fan-in. Merge every transform's part into .work/<run id>/summary.csv, check that
# no row was lost on the way, and print the summary table (the demo's visible result).
set -eu

: "${STRATOFLOW_RUN_ID:?run this script through stratoflow}"
shards=${STRATOFLOW_PARAM_SHARDS:-4}
rows=${STRATOFLOW_PARAM_ROWS:-250}
work="${ETL_WORK_ROOT:-.work}/$STRATOFLOW_RUN_ID"

set -- "$work"/agg/part-*.csv
if [ ! -f "$1" ]; then
    echo "load: no aggregated parts in $work/agg" >&2
    exit 1
fi

expected=$((shards * rows))
awk -F, -v expected="$expected" -v parts=$# -v summary="$work/summary.csv" '
NF == 4 {
    orders[$1] += $2; units[$1] += $3; revenue[$1] += $4
    total_orders += $2; total_units += $3; total_revenue += $4
}
END {
    if (total_orders != expected) {
        printf "load: expected %d rows, the parts hold %d\n", expected, total_orders
        exit 1
    }
    n = 0
    for (r in orders) name[++n] = r
    for (i = 2; i <= n; i++)                     # insertion sort by revenue, descending
        for (j = i; j > 1 && revenue[name[j]] > revenue[name[j - 1]]; j--) {
            t = name[j]; name[j] = name[j - 1]; name[j - 1] = t
        }
    print "region,orders,units,revenue" > summary
    printf "%-8s %7s %7s %12s\n", "region", "orders", "units", "revenue"
    for (i = 1; i <= n; i++) {
        r = name[i]
        printf "%-8s %7d %7d %12.2f\n", r, orders[r], units[r], revenue[r]
        printf "%s,%d,%d,%.2f\n", r, orders[r], units[r], revenue[r] >> summary
    }
    printf "%-8s %7d %7d %12.2f\n", "total", total_orders, total_units, total_revenue
    printf "loaded %d orders from %d part(s): revenue %.2f, top region %s\n",
        total_orders, parts, total_revenue, name[1]
}' "$@"
