#!/usr/bin/env bash
# make bench BENCH_FULLSCALE=1 (or tests/fullscale.sh BIN): what a run at Ali-CCP's full scale
# takes. One `esmm run` of the quality sweep's `fullscale` world (42.3 M training impressions,
# 4.3 M items, 0.4 M users, 10 M test rows, pipeline/aliccp.yaml's 2^22 buckets, 5 % valid) with
# one setting (the defaults), from raw files to metrics: wall time per stage, the peak RSS of
# the process, the disk each stage's output takes, and the test AUCs beside the world's
# references. ~40 min and ~40 GB of disk on 2 cores.
#
#   usage: tests/fullscale.sh BIN            (BIN = target/release/esmm)
#
# Environment:
#   FULLSCALE_DIR=/tmp/esmm-fullscale   work dir (the sweep's layout: $FULLSCALE_DIR/fullscale/...);
#                                        results in $FULLSCALE_DIR/results/fullscale.md
#   FULLSCALE_SETTING=defaults          a setting under tests/quality/settings/
#   FULLSCALE_CEILING=1                 0 skips tests/quality/group_ceiling.py (what of the group
#                                        oracle these rows can teach; ~10 min, ~12 GB)
#   ESMM_PYTHON=python3                 a Python with pyarrow and numpy (make pyenv: .venv)
set -euo pipefail
BIN=$(realpath "${1:?usage: fullscale.sh BIN}")
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${FULLSCALE_DIR:-/tmp/esmm-fullscale}
SETTING=${FULLSCALE_SETTING:-defaults}
CEILING=${FULLSCALE_CEILING:-1}
PY=${ESMM_PYTHON:-python3}
OUT=$DIR/results
W=$DIR/fullscale
mkdir -p "$OUT"
# a fresh run: every stage does its work
rm -rf "$W"
QUALITY_DIR=$DIR QUALITY_WORLDS=fullscale QUALITY_SETTINGS=$SETTING QUALITY_PEERS=0 \
  /usr/bin/time -v -o "$OUT/time.txt" bash "$HERE/quality.sh" "$BIN"
if [ "$CEILING" = 1 ]; then
  "$PY" "$HERE/quality/group_ceiling.py" "$W/raw" "$W/split" >"$OUT/ceiling.md"
fi
"$PY" - "$W" "$SETTING" "$OUT" <<'EOF'
import json, os, re, subprocess, sys

w, setting, out = sys.argv[1:4]
stages = []
for line in open(f"{w}/{setting}.log"):
    if line.startswith("{"):
        e = json.loads(line)
        if e.get("event") == "stage":
            stages.append((e["stage"], e["seconds"]))
time_txt = open(f"{out}/time.txt").read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_txt).group(1))
wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", time_txt).group(1)
# one du over every directory: a file split hard-links from ingest counts once
names = ["raw", "ingest", "split", f"model_{setting}", f"predictions_{setting}", f"metrics_{setting}"]
du = subprocess.run(["du", "-sb"] + [f"{w}/{d}" for d in names], capture_output=True, text=True).stdout
disk = {os.path.basename(line.split("\t")[1]): int(line.split("\t")[0]) for line in du.splitlines()}
lines = [f"# Full scale: `fullscale` world, setting `{setting}`", "",
         "| stage | seconds | output on disk |", "|---|---:|---:|"]
dirs = {"generate": "raw", "ingest": "ingest", "split": "split", "train": f"model_{setting}",
        "predict": f"predictions_{setting}", "evaluate": f"metrics_{setting}"}
for stage, secs in stages:
    d = dirs.get(stage)
    lines.append(f"| {stage} | {secs:.0f} | {disk.get(d, 0) / 1e9:.2f} GB |")
total = sum(s for _, s in stages)
lines.append(f"| **chain** | **{total:.0f}** ({total / 60:.1f} min; wall {wall} with the report) | "
             f"**{sum(disk.values()) / 1e9:.1f} GB** |")
lines += ["", f"Peak RSS: {rss_kb / 1e6:.2f} GB (the largest process of the run).", ""]
report = f"{os.path.dirname(out)}/results/quality.md"
if os.path.exists(report):
    lines += ["Test AUCs (the sweep's report):", "", open(report).read()]
ceiling = f"{out}/ceiling.md"
if os.path.exists(ceiling):
    lines += ["What these rows can teach (tests/quality/group_ceiling.py):", "", open(ceiling).read()]
open(f"{out}/fullscale.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
