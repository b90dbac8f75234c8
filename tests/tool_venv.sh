#!/usr/bin/env bash
# Makes, once, the venv of a pinned tool that some tests run for real (Apache Airflow, the DuckDB
# CLI), and reuses it while its requirements file is unchanged. Called by `make tools` and by the
# tests themselves (tests/it/common/mod.rs, tool_venv), so a plain `cargo test` gets them too.
#
# usage: tool_venv.sh VENV REQUIREMENTS.txt
# exit 0: VENV is ready (VENV/.ok holds the sha256 of REQUIREMENTS.txt);
#      3: PyPI is unreachable, so the tests of this tool skip (said on stderr, not silently);
#      1: the install failed although PyPI answers (a real failure: the tests fail).
set -uo pipefail
[ $# -eq 2 ] || { echo "usage: $0 VENV REQUIREMENTS.txt" >&2; exit 1; }
venv=$1 req=$2
[ -f "$req" ] || { echo "tool_venv: no requirements file $req" >&2; exit 1; }
sum=$(sha256sum "$req" | cut -d' ' -f1)
ready() { [ "$(cat "$venv/.ok" 2>/dev/null)" = "$sum" ] && [ -x "$venv/bin/python" ]; }
ready && exit 0

mkdir -p "$(dirname "$venv")"
# One installer at a time (make and a test binary may both get here); the second reuses.
exec 9>"$venv.lock"
flock 9
ready && exit 0
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
    echo "tool_venv: $venv exists and is not a venv; move it away or point the variable elsewhere" >&2
    exit 1
fi
rm -rf "$venv"
log="$venv.install.log"
echo "tool_venv: installing $(basename "$req") into $venv (once; later runs reuse it)" >&2
start=$(date +%s%N)
if python3 -m venv "$venv" >"$log" 2>&1 &&
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >>"$log" 2>&1; then
    echo "$sum" >"$venv/.ok"
    ms=$((($(date +%s%N) - start) / 1000000))
    echo "tool_venv: installed $(basename "$req") in $((ms / 1000)).$((ms % 1000 / 100)) s (wall)" >&2
    exit 0
fi
rm -rf "$venv"
# Tell a network failure from a broken install: does the package index answer at all?
if ! timeout 120 python3 -m pip index versions pip >/dev/null 2>&1; then
    echo "tool_venv: SKIP: PyPI is unreachable, so $(basename "$req") is not installed and the tests" \
        "that run it skip (see $log)" >&2
    exit 3
fi
echo "tool_venv: installing $req into $venv failed although PyPI answers; the end of $log:" >&2
tail -n 25 "$log" >&2
exit 1
