#!/usr/bin/env bash
# make bench: throughput and peak RSS of the data stages on generated data.
#   usage: tests/bench.sh BIN [ROWS...]      (default rows: 2000000 10000000)
# Prints a Markdown table; raw data goes to $BENCH_DIR (default /tmp/esmm-bench).
set -euo pipefail
BIN=${1:?usage: bench.sh BIN [ROWS...]}; shift
ROWS=("${@:-2000000 10000000}")
[ $# -eq 0 ] && ROWS=(2000000 10000000)
DIR=${BENCH_DIR:-/tmp/esmm-bench}
THREADS=${THREADS:-2}
mkdir -p "$DIR"

# measure LABEL CMD...: prints "seconds peak_rss_mb"
measure() {
  local log="$DIR/time.log"
  /usr/bin/time -f "%e %M" -o "$log" "$@" >/dev/null 2>"$DIR/stderr.log" || { cat "$DIR/stderr.log" >&2; exit 1; }
  awk '{printf "%s %.0f\n", $1, $2/1024}' "$log"
}

echo "| rows (train) | stage | seconds | throughput | peak RSS MB |"
echo "|---:|---|---:|---:|---:|"
for n in "${ROWS[@]}"; do
  d="$DIR/$n"
  rm -rf "$d"
  read -r s rss < <(measure "$BIN" generate --out "$d/raw" --train-rows "$n" --test-rows 0 --threads "$THREADS")
  echo "| $n | generate | $s | $(awk -v n="$n" -v s="$s" 'BEGIN{printf "%.0f k rows/s", n/s/1000}') | $rss |"
  mb=$(du -cm "$d"/raw/*_train.csv "$d"/raw/*_test.csv | tail -1 | cut -f1)
  read -r s rss < <(measure "$BIN" ingest --raw "$d/raw" --out "$d/ingest" --threads "$THREADS")
  echo "| $n | ingest ($mb MB raw) | $s | $(awk -v m="$mb" -v s="$s" 'BEGIN{printf "%.0f MB/s", m/s}') | $rss |"
  read -r s rss < <(measure "$BIN" split --in "$d/ingest" --out "$d/split" --threads "$THREADS")
  echo "| $n | split | $s | $(awk -v n="$n" -v s="$s" 'BEGIN{printf "%.0f k rows/s", n/s/1000}') | $rss |"
  rm -rf "$d"
done
