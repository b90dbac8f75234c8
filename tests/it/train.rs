//! Training, prediction and evaluation on small generated data: learning beats a constant
//! predictor, predictions cover every row in input order, runs are deterministic, a resumed run
//! equals an uninterrupted one, and the leakage / collapse guards fire.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt64Array, UInt8Array};
use common::*;
use esmm::config::{CalibrationKind, GenerateConfig, ModelConfig, TrainConfig};
use esmm::model::{ModelKind, GEMM_HIDDEN};
use esmm::schema::Split;
use esmm::stages::{evaluate, predict};

/// Raw → ingest → split for a small world; returns the split directory.
fn prepare(root: &Path, params: GenerateConfig) -> PathBuf {
    generate(root, params);
    prepare_raw(root)
}

fn prepare_raw(root: &Path) -> PathBuf {
    ingest_and_split_small(root)
}

fn train_to(data: &Path, out: &Path, kind: ModelKind, epochs: usize, resume: bool) -> esmm::stages::StageReport {
    train_model(data, out, ModelConfig { kind, ..Default::default() }, epochs, resume)
}

fn train_model(data: &Path, out: &Path, model: ModelConfig, epochs: usize, resume: bool) -> esmm::stages::StageReport {
    let params = TrainConfig { epochs, batch_size: 256, early_stopping_patience: 0, ..Default::default() };
    train_with(data, out, model, params, resume)
}

/// (epoch, step, epoch_progress, valid loss) per row of an `epochs.parquet`.
fn evaluations(model_dir: &Path) -> Vec<(u64, u64, f64, f64)> {
    read_rows(&model_dir.join("epochs.parquet"))
        .iter()
        .map(|r| (u(r, "epoch"), u(r, "step"), f(r, "epoch_progress"), f(r, "valid_loss")))
        .collect()
}

/// Validation every N steps: one log row per evaluation (and one per epoch end), the best
/// evaluation's model in model.bin, early stopping counted in evaluations, and `--resume`
/// still bit-identical (with the learning rates decayed per epoch); shrinkage toward the
/// shared rows trains, saves and resumes too.
#[test]
fn validation_by_steps_keeps_the_best_evaluation() {
    let root = temp_dir("steps");
    let data = prepare(&root, GenerateConfig { train_rows: 8_000, test_rows: 2_000, ..small_world() });
    let model = ModelConfig { min_sessions: 1, shrink_sessions: 5.0, ..Default::default() };
    let steps = TrainConfig {
        epochs: 2,
        batch_size: 256,
        eval_every_steps: 7,
        early_stopping_patience: 0,
        lr_decay: 0.5,
        ..Default::default()
    };
    let report = train_with(&data, &root.join("s1"), model.clone(), steps.clone(), false);
    let per_epoch = report.counts["steps"] / 2;
    let evals = evaluations(&root.join("s1"));
    // every 7th step, plus each epoch's end unless a 7th step ends it
    let want = (1..=2 * per_epoch).filter(|s| s % 7 == 0 || s % per_epoch == 0).count();
    assert_eq!(evals.len(), want, "{evals:?}");
    assert!(evals.windows(2).all(|w| w[0].1 < w[1].1 && w[0].2 < w[1].2));
    assert_eq!((evals[0].0, evals[0].1), (1, 7));
    assert!((evals.last().unwrap().2 - 2.0).abs() < 1e-9 && evals.last().unwrap().0 == 2);
    // the best evaluation: the lowest valid loss (train.select_on's default)
    let best = evals.iter().min_by(|a, b| a.3.total_cmp(&b.3)).unwrap();
    assert_eq!(report.counts["best_step"], best.1);
    let (_, header) = esmm::model::checkpoint::load::<serde_json::Value>(&root.join("s1/model.bin")).unwrap();
    assert_eq!(header.state["stop"]["best_step"], best.1);
    assert_eq!(header.state["steps"], best.1, "model.bin holds the model of the best step");
    // 1 epoch + resume to 2 = 2 epochs, bit for bit, with the same evaluations
    train_with(&data, &root.join("s2"), model.clone(), TrainConfig { epochs: 1, ..steps.clone() }, false);
    train_with(&data, &root.join("s2"), model.clone(), steps.clone(), true);
    assert!(same_weights(&root.join("s1/checkpoint.bin"), &root.join("s2/checkpoint.bin")));
    assert!(same_weights(&root.join("s1/model.bin"), &root.join("s2/model.bin")));
    // the same evaluations at the same steps, to 1e-12: their last bit (valid loss, AUCs) has
    // differed between the two runs at some mid-epoch evaluations, the models never did
    let resumed = read_rows(&root.join("s2").join("epochs.parquet"));
    let first = read_rows(&root.join("s1").join("epochs.parquet"));
    assert_eq!(resumed.len(), first.len());
    for (a, b) in resumed.iter().zip(&first) {
        assert_eq!((u(a, "epoch"), u(a, "step")), (u(b, "epoch"), u(b, "step")));
        for c in ["valid_loss", "valid_auc_ctr", "valid_auc_cvr", "valid_auc_ctcvr"] {
            let (x, y) = (f(a, c), f(b, c));
            assert!((x - y).abs() <= 1e-12 * y.abs(), "{c} at step {}: {x} vs {y}", u(b, "step"));
        }
    }
    // patience 2 in evaluations: stops two evaluations after the best one, mid-epoch or not
    let patient = TrainConfig { early_stopping_patience: 2, epochs: 20, ..steps };
    let r = train_with(&data, &root.join("s3"), model, patient, false);
    let evals = evaluations(&root.join("s3"));
    assert_eq!(r.counts["stopped_early"], 1);
    let best = evals.iter().position(|e| e.1 == r.counts["best_step"]).unwrap();
    assert_eq!(evals.len(), best + 3, "{evals:?}");
    predict_to(&root.join("s3"), &data, &root.join("p3.parquet"));
    assert_eq!(read_rows(&root.join("p3.parquet")).len(), 2_000);
}

