//! PaddleRec's preprocessed ESMM CSV (`--format paddlerec`): every line of `train/` and `test/`
//! becomes a sample; identical user sides share one common row; ids are hashed as for Ali-CCP
//! (weights 1.0); each bad-input class is skipped and counted, and `--strict` names the file,
//! the line and the reason.

use crate::common;

use std::path::{Path, PathBuf};

use common::mutate::{lines_in, mutate, mutation, render, skipped_rows};
use common::*;
use esmm::aliccp::Reason;
use esmm::config::{Format, IngestConfig};
use esmm::hashing::FeatureHasher;
use esmm::schema::field_index;
use esmm::stages::ingest::run;
use proptest::prelude::*;

/// PaddleRec's layout: `sample_id,click,buy,<ignored column>,field:id,...` (its reader also
/// skips the fourth column).
const TRAIN: &str = "\
1,1,0,k1,101:5,121:2,205:100,206:7,301:1
2,0,0,k1,101:5,121:2,205:101,210:3
3,1,1,k2,101:6,122:4,205:102
4,0,1,k3,101:5,121:2,205:103
5,1,0
6x,0,0,k,205:1
7,2,0,k,205:1
8,0,0,k,205,205:8
9,0,0,k,999:1,205:5
10,0,0,k,205:99999999999999999999999,205:10

11,0,0,k
12,0,0,k,101:5,,205:12
";

fn write(dir: &Path, split: &str, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(split)).unwrap();
    std::fs::write(dir.join(split).join(name), text).unwrap();
}

fn raw() -> PathBuf {
    let dir = temp_dir("paddlerec");
    write(&dir, "train", "part-0", TRAIN);
    // A second file: line numbers restart, sample ids continue.
    write(&dir, "train", "part-1", "13,1,0,k,205:13\n1,0,0,k,205:1\n");
    write(&dir, "test", "part-0", "1,0,0,k,101:5,121:2,205:100\n");
    dir
}

fn ingest(raw: &Path, strict: bool) -> anyhow::Result<esmm::stages::StageReport> {
    let params = IngestConfig { format: Format::Paddlerec, strict, ..Default::default() };
    run(&ingest_stage(raw, &raw.join("out"), params))
}

