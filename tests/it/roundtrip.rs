//! generate → ingest → split on a small generated set, checked against the raw lines themselves:
//! counts, labels, per-row hashed ids and weights; thread-count independence; split determinism
//! and session (md5) disjointness.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use common::*;
use esmm::config::{GenerateConfig, IngestConfig, SplitConfig};
use esmm::hashing::FeatureHasher;
use esmm::schema::{field_index, ids_column, weights_column, FIELDS};
use esmm::stages::{generate, ingest, split};

fn generate(dir: &Path, train: u64, test: u64) {
    let params = GenerateConfig {
        train_rows: train,
        test_rows: test,
        users: 2_000,
        items: 5_000,
        history_mean: 60.0,
        ctr: 0.1,
        cvr: 0.2,
        ..Default::default()
    };
    generate::run(&generate_stage(dir, params)).unwrap();
}

fn ingest_to(raw: &Path, out: &Path, threads: usize) -> esmm::stages::StageReport {
    ingest::run(&ingest::IngestStage { threads, force: false, ..ingest_stage(raw, out, IngestConfig::default()) })
        .unwrap()
}

fn split_to(input: &Path, out: &Path) {
    split::run(&split_stage(input, out, SplitConfig::default())).unwrap();
}

/// The features of one raw feature list, hashed field by field (independent of the tokenizer).
type Hashed = BTreeMap<usize, (Vec<u32>, Vec<f32>)>;

fn hash_list(list: &str, h: &FeatureHasher) -> Hashed {
    let mut out: Hashed = BTreeMap::new();
    for tok in list.split('\x01') {
        let (field, rest) = tok.split_once('\x02').unwrap();
        let (id, value) = rest.split_once('\x03').unwrap();
        let f = field_index(field.as_bytes()).unwrap();
        let e = out.entry(f).or_default();
        e.0.push(h.bucket(f, id.parse().unwrap()));
        e.1.push(value.parse().unwrap());
    }
    out
}

fn check_features(row: &BTreeMap<String, Value>, want: &Hashed, fields: impl Iterator<Item = usize>) {
    for f in fields {
        let (want_ids, want_w) = want.get(&f).cloned().unwrap_or_default();
        assert_eq!(ids(row, &ids_column(f)), want_ids, "field {}", FIELDS[f].name);
        if FIELDS[f].weighted {
            assert_eq!(weights(row, &weights_column(f)), want_w, "weights {}", FIELDS[f].name);
        }
    }
}