/// `train.reset_embeddings`: the first epoch is the plain run's, each later one starts from
/// fresh tables (the step count too) with the towers kept; `train.ensemble_epochs` (the
/// default) keeps the finished epoch as a frozen member, exactly as it ended; and `--resume`
/// across the reset is bit-identical, the snapshot included.
#[test]
fn reset_embeddings_restarts_the_tables_each_epoch_and_resumes() {
    let root = temp_dir("reset");
    let data = prepare(&root, GenerateConfig { train_rows: 6_000, test_rows: 1_000, ..small_world() });
    let plain = TrainConfig {
        epochs: 2,
        batch_size: 256,
        early_stopping_patience: 0,
        reset_embeddings: false,
        ..Default::default()
    };
    let reset = TrainConfig { reset_embeddings: true, ..plain.clone() };
    let model = ModelConfig::default();
    let r = train_with(&data, &root.join("plain"), model.clone(), plain, false);
    train_with(&data, &root.join("r1"), model.clone(), reset.clone(), false);
    let (a, b) = (evaluations(&root.join("plain")), evaluations(&root.join("r1")));
    let epoch_end = |e: &[(u64, u64, f64, f64)], k: u64| e.iter().rfind(|x| x.0 == k).unwrap().3;
    assert_eq!(epoch_end(&a, 1), epoch_end(&b, 1), "epoch 1 is the plain run's");
    assert_ne!(epoch_end(&a, 2), epoch_end(&b, 2), "epoch 2 starts from fresh tables");
    let load = |p: &Path| esmm::model::checkpoint::load::<serde_json::Value>(p).unwrap().0;
    let (p, q) = (load(&root.join("plain/checkpoint.bin")), load(&root.join("r1/checkpoint.bin")));
    let per_epoch = r.counts["steps"] / 2;
    assert_eq!((p.tables[0].step, q.tables[0].step), (2 * per_epoch, per_epoch), "the tables' Adam restarted");
    // 1 epoch + resume to 2 = 2 epochs, bit for bit
    train_with(&data, &root.join("r2"), model.clone(), TrainConfig { epochs: 1, ..reset.clone() }, false);
    let e1 = load(&root.join("r2/checkpoint.bin"));
    assert!(e1.snapshots.is_empty());
    train_with(&data, &root.join("r2"), model.clone(), reset.clone(), true);
    assert!(same_weights(&root.join("r1/checkpoint.bin"), &root.join("r2/checkpoint.bin")));
    assert_eq!(q.snapshots.len(), 1, "epoch 1 kept as a member");
    let weights =
        |t: &esmm::model::Embedding| (0..t.rows as u32).flat_map(|r| t.weights(r).to_vec()).collect::<Vec<_>>();
    assert!(weights(&q.snapshots[0].tables[0]) == weights(&e1.tables[0]), "the member is epoch 1's tables");
    assert_eq!(q.snapshots[0].towers.params(), e1.towers.params(), "and epoch 1's towers");
    assert_ne!(q.towers.params(), e1.towers.params(), "the towers trained on");
    // without the ensemble: the same training, a single model, other valid scores from epoch 2
    let single = TrainConfig { ensemble_epochs: false, ..reset };
    train_with(&data, &root.join("single"), model, single, false);
    let c = evaluations(&root.join("single"));
    assert_eq!(epoch_end(&c, 1), epoch_end(&b, 1));
    assert_ne!(epoch_end(&c, 2), epoch_end(&b, 2), "epoch 2 is scored as the mean of both members");
    let s = load(&root.join("single/checkpoint.bin"));
    assert!(s.snapshots.is_empty() && s.towers.params() == q.towers.params(), "the same training");
}

