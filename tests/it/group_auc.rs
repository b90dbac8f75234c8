//! Group AUC end to end: `predict` writes each sample's user key and session (md5) from its
//! common row; `evaluate` writes group AUC per user and per session, with coverage, into
//! metrics.parquet and the summary; a predictions file without those columns (written before
//! them, or by another tool) still evaluates and says once that group AUC was not computed; a
//! null key is an error naming the file, the row and the column.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{Field, Schema, UInt64Type};
use common::*;
use esmm::config::{ModelConfig, TrainConfig};
use esmm::schema::Split;
use esmm::stages::evaluate;

/// Raw → split → a 1-epoch model → predictions of the test split; returns (split dir, predictions).
fn predictions(root: &Path) -> (PathBuf, PathBuf) {
    generate(root, small_world());
    let data = ingest_and_split_small(root);
    let params = TrainConfig { epochs: 1, batch_size: 256, ..Default::default() };
    let model = ModelConfig::default();
    let out = root.join("model");
    train_with(&data, &out, model, params, false);
    let pred = root.join("pred.parquet");
    predict_split(&out, &data, Split::Test, &pred);
    (data, pred)
}

fn evaluate_to(pred: &Path, out: &Path, truth: Option<PathBuf>) -> anyhow::Result<esmm::stages::StageReport> {
    evaluate::run(&evaluate::EvaluateStage { truth, run_id: "g".into(), ..evaluate_stage(pred, out) })
}

/// (model, task, metric) → (value, n) of the `all` rows of a metrics file.
fn metrics(dir: &Path) -> BTreeMap<(String, String, String), (f64, u64)> {
    read_rows(&dir.join("metrics.parquet"))
        .iter()
        .filter(|r| r["slice"] == Value::Str("all".into()))
        .map(|r| {
            let s = |c: &str| match &r[c] {
                Value::Str(v) => v.clone(),
                other => panic!("{c}: {other:?}"),
            };
            ((s("model"), s("task"), s("metric")), (f(r, "value"), u(r, "n")))
        })
        .collect()
}

/// `pred` rewritten: `edit` changes the columns (name, array) of each batch, given its first row.
fn rewrite(pred: &Path, out: &Path, edit: impl Fn(&mut Vec<(String, ArrayRef)>, usize)) {
    let file = std::fs::File::open(pred).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let (mut writer, mut start) = (None, 0);
    for b in reader {
        let b = b.unwrap();
        let mut cols: Vec<(String, ArrayRef)> =
            b.schema().fields().iter().map(|f| f.name().clone()).zip(b.columns().iter().cloned()).collect();
        edit(&mut cols, start);
        start += b.num_rows();
        let fields: Vec<Field> = cols.iter().map(|(n, a)| Field::new(n, a.data_type().clone(), true)).collect();
        let schema = Arc::new(Schema::new(fields));
        let w =
            writer.get_or_insert_with(|| esmm::parquet_out::ParquetOut::create(out, schema.clone(), 1 << 16).unwrap());
        w.write(&RecordBatch::try_new(schema, cols.into_iter().map(|c| c.1).collect()).unwrap()).unwrap();
    }
    writer.unwrap().close().unwrap();
}

/// Group AUC by a map of the groups, each scored by `esmm::metrics::auc`: (value, groups, covered).
fn reference(keys: &[u64], scores: &[f32], labels: &[bool], skip: Option<u64>) -> (f64, u64, u64) {
    let mut groups: BTreeMap<u64, (Vec<f32>, Vec<bool>)> = BTreeMap::new();
    for i in (0..keys.len()).filter(|&i| Some(keys[i]) != skip) {
        let g = groups.entry(keys[i]).or_default();
        g.0.push(scores[i]);
        g.1.push(labels[i]);
    }
    let (mut num, mut den, mut covered) = (0.0, 0.0, 0);
    for (s, y) in groups.values() {
        if let Some(a) = esmm::metrics::auc(s, y) {
            num += s.len() as f64 * a;
            den += s.len() as f64;
            covered += 1;
        }
    }
    (num / den, groups.len() as u64, covered)
}