#[test]
fn lines_become_samples_joined_to_shared_user_sides() {
    let dir = raw();
    let report = ingest(&dir, false).unwrap();
    let skipped: Vec<(&str, u64)> = report.skipped.iter().map(|(k, &v)| (k.as_str(), v)).collect();
    assert_eq!(
        skipped,
        [
            ("train.skeleton.bad_label", 1),
            ("train.skeleton.bad_sample_id", 1),
            ("train.skeleton.blank_line", 1),
            ("train.skeleton.click0_buy1", 1),
            ("train.skeleton.duplicate_sample_id", 1),
            ("train.skeleton.empty_feature", 1),
            ("train.skeleton.empty_feature_list", 1),
            ("train.skeleton.id_overflow", 1),
            ("train.skeleton.malformed_token", 1),
            ("train.skeleton.unknown_field", 1),
            ("train.skeleton.wrong_column_count", 1),
        ]
    );
    let rows = read_rows(&dir.join("out/train/samples.parquet"));
    let sids: Vec<u64> = rows.iter().map(|r| u(r, "sample_id")).collect();
    assert_eq!(sids, [1, 2, 3, 4, 8, 9, 10, 12, 13]);
    let h = FeatureHasher::new(1 << 20, 0).unwrap();
    let b = |f: &str, id| h.bucket(field_index(f.as_bytes()).unwrap(), id);
    let row = |sid: u64| &rows[sids.iter().position(|&s| s == sid).unwrap()];
    assert_eq!((u(row(1), "click"), u(row(1), "buy"), u(row(1), "scenario")), (1, 0, 1));
    assert_eq!((ids(row(1), "f_205"), ids(row(1), "f_206")), (vec![b("205", 100)], vec![b("206", 7)]));
    assert_eq!((u(row(3), "click"), u(row(3), "buy")), (1, 1));
    assert_eq!(ids(row(8), "f_205"), vec![b("205", 8)], "the malformed token is dropped, the row kept");
    assert_eq!(ids(row(9), "f_205"), vec![b("205", 5)], "the unknown field is dropped");
    assert_eq!(ids(row(10), "f_205"), vec![b("205", 10)], "the overflowing id is dropped");
    // One common row per distinct user side: sessions 1, 2 and 4 share theirs.
    let cr = |sid| u(row(sid), "common_row") as usize;
    assert!(cr(1) == cr(2) && cr(2) == cr(4) && cr(3) != cr(1) && cr(12) != cr(1));
    assert_eq!(cr(8), cr(13), "rows without user fields share the empty user side");
    let common = read_rows(&dir.join("out/train/common.parquet"));
    assert_eq!(common.len(), 4);
    assert_eq!((ids(&common[cr(1)], "f_101"), ids(&common[cr(1)], "f_121")), (vec![b("101", 5)], vec![b("121", 2)]));
    assert_eq!((ids(&common[cr(3)], "f_101"), ids(&common[cr(3)], "f_122")), (vec![b("101", 6)], vec![b("122", 4)]));
    assert_eq!(ids(&common[cr(12)], "f_121"), Vec::<u32>::new());
    assert_eq!(read_rows(&dir.join("out/test/samples.parquet")).len(), 1);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn strict_mode_names_file_line_and_reason() {
    let dir = raw();
    let e = format!("{:#}", ingest(&dir, true).err().expect("strict must fail"));
    assert!(e.contains("train/part-0:5: wrong_column_count"), "{e}");
    // Clean first file: the next error is in the second one, with its own line numbers.
    write(&dir, "train", "part-0", "1,1,0,k1,101:5,121:2,205:100\n2,0,0,k1,101:5,121:2,205:101\n");
    let e = format!("{:#}", ingest(&dir, true).err().expect("the duplicate sample id must fail"));
    assert!(e.contains("train/part-1:2: duplicate_sample_id"), "{e}");
    write(&dir, "train", "part-1", "13,1,0,k,205:13\n");
    let report = ingest(&dir, true).unwrap();
    assert_eq!(report.counts["train.samples_rows"], 3);
    std::fs::remove_dir_all(dir).ok();
}

/// Clean lines: 30 samples of 6 users, histories and items.
fn clean_lines() -> Vec<Vec<u8>> {
    (1..=30u64)
        .map(|i| {
            let user = i % 6;
            let feats = [
                format!("101:{}", 500 + user),
                format!("121:{}", user % 3),
                format!("109_14:{}", 900 + user),
                format!("205:{}", 7000 + i),
                format!("206:{}", 40 + i % 4),
                format!("301:{}", i % 3),
            ];
            format!("{i},{},{},k{user},{}", i % 2, u64::from(i % 7 == 0), feats.join(",")).into_bytes()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_lines_are_kept_or_counted(mutations in prop::collection::vec(mutation(), 1..6)) {
        let mut lines = clean_lines();
        let (mut touched, mut cut) = (vec![], None);
        for m in &mutations {
            mutate(&mut lines, &mut touched, &mut cut, m);
        }
        let text = render(&lines, cut);
        let dir = temp_dir("paddlerec-hostile");
        std::fs::create_dir_all(dir.join("train")).unwrap();
        std::fs::write(dir.join("train/part-0"), &text).unwrap();
        write(&dir, "test", "part-0", "1,0,0,k,205:1\n");
        let report = ingest(&dir, false).expect("lenient ingest must not fail on bad lines");
        let (c, s) = (&report.counts, &report.skipped);
        prop_assert_eq!(c["train.skeleton_lines"], lines_in(&text));
        prop_assert_eq!(c["train.samples_rows"] + skipped_rows(s, "train.skeleton."), c["train.skeleton_lines"]);
        let samples = read_rows(&dir.join("out/train/samples.parquet"));
        let common = read_rows(&dir.join("out/train/common.parquet"));
        prop_assert_eq!(samples.len() as u64, c["train.samples_rows"]);
        prop_assert!(samples.iter().all(|r| (u(r, "common_row") as usize) < common.len()));
        // Untouched lines come through whole: their item id is the clean one.
        let h = FeatureHasher::new(1 << 20, 0).unwrap();
        for r in &samples {
            let sid = u(r, "sample_id");
            let clean = (1..=30).contains(&sid) && !touched.contains(&(sid as usize - 1)) && cut.is_none();
            let prefix = format!("{sid},");
            let forged = touched.iter().any(|&i| lines[i].split(|&b| b == b'\n').any(|l| l.starts_with(prefix.as_bytes())));
            if clean && !forged {
                prop_assert_eq!(ids(r, "f_205"), vec![h.bucket(field_index(b"205").unwrap(), 7000 + sid)]);
            }
        }
        let errors: u64 = Reason::ALL
            .iter()
            .filter(|r| r.is_error())
            .map(|r| s.get(&format!("train.skeleton.{}", r.name())).copied().unwrap_or(0))
            .sum();
        match ingest(&dir, true) {
            Ok(_) => prop_assert_eq!(errors, 0),
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(errors > 0, "strict failed on input the lenient run found clean: {}", msg);
                prop_assert!(msg.contains("train/part-0:"), "{}", msg);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
