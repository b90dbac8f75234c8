//! The conversion models beside ESMM and the counterfactual scoring that tells them apart:
//! ESCM²-IPS trains, resumes bit for bit, gives the same model at any thread count, predicts
//! and is scored on the unclicked space against the generator's counterfactual labels.

use crate::common;

use common::*;
use esmm::config::{ModelConfig, TrainConfig};
use esmm::model::ModelKind;
use esmm::schema::Split;
use esmm::stages::evaluate;

#[test]
fn escm2_ips_trains_resumes_and_is_scored_on_the_unclicked_space() {
    let root = temp_dir("escm2");
    generate(&root, small_world());
    let data = ingest_and_split_small(&root);
    let ips = ModelConfig { kind: ModelKind::Escm2Ips, counterfactual_w: 0.5, ..Default::default() };
    let train = |out: &str, model: &ModelConfig, epochs: usize, resume: bool, threads: usize| {
        let params = TrainConfig { epochs, batch_size: 256, early_stopping_patience: 0, ..Default::default() };
        let stage = esmm::stages::train::TrainStage {
            resume,
            threads,
            ..train_stage(&data, &root.join(out), model.clone(), params)
        };
        esmm::stages::train::run(&stage).unwrap()
    };
    train("a", &ips, 2, false, 2);
    train("b", &ips, 1, false, 2);
    train("b", &ips, 2, true, 2);
    assert!(same_weights(&root.join("a/checkpoint.bin"), &root.join("b/checkpoint.bin")), "resume");
    train("c", &ips, 2, false, 1);
    assert!(same_weights(&root.join("a/model.bin"), &root.join("c/model.bin")), "1 thread vs 2");
    let (model, _) = esmm::model::checkpoint::load::<serde_json::Value>(&root.join("a/model.bin")).unwrap();
    assert_eq!((model.spec.kind, model.spec.loss.counterfactual_w), (ModelKind::Escm2Ips, 0.5));
    // the counterfactual term changes the model: ESMM at the same seed trains otherwise
    train("e", &ModelConfig { kind: ModelKind::Esmm, ..ips.clone() }, 2, false, 2);
    assert!(!same_weights(&root.join("a/model.bin"), &root.join("e/model.bin")));

    let truth = Some(root.join("raw/truth_test.csv"));
    for m in ["a", "e"] {
        predict_split(&root.join(m), &data, Split::Test, &root.join(format!("{m}.parquet")));
        let stage = evaluate::EvaluateStage {
            truth: truth.clone(),
            model_name: m.into(),
            ..evaluate_stage(&root.join(format!("{m}.parquet")), &root.join(format!("eval_{m}")))
        };
        evaluate::run(&stage).unwrap();
    }
    let get = |m: &str, task: &str, name: &str| metric(&root.join(format!("eval_{m}")), m, task, name);
    for m in ["a", "e"] {
        // pCVR ranks the counterfactual conversions of the entire space better than chance
        let auc = get(m, "cvr_entire_space", "auc_counterfactual");
        assert!(auc > 0.55 && auc < 0.99, "{m}: {auc}");
        assert!(get(m, "cvr_entire_space", "logloss_counterfactual").is_finite());
        // the estimate's level on each space, against the planted probabilities
        for task in ["cvr", "cvr_unclicked"] {
            let level = get(m, task, "calibration_truth");
            assert!(level > 0.2 && level < 5.0, "{m} {task}: {level}");
        }
        // the planted probabilities are their own level on both spaces
        let dir = root.join(format!("eval_{m}"));
        assert_eq!(metric(&dir, "oracle", "cvr_unclicked", "calibration_truth"), 1.0);
    }
    // the oracle ranks the counterfactual labels better than any model
    let oracle = metric(&root.join("eval_a"), "oracle", "cvr_entire_space", "auc_counterfactual");
    assert!(oracle > get("a", "cvr_entire_space", "auc_counterfactual"), "{oracle}");
    let summary = std::fs::read_to_string(root.join("eval_a/summary.md")).unwrap();
    assert!(summary.contains("counterfactual labels") && summary.contains("| oracle |"), "{summary}");
    let _ = std::fs::remove_dir_all(&root);
}
