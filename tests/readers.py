#!/usr/bin/env python3
"""Independent readers of esmm's outputs (pyarrow, DuckDB, xxhash), called by
tests/it/external_readers.rs. Prints one JSON object:

  files:   per Parquet file (relative path): rows seen by pyarrow and by DuckDB, column types,
           label sums and total list lengths (DuckDB)
  profile: sql/profile.sql run by DuckDB over the split directory
  hash_mismatches: skeleton features re-hashed from the raw file with Python's xxhash, per the
           contract in src/hashing.rs, that disagree with the ingested Parquet
"""
import glob
import json
import os
import struct
import sys

import duckdb
import pyarrow.parquet as pq
import xxhash

root, sql_dir = sys.argv[1], sys.argv[2]
BUCKETS = 1 << 20
out = {"files": {}}
con = duckdb.connect()

for path in sorted(glob.glob(os.path.join(root, "**", "*.parquet"), recursive=True)):
    rel = os.path.relpath(path, root)
    table = pq.read_table(path)
    info = {
        "pyarrow_rows": table.num_rows,
        "duckdb_rows": con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0],
        "types": {f.name: str(f.type) for f in table.schema},
    }
    if "click" in table.column_names:
        c, b = con.execute("SELECT sum(click)::BIGINT, sum(buy)::BIGINT FROM read_parquet(?)", [path]).fetchone()
        info["clicks"], info["buys"] = c, b
    lists = [n for n in table.column_names if n.startswith("f_")]
    info["ids"] = {n: con.execute(f'SELECT sum(len("{n}"))::BIGINT FROM read_parquet(?)', [path]).fetchone()[0] for n in lists}
    out["files"][rel] = info

split_dir = os.path.join(root, "split")
for s in ("train", "valid", "test"):
    con.execute(f"CREATE VIEW {s} AS SELECT * FROM read_parquet('{os.path.join(split_dir, s, 'samples.parquet')}')")
with open(os.path.join(sql_dir, "profile.sql")) as f:
    rows = con.execute(f.read()).fetchall()
out["profile"] = {r[0]: {"rows": r[1], "clicks": int(r[2]), "buys": int(r[3])} for r in rows}


def bucket(field, raw_id):
    seed = xxhash.xxh3_64_intdigest(field.encode(), 0)
    return 1 + xxhash.xxh3_64_intdigest(struct.pack("<Q", raw_id), seed) % (BUCKETS - 1)


samples = pq.read_table(os.path.join(root, "ingest", "train", "samples.parquet")).to_pylist()
mismatches, checked = 0, 0
with open(os.path.join(root, "raw", "sample_skeleton_train.csv"), encoding="utf-8") as f:
    for line, row in zip(f, samples[:500]):
        feats = {}
        for tok in line.rstrip("\n").split(",", 5)[5].split("\x01"):
            field, rest = tok.split("\x02")
            raw_id = int(rest.split("\x03")[0])
            feats.setdefault(field, []).append(bucket(field, raw_id))
        for field, want in feats.items():
            checked += 1
            mismatches += want != row["f_" + field]
out["hash_checked"], out["hash_mismatches"] = checked, mismatches
print(json.dumps(out))