/// Negative sampling (`train.keep_unclicked`): each epoch trains on every click and about that
/// share of the other rows (fewer steps, other rows each epoch), the same model for 1 and 2
/// threads, and `--resume` across an epoch is bit-identical.
#[test]
fn keep_unclicked_trains_on_a_share_of_the_rest_reproducibly() {
    let root = temp_dir("keep_unclicked");
    let data = prepare(&root, GenerateConfig { train_rows: 6_000, test_rows: 1_000, ..small_world() });
    let all = TrainConfig { epochs: 2, batch_size: 64, early_stopping_patience: 0, ..Default::default() };
    let some = TrainConfig { keep_unclicked: 0.3, ..all.clone() };
    let model = ModelConfig::default();
    let full = train_with(&data, &root.join("all"), model.clone(), all, false);
    let part = train_with(&data, &root.join("some"), model.clone(), some.clone(), false);
    let (n, k) = (full.counts["steps"] as f64, part.counts["steps"] as f64);
    assert!(k > 0.25 * n && k < 0.45 * n, "about 0.3 of the unclicked rows (and every click): {k} of {n} steps");
    let one = esmm::stages::train::TrainStage {
        threads: 1,
        ..train_stage(&data, &root.join("one"), model.clone(), some.clone())
    };
    esmm::stages::train::run(&one).unwrap();
    assert!(same_weights(&root.join("some/checkpoint.bin"), &root.join("one/checkpoint.bin")), "1 thread = 2");
    train_with(&data, &root.join("resumed"), model.clone(), TrainConfig { epochs: 1, ..some.clone() }, false);
    train_with(&data, &root.join("resumed"), model, some, true);
    assert!(same_weights(&root.join("some/checkpoint.bin"), &root.join("resumed/checkpoint.bin")), "--resume");
    assert_ne!(evaluations(&root.join("all")), evaluations(&root.join("some")));
    std::fs::remove_dir_all(root).ok();
}

fn predict_to(model: &Path, data: &Path, out: &Path) {
    predict_split(model, data, Split::Test, out)
}

fn evaluate_to(
    pred: &Path,
    out: &Path,
    truth: Option<PathBuf>,
    fail: bool,
) -> anyhow::Result<esmm::stages::StageReport> {
    evaluate::run(&evaluate::EvaluateStage { truth, fail_on_suspect: fail, ..evaluate_stage(pred, out) })
}

