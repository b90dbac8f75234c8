#!/usr/bin/env python3
"""The quality sweep's tables (tests/quality.sh): test AUCs of every system on every world, next
to the world's oracle, semi-oracle and group oracle, then calibration (mean prediction / observed rate; and
against the planted probabilities, free of the test labels' sampling noise) and
normalized entropy of the systems esmm evaluate scored, and the quality targets for the defaults
(docs/quality.md, "Targets for the defaults").

usage: quality_report.py DIR OUT --worlds W... --settings S...
reads  DIR/<world>/metrics_<setting>/metrics.parquet (esmm), DIR/<world>/metrics_rechub/metrics.parquet
       (torch-rechub, scored by esmm evaluate), DIR/<world>/paddle.json (PaddleRec architecture),
       DIR/<world>/<setting>.yaml (the world's generate keys), DIR/<world>/model_<setting>/
       {_manifest.json,epochs.parquet} (the kept evaluation's valid_es_logloss: the valid yardstick)
writes OUT/quality.md and OUT/quality.parquet (one row per world and system)
"""
import argparse
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

TASKS = [("ctr", "ctr"), ("cvr", "cvr (clicked)"), ("ctcvr", "ctcvr"), ("cvr_entire_space", "entire-space cvr")]
# Quality targets (bars) for the defaults: at least rechub + margin, within gap of the semi-oracle.
OVER_RECHUB = {"ctr": 0.03, "ctcvr": 0.06, "cvr_entire_space": 0.08}
TO_SEMI = {"ctr": 0.015, "ctcvr": 0.03, "cvr_entire_space": 0.04}
PLANTED = ("oracle", "semi_oracle", "group_oracle")
# Calibration bars of the defaults: calibration within [0.9, 1.1], normalized entropy < 1.
CAL_TASKS = [("ctr", "ctr"), ("cvr", "cvr (clicked)"), ("ctcvr", "ctcvr")]
CAL_RANGE = (0.9, 1.1)


def aucs(path, metric="auc"):
    """{model: {task: value}} of one metric of a metrics.parquet (slice `all`)."""
    t = pq.read_table(path).to_pylist()
    out = {}
    for r in t:
        if r["slice"] == "all" and r["metric"] == metric and r["value"] is not None:
            out.setdefault(r["model"], {})[r["task"]] = r["value"]
    return out


def calibration_table(scored):
    """Markdown lines and bar checks for [(system, metrics.parquet, model)]."""
    md = ["\n| system | " + " | ".join(f"calibration {t[1]}" for t in CAL_TASKS) + " | "
          + " | ".join(f"vs truth {t[1]}" for t in CAL_TASKS) + " | "
          + " | ".join(f"NE {t[1]}" for t in CAL_TASKS) + " |", "|---|" + "---:|" * (3 * len(CAL_TASKS))]
    rows, checks = {}, []
    for name, path, model in scored:
        cal, ne = aucs(path, "calibration").get(model, {}), aucs(path, "normalized_entropy").get(model, {})
        truth = aucs(path, "calibration_truth").get(model, {})
        cell = lambda v: "–" if v is None else f"{v:.3f}"
        md.append(f"| {name} | " + " | ".join(cell(cal.get(t)) for t, _ in CAL_TASKS) + " | "
                  + " | ".join(cell(truth.get(t)) for t, _ in CAL_TASKS) + " | "
                  + " | ".join(cell(ne.get(t)) for t, _ in CAL_TASKS) + " |")
        rows[name] = {**{f"calibration_{t}": cal.get(t) for t, _ in CAL_TASKS},
                      **{f"calibration_truth_{t}": truth.get(t) for t, _ in CAL_TASKS},
                      **{f"ne_{t}": ne.get(t) for t, _ in CAL_TASKS}}
        if name == "esmm defaults":
            for t, _ in CAL_TASKS:
                c, n = cal.get(t), ne.get(t)
                if c is not None:
                    ok = CAL_RANGE[0] <= c <= CAL_RANGE[1]
                    checks.append(f"{t}: calibration {c:.3f} (bar {CAL_RANGE[0]}–{CAL_RANGE[1]}) {'ok' if ok else 'NOT MET'}")
                if truth.get(t) is not None:
                    ct = truth[t]
                    ok = CAL_RANGE[0] <= ct <= CAL_RANGE[1]
                    checks.append(f"{t}: calibration vs truth {ct:.3f} (same bar) {'ok' if ok else 'NOT MET'}")
                if n is not None:
                    checks.append(f"{t}: normalized entropy {n:.3f} (bar < 1) {'ok' if n < 1 else 'NOT MET'}")
    return md, rows, checks


