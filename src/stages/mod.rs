//! The pipeline stages, one module each, each with one entry point `run(&Config) -> Result<StageReport>`.
//! Stages talk only through files in their output directories and the `_manifest.json` there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::manifest::{self, FileEntry, Manifest};

pub mod evaluate;
pub mod generate;
pub mod ingest;
pub mod predict;
pub mod run;
pub mod split;
pub mod train;

/// What a stage did, for the log and the caller.
#[derive(Clone, Debug)]
pub struct StageReport {
    pub stage: &'static str,
    pub out_dir: PathBuf,
    /// True when the stage found its outputs up to date and did nothing.
    pub up_to_date: bool,
    pub counts: BTreeMap<String, u64>,
    pub skipped: BTreeMap<String, u64>,
    pub seconds: f64,
}

impl StageReport {
    /// One human line per stage, then one per non-zero skip reason.
    pub fn summary(&self) -> String {
        let mut s = if self.up_to_date {
            format!("{}: up to date ({})", self.stage, self.out_dir.display())
        } else {
            let counts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}: {:.1}s -> {} [{}]", self.stage, self.seconds, self.out_dir.display(), counts.join(" "))
        };
        for (reason, n) in self.skipped.iter().filter(|(_, &n)| n > 0) {
            s.push_str(&format!("\n  {reason}: {n}"));
        }
        s
    }
}

/// Bookkeeping shared by every stage: timing, the skip check, and the closing manifest.
pub struct StageRun<'a> {
    pub stage: &'static str,
    pub out_dir: &'a Path,
    /// `<out_dir>/_manifest.json`, or `<file>.manifest.json` for a single-file output.
    manifest: PathBuf,
    pub config_hash: String,
    pub config: serde_json::Value,
    pub inputs: Vec<FileEntry>,
    started: Instant,
}

impl<'a> StageRun<'a> {
    /// Fingerprints `inputs` and hashes `config` (the part of the configuration that shapes the outputs).
    pub fn begin<C: Serialize>(stage: &'static str, out_dir: &'a Path, config: &C, inputs: &[PathBuf]) -> Result<Self> {
        let (config_hash, config) = manifest::config_hash(config)?;
        let inputs = inputs.iter().map(|p| manifest::fingerprint(p)).collect::<Result<Vec<_>>>()?;
        let manifest = manifest::manifest_path(out_dir);
        Ok(Self { stage, out_dir, manifest, config_hash, config, inputs, started: Instant::now() })
    }

    /// Like [`StageRun::begin`] for a stage whose output is one file: its manifest is
    /// `<file>.manifest.json` beside it.
    pub fn begin_file<C: Serialize>(
        stage: &'static str,
        out_file: &'a Path,
        config: &C,
        inputs: &[PathBuf],
    ) -> Result<Self> {
        let mut run = Self::begin(stage, out_file, config, inputs)?;
        run.manifest = manifest::file_manifest_path(out_file);
        Ok(run)
    }

    /// True when a finished run with the same inputs and config is already there.
    pub fn up_to_date(&self) -> bool {
        manifest::up_to_date(&self.manifest, self.stage, &self.config_hash, &self.inputs)
    }

    /// Step (1) of the manifest protocol: mark the outputs unfinished.
    pub fn invalidate(&self) -> Result<()> {
        manifest::invalidate_path(&self.manifest)
    }

    pub fn skipped_report(&self) -> StageReport {
        StageReport {
            stage: self.stage,
            out_dir: self.out_dir.to_path_buf(),
            up_to_date: true,
            counts: BTreeMap::new(),
            skipped: BTreeMap::new(),
            seconds: 0.0,
        }
    }

    /// Writes the manifest (the last step of every stage) and returns the report.
    pub fn finish(
        self,
        outputs: &[PathBuf],
        counts: BTreeMap<String, u64>,
        skipped: BTreeMap<String, u64>,
        threads: usize,
    ) -> Result<StageReport> {
        let outputs = outputs.iter().map(|p| manifest::fingerprint(p)).collect::<Result<Vec<_>>>()?;
        let seconds = self.started.elapsed().as_secs_f64();
        let finished_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let m = Manifest {
            stage: self.stage.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash: self.config_hash,
            config: self.config,
            inputs: self.inputs,
            outputs,
            counts: counts.clone(),
            skipped: skipped.clone(),
            seconds,
            threads,
            finished_unix,
        };
        manifest::write_path(&self.manifest, &m)?;
        Ok(StageReport {
            stage: self.stage,
            out_dir: self.out_dir.to_path_buf(),
            up_to_date: false,
            counts,
            skipped,
            seconds,
        })
    }
}
