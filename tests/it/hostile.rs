//! Hostile input: valid raw lines mutated at random (bytes dropped, duplicated, replaced, lines
//! and files cut) never panic ingest, every line read is either kept or counted as skipped, and
//! no sample is joined to another session's user side; `--strict` fails naming file and line
//! exactly when the lenient run counted a problem. Config errors name the key and the file; an
//! unwritable or full output location is a clear error that leaves no partial output.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use common::mutate::{lines_in, mutate, mutation, render, skipped_rows};
use common::{esmm, ingest_stage, read_rows, temp_dir, u, Value};
use esmm::aliccp::Reason;
use esmm::config::IngestConfig;
use esmm::stages::ingest::{run, IngestStage};
use proptest::prelude::*;

const SESSIONS: usize = 6;
const SAMPLES: usize = 30;

fn md5_hex(j: usize) -> String {
    // Sessions differ in every hex digit: one mutated byte cannot turn one md5 into another.
    let d = b"0123456789abcdef"[(j * 3 + 1) % 16] as char;
    std::iter::repeat_n(d, 16).collect()
}

fn common_lines() -> Vec<Vec<u8>> {
    (0..SESSIONS)
        .map(|j| {
            let feats = [
                format!("101\x02{}\x031.0", 500 + j),
                format!("121\x02{}\x031.0", 7 + j % 3),
                format!("109_14\x02{}\x030.69315", 9000 + j),
                format!("109_14\x02{}\x032.3979", 9100 + j),
            ];
            format!("{},{},{}", md5_hex(j), feats.len(), feats.join("\x01")).into_bytes()
        })
        .collect()
}

fn skeleton_lines() -> Vec<Vec<u8>> {
    skeleton_lines_n(SAMPLES)
}

fn skeleton_lines_n(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let feats = [
                format!("205\x02{}\x031.0", 100 + i),
                format!("206\x02{}\x031.0", 40 + i % 4),
                format!("508\x02{}\x031.79176", 7000 + i),
                format!("301\x02{}\x031.0", 1 + i % 3),
            ];
            let (click, buy) = (u8::from(i % 4 == 0), u8::from(i % 8 == 0));
            format!("{},{click},{buy},{},{},{}", i + 1, md5_hex(i % SESSIONS), feats.len(), feats.join("\x01"))
                .into_bytes()
        })
        .collect()
}

fn ingest(raw: &Path, out: &Path, strict: bool) -> anyhow::Result<esmm::stages::StageReport> {
    let params = IngestConfig { strict, hash_buckets: 1 << 16, ..Default::default() };
    run(&IngestStage { threads: 1, ..ingest_stage(raw, out, params) })
}

type Row = BTreeMap<String, Value>;

/// The clean ingest: common rows by md5, samples by sample_id.
fn baseline() -> (HashMap<u64, Row>, HashMap<u64, Row>) {
    let dir = temp_dir("hostile-base");
    write_raw(&dir, &render(&common_lines(), None), &render(&skeleton_lines(), None));
    ingest(&dir, &dir.join("out"), true).unwrap();
    let t = dir.join("out/train");
    let common = read_rows(&t.join("common.parquet")).into_iter().map(|r| (u(&r, "md5"), r)).collect();
    let samples = read_rows(&t.join("samples.parquet")).into_iter().map(|r| (u(&r, "sample_id"), r)).collect();
    (common, samples)
}

