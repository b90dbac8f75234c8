#!/usr/bin/env python3
"""What of the group oracle can be learned from one world's training rows (docs/quality.md).

The group oracle knows every group-level effect exactly: category, shop (with its clickbait),
brand, the users' profile values, the scenario, the age x category interaction and the
combination features' slopes. A model has to estimate each of them from the training rows,
and a shop seen in ~150 impressions (~6 clicks, ~0.03 buys) cannot be estimated well. This
script fits the correctly specified model — exactly those effects, as the planted model adds
them — on the rows training may look at (train + valid), clicks on every row and buys on
clicked rows, each effect a MAP estimate under a normal prior whose spread is the one the
generator plants (src/synth/world.rs), the effects the two tasks share fitted once for both
(as ESMM's shared embeddings can), and scores it on the test split beside the group oracle.
It is the best a learner that knows the planted model's form can do with these rows, up to
two simplifications that make it an estimate, not a bound: the age x category term is fitted as one free effect per (age, category) pair (the
planted term is a rank-4 product, which a learner could estimate from fewer rows), and hashed
ids stand for raw ids (a few categories and shops share a bucket).

usage: group_ceiling.py RAW_DIR SPLIT_DIR    (a quality world's raw/ and split/)
prints a Markdown table of test AUCs: CTR, CVR on clicked rows, CTCVR, entire-space CVR
"""
import sys
import numpy as np
import pyarrow.parquet as pq
import pyarrow.csv as pc

# Prior spreads of the planted group effects (src/synth/world.rs; SHOP_BAIT_SD 0.6,
# CLICKBAIT_CVR 1.2, SHARED_FACTOR 0.6, latent factors of sd 0.4 in 4 dimensions). Two effects
# are shared by the tasks, as planted: a shop's clickbait raises its click logit and lowers its
# buy logit (a bivariate prior per shop, correlation -0.88), and the buy logit's age x category
# term is 0.36 times the click logit's (one effect per pair, read by both tasks).
PAIR_SD = (4 * 0.16 * 0.16) ** 0.5
PAIR_CVR = 0.36
SD = {
    "ctr": {"profile": 0.2, "cat": 0.3, "brand": 0.15},
    "cvr": {"profile": 0.2, "cat": 0.3, "brand": 0.3},
}
SHOP_COV = np.array([[0.2**2 + 0.6**2, -1.2 * 0.6**2], [-1.2 * 0.6**2, 0.3**2 + (1.2 * 0.6) ** 2]])
FIXED_SD = 10.0  # intercept, scenario and the combination slopes: many rows each, nearly flat
PROFILE = ["f_121", "f_122", "f_124", "f_125", "f_126", "f_127", "f_128", "f_129"]
COMBOS = ["508", "509", "702", "853"]
MAX_NODE_TERMS = 3


def auc(score, y):
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    _, idx, counts = np.unique(s, return_index=True, return_counts=True)
    ranks[order] = np.repeat(idx + (counts - 1) / 2.0 + 1, counts)
    pos = y.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def first(col):
    """The first id of each row's list (-1 when empty)."""
    col = col.combine_chunks()
    off = col.offsets.to_numpy()
    vals = col.values.to_numpy().astype(np.int64)
    out = np.full(len(off) - 1, -1, np.int64)
    has = off[1:] > off[:-1]
    out[has] = vals[off[:-1][has]]
    return out


def head_sum(col, k):
    """The sum of the first `k` values of each row's list."""
    col = col.combine_chunks()
    off = col.offsets.to_numpy()
    vals = col.values.to_numpy().astype(np.float64)
    out = np.zeros(len(off) - 1)
    for j in range(k):
        at = off[:-1] + j
        ok = at < off[1:]
        out[ok] += vals[at[ok]]
    return out


SAMPLE_COLUMNS = ["sample_id", "click", "buy", "common_row", "f_301", "f_206", "f_207", "f_216"] + [
    "w_" + k for k in COMBOS
]


