//! Every bad-input class of the ingest policy, on hand-written raw files: lenient mode skips and
//! counts the smallest broken unit; `--strict` fails naming file, line and reason; valid oddities
//! pass strict mode.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use esmm::config::IngestConfig;
use esmm::hashing::FeatureHasher;
use esmm::schema::field_index;
use esmm::stages::ingest::run;

const A: &str = "0123456789abcdef";
const B: &str = "fedcba9876543210";

#[derive(Clone)]
struct Fixture {
    skeleton: String,
    common: String,
}

fn base() -> Fixture {
    let common = format!(
        "{A},4,{}\n{B},2,{}\n",
        list(&[
            feat("101", 1, "1.0"),
            feat("121", 5, "1.0"),
            feat("109_14", 10, "0.69315"),
            feat("109_14", 11, "1.09861")
        ]),
        list(&[feat("101", 2, "1.0"), feat("122", 3, "1.0")]),
    );
    let skeleton = format!(
        "1,1,0,{A},3,{}\n2,0,0,{A},2,{}\n3,1,1,{B},2,{}\n",
        list(&[feat("205", 100, "1.0"), feat("206", 200, "1.0"), feat("508", 300, "2.3979")]),
        list(&[feat("205", 101, "1.0"), feat("301", 1, "1.0")]),
        list(&[feat("205", 102, "1.0"), feat("210", 7, "1.0")]),
    );
    Fixture { skeleton, common }
}

impl Fixture {
    /// Writes the train files from the fixture and a clean copy of the base as test files.
    fn write(&self) -> PathBuf {
        let dir = temp_dir("bad");
        let b = base();
        std::fs::write(dir.join("sample_skeleton_train.csv"), &self.skeleton).unwrap();
        std::fs::write(dir.join("common_features_train.csv"), &self.common).unwrap();
        std::fs::write(dir.join("sample_skeleton_test.csv"), &b.skeleton).unwrap();
        std::fs::write(dir.join("common_features_test.csv"), &b.common).unwrap();
        dir
    }
}

fn ingest(raw: &PathBuf, params: IngestConfig) -> anyhow::Result<(PathBuf, esmm::stages::StageReport)> {
    let out = raw.join("out");
    let r = run(&ingest_stage(raw, &out, params))?;
    Ok((out, r))
}

fn lenient(f: &Fixture) -> (PathBuf, BTreeMap<String, u64>, Vec<BTreeMap<String, Value>>) {
    let raw = f.write();
    let (out, report) = ingest(&raw, IngestConfig::default()).expect("lenient ingest must not fail");
    let rows = read_rows(&out.join("train/samples.parquet"));
    (out, report.skipped, rows)
}

fn strict_err(f: &Fixture) -> String {
    let raw = f.write();
    let params = IngestConfig { strict: true, ..Default::default() };
    match ingest(&raw, params) {
        Ok(_) => panic!("strict ingest accepted bad input"),
        Err(e) => format!("{e:#}"),
    }
}

fn strict_ok(f: &Fixture) {
    let raw = f.write();
    let params = IngestConfig { strict: true, ..Default::default() };
    if let Err(e) = ingest(&raw, params) {
        panic!("valid input failed strict mode: {e:#}");
    }
}

/// One bad class: lenient skips/counts `reason` `n` times and keeps `rows` rows; strict names
/// the file, the line and the reason.
fn check_bad(f: &Fixture, file: &str, line: u64, reason: &str, n: u64, rows: usize) {
    let (_, skipped, got) = lenient(f);
    let key = format!("train.{}.{reason}", if file.starts_with("common") { "common" } else { "skeleton" });
    assert_eq!(skipped.get(&key), Some(&n), "{reason}: skipped = {skipped:?}");
    assert_eq!(got.len(), rows, "{reason}: kept rows");
    let msg = strict_err(f);
    let want = format!("{file}:{line}: {reason}");
    assert!(msg.contains(&want), "strict error `{msg}` lacks `{want}`");
}

fn skel_line(sid: u64, click: u8, buy: u8, md5: &str, num: usize, feats: &str) -> String {
    format!("{sid},{click},{buy},{md5},{num},{feats}\n")
}

