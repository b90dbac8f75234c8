#!/usr/bin/env bash
# make quality: the quality sweep. On several generated worlds that differ in sparsity, tails
# and seed (tests/quality/worlds/*.yaml), train esmm with each setting of
# tests/quality/settings/*.yaml (defaults.yaml = the defaults) and the two peers on the same raw
# files — torch-rechub's ESMM (rechub_esmm.py) and PaddleRec's architecture (raw_to_paddle.py,
# then torch_esmm.py) — and write one table of test AUCs next to each world's oracle,
# semi-oracle (the planted probabilities without the items' own effects) and group oracle
# (without the users' own effects either). tests/quality/ceiling.py estimates what lies between.
# A benchmark, not a test: nothing here is timed, and every number is a test-split AUC that no
# setting was chosen on (esmm decides on its valid split only).
#
#   usage: tests/quality.sh BIN            (BIN = target/release/esmm)
#
# Environment:
#   QUALITY_DIR=/tmp/esmm-quality      work dir; results in $QUALITY_DIR/results/quality.{md,parquet}
#   QUALITY_WORLDS="dense sparse sparser biased"   names under tests/quality/worlds/
#   QUALITY_SETTINGS="defaults none <the conversion family>"   names under tests/quality/settings/
#                                      (the first names the world in the report; none = the
#                                      defaults uncalibrated; the family: escm2_ips escm2_dr dcmt
#                                      aitm, each also over the mixture of experts (*_mmoe), and
#                                      mmoe = esmm over it; the others there are the levers
#                                      measured: previous, demo, admit, shrink, steps, lr5, ada, lr2x,
#                                      bs256, decay, level, platt, bias, bias_level, bias_platt,
#                                      dim16, noreset, single, shrink10, shrink40, epochs8, emb_lr3x,
#                                      interactions, escm2_ips_w05, mmoe_wide, gw2, gw4, epochs12,
#                                      neg33, neg33_e12, neg33_e12_gw2, cvr64, cvr32, cvr64_e6, dim8, tlr05,
#                                      bs2048)
#   Full scale: QUALITY_WORLDS=fullscale (42.3 M rows, ~40 min a run), its 1/8 twin: twin, twin_b4x
#   (a world file may fix its rows; <world>.stages.yaml its ingest / split sections)
#   Real-rate world (calibration): QUALITY_WORLDS=realrate QUALITY_TRAIN_ROWS=8000000 QUALITY_TEST_ROWS=2000000
#   QUALITY_TRAIN_ROWS=2000000 QUALITY_TEST_ROWS=2000000   (2 M test rows: at 500 k, a sparse world's
#                                      ~370 test buys alone move the observed CVR calibration by ±10 %)
#   QUALITY_PEERS=1                    0 skips the peers (PEERS_DIR, PEERS_VENV locate them;
#                                      `bash ../shared/peers/setup.sh` makes the venv); a peer's
#                                      results are kept per world and reused while its raw files stay
#   QUALITY_THREADS=2                  threads of every stage and peer (results do not depend on it
#                                      for esmm; the peers are seeded)
# Tiny smoke run: QUALITY_WORLDS=dense QUALITY_TRAIN_ROWS=20000 QUALITY_TEST_ROWS=5000 make quality
set -euo pipefail
BIN=$(realpath "${1:?usage: quality.sh BIN}")
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${QUALITY_DIR:-/tmp/esmm-quality}
WORLDS=${QUALITY_WORLDS:-dense sparse sparser biased}
FAMILY="escm2_ips escm2_dr dcmt aitm mmoe escm2_ips_mmoe escm2_dr_mmoe dcmt_mmoe aitm_mmoe"
SETTINGS=${QUALITY_SETTINGS:-defaults none $FAMILY}
TRAIN_ROWS=${QUALITY_TRAIN_ROWS:-2000000}
TEST_ROWS=${QUALITY_TEST_ROWS:-2000000}
PEERS_ON=${QUALITY_PEERS:-1}
THREADS=${QUALITY_THREADS:-2}
PEERS=${PEERS_DIR:-$HERE/../../shared/peers}
PEERS_PY=${PEERS_VENV:-/tmp/peers-venv}/bin/python
PY=${ESMM_PYTHON:-python3}
OUT=$DIR/results
mkdir -p "$OUT"
log() { printf 'quality: %s\n' "$*" >&2; }

