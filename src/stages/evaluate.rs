//! `esmm evaluate`: exact metrics of a predictions file — AUC (sort-based, ties averaged),
//! logloss, normalized entropy, calibration and ECE for CTR, CVR (clicked rows) and CTCVR, overall and per scenario
//! (`301`). With `--truth` (the generator's planted probabilities) the oracle's metrics sit
//! beside the model's (and the semi-oracle's, without the items' own effects, when the truth
//! file has it), plus the CVR AUC over the entire space (against p(buy | click) for every
//! impression) and each task's calibration against the planted probabilities. With the predictions' `user_key` and `md5` columns, group AUC per user and per
//! session for each task ([`crate::metrics::group`]); older files evaluate without it, and the
//! summary says so. Writes long-format `metrics.parquet` and `summary.md`, and flags likely label
//! leakage (AUC ≥ 0.99), collapsed models (near-constant predictions) and calibration outside
//! [0.8, 1.25].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use serde::Serialize;

use super::{StageReport, StageRun};
use crate::manifest::AtomicFile;
use crate::metrics::group::{group_metrics, Grouping, Groups};
use crate::metrics::inputs::{read_predictions, read_truth, Predictions};
use crate::metrics::{auc, logloss, soft_auc, Scored, TaskMetric};
use crate::parquet_out::ParquetOut;
use crate::schema::{self, GROUP_ORACLE, METRICS_FILE, ORACLE, SEMI_ORACLE, SUMMARY_FILE};

/// Calibration (mean prediction / observed rate) accepted by the checks.
pub const CALIBRATION_OK: (f64, f64) = (0.8, 1.25);

pub struct EvaluateStage {
    pub predictions: PathBuf,
    /// Output directory (metrics.parquet, summary.md).
    pub out: PathBuf,
    /// `truth_<split>.csv` written by `generate`.
    pub truth: Option<PathBuf>,
    pub run_id: String,
    /// Name of the model in the metrics table (e.g. `esmm`, `naive_cvr`).
    pub model_name: String,
    /// Exit with failure when the summary flags leakage, collapse or miscalibration.
    pub fail_on_suspect: bool,
    pub threads: usize,
    pub force: bool,
}

#[derive(Serialize)]
struct Params<'a> {
    run_id: &'a str,
    model_name: &'a str,
}

/// One row of the metrics table.
#[derive(Clone, Debug)]
pub struct MetricRow {
    pub split: String,
    pub slice: String,
    pub model: String,
    pub metric: TaskMetric,
}

pub fn run(cfg: &EvaluateStage) -> Result<StageReport> {
    let mut inputs = vec![cfg.predictions.clone()];
    inputs.extend(cfg.truth.clone());
    let st =
        StageRun::begin("evaluate", &cfg.out, &Params { run_id: &cfg.run_id, model_name: &cfg.model_name }, &inputs)?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    let preds = read_predictions(&cfg.predictions)?;
    let mut rows = Vec::new();
    let mut add = |slice: &str, model: &str, metrics: Vec<TaskMetric>| {
        rows.extend(metrics.into_iter().map(|metric| MetricRow {
            split: preds.split.clone(),
            slice: slice.into(),
            model: model.into(),
            metric,
        }));
    };
    add("all", &cfg.model_name, with_spread(&preds.scored));
    let groups: Vec<(Grouping, Groups)> =
        Grouping::ALL.into_iter().filter_map(|g| Some((g, Groups::by(preds.keys(g)?, g)))).collect();
    let grouped =
        |s: &Scored| -> Vec<TaskMetric> { groups.iter().flat_map(|(g, k)| group_metrics(s, k, *g)).collect() };
    add("all", &cfg.model_name, grouped(&preds.scored));
    if let Some(scenario) = &preds.scenario {
        let mut scenarios = scenario.clone();
        scenarios.sort_unstable();
        scenarios.dedup();
        if scenarios.len() > 1 && scenarios.len() <= 16 {
            for s in &scenarios {
                add(&format!("301={s}"), &cfg.model_name, preds.scored.filter(|i| scenario[i] == *s).metrics());
            }
        }
    }
    if let Some(truth_path) = &cfg.truth {
        for (model, metrics) in planted(truth_path, &cfg.predictions, &preds, &grouped)? {
            add("all", model.unwrap_or(&cfg.model_name), metrics);
        }
    }
    let flags = suspects(&rows, &cfg.model_name);
    write_metrics(&cfg.out.join(METRICS_FILE), &cfg.run_id, &rows)?;
    let ungrouped: Vec<Grouping> = Grouping::ALL.into_iter().filter(|&g| preds.keys(g).is_none()).collect();
    let summary = summary(&cfg.run_id, &preds.split, &cfg.model_name, &rows, &flags, &ungrouped);
    let mut f = AtomicFile::create(&cfg.out.join(SUMMARY_FILE))?;
    f.write_all(summary.as_bytes())?;
    f.commit()?;
    crate::log::event("summary", serde_json::json!({ "flags": flags }), || summary.clone());
    let counts =
        BTreeMap::from([("rows".to_string(), preds.scored.len() as u64), ("flags".to_string(), flags.len() as u64)]);
    let report =
        st.finish(&[cfg.out.join(METRICS_FILE), cfg.out.join(SUMMARY_FILE)], counts, BTreeMap::new(), cfg.threads)?;
    if cfg.fail_on_suspect && !flags.is_empty() {
        bail!("suspect results (--fail-on-suspect): {}", flags.join("; "));
    }
    Ok(report)
}