#[test]
fn trains_predicts_and_evaluates_deterministically() {
    let root = temp_dir("train");
    let data = prepare(&root, small_world());
    let report = train_to(&data, &root.join("m1"), ModelKind::Esmm, 3, false);
    assert_eq!(report.counts["epochs"], 3);
    predict_to(&root.join("m1"), &data, &root.join("p1.parquet"));

    // Every test row, in input order.
    let samples: Vec<u64> = read_rows(&data.join("test/samples.parquet")).iter().map(|r| u(r, "sample_id")).collect();
    let preds = read_rows(&root.join("p1.parquet"));
    assert_eq!(preds.iter().map(|r| u(r, "sample_id")).collect::<Vec<_>>(), samples);

    // Learning: the model beats a constant predictor at the base rate by a clear margin.
    evaluate_to(&root.join("p1.parquet"), &root.join("e1"), Some(root.join("raw/truth_test.csv")), false).unwrap();
    let auc = metric(&root.join("e1"), "esmm", "ctr", "auc");
    let oracle = metric(&root.join("e1"), "oracle", "ctr", "auc");
    assert!(auc > 0.62, "ctr auc {auc} (oracle {oracle})");
    let ll = metric(&root.join("e1"), "esmm", "ctr", "logloss");
    let rate = read_rows(&data.join("test/samples.parquet")).iter().map(|r| u(r, "click") as f64).sum::<f64>()
        / samples.len() as f64;
    let constant = -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln());
    assert!(ll < constant - 0.005, "logloss {ll} vs constant {constant}");
    assert!(metric(&root.join("e1"), "esmm", "ctcvr", "auc") > 0.6);

    // Same config, seed and threads: identical model and predictions.
    train_to(&data, &root.join("m2"), ModelKind::Esmm, 3, false);
    predict_to(&root.join("m2"), &data, &root.join("p2.parquet"));
    assert!(same_weights(&root.join("m1/model.bin"), &root.join("m2/model.bin")));
    assert!(std::fs::read(root.join("p1.parquet")).unwrap() == std::fs::read(root.join("p2.parquet")).unwrap());

    // 3 epochs = 2 epochs + resume to 3, bit for bit.
    train_to(&data, &root.join("m3"), ModelKind::Esmm, 2, false);
    train_to(&data, &root.join("m3"), ModelKind::Esmm, 3, true);
    predict_to(&root.join("m3"), &data, &root.join("p3.parquet"));
    assert!(same_weights(&root.join("m1/checkpoint.bin"), &root.join("m3/checkpoint.bin")));
    assert!(std::fs::read(root.join("p1.parquet")).unwrap() == std::fs::read(root.join("p3.parquet")).unwrap());
}

