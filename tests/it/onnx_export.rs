//! `esmm export` against onnxruntime: tiny models of every kind and pooling (id admission with
//! shrinkage, as by default; admission without shrinkage; admission off; a calibrated model; a
//! `max_len` cut) are trained on small generated data, exported, and scored on the test split
//! by `tests/onnx_check.py` (pyarrow builds the padded inputs, onnxruntime runs the graph,
//! `onnx.checker` checks it, xxhash re-hashes the contract's test vectors): every probability
//! within 1e-5 of `esmm predict`'s. Bad input is a clear error, never a panic.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use esmm::config::{Backbone, CalibrationKind, GenerateConfig, ModelConfig, TrainConfig};
use esmm::model::{Interactions, ModelKind, Pooling};
use esmm::schema::Split;
use esmm::stages::export;

const TOLERANCE: f64 = 1e-5;

struct Case {
    name: String,
    model: ModelConfig,
    calibration: CalibrationKind,
    /// Epochs trained: more than one makes a snapshot ensemble of as many members.
    epochs: usize,
}

fn case(name: &str, kind: ModelKind, pooling: Pooling, f: impl FnOnce(&mut ModelConfig)) -> Case {
    let mut model = ModelConfig {
        kind,
        pooling,
        ctr_fc_sizes: Some(vec![64, 16]),
        cvr_fc_sizes: Some(vec![32]),
        ..Default::default()
    };
    f(&mut model);
    Case { name: name.into(), model, calibration: CalibrationKind::None, epochs: 1 }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let kinds = [
        ("esmm", ModelKind::Esmm, Pooling::Mean),
        ("esmm_ns", ModelKind::EsmmNs, Pooling::Weighted),
        ("naive_cvr", ModelKind::NaiveCvr, Pooling::Sum),
    ];
    for (k, kind, no_admission_pooling) in kinds {
        for (p, pooling) in [("sum", Pooling::Sum), ("weighted", Pooling::Weighted), ("mean", Pooling::Mean)] {
            // the defaults: admission at 1 session with shrinkage 20
            v.push(case(&format!("{k}_{p}"), kind, pooling, |_| {}));
        }
        let off = |m: &mut ModelConfig| (m.min_sessions, m.shrink_sessions) = (0, 0.0);
        v.push(case(
            &format!("{k}_{no_admission_pooling:?}_no_admission").to_lowercase(),
            kind,
            no_admission_pooling,
            off,
        ));
    }
    v.push(case("esmm_admission_no_shrink", ModelKind::Esmm, Pooling::Weighted, |m| {
        (m.min_sessions, m.shrink_sessions) = (2, 0.0)
    }));
    v.push(case("esmm_max_len_paddle_towers", ModelKind::Esmm, Pooling::Mean, |m| {
        m.max_len = 3;
        m.max_len_per_field.insert("210".into(), 1);
        (m.ctr_fc_sizes, m.cvr_fc_sizes) = (Some(vec![256, 64]), Some(vec![256, 64]));
    }));
    // run-time embedding sizes: a compiled lane (16) and the fallback (5)
    v.push(case("esmm_dim16", ModelKind::Esmm, Pooling::Mean, |m| m.embedding_dim = 16));
    v.push(case("esmm_ns_dim5", ModelKind::EsmmNs, Pooling::Weighted, |m| m.embedding_dim = 5));
    // the defaults' snapshot ensemble (one member per epoch), calibrated, with and without admission
    for (name, calibration) in [("esmm_level", CalibrationKind::Level), ("esmm_ns_platt", CalibrationKind::Platt)] {
        let kind = if name.starts_with("esmm_ns") { ModelKind::EsmmNs } else { ModelKind::Esmm };
        v.push(Case { calibration, epochs: 2, ..case(name, kind, Pooling::Mean, |_| {}) });
    }
    let off = |m: &mut ModelConfig| (m.min_sessions, m.shrink_sessions) = (0, 0.0);
    v.push(Case { epochs: 3, ..case("esmm_ensemble_no_admission", ModelKind::Esmm, Pooling::Weighted, off) });
    // ESCM²-IPS: its own loss, the same graph (the propensity weights live in training only)
    let ips = |m: &mut ModelConfig| m.counterfactual_w = 0.5;
    v.push(Case {
        calibration: CalibrationKind::Level,
        epochs: 2,
        ..case("escm2_ips", ModelKind::Escm2Ips, Pooling::Mean, ips)
    });
    // ESCM²-DR and DCMT: a third tower that trains only; the graph exports the two that predict
    v.push(Case { epochs: 2, ..case("escm2_dr", ModelKind::Escm2Dr, Pooling::Mean, ips) });
    v.push(case("dcmt", ModelKind::Dcmt, Pooling::Weighted, ips));
    // field interactions: every exported tower adds its pair term (DCMT's third tower's is not exported)
    let pairs = |m: &mut ModelConfig| m.interactions = Interactions::FieldWeighted;
    v.push(Case {
        calibration: CalibrationKind::Level,
        epochs: 2,
        ..case("esmm_interactions", ModelKind::Esmm, Pooling::Mean, pairs)
    });
    v.push(case("dcmt_interactions_dim5", ModelKind::Dcmt, Pooling::Weighted, |m| {
        pairs(m);
        m.embedding_dim = 5;
    }));
    // the mixture of experts (PaddleRec escm2's shape): the towers read their gates' mixtures
    let mmoe = |m: &mut ModelConfig| m.backbone = Backbone::Mmoe;
    v.push(Case {
        calibration: CalibrationKind::Level,
        epochs: 2,
        ..case("escm2_ips_mmoe", ModelKind::Escm2Ips, Pooling::Mean, mmoe)
    });
    v.push(case("escm2_dr_mmoe_dim5", ModelKind::Escm2Dr, Pooling::Weighted, |m| {
        mmoe(m);
        m.embedding_dim = 5;
        m.mmoe.tower_sizes = vec![8, 4];
    }));
    // AITM: the transfer, and pCVR derived from pCTCVR and pCTR
    v.push(Case {
        calibration: CalibrationKind::Level,
        epochs: 2,
        ..case("aitm", ModelKind::Aitm, Pooling::Mean, |_| {})
    });
    v.push(case("aitm_mmoe", ModelKind::Aitm, Pooling::Weighted, mmoe));
    v
}

