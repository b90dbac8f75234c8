//! The conversion models beside ESMM and the counterfactual scoring that tells them apart: each
//! of ESCM²-IPS, ESCM²-DR, DCMT and AITM trains, resumes bit for bit, gives the same model at any
//! thread count, predicts and is scored on the unclicked space against the generator's
//! counterfactual labels; ESCM²-DR over the mixture of experts (`model.backbone: mmoe`) too.

use crate::common;

use common::*;
use esmm::config::{Backbone, ModelConfig, TrainConfig};
use esmm::model::ModelKind;
use esmm::schema::Split;
use esmm::stages::evaluate;

#[test]
fn the_family_trains_resumes_and_is_scored_on_the_unclicked_space() {
    let root = temp_dir("cvr-family");
    generate(&root, small_world());
    let data = ingest_and_split_small(&root);
    let train = |out: &str, model: &ModelConfig, epochs: usize, resume: bool, threads: usize| {
        let params = TrainConfig { epochs, batch_size: 256, early_stopping_patience: 0, ..Default::default() };
        let stage = esmm::stages::train::TrainStage {
            resume,
            threads,
            ..train_stage(&data, &root.join(out), model.clone(), params)
        };
        esmm::stages::train::run(&stage).unwrap()
    };
    let esmm = ModelConfig { counterfactual_w: 0.5, ..Default::default() };
    train("esmm", &esmm, 2, false, 2);
    let mut names = vec!["esmm"];
    let family = [
        ("ips", ModelKind::Escm2Ips, Backbone::Towers),
        ("dr", ModelKind::Escm2Dr, Backbone::Towers),
        ("dcmt", ModelKind::Dcmt, Backbone::Towers),
        ("dr_mmoe", ModelKind::Escm2Dr, Backbone::Mmoe),
        ("aitm", ModelKind::Aitm, Backbone::Towers),
    ];
    for (name, kind, backbone) in family {
        let model = ModelConfig { kind, backbone, ..esmm.clone() };
        train(name, &model, 2, false, 2);
        let (resumed, one_thread) = (format!("{name}_resumed"), format!("{name}_1thread"));
        train(&resumed, &model, 1, false, 2);
        train(&resumed, &model, 2, true, 2);
        let at = |m: &str, f: &str| root.join(m).join(f);
        assert!(same_weights(&at(name, "checkpoint.bin"), &at(&resumed, "checkpoint.bin")), "{name}: resume");
        train(&one_thread, &model, 2, false, 1);
        assert!(same_weights(&at(name, "model.bin"), &at(&one_thread, "model.bin")), "{name}: 1 thread vs 2");
        let (m, _) = esmm::model::checkpoint::load::<serde_json::Value>(&at(name, "model.bin")).unwrap();
        assert_eq!((m.spec.kind, m.spec.loss.counterfactual_w), (kind, 0.5));
        assert_eq!(m.towers.spec().aux_towers, kind.aux_towers());
        assert_eq!(m.towers.spec().mmoe.is_some(), backbone == Backbone::Mmoe);
        assert_eq!(m.towers.spec().transfer, kind == ModelKind::Aitm);
        // the counterfactual term changes the model: ESMM at the same seed trains otherwise
        assert!(!same_weights(&at(name, "model.bin"), &at("esmm", "model.bin")), "{name}");
        names.push(name);
    }
    let truth = Some(root.join("raw/truth_test.csv"));
    for &m in &names {
        predict_split(&root.join(m), &data, Split::Test, &root.join(format!("{m}.parquet")));
        let stage = evaluate::EvaluateStage {
            truth: truth.clone(),
            model_name: m.into(),
            ..evaluate_stage(&root.join(format!("{m}.parquet")), &root.join(format!("eval_{m}")))
        };
        evaluate::run(&stage).unwrap();
        let dir = root.join(format!("eval_{m}"));
        // pCVR ranks the counterfactual conversions of the entire space better than chance (on
        // this small world ~0.55), and worse than the planted probabilities do
        let auc = metric(&dir, m, "cvr_entire_space", "auc_counterfactual");
        let oracle = metric(&dir, "oracle", "cvr_entire_space", "auc_counterfactual");
        assert!(auc > 0.5 && auc < oracle, "{m}: {auc}, oracle {oracle}");
        assert!(metric(&dir, m, "cvr_entire_space", "logloss_counterfactual").is_finite());
        // the estimate's level on each space, against the planted probabilities, which are
        // their own level
        for task in ["cvr", "cvr_unclicked"] {
            let level = metric(&dir, m, task, "calibration_truth");
            assert!(level > 0.2 && level < 5.0, "{m} {task}: {level}");
        }
        assert_eq!(metric(&dir, "oracle", "cvr_unclicked", "calibration_truth"), 1.0);
        let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(summary.contains("counterfactual labels") && summary.contains("| oracle |"), "{summary}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