fn write_raw(dir: &Path, common: &[u8], skeleton: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let clean = (render(&common_lines(), None), render(&skeleton_lines(), None));
    std::fs::write(dir.join("common_features_train.csv"), common).unwrap();
    std::fs::write(dir.join("sample_skeleton_train.csv"), skeleton).unwrap();
    std::fs::write(dir.join("common_features_test.csv"), clean.0).unwrap();
    std::fs::write(dir.join("sample_skeleton_test.csv"), clean.1).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_raw_lines_are_kept_or_counted_never_misjoined(mutations in prop::collection::vec(mutation(), 1..6)) {
        let (base_common, base_samples) = baseline_cached();
        let (mut co, mut sk) = (common_lines(), skeleton_lines());
        let (mut co_touched, mut sk_touched, mut co_cut, mut sk_cut) = (vec![], vec![], None, None);
        for m in &mutations {
            match m.0 {
                0 => mutate(&mut co, &mut co_touched, &mut co_cut, m),
                _ => mutate(&mut sk, &mut sk_touched, &mut sk_cut, m),
            }
        }
        let (co_text, sk_text) = (render(&co, co_cut), render(&sk, sk_cut));
        let dir = temp_dir("hostile");
        write_raw(&dir, &co_text, &sk_text);

        let report = ingest(&dir, &dir.join("out"), false).expect("lenient ingest must not fail on bad lines");
        let c = &report.counts;
        let s = &report.skipped;
        // Every line read is kept or skipped for a counted reason.
        prop_assert_eq!(c["train.skeleton_lines"], lines_in(&sk_text));
        prop_assert_eq!(c["train.common_lines"], lines_in(&co_text));
        prop_assert_eq!(c["train.samples_rows"] + skipped_rows(s, "train.skeleton."), c["train.skeleton_lines"]);
        prop_assert_eq!(c["train.common_rows"] + skipped_rows(s, "train.common."), c["train.common_lines"]);

        let t = dir.join("out/train");
        let common = read_rows(&t.join("common.parquet"));
        let samples = read_rows(&t.join("samples.parquet"));
        prop_assert_eq!(samples.len() as u64, c["train.samples_rows"]);
        let hex = |m: u64| format!("{m:016x}");
        let mutated_text = |lines: &[Vec<u8>], touched: &[usize], needle: &str| {
            touched.iter().any(|&i| String::from_utf8_lossy(&lines[i]).contains(needle))
        };
        for row in &samples {
            let r = u(row, "common_row") as usize;
            prop_assert!(r < common.len(), "common_row {} of {} rows", r, common.len());
            let joined = &common[r];
            // The join key matches: never another session's user side.
            prop_assert_eq!(row.get("md5"), joined.get("md5"));
            let md5 = u(row, "md5");
            // A session whose common line no mutation touched (or forged) is the clean one.
            let original = (0..SESSIONS).find(|&j| hex(md5) == md5_hex(j));
            if let Some(j) = original.filter(|&j| !co_touched.contains(&j) && !mutated_text(&co, &co_touched, &hex(md5))) {
                prop_assert_eq!(Some(joined), base_common.get(&md5), "session {} joined to a changed user side", j);
            }
            // A sample whose line no mutation touched (or could have forged) is the clean one.
            let sid = u(row, "sample_id");
            let clean_line = sid >= 1 && sid as usize <= SAMPLES && !sk_touched.contains(&(sid as usize - 1));
            let prefix = format!("{sid},");
            let forged = sk_touched.iter().any(|&i| sk[i].split(|&b| b == b'\n').any(|seg| seg.starts_with(prefix.as_bytes())));
            if clean_line && !forged && sk_cut.is_none_or(|c| c / 1000 >= sid as usize) {
                let expected = base_samples.get(&sid).map(|b| {
                    let mut b = b.clone();
                    b.insert("common_row".into(), Value::U64(r as u64));
                    b
                });
                prop_assert_eq!(Some(row), expected.as_ref());
            }
        }

        // --strict: fails (naming file and line, leaving no manifest) exactly when the lenient
        // run counted an error.
        let errors: u64 = Reason::ALL.iter().filter(|r| r.is_error()).map(|r| {
            ["train.skeleton.", "train.common."].iter().map(|p| s.get(&format!("{p}{}", r.name())).copied().unwrap_or(0)).sum::<u64>()
        }).sum();
        match ingest(&dir, &dir.join("strict"), true) {
            Ok(_) => prop_assert_eq!(errors, 0),
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(errors > 0, "strict failed on input the lenient run found clean: {}", msg);
                prop_assert!(msg.contains("_train.csv:"), "{}", msg);
                prop_assert!(!dir.join("strict/_manifest.json").exists());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn baseline_cached() -> &'static (HashMap<u64, Row>, HashMap<u64, Row>) {
    static BASE: std::sync::OnceLock<(HashMap<u64, Row>, HashMap<u64, Row>)> = std::sync::OnceLock::new();
    BASE.get_or_init(baseline)
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let dir = temp_dir("hostile-config");
    for (yaml, key) in [
        ("train:\n  epochz: 3\n", "epochz"),
        ("train:\n  epochs: many\n", "epochs"),
        ("paths:\n  raw: [1, 2]\n", "raw"),
        ("ingest: {hash_buckets: 1}\n", "ingest.hash_buckets"),
        ("model: {kind: bert}\n", "kind"),
        ("split: {valid_fraction: -0.5}\n", "split.valid_fraction"),
        ("runner: {epochs: 5}\ntrain: {epochs: 6}\n", "runner.epochs"),
    ] {
        std::fs::write(dir.join("bad.yaml"), yaml).unwrap();
        for args in [&["run", "bad.yaml"][..], &["ingest", "--config", "bad.yaml"][..]] {
            let o = esmm(args, &dir);
            let msg = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{yaml}: {msg}");
            assert!(msg.contains(key) && msg.contains("bad.yaml"), "{yaml}: must name {key} and the file: {msg}");
        }
    }
    let o = esmm(&["run", "missing.yaml"], &dir);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.yaml"));
}

fn small_raw(dir: &Path) {
    write_raw(dir, &render(&common_lines(), None), &render(&skeleton_lines(), None));
}

#[test]
fn output_below_a_file_is_a_clear_error() {
    let dir = temp_dir("hostile-unwritable");
    small_raw(&dir.join("raw"));
    std::fs::write(dir.join("plain"), "not a directory").unwrap();
    let o = esmm(&["ingest", "--raw", "raw", "--out", "plain/ingest"], &dir);
    let msg = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(msg.contains("plain/ingest"), "{msg}");
    assert_eq!(std::fs::read(dir.join("plain")).unwrap(), b"not a directory");
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_no_partial_output() {
    // RLIMIT_FSIZE stands in for a full disk (writes past it fail with EFBIG once SIGXFSZ is
    // ignored); the raw files are written before the limit applies.
    let dir = temp_dir("hostile-full");
    let raw = dir.join("raw");
    let big = skeleton_lines_n(3000);
    write_raw(&raw, &render(&common_lines(), None), &render(&big, None));
    let script = format!("trap '' XFSZ; ulimit -f 8; exec '{}' ingest --raw raw --out out", env!("CARGO_BIN_EXE_esmm"));
    let o = Command::new("bash").arg("-c").arg(&script).current_dir(&dir).output().unwrap();
    let msg = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(msg.contains("out/train/") && msg.to_lowercase().contains("too large"), "{msg}");
    assert!(!dir.join("out/_manifest.json").exists());
    let mut stack = vec![dir.join("out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".tmp-"), "partial file {name} left behind");
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    // With room again, the same command succeeds.
    assert!(esmm(&["ingest", "--raw", "raw", "--out", "out"], &dir).status.success());
}