/// Trains, predicts the test split and exports one case; returns its line of the cases file.
fn run_case(root: &Path, data: &Path, c: &Case) -> serde_json::Value {
    let dir = root.join(&c.name);
    let params = TrainConfig { epochs: c.epochs, batch_size: 256, calibration: c.calibration, ..Default::default() };
    let model = dir.join("model");
    let trained = train_with(data, &model, c.model.clone(), params, false);
    let members = trained.counts["best_epoch"];
    assert!(c.epochs == 1 || members > 1, "{}: the ensemble of {members} member(s) never beat epoch 1", c.name);
    let predictions = dir.join("test.parquet");
    predict_split(&model, data, Split::Test, &predictions);
    let out = dir.join("export");
    let r =
        export::run(&export::ExportStage { model, out: out.clone(), data: None, threads: 2, force: false }).unwrap();
    assert!(r.counts["nodes"] > 0 && out.join("model.onnx").exists() && out.join("contract.json").exists());
    assert_eq!(r.counts["members"], members, "{}: one member per epoch up to the best", c.name);
    let towers = match c.model.backbone {
        // every layer of the two towers, the experts and the two exported gates (not DR's third)
        Backbone::Mmoe => 2 * (1 + c.model.mmoe.tower_sizes.len()) + 3,
        Backbone::Towers => 2 + c.model.towers().ctr_fc_sizes.len() + c.model.towers().cvr_fc_sizes.len(),
    } + if c.model.kind == ModelKind::Aitm { 7 } else { 0 }; // AITM: the info layer, Q, K, V of both inputs
    assert_eq!(r.counts["op.Gemm"], towers as u64 * members, "{}: every member's towers", c.name);
    let pair_terms = if c.model.interactions.is_none() { 0 } else { 2 * members };
    assert_eq!(r.counts.get("op.Transpose").copied().unwrap_or(0), pair_terms, "{}: pair terms", c.name);
    serde_json::json!({"name": c.name, "export": out, "predictions": predictions, "split": data.join("test")})
}

