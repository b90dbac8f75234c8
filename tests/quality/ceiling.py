#!/usr/bin/env python3
"""How far above the group oracle a model can get on one generated world (docs/quality.md): the
group oracle's logit (truth columns `p_*_group`) plus each user's own offset fitted on the
training rows alone (train + valid; MAP under a normal prior whose variance is the spread of
the planted offsets, semi-oracle minus group oracle, per user), scored on the test split next
to the group oracle, the semi-oracle and the oracle. The offset's part that varies across
categories is not fitted, so this is an estimate, not a bound. CVR: the same on clicked rows.

usage: ceiling.py RAW_DIR SPLIT_DIR   (a quality world's raw/ and split/, e.g. $QUALITY_DIR/sparse)
prints a Markdown table of test AUCs: CTR, CVR on clicked rows, CTCVR (pCTR × pCVR)
"""
import sys
import numpy as np
import pyarrow.parquet as pq
import pyarrow.csv as pc


def logit(p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def auc(score, y):
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    # midranks for ties
    uniq, idx, counts = np.unique(s, return_index=True, return_counts=True)
    mid = idx + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(mid, counts)
    pos = y.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def rows(split_dir, split, truth):
    s = pq.read_table(f"{split_dir}/{split}/samples.parquet", columns=["sample_id", "common_row"])
    c = pq.read_table(f"{split_dir}/{split}/common.parquet", columns=["f_101"])
    users = c.column("f_101").to_pylist()
    ukey = np.array([u[0] if u else -1 for u in users], dtype=np.int64)
    sid = s.column("sample_id").to_numpy()
    cr = s.column("common_row").to_numpy()
    idx = truth["index"][sid]
    return ukey[cr], idx


def map_offsets(users, z, y, var, n_users, iters=12):
    a = np.zeros(n_users)
    ok = users >= 0
    u, z, y = users[ok], z[ok], y[ok]
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(z + a[u])))
        g = np.bincount(u, y - p, n_users) - a / var
        h = np.bincount(u, p * (1 - p), n_users) + 1 / var
        a += g / h
    return a


def main():
    raw, split_dir = sys.argv[1], sys.argv[2]
    truth = {}
    for split in ["train", "test"]:
        t = pc.read_csv(f"{raw}/truth_{split}.csv").to_pydict()
        sid = np.array(t["sample_id"])
        index = np.full(sid.max() + 1, -1, dtype=np.int64)
        index[sid] = np.arange(len(sid))
        truth[split] = {k: np.array(v) for k, v in t.items()} | {"index": index}
    parts = {}
    for split, tsplit in [("train", "train"), ("valid", "train"), ("test", "test")]:
        u, idx = rows(split_dir, split, truth[tsplit])
        parts[split] = (u, {k: v[idx] for k, v in truth[tsplit].items() if k != "index"})
    # train and valid together: everything training may look at
    fit_u = np.concatenate([parts["train"][0], parts["valid"][0]])
    fit = {k: np.concatenate([parts["train"][1][k], parts["valid"][1][k]]) for k in parts["train"][1]}
    te_u, te = parts["test"]
    keys = np.unique(np.concatenate([fit_u[fit_u >= 0], te_u[te_u >= 0]]))
    rem = lambda u: np.where(u >= 0, np.searchsorted(keys, np.maximum(u, 0)), -1)
    fit_u, te_u = rem(fit_u), rem(te_u)
    n = len(keys)
    out = {}
    for task, p, p_semi, p_group, y, on in [
        ("ctr", "p_click", "p_click_semi", "p_click_group", "click", None),
        ("cvr", "p_buy_given_click", "p_buy_given_click_semi", "p_buy_given_click_group", "buy", "click"),
    ]:
        sel = np.ones(len(fit_u), bool) if on is None else fit[on] == 1
        d = logit(fit[p_semi]) - logit(fit[p_group])
        ok = fit_u >= 0
        per_user = np.bincount(fit_u[ok], d[ok], n) / np.maximum(np.bincount(fit_u[ok], None, n), 1)
        var = per_user.var()
        a = map_offsets(fit_u[sel], logit(fit[p_group][sel]), fit[y][sel], var, n)
        zt = logit(te[p_group])
        learned = 1 / (1 + np.exp(-(zt + np.where(te_u >= 0, a[np.maximum(te_u, 0)], 0))))
        out[task] = dict(group=te[p_group], learned=learned, semi=te[p_semi], oracle=te[p], var=var)
    click, buy = te["click"], te["buy"]
    cl = click == 1
    print(f"users {n}; prior var of the user offset: ctr {out['ctr']['var']:.3f} cvr {out['cvr']['var']:.3f}")
    print("| reference | CTR | CVR (clicked) | CTCVR |")
    print("|---|---:|---:|---:|")
    for name in ["group", "learned", "semi", "oracle"]:
        c, v = out["ctr"][name], out["cvr"][name]
        print(f"| {name} | {auc(c, click):.4f} | {auc(v[cl], buy[cl]):.4f} | {auc(c * v, buy):.4f} |")


main()