CF_COLUMNS = [("cvr_entire_space", "auc_counterfactual", "entire-space cvr AUC, counterfactual labels"),
              ("cvr_entire_space", "logloss_counterfactual", "its logloss"),
              ("cvr", "calibration_truth", "pCVR / truth, clicked"),
              ("cvr_unclicked", "calibration_truth", "pCVR / truth, unclicked")]
YARD = "valid_es_logloss"


def counterfactual_table(scored, yard):
    """The CVR estimate where real data has no label: per system, pCVR over every impression
    against the counterfactual labels (buy_if_clicked), its level over the planted probability
    on the clicked and on the unclicked rows, and the valid yardstick `yard` ({system: value}).
    Markdown lines and {system: row}."""
    if not scored:
        return [], {}
    per = {}
    for name, path, model in scored:
        got = {}
        for task, metric, _ in CF_COLUMNS:
            v = aucs(path, metric).get(model, {}).get(task)
            got[f"{metric}_{task}"] = v
        got[YARD] = yard.get(name)
        per[name] = got
    if all(v.get("auc_counterfactual_cvr_entire_space") is None for v in per.values()):
        return [], {}
    path = scored[0][1]
    planted = [(p.replace("_", "-"), {f"{m}_{t}": aucs(path, m).get(p, {}).get(t) for t, m, _ in CF_COLUMNS})
               for p in reversed(PLANTED)]
    md = ["\n| system | " + " | ".join(h for _, _, h in CF_COLUMNS) + " | valid ES logloss |",
          "|---|" + "---:|" * (len(CF_COLUMNS) + 1)]
    for name, v in planted + list(per.items()):
        cell = lambda x, d=4: "–" if x is None else f"{x:.{d}f}"
        md.append(f"| {name} | " + " | ".join(cell(v.get(f"{m}_{t}")) for t, m, _ in CF_COLUMNS)
                  + f" | {cell(v.get(YARD), 6)} |")
    return md + yardstick_lines(per, yard), per


def valid_yardstick(model_dir):
    """valid_es_logloss (CTR + CTCVR logloss on valid, the same for every kind) of the kept
    evaluation of an esmm train output, or None."""
    try:
        best = json.load(open(os.path.join(model_dir, "_manifest.json")))["counts"]["best_step"]
        rows = pq.read_table(os.path.join(model_dir, "epochs.parquet")).to_pylist()
    except (OSError, KeyError, ValueError):
        return None
    kept = [r.get("valid_es_logloss") for r in rows if r["step"] == best]
    return kept[-1] if kept else None


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    for k, i in enumerate(order):
        r[i] = float(k)
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / den if den else float("nan")


def yardstick_lines(per, yard):
    """Whether the valid yardstick tracks the entire-space CVR: the system each picks, and the
    rank correlation over the esmm systems that have both."""
    both = [(n, yard[n], per[n].get("auc_counterfactual_cvr_entire_space")) for n in yard
            if yard[n] is not None and per.get(n, {}).get("auc_counterfactual_cvr_entire_space") is not None]
    if len(both) < 3:
        return []
    by_valid = min(both, key=lambda x: x[1])[0]
    by_test = max(both, key=lambda x: x[2])[0]
    rho = spearman([-x[1] for x in both], [x[2] for x in both])
    return [f"\nValid yardstick (`valid_es_logloss`, lower is better) over {len(both)} esmm systems: picks "
            f"`{by_valid}`; the test entire-space CVR AUC (counterfactual) picks `{by_test}`; "
            f"Spearman ρ(−valid logloss, test AUC) = {rho:.2f}."]


