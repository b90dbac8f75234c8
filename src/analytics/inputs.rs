//! What the report reads from a run directory: the runs found in it (`model*/`, `predictions*/`,
//! `metrics*/` directories paired by suffix), their per-epoch logs, predictions and metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude as pl;

use super::tables::{variants, METRICS_DIR, MODEL_DIR, PREDICTIONS_DIR, PREDICTIONS_FILE};
use crate::schema::{
    is_planted, EPOCH, EPOCHS_FILE, EPOCH_PROGRESS, METRIC, METRICS_FILE, MODEL, N, RUN_ID, SLICE, SPLIT, TASK,
    TRAIN_LOSS, VALID_AUC_CTCVR, VALID_AUC_CTR, VALID_AUC_CVR, VALID_LOSS, VALUE,
};

/// One run of the directory: `model<suffix>/`, `predictions<suffix>/`, `metrics<suffix>/`.
#[derive(Clone, Debug)]
pub struct Run {
    /// `""` for the main run, `"_naive"` for `model_naive/` etc.
    pub suffix: String,
    pub epochs: Option<PathBuf>,
    pub predictions: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    /// Model kind and run id from the metrics table (the first row of a trained model).
    pub kind: Option<String>,
    pub run_id: Option<String>,
}

impl Run {
    /// How plots and tables name the run: `esmm (demo)`, or the directory suffix.
    pub fn label(&self) -> String {
        match (&self.kind, &self.run_id) {
            (Some(k), Some(r)) if !r.is_empty() => format!("{k} ({r})"),
            (Some(k), _) => k.clone(),
            _ if self.suffix.is_empty() => "main".into(),
            _ => self.suffix.trim_start_matches('_').to_string(),
        }
    }
}

fn existing(p: PathBuf) -> Option<PathBuf> {
    p.is_file().then_some(p)
}

/// The runs of `dir`, main run first, then by suffix.
pub fn discover(dir: &Path) -> Result<Vec<Run>> {
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    fn slot<'m>(runs: &'m mut BTreeMap<String, Run>, suffix: &str) -> &'m mut Run {
        runs.entry(suffix.to_string()).or_insert_with(|| Run {
            suffix: suffix.to_string(),
            epochs: None,
            predictions: None,
            metrics: None,
            kind: None,
            run_id: None,
        })
    }
    for (suffix, d) in variants(dir, MODEL_DIR)? {
        slot(&mut runs, &suffix).epochs = existing(d.join(EPOCHS_FILE));
    }
    for (suffix, d) in variants(dir, PREDICTIONS_DIR)? {
        slot(&mut runs, &suffix).predictions = existing(d.join(PREDICTIONS_FILE));
    }
    for (suffix, d) in variants(dir, METRICS_DIR)? {
        let run = slot(&mut runs, &suffix);
        run.metrics = existing(d.join(METRICS_FILE));
        if let Some(m) = &run.metrics {
            if let Some(row) = read_metrics(m)?.into_iter().find(|r| !is_planted(&r.model)) {
                run.kind = Some(row.model);
                run.run_id = Some(row.run_id);
            }
        }
    }
    Ok(runs.into_values().filter(|r| r.epochs.is_some() || r.predictions.is_some() || r.metrics.is_some()).collect())
}

fn frame(path: &Path, cols: &[&str]) -> Result<pl::DataFrame> {
    let p = pl::PlRefPath::try_from_path(path).with_context(|| format!("{}", path.display()))?;
    pl::LazyFrame::scan_parquet(p, Default::default())
        .and_then(|lf| lf.select(cols.iter().map(|c| pl::col(*c)).collect::<Vec<_>>()).collect())
        .with_context(|| format!("reading {} with polars", path.display()))
}

fn floats(df: &pl::DataFrame, name: &str, path: &Path) -> Result<Vec<Option<f64>>> {
    let c = df.column(name).and_then(|c| c.cast(&pl::DataType::Float64));
    let c = c.with_context(|| format!("{}: column {name}", path.display()))?;
    Ok(c.f64().with_context(|| format!("{}: column {name}", path.display()))?.iter().collect())
}

fn strings(df: &pl::DataFrame, name: &str, path: &Path) -> Result<Vec<String>> {
    let c = df.column(name).with_context(|| format!("{}: column {name}", path.display()))?;
    let s = c.str().with_context(|| format!("{}: column {name}", path.display()))?;
    Ok(s.iter().map(|v| v.unwrap_or_default().to_string()).collect())
}

/// One row of a metrics table.
#[derive(Clone, Debug)]
pub struct MetricRow {
    pub run_id: String,
    pub split: String,
    pub slice: String,
    pub model: String,
    pub task: String,
    pub metric: String,
    pub value: Option<f64>,
    /// The rows the metric is computed over.
    pub n: u64,
}

pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>> {
    let df = frame(path, &[RUN_ID, SPLIT, SLICE, MODEL, TASK, METRIC, VALUE, N])?;
    let s = |n| strings(&df, n, path);
    let (run_id, split, slice, model, task, metric) =
        (s(RUN_ID)?, s(SPLIT)?, s(SLICE)?, s(MODEL)?, s(TASK)?, s(METRIC)?);
    let value = floats(&df, VALUE, path)?;
    let n = floats(&df, N, path)?;
    Ok((0..df.height())
        .map(|i| MetricRow {
            run_id: run_id[i].clone(),
            split: split[i].clone(),
            slice: slice[i].clone(),
            model: model[i].clone(),
            task: task[i].clone(),
            metric: metric[i].clone(),
            value: value[i],
            n: n[i].unwrap_or(0.0) as u64,
        })
        .collect())
}

/// The per-evaluation log of `train`.
#[derive(Clone, Debug, Default)]
pub struct Epochs {
    /// Epochs of training done at each evaluation (fractional between epoch ends; the epoch
    /// number in logs written before evaluations by step).
    pub epoch: Vec<f64>,
    pub train_loss: Vec<Option<f64>>,
    pub valid_loss: Vec<Option<f64>>,
    pub auc_ctr: Vec<Option<f64>>,
    pub auc_cvr: Vec<Option<f64>>,
    pub auc_ctcvr: Vec<Option<f64>>,
}

pub fn read_epochs(path: &Path) -> Result<Epochs> {
    let mut cols = [EPOCH_PROGRESS, TRAIN_LOSS, VALID_LOSS, VALID_AUC_CTR, VALID_AUC_CVR, VALID_AUC_CTCVR];
    let df = frame(path, &cols).or_else(|_| {
        cols[0] = EPOCH;
        frame(path, &cols)
    })?;
    let f = |n| floats(&df, n, path);
    Ok(Epochs {
        epoch: f(cols[0])?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
        train_loss: f(TRAIN_LOSS)?,
        valid_loss: f(VALID_LOSS)?,
        auc_ctr: f(VALID_AUC_CTR)?,
        auc_cvr: f(VALID_AUC_CVR)?,
        auc_ctcvr: f(VALID_AUC_CTCVR)?,
    })
}