def load(split_dir, split):
    s = pq.read_table(f"{split_dir}/{split}/samples.parquet", columns=SAMPLE_COLUMNS)
    c = pq.read_table(f"{split_dir}/{split}/common.parquet", columns=PROFILE)
    cr = s.column("common_row").to_numpy().astype(np.int64)
    rows = {
        "sample_id": s.column("sample_id").to_numpy(),
        "click": s.column("click").to_numpy(),
        "buy": s.column("buy").to_numpy(),
        "scenario": first(s.column("f_301")),
        "cat": first(s.column("f_206")),
        "shop": first(s.column("f_207")),
        "brand": first(s.column("f_216")),
    }
    for f in PROFILE:
        rows[f] = first(c.column(f))[cr]
    for k in COMBOS:
        rows["w_" + k] = head_sum(s.column("w_" + k), MAX_NODE_TERMS if k == "853" else 1)
    return rows


def concat(a, b):
    out = {}
    for k in list(a):
        out[k] = np.concatenate([a.pop(k), b.pop(k)])
    return out


class Blocks:
    """Dense indices of every categorical block over all splits (unseen in fitting = prior 0)."""

    def __init__(self, parts):
        self.keys = {}
        for name in ["scenario", "cat", "shop", "brand"] + PROFILE:
            self.keys[name] = np.unique(np.concatenate([np.unique(p[name]) for p in parts]))
        self.n_age = len(self.keys["f_122"])

    def index(self, rows):
        ix = {n: np.searchsorted(k, rows[n]).astype(np.int32) for n, k in self.keys.items()}
        ix["pair"] = ix["f_122"] * np.int32(len(self.keys["cat"])) + ix["cat"]
        return ix

    def sizes(self):
        s = {n: len(k) for n, k in self.keys.items()}
        s["pair"] = self.n_age * len(self.keys["cat"])
        return s


def newton_block(theta, z, ix, y, m, sd):
    """One Newton step of the per-group effects `theta` (prior sd `sd`) read at `ix` into `z`."""
    p = 1 / (1 + np.exp(-z))
    g = np.bincount(ix, y - p, m) - theta / sd**2
    h = np.bincount(ix, p * (1 - p), m) + 1 / sd**2
    step = g / h
    theta += step
    z += step[ix]


def stats(z, y, ix, m, scale=1.0):
    p = 1 / (1 + np.exp(-z))
    return scale * np.bincount(ix, y - p, m), scale * scale * np.bincount(ix, p * (1 - p), m)


def fit(ix, x, y, clicked, sizes, sweeps=15):
    """Joint MAP of the click model (every row) and the buy model (clicked rows), both additive
    logistic, by block-coordinate Newton steps. Returns per task its effects."""
    # the click task reads every row (views, no copies), the buy task the clicked ones
    tasks = {"ctr": None, "cvr": clicked}
    pick = lambda v, sel: v if sel is None else v[sel]
    ixt = {t: {k: pick(v, sel) for k, v in ix.items()} for t, sel in tasks.items()}
    yt = {t: pick(y[t], sel) for t, sel in tasks.items()}
    xt = {t: pick(x, sel) for t, sel in tasks.items()}
    th = {t: {"slope": np.zeros(len(COMBOS)), **{k: np.zeros(sizes[k]) for k in ["scenario", "cat", "brand"] + PROFILE}}
          for t in tasks}
    z = {}
    for t in tasks:
        rate = yt[t].mean()
        th[t]["b"] = np.log(rate / (1 - rate))
        z[t] = np.full(len(yt[t]), th[t]["b"])
    pair = np.zeros(sizes["pair"])
    shop = np.zeros((sizes["shop"], 2))
    prec = np.linalg.inv(SHOP_COV)
    for _ in range(sweeps):
        for t in tasks:
            sd = {"scenario": FIXED_SD, **SD[t], **{f: SD[t]["profile"] for f in PROFILE}}
            for name in ["scenario", "cat", "brand"] + PROFILE:
                newton_block(th[t][name], z[t], ixt[t][name], yt[t], sizes[name], sd[name])
            for j in range(len(COMBOS)):
                p = 1 / (1 + np.exp(-z[t]))
                xj = xt[t][:, j]
                step = (xj @ (yt[t] - p)) / ((xj * xj) @ (p * (1 - p)) + 1e-6)
                th[t]["slope"][j] += step
                z[t] += step * xj
            p = 1 / (1 + np.exp(-z[t]))
            step = np.sum(yt[t] - p) / np.sum(p * (1 - p))
            th[t]["b"] += step
            z[t] += step
        # the pair effect, read by both tasks
        m = sizes["pair"]
        gc, hc = stats(z["ctr"], yt["ctr"], ixt["ctr"]["pair"], m)
        gv, hv = stats(z["cvr"], yt["cvr"], ixt["cvr"]["pair"], m, PAIR_CVR)
        step = (gc + gv - pair / PAIR_SD**2) / (hc + hv + 1 / PAIR_SD**2)
        pair += step
        z["ctr"] += step[ixt["ctr"]["pair"]]
        z["cvr"] += PAIR_CVR * step[ixt["cvr"]["pair"]]
        # the shop effects, bivariate
        m = sizes["shop"]
        gc, hc = stats(z["ctr"], yt["ctr"], ixt["ctr"]["shop"], m)
        gv, hv = stats(z["cvr"], yt["cvr"], ixt["cvr"]["shop"], m)
        g = np.stack([gc, gv], 1) - shop @ prec
        h = np.zeros((m, 2, 2))
        h[:, 0, 0], h[:, 1, 1] = hc, hv
        h += prec
        step = np.linalg.solve(h, g[:, :, None])[:, :, 0]
        shop += step
        z["ctr"] += step[ixt["ctr"]["shop"], 0]
        z["cvr"] += step[ixt["cvr"]["shop"], 1]
    for k, t in enumerate(tasks):
        th[t]["pair"] = pair * (1.0 if t == "ctr" else PAIR_CVR)
        th[t]["shop"] = shop[:, k]
    return th


