#!/usr/bin/env bash
# Sums the "test result:" lines of a cargo test log into one closing line: "N passed, N failed".
set -euo pipefail
log=${1:?usage: test-summary.sh LOG}
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
