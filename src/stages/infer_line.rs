//! The closing line of a PaddleRec-format `esmm run`: the test AUCs, printed like PaddleRec's
//! `tools/infer.py` prints its metrics at the end of an epoch (`epoch: N done, auc_ctr: …,
//! auc_ctcvr: …`). PaddleRec infers once per saved epoch; esmm predicts with the one model
//! `train` kept (the best evaluation's, or the last epoch's without a valid split), so there is
//! one line, naming that model's epoch. Read back from the evaluate and train outputs, so an
//! up-to-date rerun prints it too.

use std::path::Path;

use anyhow::Result;

use crate::analytics::inputs::read_metrics;
use crate::manifest;
use crate::schema::METRICS_FILE;

/// Logs the test AUCs of `model` found in `metrics_dir`, with the kept epoch from `model_dir`.
pub fn log_test_aucs(metrics_dir: &Path, model_dir: &Path, model: String) -> Result<()> {
    let rows = read_metrics(&metrics_dir.join(METRICS_FILE))?;
    let auc = |task: &str| {
        rows.iter()
            .find(|r| r.slice == "all" && r.model == model && r.task == task && r.metric == "auc")
            .and_then(|r| r.value)
    };
    let (ctr, cvr, ctcvr) = (auc("ctr"), auc("cvr"), auc("ctcvr"));
    let count = |dir: &Path, key: &str| -> Result<Option<u64>> {
        Ok(manifest::read(dir)?.and_then(|m| m.counts.get(key).copied()))
    };
    let epoch = count(model_dir, "best_epoch")?;
    let test_rows = count(metrics_dir, "rows")?;
    let json = serde_json::json!({ "epoch": epoch, "rows": test_rows, "auc_ctr": ctr, "auc_cvr": cvr,
        "auc_ctcvr": ctcvr, "metrics": metrics_dir });
    crate::log::event("test_auc", json, || {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.6}"));
        let epoch = epoch.map_or("-".into(), |e| e.to_string());
        let rows = test_rows.map_or("-".into(), |n| n.to_string());
        format!(
            "infer: epoch: {epoch} done, auc_ctr: {}, auc_cvr: {}, auc_ctcvr: {} ({rows} test rows scored by \
             the kept model.bin; {})",
            f(ctr),
            f(cvr),
            f(ctcvr),
            metrics_dir.join(crate::schema::SUMMARY_FILE).display()
        )
    });
    Ok(())
}
