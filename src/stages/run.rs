//! `esmm run PIPELINE.yaml`: every configured stage in order — generate (when the file has a
//! `generate:` section), ingest, split — each skipped when its manifest shows the same inputs
//! and config (like make), so a scheduler can rerun the whole chain cheaply.

use anyhow::Result;

use super::{generate, ingest, split, StageReport};
use crate::config::PipelineConfig;

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
    Ok(reports)
}
