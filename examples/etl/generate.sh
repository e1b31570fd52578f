#!/bin/sh
# generate: write $STRATOFLOW_PARAM_SHARDS CSV shards of synthetic sales rows
# ($STRATOFLOW_PARAM_ROWS rows each) into this run's work folder, .work/<run id>/raw/.
# The data is pseudo-random but reproducible: shard K is seeded with SEED + K.
set -eu

: "${STRATOFLOW_RUN_ID:?run this script through stratoflow}"
shards=${STRATOFLOW_PARAM_SHARDS:-4}
rows=${STRATOFLOW_PARAM_ROWS:-250}
seed=${STRATOFLOW_PARAM_SEED:-7}
root=${ETL_WORK_ROOT:-.work}
keep=${ETL_KEEP_RUNS:-5}

for pair in "shards=$shards" "rows=$rows" "seed=$seed" "ETL_KEEP_RUNS=$keep"; do
    case ${pair#*=} in
        '' | *[!0-9]*) echo "generate: $pair is not a whole number" >&2; exit 2 ;;
    esac
done
if [ "$shards" -lt 1 ] || [ "$rows" -lt 1 ] || [ "$keep" -lt 1 ]; then
    echo "generate: shards, rows and ETL_KEEP_RUNS must be at least 1" >&2
    exit 2
fi

# One folder per run; the whole work area ignores itself in git.
mkdir -p "$root"
[ -f "$root/.gitignore" ] || printf '*\n' > "$root/.gitignore"
work="$root/$STRATOFLOW_RUN_ID"
rm -rf "$work/raw"
mkdir -p "$work/raw"

# Keep only the newest $keep run folders (run ids start with a millisecond timestamp,
# so they sort by age); this run's folder is the newest.
ls -1 "$root" | sort |
    awk -v keep="$keep" '{ id[NR] = $0 } END { for (i = 1; i <= NR - keep; i++) print id[i] }' |
    while IFS= read -r old; do
        if [ -n "$old" ] && [ "$old" != "$STRATOFLOW_RUN_ID" ]; then
            rm -rf "${root:?}/$old"
        fi
    done

day=$(printf '%s' "${STRATOFLOW_LOGICAL_DATE:-1970-01-01}" | cut -c1-10)

awk -v shards="$shards" -v rows="$rows" -v seed="$seed" -v out="$work/raw" -v day="$day" '
BEGIN {
    nregions = split("north south east west central", region, " ")
    nproducts = split("widget gadget gizmo sprocket", product, " ")
    split("4.50 12.00 7.25 19.90", base, " ")
    for (s = 1; s <= shards; s++) {
        srand(seed + s)
        file = sprintf("%s/shard-%03d.csv", out, s)
        print "order_id,day,region,product,quantity,unit_price" > file
        for (r = 1; r <= rows; r++) {
            p = 1 + int(rand() * nproducts)
            printf "%d%05d,%s,%s,%s,%d,%.2f\n", s, r, day, region[1 + int(rand() * nregions)],
                product[p], 1 + int(rand() * 5), base[p] * (0.9 + rand() * 0.2) >> file
        }
        close(file)
    }
}'

echo "generate: wrote $shards CSV shard(s) to $work/raw"
echo "generate: $shards shard(s) x $rows rows, seed $seed"