#[test]
fn baselines_train_too() {
    let root = temp_dir("baselines");
    let data = prepare(&root, GenerateConfig { train_rows: 8_000, test_rows: 2_000, ..small_world() });
    for kind in [ModelKind::NaiveCvr, ModelKind::EsmmNs] {
        let out = root.join(format!("{kind:?}"));
        train_to(&data, &out, kind, 1, false);
        predict_to(&out, &data, &out.join("p.parquet"));
        assert_eq!(read_rows(&out.join("p.parquet")).len(), 2_000);
    }
    // Id admission: counted on the split files, kept in the checkpoint (2 epochs + resume to 3
    // = 3 epochs, bit for bit) and used by predict.
    let admission = ModelConfig { min_sessions: 3, ..Default::default() };
    let report = train_model(&data, &root.join("a1"), admission.clone(), 3, false);
    let admitted = report.counts["admitted_ids"];
    train_model(&data, &root.join("a2"), admission.clone(), 2, false);
    train_model(&data, &root.join("a2"), admission, 3, true);
    assert!(same_weights(&root.join("a1/checkpoint.bin"), &root.join("a2/checkpoint.bin")));
    let (model, _) = esmm::model::checkpoint::load::<serde_json::Value>(&root.join("a2/model.bin")).unwrap();
    assert!(model.vocab().enabled() && model.vocab().admitted() as u64 == admitted);
    assert_eq!(model.tables[0].rows, (1 << 16) + esmm::schema::FIELDS.len());
    // A damaged model file is an error naming it, never a panic or a half-loaded model.
    let bytes = std::fs::read(root.join("a2/model.bin")).unwrap();
    let n = bytes.len();
    for (cut, want) in [(5, "is not an esmm checkpoint"), (12, "truncated"), (n / 3, "truncated"), (n - 1, "truncated")]
    {
        let damaged = root.join(format!("cut{cut}.bin"));
        std::fs::write(&damaged, &bytes[..cut]).unwrap();
        let e = format!("{:#}", esmm::model::checkpoint::load::<serde_json::Value>(&damaged).err().unwrap());
        assert!(e.contains(&format!("cut{cut}.bin")) && e.contains(want), "{e}");
    }
    std::fs::write(root.join("long.bin"), [&bytes[..], b"x"].concat()).unwrap();
    let e = format!("{:#}", esmm::model::checkpoint::load::<serde_json::Value>(&root.join("long.bin")).err().unwrap());
    assert!(e.contains("long.bin is corrupt: bytes after the last array"), "{e}");
    // Fewer ids than training saw (all admitted at 1 session), but not none.
    let seen = train_model(&data, &root.join("a0"), ModelConfig { min_sessions: 1, ..Default::default() }, 1, false)
        .counts["admitted_ids"];
    assert!(admitted > 100 && admitted < seen, "{admitted} of {seen}");
    for (m, p) in [("a1", "pa1.parquet"), ("a2", "pa2.parquet")] {
        predict_to(&root.join(m), &data, &root.join(p));
    }
    assert!(std::fs::read(root.join("pa1.parquet")).unwrap() == std::fs::read(root.join("pa2.parquet")).unwrap());
    // Data hashed into other buckets than the model's: refused, not scored into garbage.
    let rehashed = root.join("rehashed");
    std::fs::create_dir_all(rehashed.join("test")).unwrap();
    for f in ["test/samples.parquet", "test/common.parquet"] {
        std::fs::copy(data.join(f), rehashed.join(f)).unwrap();
    }
    let mut m = common::manifest(&data);
    m["data"]["hash_buckets"] = 4096.into();
    std::fs::write(rehashed.join(esmm::schema::MANIFEST_FILE), m.to_string()).unwrap();
    let e = predict::run(&predict::PredictStage {
        threads: 1,
        ..predict_stage(&root.join("a1"), &rehashed, Split::Test, &root.join("pr.parquet"))
    })
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("was hashed into 4096 buckets"), "{e:#}");
    assert_eq!(read_rows(&root.join("pa1.parquet")).len(), 2_000);
}

/// `model.embedding_dim` other than 12: 16 (a fixed-size pooling path) trains, resumes bit for
/// bit and predicts with the size read from the checkpoint; 5 (the run-time-sized path) trains
/// and predicts. A checkpoint whose spec disagrees with its tables is refused, naming both
/// sizes; one written before the field existed reads as 12.
#[test]
fn other_embedding_dims_train_resume_and_predict() {
    let root = temp_dir("embdim");
    let data = prepare(&root, GenerateConfig { train_rows: 8_000, test_rows: 2_000, ..small_world() });
    let at = |dim| ModelConfig { embedding_dim: dim, ..Default::default() };
    train_model(&data, &root.join("d16"), at(16), 2, false);
    train_model(&data, &root.join("r16"), at(16), 1, false);
    train_model(&data, &root.join("r16"), at(16), 2, true);
    assert!(same_weights(&root.join("d16/checkpoint.bin"), &root.join("r16/checkpoint.bin")));
    let load = |p: &Path| esmm::model::checkpoint::load::<serde_json::Value>(p).map(|l| l.0);
    let m = load(&root.join("d16/model.bin")).unwrap();
    assert_eq!((m.spec.embedding_dim, m.tables[0].dim, m.towers.dim()), (16, 16, 16));
    assert_eq!(m.towers.params()[0].len(), GEMM_HIDDEN[0] * 23 * 16);
    for (dir, pred) in [("d16", "p16.parquet"), ("r16", "r16.parquet")] {
        predict_to(&root.join(dir), &data, &root.join(pred));
    }
    assert_eq!(read_rows(&root.join("p16.parquet")).len(), 2_000);
    assert!(std::fs::read(root.join("p16.parquet")).unwrap() == std::fs::read(root.join("r16.parquet")).unwrap());
    train_model(&data, &root.join("d5"), at(5), 1, false);
    predict_to(&root.join("d5"), &data, &root.join("p5.parquet"));
    assert_eq!(read_rows(&root.join("p5.parquet")).len(), 2_000);

    // The header's spec says 12, the tables hold 16: refused, naming both.
    let (bytes, json) = checkpoint_header(&root.join("d16/model.bin"));
    let lied = json.replacen("\"embedding_dim\":16", "\"embedding_dim\":12", 1);
    std::fs::write(root.join("lied.bin"), with_header(&bytes, &lied)).unwrap();
    let e = format!("{:#}", load(&root.join("lied.bin")).err().unwrap());
    assert!(e.contains("lied.bin is corrupt") && e.contains("[16]") && e.contains("embedding_dim 12"), "{e}");
    // A default-size checkpoint without the field (as written before it) loads at 12.
    train_model(&data, &root.join("d12"), ModelConfig::default(), 1, false);
    let (bytes, json) = checkpoint_header(&root.join("d12/model.bin"));
    let old = json.replacen("\"embedding_dim\":12,", "", 1);
    assert!(old.len() < json.len());
    std::fs::write(root.join("old.bin"), with_header(&bytes, &old)).unwrap();
    let m = load(&root.join("old.bin")).unwrap();
    assert_eq!(m.spec, load(&root.join("d12/model.bin")).unwrap().spec);
    let _ = std::fs::remove_dir_all(&root);
}