/// What the planted truth (`truth_path`) adds: the model's CVR AUC over the entire space and
/// its calibration against the planted probabilities (model `None`), and the oracle's, the
/// semi-oracle's and the group oracle's metrics with their `grouped` group AUC.
fn planted(
    truth_path: &Path,
    predictions: &Path,
    preds: &Predictions,
    grouped: &dyn Fn(&Scored) -> Vec<TaskMetric>,
) -> Result<Vec<(Option<&'static str>, Vec<TaskMetric>)>> {
    let truth = read_truth(truth_path)?;
    let mut oracle = preds.scored.clone();
    let mut semi = Some(preds.scored.clone());
    let mut group = Some(preds.scored.clone());
    let mut q = Vec::with_capacity(oracle.len());
    let mut counterfactual = Some(Vec::with_capacity(oracle.len()));
    let file = truth_path.display();
    for (i, sid) in preds.sample_id.iter().enumerate() {
        let t = truth.get(sid).with_context(|| format!("{file}: no line for sample_id {sid} of the predictions"))?;
        let (click, buy) = (preds.scored.click[i], preds.scored.buy[i]);
        if (t.click, t.buy) != (click, buy) {
            bail!(
                "{file}: sample_id {sid} has click,buy = {},{} there but {},{} in {}: the truth of other data",
                t.click as u8,
                t.buy as u8,
                click as u8,
                buy as u8,
                predictions.display()
            );
        }
        oracle.p_ctr[i] = t.p_click;
        oracle.p_cvr[i] = t.p_buy_given_click;
        q.push(t.p_buy_given_click);
        match (counterfactual.as_mut(), t.buy_if_clicked) {
            (Some(c), Some(b)) => c.push(b),
            _ => counterfactual = None,
        }
        // the semi-oracle and the group oracle only when every line has them
        for (reference, probs) in [(&mut semi, t.semi), (&mut group, t.group)] {
            match (reference.as_mut(), probs) {
                (Some(s), Some((c, v))) => (s.p_ctr[i], s.p_cvr[i]) = (c, v),
                _ => *reference = None,
            }
        }
    }
    // beside the task metrics, every system's pCVR over the entire space, and its level against
    // the planted probabilities on the clicked and the unclicked space
    let es = |s: &Scored| {
        let mut m = entire_space(&s.p_cvr, &q, counterfactual.as_deref());
        m.extend(s.calibration_to(&oracle));
        m.push(unclicked_calibration(s, &q));
        m
    };
    let mut out = vec![(None, es(&preds.scored))];
    for (name, scored) in [(ORACLE, Some(&oracle)), (SEMI_ORACLE, semi.as_ref()), (GROUP_ORACLE, group.as_ref())] {
        if let Some(scored) = scored {
            let mut m = scored.metrics();
            m.extend(es(scored));
            m.extend(grouped(scored));
            out.push((Some(name), m));
        }
    }
    Ok(out)
}

