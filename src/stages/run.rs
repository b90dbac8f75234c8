//! `esmm run PIPELINE.yaml`: every stage in order — generate (when the file has a `generate:`
//! section), ingest, split, train, predict (test split), evaluate (with the planted truth for
//! generated data) — each skipped when its manifest shows the same inputs and config (like
//! make), so a scheduler can rerun the whole chain cheaply.

use anyhow::Result;

use super::{evaluate, generate, ingest, predict, split, train, StageReport};
use crate::config::PipelineConfig;
use crate::schema::{truth_file, Split};

pub struct RunStage {
    pub config: PipelineConfig,
    /// Rerun every stage even when up to date.
    pub force: bool,
}

/// Runs the chain; `on_stage` sees each report as soon as its stage ends.
pub fn run(cfg: &RunStage, mut on_stage: impl FnMut(&StageReport)) -> Result<Vec<StageReport>> {
    let c = &cfg.config;
    let threads = c.worker_threads();
    let mut reports = Vec::new();
    let mut done = |r: StageReport| {
        on_stage(&r);
        reports.push(r);
    };
    if let Some(params) = &c.generate {
        done(generate::run(&generate::GenerateStage {
            out: c.paths.raw.clone(),
            params: params.clone(),
            threads,
            force: cfg.force,
        })?);
    }
    done(ingest::run(&ingest::IngestStage {
        raw: c.paths.raw.clone(),
        out: c.paths.ingest.clone(),
        params: c.ingest.clone(),
        threads,
        force: cfg.force,
    })?);
    done(split::run(&split::SplitStage {
        input: c.paths.ingest.clone(),
        out: c.paths.split.clone(),
        params: c.split.clone(),
        threads,
        force: cfg.force,
    })?);
    done(train::run(&train::TrainStage {
        data: c.paths.split.clone(),
        out: c.paths.model.clone(),
        model: c.model.clone(),
        train: c.train.clone(),
        threads,
        force: cfg.force,
        resume: false,
    })?);
    let predictions = c.paths.predictions.join(format!("{}.parquet", Split::Test));
    done(predict::run(&predict::PredictStage {
        model: c.paths.model.clone(),
        data: c.paths.split.clone(),
        split: Split::Test,
        out: predictions.clone(),
        batch_size: c.train.batch_size.max(1024),
        threads,
        force: cfg.force,
    })?);
    let model_name = serde_json::to_value(c.model.kind)?.as_str().unwrap_or_default().to_string();
    done(evaluate::run(&evaluate::EvaluateStage {
        predictions,
        out: c.paths.metrics.clone(),
        truth: c.generate.is_some().then(|| c.paths.raw.join(truth_file(Split::Test))),
        run_id: c.run_id.clone(),
        model_name,
        fail_on_suspect: false,
        threads,
        force: cfg.force,
    })?);
    Ok(reports)
}