def world_keys(pipeline_file):
    """The generate: keys of a sweep pipeline file (flat `key: value` lines under it)."""
    keys, inside = {}, False
    for line in open(pipeline_file):
        if not line.startswith(" "):
            inside = line.startswith("generate:")
            continue
        if inside and ":" in line:
            k, v = line.strip().split(":", 1)
            keys[k] = v.strip()
    return keys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("out")
    ap.add_argument("--worlds", nargs="+", required=True)
    ap.add_argument("--settings", nargs="+", required=True)
    a = ap.parse_args()
    rows = []
    md = ["# Quality sweep: test AUCs\n"]
    for w in a.worlds:
        base = os.path.join(a.dir, w)
        keys = world_keys(os.path.join(base, f"{a.settings[0]}.yaml"))
        rows_n = int(keys.get("train_rows", 0)) + int(keys.get("test_rows", 0))
        per_item = rows_n / max(1, int(keys.get("items", 1)))
        per_user = rows_n / max(1, int(keys.get("users", 1)))
        desc = (f"seed {keys.get('seed')}, {keys.get('users')} users (~{per_user:.0f} impressions each), "
                f"{keys.get('items')} items (~{per_item:.0f} each), individual_sd {keys.get('individual_sd', '0.05')}, "
                f"individual_df {keys.get('individual_df', '0')}, {keys.get('train_rows')} train / "
                f"{keys.get('test_rows')} test rows")
        systems, scored, yard = [], [], {}
        first = None
        for s in a.settings:
            m = os.path.join(base, f"metrics_{s}", "metrics.parquet")
            if not os.path.exists(m):
                continue
            got = aucs(m)
            first = first or got
            trained = [k for k in got if k not in PLANTED]
            for k in trained:
                # esmm's settings are "esmm <setting>"; another kind is its own name when the
                # setting is named after it (settings/escm2_ips.yaml)
                name = f"esmm {s}" if k == "esmm" else (k if k == s else f"{k} {s}")
                systems.append((name, got[k]))
                scored.append((name, m, k))
                yard[name] = valid_yardstick(os.path.join(base, f"model_{s}"))
        if first:
            for p in PLANTED:
                if p in first:
                    systems.insert(0, (p.replace("_", "-"), first[p]))
        rechub = os.path.join(base, "metrics_rechub", "metrics.parquet")
        if os.path.exists(rechub):
            got = aucs(rechub)
            model = next(k for k in got if k not in PLANTED)
            systems.append(("torch-rechub ESMM", got[model]))
            scored.append(("torch-rechub ESMM", rechub, model))
        paddle = os.path.join(base, "paddle.json")
        if os.path.exists(paddle):
            j = json.load(open(paddle))
            systems.append(("PaddleRec architecture", {"ctr": j.get("auc_ctr"), "cvr": j.get("auc_cvr_on_clicked"),
                                                       "ctcvr": j.get("auc_ctcvr")}))
        md.append(f"\n## World `{w}`\n\n{desc}\n")
        md.append("| system | " + " | ".join(t[1] for t in TASKS) + " |")
        md.append("|---|" + "---:|" * len(TASKS))
        cal_md, cal_rows, cal_checks = calibration_table(scored)
        for name, v in systems:
            cell = lambda t: "–" if v.get(t) is None else f"{v[t]:.4f}"
            md.append(f"| {name} | " + " | ".join(cell(t) for t, _ in TASKS) + " |")
            rows.append({"world": w, "system": name, **{f"auc_{t}": v.get(t) for t, _ in TASKS},
                         **cal_rows.get(name, {})})
        md.extend(cal_md)
        cf_md, cf_rows = counterfactual_table(scored, yard)
        md.extend(cf_md)
        for r in rows:
            if r["world"] == w:
                r.update(cf_rows.get(r["system"], {}))
        d = dict(systems)
        dflt, rh, semi = d.get("esmm defaults"), d.get("torch-rechub ESMM"), d.get("semi-oracle")
        checks = []
        for t, margin in OVER_RECHUB.items():
            if dflt and rh and dflt.get(t) is not None and rh.get(t) is not None:
                gain = dflt[t] - rh[t]
                checks.append(f"{t}: defaults − rechub = {gain:+.4f} (bar +{margin}) {'ok' if gain >= margin else 'NOT MET'}")
        for t, gap in TO_SEMI.items():
            if dflt and semi and dflt.get(t) is not None and semi.get(t) is not None:
                g = semi[t] - dflt[t]
                checks.append(f"{t}: semi-oracle − defaults = {g:+.4f} (bar {gap}) {'ok' if g <= gap else 'NOT MET'}")
        checks.extend(cal_checks)
        if checks:
            md.append("\nBars for the defaults:\n")
            md.extend(f"- {c}" for c in checks)
    os.makedirs(a.out, exist_ok=True)
    text = "\n".join(md) + "\n"
    tmp = os.path.join(a.out, ".quality.md.tmp")
    open(tmp, "w").write(text)
    os.replace(tmp, os.path.join(a.out, "quality.md"))
    # pCVR / truth on clicked rows is in both tables: one column (readers refuse a repeated name)
    floats = list(dict.fromkeys([f"auc_{t}" for t, _ in TASKS] + [f"calibration_{t}" for t, _ in CAL_TASKS]
                                + [f"calibration_truth_{t}" for t, _ in CAL_TASKS]
                                + [f"ne_{t}" for t, _ in CAL_TASKS]
                                + [f"{m}_{t}" for t, m, _ in CF_COLUMNS] + [YARD]))
    cols = ["world", "system"] + floats
    table = pa.table({c: [r.get(c) for r in rows] for c in cols},
                     schema=pa.schema([("world", pa.string()), ("system", pa.string())] +
                                      [(c, pa.float64()) for c in floats]))
    tmp = os.path.join(a.out, ".quality.parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(a.out, "quality.parquet"))
    print(text)


if __name__ == "__main__":
    main()