def predict(theta, ix, x):
    z = theta["b"] + x @ theta["slope"]
    for name in ["scenario", "cat", "shop", "brand", "pair"] + PROFILE:
        z = z + theta[name][ix[name]]
    return 1 / (1 + np.exp(-z))


def truth_of(raw, split, sample_id):
    t = pc.read_csv(f"{raw}/truth_{split}.csv")
    sid = t.column("sample_id").to_numpy()
    index = np.full(sid.max() + 1, -1, dtype=np.int64)
    index[sid] = np.arange(len(sid))
    at = index[sample_id]
    return {k: t.column(k).to_numpy()[at] for k in t.column_names}


def main():
    raw, split_dir = sys.argv[1], sys.argv[2]
    seen = concat(load(split_dir, "train"), load(split_dir, "valid"))
    test = load(split_dir, "test")
    blocks = Blocks([seen, test])
    sizes = blocks.sizes()
    ix_fit, ix_test = blocks.index(seen), blocks.index(test)
    x_fit = np.stack([seen.pop("w_" + k) for k in COMBOS], 1)
    x_test = np.stack([test["w_" + k] for k in COMBOS], 1)
    clicked = seen["click"] == 1
    y = {"ctr": seen["click"].astype(float), "cvr": seen["buy"].astype(float)}
    n_seen, n_buys = len(seen["click"]), int(seen["buy"][clicked].sum())
    seen.clear()
    th = fit(ix_fit, x_fit, y, clicked, sizes)
    learned = (predict(th["ctr"], ix_test, x_test), predict(th["cvr"], ix_test, x_test))
    t = truth_of(raw, "test", test["sample_id"])
    group = (t["p_click_group"], t["p_buy_given_click_group"])
    oracle = (t["p_click"], t["p_buy_given_click"])
    click, counter = t["click"], t["buy_if_clicked"]
    cl = click == 1
    buy = t["buy"] * cl  # click and buy, as evaluate scores CTCVR (a few noise buys are unclicked)
    print(f"fitted on {n_seen} rows ({clicked.sum()} clicks, {n_buys} buys); "
          f"groups: {sizes['cat']} categories, {sizes['shop']} shops, {sizes['brand']} brands")
    print("| reference | CTR | CVR (clicked) | CTCVR | entire-space CVR |")
    print("|---|---:|---:|---:|---:|")
    for name, (c, v) in [("group oracle", group), ("learnable (group effects fitted)", learned), ("oracle", oracle)]:
        print(f"| {name} | {auc(c, click):.4f} | {auc(v[cl], buy[cl]):.4f} | {auc(c * v, buy):.4f} | {auc(v, counter):.4f} |")


if __name__ == "__main__":
    main()