fn bytes(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn generate_ingest_split_round_trip() {
    let root = temp_dir("roundtrip");
    let raw = root.join("raw");
    generate(&raw, 6_000, 2_000);
    let report = ingest_to(&raw, &root.join("ingest"), 2);
    let h = FeatureHasher::new(1 << 20, 0).unwrap();

    for split in ["train", "test"] {
        // Common table: one row per raw common line, same order, same hashed features.
        let common_raw = std::fs::read_to_string(raw.join(format!("common_features_{split}.csv"))).unwrap();
        let common = read_rows(&root.join(format!("ingest/{split}/common.parquet")));
        let lines: Vec<&str> = common_raw.lines().collect();
        assert_eq!(common.len(), lines.len());
        let mut md5_row = HashMap::new();
        for (i, (line, row)) in lines.iter().zip(&common).enumerate() {
            let cols: Vec<&str> = line.splitn(3, ',').collect();
            let md5 = u64::from_str_radix(cols[0], 16).unwrap();
            assert_eq!(u(row, "md5"), md5);
            let hashed = hash_list(cols[2], &h);
            assert_eq!(hashed.values().map(|v| v.0.len()).sum::<usize>(), cols[1].parse::<usize>().unwrap());
            check_features(row, &hashed, esmm::schema::side_fields(esmm::schema::Side::User).into_iter());
            md5_row.insert(md5, i as u64);
        }

        // Samples: one row per skeleton line, labels, join and hashed item features.
        let skel_raw = std::fs::read_to_string(raw.join(format!("sample_skeleton_{split}.csv"))).unwrap();
        let samples = read_rows(&root.join(format!("ingest/{split}/samples.parquet")));
        let lines: Vec<&str> = skel_raw.lines().collect();
        assert_eq!(samples.len(), lines.len());
        let (mut clicks, mut buys) = (0, 0);
        for (line, row) in lines.iter().zip(&samples) {
            let cols: Vec<&str> = line.splitn(6, ',').collect();
            assert_eq!(u(row, "sample_id"), cols[0].parse::<u64>().unwrap());
            assert_eq!(u(row, "click"), cols[1].parse::<u64>().unwrap());
            assert_eq!(u(row, "buy"), cols[2].parse::<u64>().unwrap());
            let md5 = u64::from_str_radix(cols[3], 16).unwrap();
            assert_eq!(u(row, "md5"), md5);
            assert_eq!(u(row, "common_row"), md5_row[&md5]);
            let hashed = hash_list(cols[5], &h);
            assert_eq!(hashed.values().map(|v| v.0.len()).sum::<usize>(), cols[4].parse::<usize>().unwrap());
            check_features(row, &hashed, esmm::schema::side_fields(esmm::schema::Side::Item).into_iter());
            let scenario = cols[5]
                .split('\x01')
                .find_map(|t| t.strip_prefix("301\x02"))
                .map_or(0, |t| t.split('\x03').next().unwrap().parse().unwrap());
            assert_eq!(u(row, "scenario"), scenario);
            clicks += u(row, "click");
            buys += u(row, "buy");
        }
        assert_eq!(report.counts[&format!("{split}.samples_rows")], samples.len() as u64);
        assert_eq!(report.counts[&format!("{split}.clicks")], clicks);
        assert_eq!(report.counts[&format!("{split}.buys")], buys);
        assert!(clicks > 0 && buys > 0, "{split}: clicks {clicks} buys {buys}");
    }
    // A generated set is valid input: nothing but valid-and-counted cases in the skip table.
    for (k, _) in &report.skipped {
        assert!(k.ends_with("click0_buy1") || k.ends_with("common_rows_without_101"), "unexpected skip {k}");
    }

    // Split: disjoint sessions, train ∪ valid = ingest train, deterministic bytes.
    split_to(&root.join("ingest"), &root.join("split_a"));
    split_to(&root.join("ingest"), &root.join("split_b"));
    let md5s = |s: &str| -> Vec<u64> {
        read_rows(&root.join(format!("split_a/{s}/samples.parquet"))).iter().map(|r| u(r, "md5")).collect()
    };
    let (train, valid, test) = (md5s("train"), md5s("valid"), md5s("test"));
    let train_set: HashSet<u64> = train.iter().copied().collect();
    let valid_set: HashSet<u64> = valid.iter().copied().collect();
    assert!(train_set.is_disjoint(&valid_set), "a session spans train and valid");
    assert_eq!(train.len() + valid.len(), 6_000);
    assert_eq!(test.len(), 2_000);
    let share = valid_set.len() as f64 / (train_set.len() + valid_set.len()) as f64;
    assert!((0.03..0.2).contains(&share), "valid share of sessions {share}");
    for s in ["train", "valid", "test"] {
        for f in ["samples.parquet", "common.parquet"] {
            assert!(
                bytes(root.join(format!("split_a/{s}/{f}"))) == bytes(root.join(format!("split_b/{s}/{f}"))),
                "{s}/{f} differs"
            );
        }
    }
    let m = manifest(&root.join("split_a"));
    assert_eq!(m["counts"]["valid.rows"], valid.len() as u64);
    assert_eq!(m["counts"]["valid.md5s"], valid_set.len() as u64);
    // the data contract travels typed from ingest to split, not in the counts
    let ingest = manifest(&root.join("ingest"));
    assert_eq!(m["data"], ingest["data"]);
    assert_eq!(m["data"]["hash_buckets"], ingest["config"]["hash_buckets"]);
    assert_eq!((m["data"]["format"].as_str(), m["data"]["hash_seed"].as_u64()), (Some("aliccp"), Some(0)));
    assert!(m["counts"].get("hash_buckets").is_none());
}

#[test]
fn outputs_do_not_depend_on_threads_and_reruns_are_skipped() {
    let root = temp_dir("threads");
    let raw = root.join("raw");
    generate(&raw, 3_000, 500);
    ingest_to(&raw, &root.join("t1"), 1);
    ingest_to(&raw, &root.join("t3"), 3);
    for s in ["train/samples.parquet", "train/common.parquet", "test/samples.parquet", "test/common.parquet"] {
        assert!(bytes(root.join("t1").join(s)) == bytes(root.join("t3").join(s)), "{s} depends on threads");
    }
    let again = ingest_to(&raw, &root.join("t1"), 1);
    assert!(again.up_to_date, "unchanged inputs must skip the stage");
    // A changed input reruns it.
    let skel = raw.join("sample_skeleton_test.csv");
    let mut text = std::fs::read(&skel).unwrap();
    text.extend_from_slice(b"\n");
    std::fs::write(&skel, text).unwrap();
    assert!(!ingest_to(&raw, &root.join("t1"), 1).up_to_date);
}
