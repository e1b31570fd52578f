#!/bin/sh
# ledger.sh WHAT...: record a booking step in this run's ledger (.work/<run id>/ledger.txt)
# and print it; ledger.sh --show prints the whole ledger.
set -eu

: "${STRATOFLOW_RUN_ID:?run this script through stratoflow}"
root=${SAGA_WORK_ROOT:-.work}
ledger="$root/$STRATOFLOW_RUN_ID/ledger.txt"
mkdir -p "$root/$STRATOFLOW_RUN_ID"
[ -f "$root/.gitignore" ] || printf '*\n' > "$root/.gitignore"

if [ "${1:-}" = "--show" ]; then
    echo "ledger of run $STRATOFLOW_RUN_ID:"
    sed 's/^/  /' "$ledger"
    exit 0
fi

line="$(date -u +%H:%M:%S) ${STRATOFLOW_TASK_ID:-?}: $*"
echo "$line" >> "$ledger"
echo "$line"