#[test]
fn onnxruntime_scores_like_predict_for_every_kind_and_pooling() {
    let root = temp_dir("onnx");
    generate(&root, GenerateConfig { train_rows: 6_000, test_rows: 1_500, ..small_world() });
    let data = ingest_and_split_small(&root);
    let cases = cases();
    let lines: Vec<serde_json::Value> = cases.iter().map(|c| run_case(&root, &data, c)).collect();
    let file = root.join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&serde_json::json!({ "cases": lines })).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/onnx_check.py");
    let out = Command::new(python()).arg(script).arg(&file).output().expect("running tests/onnx_check.py");
    assert!(out.status.success(), "onnx_check.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in &cases {
        let r = &got["cases"][&c.name];
        eprintln!("{:<28} {}", c.name, r["max_abs"]);
        assert_eq!(r["rows"], 1_500, "{}: {r}", c.name);
        assert_eq!(r["checker"], "ok");
        assert!(r["hashing"]["vectors"].as_u64().unwrap() >= 23 && r["hashing"]["mismatches"] == 0, "{}: {r}", c.name);
        for p in ["p_ctr", "p_cvr", "p_ctcvr"] {
            let d = r["max_abs"][p].as_f64().unwrap();
            assert!(d <= TOLERANCE, "{}: {p} differs from predict by {d}", c.name);
        }
    }
    // the contract: what ingest used, what the graph reads
    let contract: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("esmm_max_len_paddle_towers/export/contract.json")).unwrap())
            .unwrap();
    assert_eq!(contract["hashing"]["hash_buckets"], 1 << 16);
    assert_eq!(contract["hashing"]["hash_seed"], 0);
    let f210 = contract["fields"].as_array().unwrap().iter().find(|f| f["name"] == "210").unwrap();
    assert_eq!((f210["max_len"].as_u64(), f210["ids_input"].as_str()), (Some(1), Some("f_210")));
    let sum: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("esmm_sum/export/contract.json")).unwrap()).unwrap();
    assert_eq!(sum["inputs"].as_array().unwrap().len(), 23, "sum pooling reads no weights");
    assert_eq!(contract["inputs"].as_array().unwrap().len(), 31, "23 id inputs + 8 weights");
    let ensemble: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("esmm_ensemble_no_admission/export/contract.json")).unwrap())
            .unwrap();
    assert_eq!(contract["model"]["ensemble_members"], 1);
    assert!(ensemble["model"]["ensemble_members"].as_u64().is_some_and(|k| (2..=3).contains(&k)), "{ensemble}");
    readme_snippet_runs(&root.join("esmm_mean/export"));
}

/// The Python block of docs/serving.md runs as written, beside `export/`.
fn readme_snippet_runs(export: &Path) {
    let serving = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/serving.md")).unwrap();
    let code = serving.split("```python\n").nth(1).and_then(|s| s.split("```").next()).expect("no python block");
    let dir = export.parent().unwrap().join("snippet");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(export, dir.join("export")).unwrap();
    let out = Command::new(python()).arg("-c").arg(code).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "docs/serving.md's snippet failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A missing model directory, a train directory whose model.bin is not a checkpoint, and a
/// missing flag: exit 1, 1 and 2 with a message, no panic.
#[test]
fn bad_models_are_clear_errors() {
    let root = temp_dir("onnx-bad");
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();
    let (missing, out) = (root.join("nope"), root.join("out"));
    let (code, err) = code_and_stderr(&esmm(&["export", "--model", &s(&missing), "--out", &s(&out)], Path::new(".")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nope") && err.contains("_manifest.json") && !err.contains("panicked"), "{err}");
    let (code, err) = code_and_stderr(&esmm(&["export", "--model", &s(&missing)], Path::new(".")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--out"), "{err}");
    // a train manifest over data that exists, and a model.bin that is not a checkpoint
    generate(&root, GenerateConfig { train_rows: 500, test_rows: 100, ..small_world() });
    let data = ingest_and_split_small(&root);
    let model = root.join("model");
    let params = ModelConfig { ctr_fc_sizes: Some(vec![8]), cvr_fc_sizes: Some(vec![8]), ..Default::default() };
    train_with(&data, &model, params, TrainConfig { epochs: 1, batch_size: 256, ..Default::default() }, false);
    std::fs::write(model.join("model.bin"), b"not a model").unwrap();
    let (code, err) = code_and_stderr(&esmm(&["export", "--model", &s(&model), "--out", &s(&out)], Path::new(".")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not an esmm checkpoint") && !err.contains("panicked"), "{err}");
    // --data pointing at something that is neither a split nor an ingest
    let (code, err) = code_and_stderr(&esmm(
        &["export", "--model", &s(&model), "--out", &s(&out), "--data", &s(&model)],
        Path::new("."),
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not of split or ingest"), "{err}");
}