/// A checkpoint's bytes and its JSON header (magic, u64 length, JSON, arrays).
fn checkpoint_header(path: &Path) -> (Vec<u8>, String) {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let json = String::from_utf8(bytes[16..16 + len].to_vec()).unwrap();
    (bytes, json)
}

/// `bytes` (a checkpoint) with its header replaced by `json`.
fn with_header(bytes: &[u8], json: &str) -> Vec<u8> {
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    [&bytes[..8], &(json.len() as u64).to_le_bytes()[..], json.as_bytes(), &bytes[16 + len..]].concat()
}

/// Writes a skeleton whose item id `205` is the click label itself.
fn leaky_raw(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (split, n) in [("train", 6000u64), ("test", 2000)] {
        let mut common = String::new();
        let mut skel = String::new();
        for s in 0..n / 20 {
            common += &format!("{:016x},1,{}\n", s + 1, feat("101", s % 37, "1.0"));
            for k in 0..20 {
                let sid = s * 20 + k + 1;
                let click = (sid * 2654435761 % 7 < 2) as u8;
                let feats = list(&[feat("205", click as u64, "1.0"), feat("206", sid % 13, "1.0")]);
                skel += &format!("{sid},{click},0,{:016x},2,{feats}\n", s + 1);
            }
        }
        std::fs::write(dir.join(format!("common_features_{split}.csv")), common).unwrap();
        std::fs::write(dir.join(format!("sample_skeleton_{split}.csv")), skel).unwrap();
    }
}

#[test]
fn leakage_and_collapse_are_flagged() {
    let root = temp_dir("guards");
    leaky_raw(&root.join("raw"));
    let data = prepare_raw(&root);
    train_to(&data, &root.join("m"), ModelKind::Esmm, 2, false);
    predict_to(&root.join("m"), &data, &root.join("p.parquet"));
    let report = evaluate_to(&root.join("p.parquet"), &root.join("e"), None, false).unwrap();
    assert!(report.counts["flags"] >= 1);
    let summary = std::fs::read_to_string(root.join("e/summary.md")).unwrap();
    assert!(summary.contains("leakage"), "{summary}");
    let err = evaluate_to(&root.join("p.parquet"), &root.join("e2"), None, true).unwrap_err();
    assert!(format!("{err:#}").contains("leakage"));

    // A constant model: every prediction the same.
    let n = 1000;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from((0..n as u64).collect::<Vec<_>>())),
        Arc::new(StringArray::from(vec!["test"; n])),
        Arc::new(UInt8Array::from((0..n).map(|i| (i % 10 == 0) as u8).collect::<Vec<_>>())),
        Arc::new(UInt8Array::from((0..n).map(|i| (i % 50 == 0) as u8).collect::<Vec<_>>())),
        Arc::new(Float32Array::from(vec![0.1f32; n])),
        Arc::new(Float32Array::from(vec![0.2f32; n])),
        Arc::new(Float32Array::from(vec![0.02f32; n])),
        Arc::new(UInt64Array::from(vec![0u64; n])),
        Arc::new(UInt64Array::from((0..n as u64).map(|i| 1 + i % 7).collect::<Vec<_>>())),
        Arc::new(UInt64Array::from((0..n as u64).map(|i| i / 20).collect::<Vec<_>>())),
    ];
    let batch = RecordBatch::try_new(esmm::schema::predictions_schema(), cols).unwrap();
    let mut w =
        esmm::parquet_out::ParquetOut::create(&root.join("const.parquet"), esmm::schema::predictions_schema(), 1 << 16)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let err = evaluate_to(&root.join("const.parquet"), &root.join("e3"), None, true).unwrap_err();
    assert!(format!("{err:#}").contains("collapse"), "{err:#}");
}

