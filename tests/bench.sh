#!/usr/bin/env bash
# make bench: one table for every stage (generate, ingest, split, train, predict, evaluate) —
# throughput and peak RSS — with the PyTorch reference trained and run on the same data in the
# same run, at each thread count, the exported model in onnxruntime beside `esmm predict`, and
# the machine's sgemm ceiling for this model.
#
#   usage: tests/bench.sh BIN            (BIN = target/release/esmm; examples/towers_bench beside it)
#
# Sizes and options (environment; the defaults are the full benchmark, run it on a quiet machine):
#   BENCH_DIR=/tmp/esmm-bench    work dir; results in $BENCH_DIR/results/bench.{md,parquet}
#   BENCH_ROWS=2000000           generate / ingest / split rows (Ali-CCP raw format)
#   BENCH_TRAIN_ROWS=1000000     PaddleRec-format rows for train (ours and PyTorch's)
#   BENCH_TEST_ROWS=200000       PaddleRec-format rows for predict (ours and PyTorch's inference)
#   BENCH_THREADS="1 2"          thread counts of the data, train and predict stages
#   BENCH_BACKENDS="gemm dfdx"   tower backends to train with (at embedding dim 12)
#   BENCH_DIMS=16                other embedding dims to train at too (gemm; "" for none)
#   BENCH_SECONDS=5              duration of each towers / sgemm micro-benchmark
#   BENCH_TORCH=1                0 skips the PyTorch reference (PEERS_DIR, PEERS_VENV locate it)
# Tiny smoke run:  BENCH_ROWS=20000 BENCH_TRAIN_ROWS=20000 BENCH_TEST_ROWS=5000 BENCH_SECONDS=0.3 make bench
set -euo pipefail
BIN=$(realpath "${1:?usage: bench.sh BIN}")
MICRO=$(dirname "$BIN")/examples/towers_bench
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${BENCH_DIR:-/tmp/esmm-bench}
ROWS=${BENCH_ROWS:-2000000}
TRAIN_ROWS=${BENCH_TRAIN_ROWS:-1000000}
TEST_ROWS=${BENCH_TEST_ROWS:-200000}
THREADS=${BENCH_THREADS:-1 2}
BACKENDS=${BENCH_BACKENDS:-gemm dfdx}
DIMS=${BENCH_DIMS-16}
SECONDS_MICRO=${BENCH_SECONDS:-5}
TORCH=${BENCH_TORCH:-1}
PEERS=${PEERS_DIR:-$HERE/../../shared/peers}
PEERS_VENV=${PEERS_VENV:-/tmp/peers-venv}
PY=${ESMM_PYTHON:-python3}
OUT=$DIR/results
RESULTS=$OUT/rows.jsonl
[ -x "$MICRO" ] || { echo "bench.sh: $MICRO missing (cargo build --release --example towers_bench)" >&2; exit 1; }
rm -rf "$DIR/work"
mkdir -p "$DIR/work" "$OUT"
: >"$RESULTS"
W=$DIR/work
COMMIT=$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$HERE/.." diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT+dirty"
STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# measure NAME CMD...: runs CMD under /usr/bin/time -v; sets SECS and RSS_MB; stderr in $W/NAME.err
measure() {
  local name=$1; shift
  /usr/bin/time -v -o "$W/$name.time" "$@" >"$W/$name.out" 2>"$W/$name.err" || {
    echo "bench.sh: $name failed:" >&2; tail -20 "$W/$name.err" >&2; exit 1; }
  SECS=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$W/$name.time")
  RSS_MB=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$W/$name.time")
}

# row STAGE SYSTEM THREADS ROWS SECONDS RATE UNIT RSS_MB [NOTE [DIM]]: one measurement (DIM: the
# embedding dim of a model row)
row() {
  printf '{"timestamp":"%s","commit":"%s","stage":"%s","system":"%s","threads":%s,"rows":%s,"seconds":%s,"throughput":%s,"unit":"%s","peak_rss_mb":%s,"note":"%s","dim":%s}\n' \
    "$STAMP" "$COMMIT" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "${8:-null}" "${9:-}" "${10:-null}" >>"$RESULTS"
  printf '  %-9s %-22s %s thr  %10.0f %-10s %6s MB\n' "$1" "$2" "$3" "$6" "$7" "${8:-?}" >&2
}
rate() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.1f", n/(s>0?s:1e-9)}'; }
json() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