#[test]
fn base_fixture_is_valid_and_hashed_as_the_contract_says() {
    let f = base();
    strict_ok(&f);
    let (out, skipped, rows) = lenient(&f);
    assert!(skipped.iter().all(|(k, _)| !k.starts_with("train.skeleton")), "{skipped:?}");
    assert_eq!(rows.len(), 3);
    let h = FeatureHasher::new(1 << 20, 0).unwrap();
    let b = |f: &str, id| h.bucket(field_index(f.as_bytes()).unwrap(), id);
    assert_eq!(ids(&rows[0], "f_205"), vec![b("205", 100)]);
    assert_eq!(ids(&rows[0], "f_508"), vec![b("508", 300)]);
    assert_eq!(weights(&rows[0], "w_508"), vec![2.3979]);
    assert_eq!(ids(&rows[2], "f_210"), vec![b("210", 7)]);
    assert_eq!((u(&rows[2], "click"), u(&rows[2], "buy")), (1, 1));
    assert_eq!(u(&rows[0], "common_row"), 0);
    assert_eq!(u(&rows[2], "common_row"), 1);
    assert_eq!((u(&rows[0], "scenario"), u(&rows[1], "scenario")), (0, 1), "raw 301 id kept for slices");
    let common = read_rows(&out.join("train/common.parquet"));
    assert_eq!(common.len(), 2);
    assert_eq!(u(&common[0], "md5"), 0x0123456789abcdef);
    assert_eq!(ids(&common[0], "f_109_14"), vec![b("109_14", 10), b("109_14", 11)]);
    assert_eq!(weights(&common[0], "w_109_14"), vec![0.69315, 1.09861]);
    assert_eq!(ids(&common[1], "f_101"), vec![b("101", 2)]);
}

#[test]
fn missing_common_row() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, "1111111111111111", 1, &feat("205", 1, "1.0"));
    check_bad(&f, "sample_skeleton_train.csv", 4, "missing_common_row", 1, 3);
}

#[test]
fn empty_feature_list() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, A, 0, "");
    check_bad(&f, "sample_skeleton_train.csv", 4, "empty_feature_list", 1, 3);
    let mut f = base();
    f.common += &format!("{}\n", "aaaaaaaaaaaaaaaa,0,");
    check_bad(&f, "common_features_train.csv", 3, "empty_feature_list", 1, 3);
}

#[test]
fn feature_num_mismatch_trusts_the_list() {
    let mut f = base();
    f.skeleton = f.skeleton.replacen(&format!("1,1,0,{A},3,"), &format!("1,1,0,{A},7,"), 1);
    check_bad(&f, "sample_skeleton_train.csv", 1, "feature_num_mismatch", 1, 3);
    let (_, _, rows) = lenient(&f);
    assert_eq!(ids(&rows[0], "f_206").len(), 1);
    assert_eq!(ids(&rows[0], "f_508").len(), 1);
}

#[test]
fn unknown_and_misplaced_fields_drop_the_feature() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, A, 2, &list(&[feat("999", 1, "1.0"), feat("205", 5, "1.0")]));
    check_bad(&f, "sample_skeleton_train.csv", 4, "unknown_field", 1, 4);
    let (_, _, rows) = lenient(&f);
    assert_eq!(ids(&rows[3], "f_205").len(), 1);
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, A, 2, &list(&[feat("101", 1, "1.0"), feat("205", 5, "1.0")]));
    check_bad(&f, "sample_skeleton_train.csv", 4, "misplaced_field", 1, 4);
}

#[test]
fn bad_values_nan_inf_and_text() {
    for v in ["abc", "nan", "NaN", "inf", "-inf", "", "1.0.0"] {
        let mut f = base();
        f.skeleton += &skel_line(4, 0, 0, A, 2, &list(&[feat("508", 1, v), feat("205", 5, "1.0")]));
        check_bad(&f, "sample_skeleton_train.csv", 4, "bad_value", 1, 4);
    }
}

#[test]
fn exponent_values_are_valid() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, A, 2, &list(&[feat("508", 1, "1e-05"), feat("509", 2, "2.5E+00")]));
    strict_ok(&f);
    let (_, _, rows) = lenient(&f);
    assert_eq!(weights(&rows[3], "w_508"), vec![1e-5]);
    assert_eq!(weights(&rows[3], "w_509"), vec![2.5]);
}

#[test]
fn malformed_tokens() {
    let cases = [
        ("205\x021", "malformed_token"),          // no \x03
        ("2051\x031.0", "malformed_token"),       // no \x02
        ("205\x02abc\x031.0", "malformed_token"), // id not a number
        ("205\x02-1\x031.0", "malformed_token"),  // negative id
        ("205\x0299999999999999999999\x031.0", "id_overflow"),
    ];
    for (tok, reason) in cases {
        let mut f = base();
        f.skeleton += &skel_line(4, 0, 0, A, 2, &format!("{tok}\x01{}", feat("206", 1, "1.0")));
        check_bad(&f, "sample_skeleton_train.csv", 4, reason, 1, 4);
    }
}