/// `train.calibration: platt` trains exactly the uncalibrated model, then fits σ(a·z + b) per
/// tower on the valid split: there the mean pCTR is the click rate of train and valid together
/// and the mean pCVR of the clicked rows their buys per click; the CTR and CVR orders are unchanged and pCTCVR is still
/// the product; the map travels in model.bin.
#[test]
fn platt_calibration_is_fitted_on_valid_and_keeps_the_rankings() {
    let root = temp_dir("platt");
    let data = prepare(&root, small_world());
    let train = |name: &str, calibration| {
        let params = TrainConfig { epochs: 1, batch_size: 256, calibration, ..Default::default() };
        train_with(&data, &root.join(name), ModelConfig::default(), params, false);
        predict_split(&root.join(name), &data, Split::Valid, &root.join(format!("{name}.parquet")));
        read_rows(&root.join(format!("{name}.parquet")))
    };
    let (raw, cal) = (train("none", CalibrationKind::None), train("platt", CalibrationKind::Platt));
    assert!(same_weights(&root.join("none/model.bin"), &root.join("platt/model.bin")));
    let header = |m: &str| esmm::model::checkpoint::load::<serde_json::Value>(&root.join(m).join("model.bin")).unwrap();
    assert!(header("none").0.calibration.is_identity());
    let c = header("platt").0.calibration;
    assert!(c.ctr.a > 0.0 && c.cvr.a > 0.0 && !c.ctr.is_identity() && !c.cvr.is_identity(), "{c:?}");
    // the level: the base rates of train and valid together, from the split manifest
    let counts = &manifest(&data)["counts"];
    let n =
        |k: &str| ["train", "valid"].iter().map(|s| counts[format!("{s}.{k}")].as_u64().unwrap()).sum::<u64>() as f64;
    let mean = |p: &str, clicked: bool| {
        let rows: Vec<_> = cal.iter().filter(|r| !clicked || u(r, "click") == 1).collect();
        rows.iter().map(|r| f(r, p)).sum::<f64>() / rows.len() as f64
    };
    let (ctr, cvr) =
        (mean("p_ctr", false) / (n("clicks") / n("rows")), mean("p_cvr", true) / (n("buys") / n("clicks")));
    assert!((ctr - 1.0).abs() < 1e-4 && (cvr - 1.0).abs() < 1e-4, "valid mean / pooled rate {ctr} {cvr}");
    for col in ["p_ctr", "p_cvr"] {
        let mut order: Vec<usize> = (0..raw.len()).collect();
        order.sort_by(|&i, &j| f(&raw[i], col).total_cmp(&f(&raw[j], col)));
        assert!(order.windows(2).all(|w| f(&cal[w[0]], col) <= f(&cal[w[1]], col)), "{col} order changed");
    }
    assert!(raw.iter().zip(&cal).any(|(a, b)| f(a, "p_ctr") != f(b, "p_ctr")), "predict applies the map");
    for r in &cal {
        assert_eq!(f(r, "p_ctcvr") as f32, f(r, "p_ctr") as f32 * f(r, "p_cvr") as f32);
    }
}