# parity BACKEND [DIM]: PaddleRec parity settings (model.preset: paddlerec — sum pooling,
# max_len 3, init_scale 1.0, every id its own row, 1 epoch over shuffled rows) for train and
# predict, at embedding dim DIM (12).
parity() {
  cat >"$W/parity_$1_${2:-12}.yaml" <<EOF
model:
  preset: paddlerec
  backend: $1
  embedding_dim: ${2:-12}
  ctr_fc_sizes: [256, 64]
  cvr_fc_sizes: [256, 64]
train:
  batch_size: 1024
EOF
  echo "$W/parity_$1_${2:-12}.yaml"
}

echo "bench: $STAMP commit $COMMIT, rows $ROWS, train $TRAIN_ROWS, test $TEST_ROWS, threads [$THREADS]" >&2

# --- sgemm ceiling and towers alone --------------------------------------------------------
for t in $THREADS; do
  "$MICRO" peak --threads "$t" --seconds "$SECONDS_MICRO" >"$W/peak$t.json"
  row gemm-peak "gemm 0.19 sgemm" "$t" 0 0 "$(json "$W/peak$t.json" "['ceiling_samples_per_s']")" samples/s "" \
    "$(json "$W/peak$t.json" "['gflops']") GFLOP/s on the tower shapes, batch 1024"
  for b in $BACKENDS; do
    "$MICRO" towers --backend "$b" --threads "$t" --seconds "$SECONDS_MICRO" >"$W/towers_$b$t.json"
    row towers "esmm towers ($b)" "$t" 0 0 "$(json "$W/towers_$b$t.json" "['samples_per_s']")" samples/s "" \
      "dense step alone: forward, backward, Adam"
  done
done