/// pCVR over the entire space: its AUC against the planted p(buy | click) `q` of every row
/// (task `cvr_entire_space`, metric `auc`), and with the counterfactual labels (whether each
/// impression would have converted had it been clicked) their AUC and logloss
/// (`auc_counterfactual`, `logloss_counterfactual`).
fn entire_space(p_cvr: &[f32], q: &[f32], counterfactual: Option<&[bool]>) -> Vec<TaskMetric> {
    let n = q.len() as u64;
    let task = "cvr_entire_space";
    let mut m = vec![TaskMetric { task, metric: "auc", value: soft_auc(p_cvr, q), n, positives: 0 }];
    if let Some(y) = counterfactual {
        let positives = y.iter().filter(|&&b| b).count() as u64;
        m.push(TaskMetric { task, metric: "auc_counterfactual", value: auc(p_cvr, y), n, positives });
        m.push(TaskMetric { task, metric: "logloss_counterfactual", value: logloss(p_cvr, y), n, positives });
    }
    m
}

/// pCVR's level on the unclicked space, the rows no conversion label reaches: mean pCVR over
/// the mean planted p(buy | click) `q` of the unclicked rows (task `cvr_unclicked`, metric
/// `calibration_truth`; `cvr`'s `calibration_truth` is the same on the clicked rows). Apart,
/// the two show ESMM's estimation bias directly.
fn unclicked_calibration(s: &Scored, q: &[f32]) -> TaskMetric {
    let (mut p_sum, mut q_sum, mut n) = (0.0f64, 0.0f64, 0u64);
    for i in (0..s.len()).filter(|&i| !s.click[i]) {
        p_sum += s.p_cvr[i] as f64;
        q_sum += q[i] as f64;
        n += 1;
    }
    let value = (q_sum > 0.0).then(|| p_sum / q_sum);
    TaskMetric { task: "cvr_unclicked", metric: "calibration_truth", value, n, positives: 0 }
}

/// The task metrics plus the spread (standard deviation) of each task's prediction.
fn with_spread(s: &Scored) -> Vec<TaskMetric> {
    let mut m = s.metrics();
    let std = |p: &[f32]| {
        let n = p.len().max(1) as f64;
        let mean = p.iter().map(|&v| v as f64).sum::<f64>() / n;
        (p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    };
    let n = s.len() as u64;
    m.push(TaskMetric { task: "ctr", metric: "prediction_std", value: Some(std(&s.p_ctr)), n, positives: 0 });
    m.push(TaskMetric { task: "cvr", metric: "prediction_std", value: Some(std(&s.p_cvr)), n, positives: 0 });
    m
}

/// Leakage (an AUC ≥ 0.99 is too good for click/buy prediction), collapse (a task's
/// predictions are near-constant: a tiny spread, with its AUC at chance or not) and
/// miscalibration (mean prediction over observed rate outside [`CALIBRATION_OK`]: bids multiply
/// these probabilities).
pub fn suspects(rows: &[MetricRow], model: &str) -> Vec<String> {
    let all: Vec<&MetricRow> = rows.iter().filter(|r| r.model == model && r.slice == "all").collect();
    let value = |task: &str, metric: &str| {
        all.iter().find(|r| r.metric.task == task && r.metric.metric == metric).and_then(|r| r.metric.value)
    };
    let mut flags = Vec::new();
    for r in all.iter().filter(|r| r.metric.metric == "auc") {
        if let Some(a) = r.metric.value.filter(|&a| a >= 0.99) {
            flags.push(format!("{} AUC {a:.4} >= 0.99: likely label leakage into the features", r.metric.task));
        }
    }
    for task in ["ctr", "cvr", "ctcvr"] {
        let Some(c) = value(task, "calibration") else { continue };
        if !(CALIBRATION_OK.0..=CALIBRATION_OK.1).contains(&c) {
            let (lo, hi) = CALIBRATION_OK;
            flags.push(format!("{task} calibration {c:.3} outside [{lo}, {hi}]: predictions off in level"));
        }
    }
    for task in ["ctr", "cvr"] {
        let (Some(std), auc) = (value(task, "prediction_std"), value(task, "auc")) else { continue };
        let chance = auc.is_some_and(|a| (a - 0.5).abs() < 0.01);
        if std < 1e-4 || (chance && std < 1e-3) {
            let auc = auc.map_or("undefined".into(), |a| format!("{a:.4}"));
            flags.push(format!("{task} predictions nearly constant (std {std:.2e}, AUC {auc}): collapsed model"));
        }
    }
    flags
}

fn write_metrics(path: &Path, run_id: &str, rows: &[MetricRow]) -> Result<()> {
    let s = |f: &dyn Fn(&MetricRow) -> String| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let cols: Vec<ArrayRef> = vec![
        s(&|_| run_id.to_string()),
        s(&|r| r.split.clone()),
        s(&|r| r.slice.clone()),
        s(&|r| r.model.clone()),
        s(&|r| r.metric.task.to_string()),
        s(&|r| r.metric.metric.to_string()),
        Arc::new(rows.iter().map(|r| r.metric.value).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.metric.n).collect::<UInt64Array>()),
        Arc::new(rows.iter().map(|r| r.metric.positives).collect::<UInt64Array>()),
    ];
    let mut out = ParquetOut::create(path, schema::metrics_schema(), 1 << 16)?;
    out.write(&RecordBatch::try_new(schema::metrics_schema(), cols)?)?;
    out.close()?;
    Ok(())
}

