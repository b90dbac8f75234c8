//! `esmm run PIPELINE.yaml`: the stages as a chain (a linear DAG) — generate (when the file has a
//! `generate:` section), ingest, split, train, predict (test split), evaluate (with the planted
//! truth for generated data). Each is skipped when its manifest shows the same inputs and config
//! (like make), so a scheduler can rerun the whole chain cheaply; `--force` reruns, `--from` /
//! `--until` restrict the range. Every stage takes its own output lock (see [`crate::lock`]), so
//! two overlapping runs cannot interleave writes: the second one stops with exit status 1.
//!
//! Adding a stage (e.g. a report after evaluate): a [`Stage`] variant at its place in the
//! order, its upstream in [`Stage::upstream`], its settings in [`super::settings`] (the same
//! function its single-stage command uses) and its call in [`run_one`].

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use super::{evaluate, generate, ingest, predict, settings, split, train, StageReport};
use crate::config::PipelineConfig;
use crate::error::usage;
use crate::manifest;
use crate::schema::Split;

/// The stages of a pipeline, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
        let predictions = settings::predictions_file(c, Split::Test);
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

impl std::str::FromStr for Stage {
    type Err = anyhow::Error;

    /// A stage by its [`Stage::name`] (a usage error otherwise).
    fn from_str(s: &str) -> Result<Self> {
        let names = Stage::ALL.map(Stage::name).join(", ");
        Stage::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| usage(anyhow!("unknown stage `{s}` ({names})")))
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

/// The stages `cfg` selects, in order; errors (usage errors) name the offending flag.
pub fn plan(cfg: &RunStage) -> Result<Vec<Stage>> {
    let has_generate = cfg.config.generate.is_some();
    for (flag, stage) in [("--from", cfg.from), ("--until", cfg.until)] {
        if stage == Some(Stage::Generate) && !has_generate {
            let why = "the pipeline has no `generate:` section (real data is not generated)";
            return Err(usage(anyhow!("{flag} generate: {why}")));
        }
    }
    if let (Some(a), Some(b)) = (cfg.from, cfg.until) {
        if a > b {
            return Err(usage(anyhow!("--from {a} comes after --until {b}")));
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
        let (c, name) = (&cfg.config, settings::model_name(cfg.config.model.kind));
        super::infer_line::log_test_aucs(&c.paths.metrics, &c.paths.model, name)?;
    }
    Ok(reports)
}

/// One stage of the chain, resolved like the single-stage command with `--config` and no flags.
fn run_one(cfg: &RunStage, stage: Stage) -> Result<StageReport> {
    let c = &cfg.config;
    let b = settings::Base { config: c, from_file: true, force: cfg.force };
    match stage {
        Stage::Generate => generate::run(&settings::generate(b, Default::default())?),
        Stage::Ingest => ingest::run(&settings::ingest(b, Default::default())?),
        Stage::Split => split::run(&settings::split(b, Default::default())?),
        Stage::Train => train::run(&settings::train(b, Default::default())?),
        Stage::Predict => predict::run(&settings::predict(b, Default::default())?),
        Stage::Evaluate => evaluate::run(&settings::evaluate(b, settings::EvaluateFlags::for_run(c))?),
    }
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
        let kind = |c: RunStage| crate::error::Kind::of(&plan(&c).unwrap_err());
        assert_eq!(kind(cfg("", Some(Train), Some(Split))), crate::error::Kind::Usage);
        assert_eq!(kind(cfg("", None, Some(Generate))), crate::error::Kind::Usage);
    }

    #[test]
    fn stages_parse_by_name() {
        for s in Stage::ALL {
            assert_eq!(s.name().parse::<Stage>().unwrap(), s);
        }
        let e = "trian".parse::<Stage>().unwrap_err();
        assert_eq!(crate::error::Kind::of(&e), crate::error::Kind::Usage);
        assert!(format!("{e:#}").contains("unknown stage `trian` (generate, ingest"), "{e:#}");
    }
}
