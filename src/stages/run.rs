//! `esmm run PIPELINE.yaml`: the stages as a chain (a linear DAG) — generate (when the file has a
//! `generate:` section), ingest, split, train, predict (test split), evaluate (with the planted
//! truth for generated data). Each is skipped when its manifest shows the same inputs and config
//! (like make), so a scheduler can rerun the whole chain cheaply; `--force` reruns, `--from` /
//! `--until` restrict the range. Every stage takes its own output lock (see [`crate::lock`]), so
//! two overlapping runs cannot interleave writes: the second one stops with exit status 1.
//!
//! Adding a stage (e.g. a report after evaluate): a [`Stage`] variant at its place in the
//! order, its upstream in [`Stage::upstream`], and its call in [`run_one`].

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{evaluate, generate, ingest, predict, split, train, StageReport};
use crate::config::PipelineConfig;
use crate::manifest;
use crate::schema::{truth_file, Split};

/// The stages of a pipeline, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Stage {
    Generate,
    Ingest,
    Split,
    Train,
    Predict,
    Evaluate,
}

impl Stage {
    pub const ALL: [Stage; 6] =
        [Stage::Generate, Stage::Ingest, Stage::Split, Stage::Train, Stage::Predict, Stage::Evaluate];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Generate => "generate",
            Stage::Ingest => "ingest",
            Stage::Split => "split",
            Stage::Train => "train",
            Stage::Predict => "predict",
            Stage::Evaluate => "evaluate",
        }
    }

    /// The finished outputs this stage reads: (manifest path, location, producing stage).
    fn upstream(self, c: &PipelineConfig) -> Vec<(PathBuf, PathBuf, Stage)> {
        let dir = |p: &PathBuf, s| (manifest::manifest_path(p), p.clone(), s);
        let predictions = predictions_file(c);
        match self {
            Stage::Generate => vec![],
            // Real raw data has no manifest: ingest checks its files itself.
            Stage::Ingest if c.generate.is_none() => vec![],
            Stage::Ingest => vec![dir(&c.paths.raw, Stage::Generate)],
            Stage::Split => vec![dir(&c.paths.ingest, Stage::Ingest)],
            Stage::Train => vec![dir(&c.paths.split, Stage::Split)],
            Stage::Predict => vec![dir(&c.paths.model, Stage::Train), dir(&c.paths.split, Stage::Split)],
            Stage::Evaluate => vec![(manifest::file_manifest_path(&predictions), predictions, Stage::Predict)],
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub struct RunStage {
    pub config: PipelineConfig,
    /// Rerun the selected stages even when up to date.
    pub force: bool,
    /// First stage to run (the earlier ones must have finished before).
    pub from: Option<Stage>,
    /// Last stage to run.
    pub until: Option<Stage>,
}

fn predictions_file(c: &PipelineConfig) -> PathBuf {
    c.paths.predictions.join(format!("{}.parquet", Split::Test))
}

/// The stages `cfg` selects, in order; errors name the offending flag.
pub fn plan(cfg: &RunStage) -> Result<Vec<Stage>> {
    let has_generate = cfg.config.generate.is_some();
    for (flag, stage) in [("--from", cfg.from), ("--until", cfg.until)] {
        if stage == Some(Stage::Generate) && !has_generate {
            bail!("{flag} generate: the pipeline has no `generate:` section (real data is not generated)");
        }
    }
    if let (Some(a), Some(b)) = (cfg.from, cfg.until) {
        if a > b {
            bail!("--from {a} comes after --until {b}");
        }
    }
    let first = Stage::ALL.iter().position(|&s| s != Stage::Generate || has_generate).unwrap_or(0);
    Ok(Stage::ALL[first..]
        .iter()
        .copied()
        .filter(|&s| cfg.from.is_none_or(|f| s >= f) && cfg.until.is_none_or(|u| s <= u))
        .collect())
}

/// Runs the selected stages; `on_stage` sees each report as soon as its stage ends.
pub fn run(cfg: &RunStage, mut on_stage: impl FnMut(&StageReport)) -> Result<Vec<StageReport>> {
    let stages = plan(cfg)?;
    if let Some(&first) = stages.first() {
        // Starting late: what the first stage reads must be finished already.
        for (manifest, location, producer) in first.upstream(&cfg.config) {
            if !manifest.is_file() {
                bail!(
                    "--from {first}: its input {} is not finished (no {}); run the pipeline with `--until {producer}` \
                     first",
                    location.display(),
                    manifest.display()
                );
            }
        }
    }
    let mut reports = Vec::new();
    for &stage in &stages {
        let r = run_one(cfg, stage)?;
        on_stage(&r);
        reports.push(r);
    }
    if cfg.config.paddle.chain && stages.contains(&Stage::Evaluate) {
        super::infer_line::log_test_aucs(&cfg.config.paths.metrics, &cfg.config.paths.model, model_name(&cfg.config))?;
    }
    Ok(reports)
}

/// The model's name in the metrics table: its kind.
fn model_name(c: &PipelineConfig) -> String {
    serde_json::to_value(c.model.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn run_one(cfg: &RunStage, stage: Stage) -> Result<StageReport> {
    let c = &cfg.config;
    let threads = c.worker_threads();
    let force = cfg.force;
    match stage {
        Stage::Generate => {
            let params = c.generate.clone().unwrap_or_default();
            generate::run(&generate::GenerateStage { out: c.paths.raw.clone(), params, threads, force })
        }
        Stage::Ingest => ingest::run(&ingest::IngestStage {
            raw: c.paths.raw.clone(),
            split_dirs: c.paths.raw_dirs(),
            out: c.paths.ingest.clone(),
            params: c.ingest.clone(),
            threads,
            force,
        }),
        Stage::Split => split::run(&split::SplitStage {
            input: c.paths.ingest.clone(),
            out: c.paths.split.clone(),
            params: c.split.clone(),
            threads,
            force,
        }),
        Stage::Train => train::run(&train::TrainStage {
            data: c.paths.split.clone(),
            out: c.paths.model.clone(),
            model: c.model.clone(),
            train: c.train.clone(),
            threads,
            force,
            resume: false,
        }),
        Stage::Predict => predict::run(&predict::PredictStage {
            model: c.paths.model.clone(),
            data: c.paths.split.clone(),
            split: Split::Test,
            out: predictions_file(c),
            batch_size: predict_batch_size(c),
            threads,
            force,
        }),
        Stage::Evaluate => evaluate::run(&evaluate::EvaluateStage {
            predictions: predictions_file(c),
            out: c.paths.metrics.clone(),
            truth: c.generate.is_some().then(|| c.paths.raw.join(truth_file(Split::Test))),
            run_id: c.run_id.clone(),
            model_name: model_name(c),
            fail_on_suspect: false,
            threads,
            force,
        }),
    }
}

/// Rows per scoring batch of `predict` for a config (the CLI uses the same): `predict.batch_size`,
/// else the training batch size, at least 1024.
pub fn predict_batch_size(c: &PipelineConfig) -> usize {
    c.predict.batch_size.unwrap_or(c.train.batch_size.max(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str, from: Option<Stage>, until: Option<Stage>) -> RunStage {
        RunStage { config: PipelineConfig::parse(yaml).unwrap(), force: false, from, until }
    }

    #[test]
    fn plan_ranges() {
        use Stage::*;
        let gen = "generate: {train_rows: 10}\n";
        assert_eq!(plan(&cfg(gen, None, None)).unwrap(), Stage::ALL);
        assert_eq!(plan(&cfg("", None, None)).unwrap(), [Ingest, Split, Train, Predict, Evaluate]);
        assert_eq!(plan(&cfg("", Some(Train), None)).unwrap(), [Train, Predict, Evaluate]);
        assert_eq!(plan(&cfg(gen, None, Some(Split))).unwrap(), [Generate, Ingest, Split]);
        assert_eq!(plan(&cfg("", Some(Predict), Some(Predict))).unwrap(), [Predict]);
        let e = |c: RunStage| format!("{:#}", plan(&c).unwrap_err());
        assert!(e(cfg("", Some(Train), Some(Split))).contains("--from train comes after --until split"));
        assert!(e(cfg("", Some(Generate), None)).contains("no `generate:` section"));
    }
}