# --- data stages on Ali-CCP-format data -----------------------------------------------------
for t in $THREADS; do
  d=$W/aliccp$t
  measure gen$t "$BIN" generate --out "$d/raw" --train-rows "$ROWS" --test-rows 0 --threads "$t" --force
  row generate esmm "$t" "$ROWS" "$SECS" "$(rate "$ROWS" "$SECS")" rows/s "$RSS_MB"
  mb=$(du -cm "$d"/raw/*_train.csv "$d"/raw/*_test.csv | tail -1 | cut -f1)
  measure ingest$t "$BIN" ingest --raw "$d/raw" --out "$d/ingest" --threads "$t" --force
  row ingest esmm "$t" "$ROWS" "$SECS" "$(rate "$ROWS" "$SECS")" rows/s "$RSS_MB" "$mb MB raw, $(rate "$mb" "$SECS") MB/s"
  measure split$t "$BIN" split --in "$d/ingest" --out "$d/split" --threads "$t" --force
  row split esmm "$t" "$ROWS" "$SECS" "$(rate "$ROWS" "$SECS")" rows/s "$RSS_MB"
  rm -rf "$d"
done

# --- train / predict / evaluate on PaddleRec-format data, ours and PyTorch's -----------------
P=$W/paddle
PEER_PY=$PEERS_VENV/bin/python
GEN_PY=$PY   # gen_paddle_format.py needs numpy: the PyTorch venv has it
[ -x "$PEER_PY" ] && GEN_PY=$PEER_PY
if [ "$TORCH" = 1 ] && [ ! -x "$PEER_PY" ]; then
  echo "bench.sh: no PyTorch venv at $PEERS_VENV: run bash $PEERS/setup.sh (or BENCH_TORCH=0)" >&2; exit 1
fi
"$GEN_PY" "$PEERS/gen_paddle_format.py" --n "$TRAIN_ROWS" --seed 1 --out "$P/raw/train/part-0" >&2
"$GEN_PY" "$PEERS/gen_paddle_format.py" --n "$TEST_ROWS" --seed 2 --start-id $((TRAIN_ROWS + 1)) \
  --out "$P/raw/test/part-0" >&2
"$BIN" ingest --format paddlerec --raw "$P/raw" --out "$P/ingest" --threads 2 --force 2>"$W/pingest.err"
# valid_fraction 0: every train row is trained on, as PyTorch does (the valid split stays empty).
"$BIN" split --in "$P/ingest" --out "$P/split" --valid-fraction 0 --threads 2 --force 2>"$W/psplit.err"

for t in $THREADS; do
  for b in $BACKENDS; do
    m=$P/model_$b$t
    measure train_$b$t "$BIN" train --config "$(parity "$b")" --data "$P/split" --out "$m" --threads "$t" \
      --force --log-format json
    sps=$(grep '"event":"epoch"' "$W/train_$b$t.err" | tail -1 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["samples_per_second"])')
    row train "esmm ($b)" "$t" "$TRAIN_ROWS" "$SECS" "$sps" samples/s "$RSS_MB" "epoch loop; stage wall $(rate "$TRAIN_ROWS" "$SECS") rows/s" 12
    measure predict_$b$t "$BIN" predict --model "$m" --data "$P/split" --split test --out "$m/pred.parquet" \
      --threads "$t" --force --log-format json
    sps=$(grep '"event":"scored"' "$W/predict_$b$t.err" | tail -1 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["samples_per_second"])')
    row predict "esmm ($b)" "$t" "$TEST_ROWS" "$SECS" "$sps" samples/s "$RSS_MB" \
      "scoring loop incl. Parquet read/write; stage wall incl. model load $(rate "$TEST_ROWS" "$SECS") rows/s"
    measure evaluate_$b$t "$BIN" evaluate --predictions "$m/pred.parquet" --out "$m/metrics" --threads "$t" --force
    row evaluate "esmm ($b)" "$t" "$TEST_ROWS" "$SECS" "$(rate "$TEST_ROWS" "$SECS")" rows/s "$RSS_MB"
  done
  # the last model exported to ONNX and scored by onnxruntime (tests/onnx_check.py --bench: the
  # padded inputs are built from the test split first, then the session's loop is timed)
  "$BIN" export --model "$m" --out "$m/export" --data "$P/split" --force 2>"$W/export$t.err"
  measure onnx$t "$PY" "$HERE/onnx_check.py" --bench "$m/export" "$P/split/test" "$t"
  row predict "onnxruntime" "$t" "$(json "$W/onnx$t.out" "['rows']")" "$(json "$W/onnx$t.out" "['seconds']")" \
    "$(json "$W/onnx$t.out" "['samples_per_second']")" samples/s "$RSS_MB" "esmm export of esmm ($b); inference loop only, batch 1000"
  for d in $DIMS; do
    m=$P/model_gemm_dim$d$t
    measure train_dim$d$t "$BIN" train --config "$(parity gemm "$d")" --data "$P/split" --out "$m" --threads "$t" \
      --force --log-format json
    sps=$(grep '"event":"epoch"' "$W/train_dim$d$t.err" | tail -1 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["samples_per_second"])')
    row train "esmm (gemm, dim $d)" "$t" "$TRAIN_ROWS" "$SECS" "$sps" samples/s "$RSS_MB" \
      "epoch loop, embedding dim $d; stage wall $(rate "$TRAIN_ROWS" "$SECS") rows/s" "$d"
    rm -rf "$m"
  done
  if [ "$TORCH" = 1 ]; then
    measure torch$t env OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" "$PEER_PY" "$PEERS/torch_esmm.py" \
      --train "$P/raw/train/part-0" --test "$P/raw/test/part-0" --threads "$t" --emb sparse \
      --cache-dir "$W/torch_cache" --json "$W/torch$t.json"
    j=$W/torch$t.json
    row train "pytorch (SparseAdam)" "$t" "$(json "$j" "['train_samples']")" "$(json "$j" "['train_s']")" \
      "$(json "$j" "['train_samples_per_s']")" samples/s "$RSS_MB" "timed loop, parsing excluded; test auc ctr $(json "$j" "['auc_ctr'].__round__(4)")"
    row predict "pytorch" "$t" "$(json "$j" "['test_rows']")" "$(json "$j" "['infer_s']")" \
      "$(json "$j" "['infer_samples_per_s']")" samples/s "$RSS_MB" "inference loop only"
  fi
done

"$PY" "$HERE/bench_report.py" "$RESULTS" "$OUT/bench.parquet" "$OUT/bench.md"
cat "$OUT/bench.md"
echo "bench: results in $OUT/bench.md and $OUT/bench.parquet" >&2