#[test]
fn empty_features_from_doubled_or_trailing_separators() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, A, 2, &format!("{}\x01\x01{}\x01", feat("205", 1, "1.0"), feat("206", 1, "1.0")));
    check_bad(&f, "sample_skeleton_train.csv", 4, "empty_feature", 2, 4);
    let (_, _, rows) = lenient(&f);
    assert_eq!(ids(&rows[3], "f_205").len() + ids(&rows[3], "f_206").len(), 2);
}

#[test]
fn truncated_last_line_is_skipped() {
    let mut f = base();
    f.skeleton += &format!("4,0,0,{A},3,{}\x01206\x02", feat("205", 1, "1.0"));
    check_bad(&f, "sample_skeleton_train.csv", 4, "truncated_last_line", 1, 3);
    let mut f = base();
    f.skeleton += "4,0,0,01234";
    check_bad(&f, "sample_skeleton_train.csv", 4, "truncated_last_line", 1, 3);
    let mut f = base();
    f.common += "aaaaaaaaaaaaaaaa,3,101\x021";
    check_bad(&f, "common_features_train.csv", 3, "truncated_last_line", 1, 3);
}

#[test]
fn last_line_without_newline_is_valid() {
    let mut f = base();
    f.skeleton.pop();
    f.common.pop();
    strict_ok(&f);
    assert_eq!(lenient(&f).2.len(), 3);
}

#[test]
fn crlf_and_bom_are_stripped_and_md5_still_joins() {
    let mut f = base();
    f.skeleton = format!("\u{feff}{}", f.skeleton.replace('\n', "\r\n"));
    f.common = format!("\u{feff}{}", f.common.replace('\n', "\r\n"));
    strict_ok(&f);
    let (_, skipped, rows) = lenient(&f);
    assert!(skipped.keys().all(|k| !k.starts_with("train.")), "{skipped:?}");
    assert_eq!(rows.len(), 3);
    assert_eq!(u(&rows[0], "sample_id"), 1);
    assert_eq!(u(&rows[2], "common_row"), 1);
    assert_eq!(weights(&rows[0], "w_508"), vec![2.3979]);
}

#[test]
fn duplicate_sample_id_keeps_the_first() {
    let mut f = base();
    f.skeleton += &skel_line(1, 0, 0, A, 1, &feat("205", 5, "1.0"));
    check_bad(&f, "sample_skeleton_train.csv", 4, "duplicate_sample_id", 1, 3);
    let (_, _, rows) = lenient(&f);
    assert_eq!(u(&rows[0], "click"), 1);
}

#[test]
fn duplicate_common_md5_keeps_the_first() {
    let mut f = base();
    f.common += &format!("{A},1,{}\n", feat("101", 99, "1.0"));
    check_bad(&f, "common_features_train.csv", 3, "duplicate_common_md5", 1, 3);
    let (out, _, _) = lenient(&f);
    let common = read_rows(&out.join("train/common.parquet"));
    assert_eq!(common.len(), 2);
    let h = FeatureHasher::new(1 << 20, 0).unwrap();
    assert_eq!(ids(&common[0], "f_101"), vec![h.bucket(0, 1)]);
}

#[test]
fn labels_other_than_0_1_skip_the_row() {
    for (c, b) in [("2", "0"), ("0", "x"), ("", "0"), ("1.0", "0")] {
        let mut f = base();
        f.skeleton += &format!("4,{c},{b},{A},1,{}\n", feat("205", 1, "1.0"));
        check_bad(&f, "sample_skeleton_train.csv", 4, "bad_label", 1, 3);
    }
}

#[test]
fn click0_buy1_is_valid_and_counted() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 1, A, 1, &feat("205", 1, "1.0"));
    strict_ok(&f);
    let (out, skipped, rows) = lenient(&f);
    assert_eq!(skipped.get("train.skeleton.click0_buy1"), Some(&1));
    assert_eq!(rows.len(), 4);
    assert_eq!((u(&rows[3], "click"), u(&rows[3], "buy")), (0, 1));
    let m = manifest(&out);
    assert_eq!(m["counts"]["train.click_and_buy"], 1);
}

