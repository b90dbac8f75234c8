#!/usr/bin/env python3
"""Scores a test split with exported ONNX models in onnxruntime and compares to `esmm predict`;
called by tests/it/onnx_export.rs (and tests/bench.sh with --bench).

  onnx_check.py CASES.json

CASES.json: {"cases": [{"name", "export": DIR, "predictions": FILE.parquet, "split": DIR}]},
`split` the directory holding samples.parquet and common.parquet. Per case: onnx.checker on
DIR/model.onnx, the graph's inputs against DIR/contract.json, the padded inputs built from the
split with pyarrow (user-side lists from each sample's common row, ids padded with 0, weights
with 0.0), onnxruntime's p_ctr, p_cvr, p_ctcvr and their largest absolute difference from the
predictions file; the contract's test vectors re-hashed with Python's xxhash. Prints one JSON
object: {"cases": {name: {...}}}.
"""
import json
import struct
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

OUTPUTS = ("p_ctr", "p_cvr", "p_ctcvr")


def bucket(hashing, field, raw_id):
    """The contract's hash of one raw id, from its description in contract.json."""
    seed = xxhash.xxh3_64_intdigest(field.encode(), hashing["hash_seed"])
    return 1 + xxhash.xxh3_64_intdigest(struct.pack("<Q", raw_id), seed) % (hashing["hash_buckets"] - 1)


def check_hashing(contract):
    hashing = contract["hashing"]
    bad = [v for v in contract["test_vectors"] if bucket(hashing, v["field"], v["raw_id"]) != v["bucket"]]
    seeds = [f for f in contract["fields"] if xxhash.xxh3_64_intdigest(f["name"].encode(), hashing["hash_seed"]) != f["seed"]]
    return {"vectors": len(contract["test_vectors"]), "mismatches": len(bad) + len(seeds)}


def padded(lists, dtype):
    """A list<...> arrow array → a [rows, max(len, 1)] numpy array padded with 0."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = lists.flatten().to_numpy(zero_copy_only=False)
    out = np.zeros((len(lengths), max(int(lengths.max(initial=0)), 1)), dtype=dtype)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(len(values)) - np.repeat(starts, lengths)
    out[rows, cols] = values
    return out


def feeds(contract, samples, common, lo, hi):
    """The graph inputs of sample rows [lo, hi): item lists from the samples, user lists from
    each row's common row."""
    chunk = samples.slice(lo, hi - lo)
    users = common.take(chunk.column("common_row").combine_chunks())
    out = {}
    for f in contract["fields"]:
        table = users if f["side"] == "user" else chunk
        out[f["ids_input"]] = padded(table.column(f["ids_input"]).combine_chunks(), np.int64)
        if f["weights_input"]:
            out[f["weights_input"]] = padded(table.column(f["weights_input"]).combine_chunks(), np.float32)
    return out


def session(path, threads=0):
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def check_case(case, batch=2048):
    path = f"{case['export']}/model.onnx"
    onnx.checker.check_model(path, full_check=True)
    with open(f"{case['export']}/contract.json") as f:
        contract = json.load(f)
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    assert names == [i["name"] for i in contract["inputs"]], (names, contract["inputs"])
    assert [o.name for o in sess.get_outputs()] == list(OUTPUTS)
    samples = pq.read_table(f"{case['split']}/samples.parquet")
    common = pq.read_table(f"{case['split']}/common.parquet")
    pred = pq.read_table(case["predictions"])
    assert pred.column("sample_id").to_pylist() == samples.column("sample_id").to_pylist()
    got = {k: [] for k in OUTPUTS}
    for lo in range(0, samples.num_rows, batch):
        res = sess.run(list(OUTPUTS), feeds(contract, samples, common, lo, min(lo + batch, samples.num_rows)))
        for k, v in zip(OUTPUTS, res):
            got[k].append(v)
    out = {"rows": samples.num_rows, "checker": "ok", "hashing": check_hashing(contract), "max_abs": {}}
    for k in OUTPUTS:
        ours = np.concatenate(got[k]).astype(np.float64)
        want = pred.column(k).to_numpy().astype(np.float64)
        out["max_abs"][k] = float(np.max(np.abs(ours - want))) if len(want) else 0.0
    return out


def bench(export, split, threads, batch=1000):
    """Samples/s of onnxruntime on a split (inputs built beforehand, not timed)."""
    with open(f"{export}/contract.json") as f:
        contract = json.load(f)
    sess = session(f"{export}/model.onnx", threads)
    samples = pq.read_table(f"{split}/samples.parquet")
    common = pq.read_table(f"{split}/common.parquet")
    batches = [feeds(contract, samples, common, lo, min(lo + batch, samples.num_rows)) for lo in range(0, samples.num_rows, batch)]
    sess.run(list(OUTPUTS), batches[0])
    start = time.perf_counter()
    for b in batches:
        sess.run(list(OUTPUTS), b)
    seconds = time.perf_counter() - start
    return {"rows": samples.num_rows, "seconds": seconds, "samples_per_second": samples.num_rows / seconds}


def main():
    if sys.argv[1] == "--bench":
        print(json.dumps(bench(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    with open(sys.argv[1]) as f:
        cases = json.load(f)["cases"]
    print(json.dumps({"cases": {c["name"]: check_case(c) for c in cases}}))


if __name__ == "__main__":
    main()
