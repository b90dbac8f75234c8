#!/usr/bin/env python3
"""Runs SQL files in DuckDB over the views printed by `esmm sql --duckdb-views` (the table
convention of src/analytics/tables.rs), for tests/it/analytics.rs to compare with polars SQL.

usage: sql_duckdb.py VIEWS.sql QUERY.sql...
Prints one JSON object: {query file name: {"columns": [...], "rows": [[...], ...]}}; integers
stay integers, DECIMAL becomes float, non-finite floats become the strings "NaN", "Infinity".
"""
import decimal
import json
import math
import os
import sys

import duckdb


def plain(v):
    if isinstance(v, decimal.Decimal):
        v = float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


con = duckdb.connect()
with open(sys.argv[1]) as f:
    con.execute(f.read())
out = {}
for path in sys.argv[2:]:
    with open(path) as f:
        cur = con.execute(f.read())
    out[os.path.basename(path)] = {
        "columns": [d[0] for d in cur.description],
        "rows": [[plain(v) for v in row] for row in cur.fetchall()],
    }
print(json.dumps(out))
