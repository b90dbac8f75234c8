//! Readers that are not ours — pyarrow, DuckDB (and Python's xxhash for the hashing contract) —
//! read every output of generate → ingest → split and agree with our counts.

use crate::common;

use std::process::Command;

use common::*;
use esmm::config::{GenerateConfig, SplitConfig};

#[test]
fn pyarrow_and_duckdb_agree_on_every_output() {
    let root = temp_dir("readers");
    let params = GenerateConfig {
        train_rows: 4_000,
        test_rows: 1_000,
        users: 1_000,
        items: 3_000,
        history_mean: 40.0,
        ..Default::default()
    };
    generate(&root, params);
    let (ing, spl) = ingest_and_split(&root, SplitConfig::default());

    let sql_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/readers.py");
    let out = Command::new(python()).arg(script).arg(&root).arg(sql_dir).output().expect("running tests/readers.py");
    assert!(out.status.success(), "readers.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = got["files"].as_object().unwrap();
    assert_eq!(files.len(), 10, "4 ingest + 6 split Parquet files: {:?}", files.keys());

    for (rel, info) in files {
        // Our own reader, on the same file.
        let rows = read_rows(&root.join(rel));
        assert_eq!(info["pyarrow_rows"], rows.len(), "{rel}");
        assert_eq!(info["duckdb_rows"], rows.len(), "{rel}");
        if rel.ends_with("samples.parquet") {
            let clicks: u64 = rows.iter().map(|r| u(r, "click")).sum();
            assert_eq!(info["clicks"], clicks, "{rel}");
            assert_eq!(info["types"]["f_210"], "list<item: uint32 not null>", "{rel}");
            assert_eq!(info["types"]["click"], "uint8", "{rel}");
        }
        for (col, n) in info["ids"].as_object().unwrap() {
            let ours: usize = rows.iter().map(|r| ids(r, col).len()).sum();
            assert_eq!(n.as_u64(), Some(ours as u64), "{rel} {col}");
        }
    }
    for s in ["train", "test"] {
        assert_eq!(files[&format!("ingest/{s}/samples.parquet")]["clicks"], ing.counts[&format!("{s}.clicks")]);
    }
    for s in ["train", "valid", "test"] {
        let p = &got["profile"][s];
        assert_eq!(p["rows"], spl.counts[&format!("{s}.rows")], "sql/profile.sql rows {s}");
        assert_eq!(p["clicks"], spl.counts[&format!("{s}.clicks")], "sql/profile.sql clicks {s}");
        assert_eq!(p["buys"], spl.counts[&format!("{s}.buys")], "sql/profile.sql buys {s}");
    }
    assert!(got["hash_checked"].as_u64().unwrap() > 1000, "{}", got["hash_checked"]);
    assert_eq!(got["hash_mismatches"], 0, "hashing disagrees with the xxhash reference");
}