fn summary(
    run_id: &str,
    split: &str,
    model: &str,
    rows: &[MetricRow],
    flags: &[String],
    ungrouped: &[Grouping],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# esmm evaluation: run `{run_id}`, split `{split}`, model `{model}`\n");
    let get = |m: &str, slice: &str, task: &str, metric: &str| {
        rows.iter().find(|r| r.model == m && r.slice == slice && r.metric.task == task && r.metric.metric == metric)
    };
    let fmt = |r: Option<&MetricRow>| r.and_then(|r| r.metric.value).map_or("–".to_string(), |v| format!("{v:.4}"));
    let has = |name: &str| rows.iter().any(|r| r.model == name);
    let has_oracle = has(ORACLE);
    let references: Vec<(&str, &str)> =
        [(SEMI_ORACLE, "semi-oracle"), (GROUP_ORACLE, "group oracle")].into_iter().filter(|r| has(r.0)).collect();
    let _ = writeln!(
        s,
        "| task | rows | positives | AUC | logloss | NE | calibration | ECE |{}{}",
        if has_oracle { " oracle AUC | oracle logloss | calibration vs truth |" } else { "" },
        references.iter().map(|r| format!(" {} AUC |", r.1)).collect::<String>()
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|{}{}",
        if has_oracle { "---:|---:|---:|" } else { "" },
        "---:|".repeat(references.len())
    );
    for task in ["ctr", "cvr", "ctcvr", "cvr_entire_space"] {
        let Some(auc) = get(model, "all", task, "auc") else { continue };
        let _ = write!(
            s,
            "| {task} | {} | {} | {} | {} | {} | {} | {} |",
            auc.metric.n,
            auc.metric.positives,
            fmt(Some(auc)),
            fmt(get(model, "all", task, "logloss")),
            fmt(get(model, "all", task, "normalized_entropy")),
            fmt(get(model, "all", task, "calibration")),
            fmt(get(model, "all", task, "ece"))
        );
        if has_oracle {
            let oracle = |metric: &str| fmt(get(ORACLE, "all", task, metric));
            let truth = fmt(get(model, "all", task, "calibration_truth"));
            let _ = write!(s, " {} | {} | {truth} |", oracle("auc"), oracle("logloss"));
        }
        for r in &references {
            let _ = write!(s, " {} |", fmt(get(r.0, "all", task, "auc")));
        }
        s.push('\n');
    }
    s.push_str(&counterfactual_summary(rows, model, &references));
    let slices: Vec<&str> = {
        let mut v: Vec<&str> = rows.iter().filter(|r| r.slice != "all").map(|r| r.slice.as_str()).collect();
        v.dedup();
        v
    };
    if !slices.is_empty() {
        let _ = writeln!(s, "\nBy scenario (AUC):\n\n| slice | rows | ctr | cvr | ctcvr |\n|---|---:|---:|---:|---:|");
        for sl in slices {
            let n = get(model, sl, "ctr", "auc").map_or(0, |r| r.metric.n);
            let _ = writeln!(
                s,
                "| {sl} | {n} | {} | {} | {} |",
                fmt(get(model, sl, "ctr", "auc")),
                fmt(get(model, sl, "cvr", "auc")),
                fmt(get(model, sl, "ctcvr", "auc"))
            );
        }
    }
    s.push_str(&group_summary(rows, model, ungrouped));
    if flags.is_empty() {
        let _ = writeln!(s, "\nChecks: no sign of label leakage, collapse or miscalibration.");
    } else {
        let _ = writeln!(s, "\n**Suspect results:**\n");
        for f in flags {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

/// The counterfactual table of the summary (empty without counterfactual labels): per system,
/// pCVR's AUC and logloss against `buy_if_clicked` over every row, and its level over the planted
/// probability on the clicked and on the unclicked rows.
fn counterfactual_summary(rows: &[MetricRow], model: &str, references: &[(&str, &str)]) -> String {
    let get = |m: &str, task: &str, metric: &str| {
        rows.iter()
            .find(|r| r.model == m && r.slice == "all" && r.metric.task == task && r.metric.metric == metric)
            .and_then(|r| r.metric.value)
    };
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.4}"));
    let mut s = String::new();
    if get(model, "cvr_entire_space", "auc_counterfactual").is_none() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nCVR over the entire space against the counterfactual labels (would it have converted \
         had it been clicked), and pCVR over the planted p(buy | click) on each space:\n\n\
         | system | AUC | logloss | pCVR / truth, clicked | pCVR / truth, unclicked |\n|---|---:|---:|---:|---:|"
    );
    for (m, name) in [(model, model), (ORACLE, "oracle")].into_iter().chain(references.iter().copied()) {
        let cf = |metric: &str| fmt(get(m, "cvr_entire_space", metric));
        let level = |task: &str| fmt(get(m, task, "calibration_truth"));
        let (auc, loss) = (cf("auc_counterfactual"), cf("logloss_counterfactual"));
        let _ = writeln!(s, "| {name} | {auc} | {loss} | {} | {} |", level("cvr"), level("cvr_unclicked"));
    }
    s
}

/// The summary's group AUC table (with the oracle's beside it when there), or the line saying
/// which groupings the predictions lack the columns of.
fn group_summary(rows: &[MetricRow], model: &str, ungrouped: &[Grouping]) -> String {
    let mut s = String::new();
    if !ungrouped.is_empty() {
        let cols: Vec<String> = ungrouped.iter().map(|g| format!("`{}`", g.column())).collect();
        let (what, plural) = match ungrouped {
            [g] => (format!("Group AUC per {}", g.name()), ""),
            _ => ("Group AUC".to_string(), "s"),
        };
        let _ = writeln!(s, "\n{what}: not computed, the predictions lack the {} column{plural}.", cols.join(" and "));
    }
    let value = |m: &str, task: &str, metric: &str| {
        rows.iter().find(|r| r.model == m && r.slice == "all" && r.metric.task == task && r.metric.metric == metric)
    };
    let grouped: Vec<Grouping> = Grouping::ALL.into_iter().filter(|g| !ungrouped.contains(g)).collect();
    if grouped.is_empty() {
        return s;
    }
    let oracle = value(ORACLE, "ctr", grouped[0].metrics()[0]).is_some();
    let _ = writeln!(
        s,
        "\nGroup AUC (impression-weighted mean of per-group AUCs over the groups with both classes; user = \
         hashed `101` id, session = md5):\n\n| task | group | GAUC | groups | both classes | impressions | \
         in those |{}\n|---|---|---:|---:|---:|---:|---:|{}",
        if oracle { " oracle GAUC |" } else { "" },
        if oracle { "---:|" } else { "" }
    );
    let fmt = |r: Option<&MetricRow>, digits: usize| {
        r.and_then(|r| r.metric.value).map_or("–".to_string(), |v| format!("{v:.digits$}"))
    };
    for task in ["ctr", "cvr", "ctcvr"] {
        for g in &grouped {
            let [gauc, groups, covered, impressions] = g.metrics();
            let Some(row) = value(model, task, gauc) else { continue };
            let _ = write!(
                s,
                "| {task} | {} | {} | {} | {} | {} | {} |",
                g.name(),
                fmt(Some(row), 4),
                fmt(value(model, task, groups), 0),
                fmt(value(model, task, covered), 0),
                row.metric.n,
                fmt(value(model, task, impressions), 0)
            );
            if oracle {
                let _ = write!(s, " {} |", fmt(value(ORACLE, task, gauc), 4));
            }
            s.push('\n');
        }
    }
    s
}