# pipeline WORLD SETTING FILE: one pipeline file, the world's generate keys, a setting's sections
pipeline() {
  local w=$1 s=$2 base=$DIR/$1
  {
    echo "run_id: $w-$s"
    echo "threads: $THREADS"
    echo "paths:"
    echo "  raw: $base/raw"
    echo "  ingest: $base/ingest"
    echo "  split: $base/split"
    echo "  model: $base/model_$s"
    echo "  predictions: $base/predictions_$s"
    echo "  metrics: $base/metrics_$s"
    echo "generate:"
    # a world may fix its own size (fullscale, twin); else QUALITY_TRAIN_ROWS / QUALITY_TEST_ROWS
    grep -q '^train_rows:' "$HERE/quality/worlds/$w.yaml" || echo "  train_rows: $TRAIN_ROWS"
    grep -q '^test_rows:' "$HERE/quality/worlds/$w.yaml" || echo "  test_rows: $TEST_ROWS"
    grep -v '^\s*#' "$HERE/quality/worlds/$w.yaml" | grep -v '^\s*$' | sed 's/^/  /'
    # the world's data stages (ingest, split), when it has them
    [ ! -f "$HERE/quality/worlds/$w.stages.yaml" ] || grep -v '^\s*#' "$HERE/quality/worlds/$w.stages.yaml"
    cat "$HERE/quality/settings/$s.yaml"
  } >"$3"
}

# peer_fresh WORLD NAME: true when the peer's results are newer than the world's raw files
peer_fresh() { [ -f "$DIR/$1/$2.done" ] && [ "$DIR/$1/$2.done" -nt "$DIR/$1/raw/_manifest.json" ]; }

for w in $WORLDS; do
  [ -f "$HERE/quality/worlds/$w.yaml" ] || { echo "quality.sh: no world $w" >&2; exit 2; }
  base=$DIR/$w
  mkdir -p "$base"
  for s in $SETTINGS; do
    [ -f "$HERE/quality/settings/$s.yaml" ] || { echo "quality.sh: no setting $s" >&2; exit 2; }
    pipeline "$w" "$s" "$base/$s.yaml"
    log "$w: esmm $s"
    "$BIN" run "$base/$s.yaml" --log-format json 2>"$base/$s.log" || {
      echo "quality.sh: esmm run $base/$s.yaml failed:" >&2; tail -5 "$base/$s.log" >&2; exit 1; }
  done
  [ "$PEERS_ON" = 1 ] || continue
  [ -x "$PEERS_PY" ] || { echo "quality.sh: no peers venv at $PEERS_PY (bash $PEERS/setup.sh, or QUALITY_PEERS=0)" >&2; exit 1; }
  if ! peer_fresh "$w" rechub; then
    log "$w: torch-rechub ESMM"
    OMP_NUM_THREADS=$THREADS "$PEERS_PY" "$PEERS/rechub_esmm.py" "$base/raw" "$base/rechub" \
      --epochs 1 --threads "$THREADS" >"$base/rechub.log" 2>&1 || { tail -5 "$base/rechub.log" >&2; exit 1; }
    "$BIN" evaluate --predictions "$base/rechub/pred_test.parquet" --truth "$base/raw/truth_test.csv" \
      --out "$base/metrics_rechub" --force 2>>"$base/rechub.log"
    touch "$base/rechub.done"
  fi
  if ! peer_fresh "$w" paddle; then
    log "$w: PaddleRec architecture"
    n=$("$PEERS_PY" "$PEERS/raw_to_paddle.py" "$base/raw" "$base/pp")
    OMP_NUM_THREADS=$THREADS "$PEERS_PY" "$PEERS/torch_esmm.py" --train "$base/pp/train/part-0" \
      --test "$base/pp/test/part-0" --threads "$THREADS" --emb sparse --num-ids "$n" --cache-dir '' \
      --json "$base/paddle.json" >"$base/paddle.log" 2>&1 || { tail -5 "$base/paddle.log" >&2; exit 1; }
    rm -rf "$base/pp"
    touch "$base/paddle.done"
  fi
done
"$PY" "$HERE/quality_report.py" "$DIR" "$OUT" --worlds $WORLDS --settings $SETTINGS
log "results in $OUT/quality.md and $OUT/quality.parquet"