#[test]
fn predict_writes_the_keys_and_evaluate_the_group_auc() {
    let root = temp_dir("gauc");
    let (data, pred) = predictions(&root);

    // Each prediction carries its sample's common row's md5 and first 101 id.
    let samples = read_rows(&data.join("test/samples.parquet"));
    let common = read_rows(&data.join("test/common.parquet"));
    let preds = read_rows(&pred);
    assert_eq!(preds.len(), samples.len());
    for (p, s) in preds.iter().zip(&samples) {
        assert_eq!(u(p, "sample_id"), u(s, "sample_id"));
        let c = &common[u(s, "common_row") as usize];
        assert_eq!(u(p, "md5"), u(c, "md5"), "sample {}", u(s, "sample_id"));
        assert_eq!(u(p, "md5"), u(s, "md5"));
        // 0 for a session without a user id (the generator, like Ali-CCP, writes some)
        let user = ids(c, "f_101").first().map_or(0, |&id| id as u64);
        assert_eq!(u(p, "user_key"), user, "sample {}", u(s, "sample_id"));
    }
    let keys = |col: &str| preds.iter().map(|p| u(p, col)).collect::<Vec<_>>();
    let (users, sessions) = (keys("user_key"), keys("md5"));
    let distinct = |v: &[u64]| v.iter().filter(|&&k| k != 0).collect::<BTreeSet<_>>().len() as u64;
    let anonymous = users.iter().filter(|&&k| k == 0).count();
    let n_users = distinct(&users);
    assert!(n_users > 50 && anonymous > 0 && anonymous < users.len() / 3, "{n_users} users, {anonymous} rows without");
    assert!(!sessions.contains(&0));

    evaluate_to(&pred, &root.join("eval"), Some(root.join("raw/truth_test.csv"))).unwrap();
    let m = metrics(&root.join("eval"));
    let get = |model: &str, task: &str, metric: &str| {
        *m.get(&(model.into(), task.into(), metric.into())).unwrap_or_else(|| panic!("no {model} {task} {metric}"))
    };
    let p_ctr: Vec<f32> = preds.iter().map(|p| f(p, "p_ctr") as f32).collect();
    let click: Vec<bool> = preds.iter().map(|p| u(p, "click") == 1).collect();
    for (grouping, keys, skip) in [("user", &users, Some(0)), ("session", &sessions, None)] {
        let (value, n) = get("esmm", "ctr", &format!("gauc_{grouping}"));
        let (want, groups, covered) = reference(keys, &p_ctr, &click, skip);
        assert!((value - want).abs() < 1e-12, "{grouping}: {value} vs {want}");
        assert!(value > 0.5 && value < 0.95, "{grouping}: {value}");
        // rows without a user id are in no user group
        let grouped = keys.iter().filter(|&&k| Some(k) != skip).count();
        assert_eq!(n, grouped as u64);
        assert_eq!(get("esmm", "ctr", &format!("gauc_{grouping}_groups")).0, distinct(keys) as f64);
        assert_eq!(groups, distinct(keys));
        assert_eq!(get("esmm", "ctr", &format!("gauc_{grouping}_groups_covered")).0, covered as f64);
        let imp = get("esmm", "ctr", &format!("gauc_{grouping}_impressions_covered")).0;
        assert!(imp > 0.5 * n as f64 && imp <= n as f64, "{grouping}: {imp} of {n}");
        // CVR on clicked rows: fewer rows, most groups without a buy; CTCVR over every row.
        let (cvr, cvr_n) = get("esmm", "cvr", &format!("gauc_{grouping}"));
        let clicked = (0..keys.len()).filter(|&i| click[i] && Some(keys[i]) != skip).count();
        assert_eq!(cvr_n, clicked as u64);
        let cvr_covered = get("esmm", "cvr", &format!("gauc_{grouping}_groups_covered")).0;
        assert!(cvr.is_finite() && cvr_covered < get("esmm", "cvr", &format!("gauc_{grouping}_groups")).0);
        assert!(get("esmm", "ctcvr", &format!("gauc_{grouping}")).0.is_finite());
        assert!(get("oracle", "ctr", &format!("gauc_{grouping}")).0.is_finite());
    }
    let summary = std::fs::read_to_string(root.join("eval/summary.md")).unwrap();
    assert!(summary.contains("Group AUC (impression-weighted") && summary.contains("| ctr | user |"), "{summary}");
    assert!(!summary.contains("not computed"), "{summary}");

    // An old predictions file, without user_key and md5: the same metrics, no group AUC, said once.
    let old = root.join("old.parquet");
    rewrite(&pred, &old, |c, _| c.retain(|(n, _)| n != "user_key" && n != "md5"));
    let o = esmm(
        &["evaluate", "--predictions", old.to_str().unwrap(), "--out", root.join("old").to_str().unwrap()],
        Path::new("."),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let note = "Group AUC: not computed, the predictions lack the `user_key` and `md5` columns.";
    assert_eq!(stderr.matches(note).count(), 1, "{stderr}");
    let om = metrics(&root.join("old"));
    assert!(om.keys().all(|k| !k.2.starts_with("gauc")), "{om:?}");
    for ((model, task, metric), v) in &om {
        let new = m[&(model.clone(), task.clone(), metric.clone())];
        assert!(v.0 == new.0 || (v.0.is_nan() && new.0.is_nan()), "{task} {metric}: {v:?} vs {new:?}");
    }
    // Without md5 only: per user, not per session.
    let no_md5 = root.join("no_md5.parquet");
    rewrite(&pred, &no_md5, |c, _| c.retain(|(n, _)| n != "md5"));
    evaluate_to(&no_md5, &root.join("no_md5"), None).unwrap();
    let nm = metrics(&root.join("no_md5"));
    assert!(nm.keys().any(|k| k.2 == "gauc_user") && !nm.keys().any(|k| k.2.starts_with("gauc_session")));
    let summary = std::fs::read_to_string(root.join("no_md5/summary.md")).unwrap();
    assert!(summary.contains("Group AUC per session: not computed, the predictions lack the `md5` column."));

    // A null user key: exit 1, naming the file, the row and the column.
    let nulls = root.join("null_key.parquet");
    rewrite(&pred, &nulls, |c, start| {
        let col = c.iter_mut().find(|(n, _)| n == "user_key").unwrap();
        let v = col.1.as_primitive::<UInt64Type>();
        col.1 = Arc::new((0..v.len()).map(|i| (start + i != 7).then(|| v.value(i))).collect::<UInt64Array>());
    });
    let o = esmm(
        &["evaluate", "--predictions", nulls.to_str().unwrap(), "--out", root.join("null").to_str().unwrap()],
        Path::new("."),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("null_key.parquet: column `user_key` has 1 null values, the first in row 7"), "{stderr}");
    std::fs::remove_dir_all(root).ok();
}