#[test]
fn thousands_of_ids_are_valid_and_caps_truncate_deterministically() {
    let many: Vec<String> = (0..5000).map(|i| feat("210", i, "1.0")).collect();
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, A, 5000, &list(&many));
    strict_ok(&f);
    assert_eq!(ids(&lenient(&f).2[3], "f_210").len(), 5000);
    let raw = f.write();
    let mut params = IngestConfig::default();
    params.max_ids_per_field.insert("210".into(), 64);
    params.strict = true;
    let (out, report) = ingest(&raw, params).expect("capping is not an error");
    assert_eq!(report.skipped.get("train.skeleton.field_capped"), Some(&(5000 - 64)));
    let rows = read_rows(&out.join("train/samples.parquet"));
    let h = FeatureHasher::new(1 << 20, 0).unwrap();
    let want: Vec<u32> = (0..64).map(|i| h.bucket(field_index(b"210").unwrap(), i)).collect();
    assert_eq!(ids(&rows[3], "f_210"), want);
}

#[test]
fn non_contiguous_md5_rows_join_by_key() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, A, 1, &feat("205", 1, "1.0"));
    f.skeleton += &skel_line(5, 0, 0, B, 1, &feat("205", 1, "1.0"));
    strict_ok(&f);
    let rows = lenient(&f).2;
    let joined: Vec<u64> = rows.iter().map(|r| u(r, "common_row")).collect();
    assert_eq!(joined, vec![0, 0, 1, 0, 1]);
}

#[test]
fn common_rows_without_101_are_valid() {
    let mut f = base();
    f.common += &format!("aaaaaaaaaaaaaaaa,1,{}\n", feat("121", 1, "1.0"));
    f.skeleton += &skel_line(4, 0, 0, "aaaaaaaaaaaaaaaa", 1, &feat("205", 1, "1.0"));
    strict_ok(&f);
    let (_, skipped, rows) = lenient(&f);
    assert_eq!(skipped.get("train.common.common_rows_without_101"), Some(&1));
    assert_eq!(u(&rows[3], "common_row"), 2);
}

#[test]
fn header_blank_and_wrong_column_count_rows() {
    let mut f = base();
    f.skeleton = format!("sample_id,click,buy,md5,feature_num,feature_list\n{}", f.skeleton);
    check_bad(&f, "sample_skeleton_train.csv", 1, "header_line", 1, 3);
    let mut f = base();
    f.skeleton = f.skeleton.replacen('\n', "\n\n", 1);
    check_bad(&f, "sample_skeleton_train.csv", 2, "blank_line", 1, 3);
    let mut f = base();
    f.skeleton += &format!("4,0,0,{A},1\n");
    check_bad(&f, "sample_skeleton_train.csv", 4, "wrong_column_count", 1, 3);
    let mut f = base();
    f.skeleton += &format!("4,0,0,{A},1,{},extra\n", feat("205", 1, "1.0"));
    check_bad(&f, "sample_skeleton_train.csv", 4, "wrong_column_count", 1, 3);
    let mut f = base();
    f.common = format!("md5,feature_num,feature_list\n{}", f.common);
    check_bad(&f, "common_features_train.csv", 1, "header_line", 1, 3);
}

#[test]
fn bad_md5_and_sample_id() {
    let mut f = base();
    f.skeleton += &skel_line(4, 0, 0, "0123", 1, &feat("205", 1, "1.0"));
    check_bad(&f, "sample_skeleton_train.csv", 4, "bad_md5", 1, 3);
    let mut f = base();
    f.skeleton += &format!("-4,0,0,{A},1,{}\n", feat("205", 1, "1.0"));
    check_bad(&f, "sample_skeleton_train.csv", 4, "bad_sample_id", 1, 3);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // Every byte value, and every prefix of a valid line as the last line.
    let mut f = base();
    let junk: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    f.skeleton += &String::from_utf8_lossy(&junk);
    f.skeleton += "\n";
    let (_, _, rows) = lenient(&f);
    assert_eq!(rows.len(), 3);
    let line = skel_line(4, 1, 0, A, 2, &list(&[feat("205", 1, "1.0"), feat("508", 2, "1.0")]));
    // A cut inside the last value ("1", "1.") still leaves a valid line: it cannot be told apart.
    let last_value = line.rfind('\x03').unwrap() + 1;
    for cut in 0..line.len() {
        let mut f = base();
        f.skeleton += &line[..cut];
        let (_, skipped, rows) = lenient(&f);
        let kept = cut > last_value;
        assert_eq!(rows.len(), if kept { 4 } else { 3 }, "cut {cut}: {skipped:?}");
        let truncated = skipped.get("train.skeleton.truncated_last_line").copied().unwrap_or(0);
        assert_eq!(truncated, u64::from(!kept && cut > 0), "cut {cut}: {skipped:?}");
    }
}
