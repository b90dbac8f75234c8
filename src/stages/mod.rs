//! The pipeline stages, one module each, each with one entry point `run(&Config) -> Result<StageReport>`.
//! Stages talk only through files in their output directories and the `_manifest.json` there.
//! Their settings are resolved from flags and the pipeline file in one place, [`settings`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::lock::{self, Lock};
use crate::manifest::{self, FileEntry, Manifest};
use crate::schema::DataContract;
use crate::shard::Shard;

pub mod evaluate;
pub mod export;
pub mod generate;
pub mod infer_line;
pub mod ingest;
pub mod predict;
pub mod report;
pub mod run;
pub mod selection;
pub mod settings;
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
    /// Which temporaries and stale manifests [`StageRun::invalidate`] clears.
    scope: Scope,
    /// The output lock (and input locks), held until the stage ends.
    locks: Vec<Lock>,
    /// Written into the manifest ([`StageRun::set_data`]).
    data: Option<DataContract>,
}

/// What a stage run owns in its output location.
enum Scope {
    /// A whole directory (and its sub-directories).
    Dir,
    /// One file of a directory.
    File(String),
    /// One shard's parts of a directory.
    Shard(Shard),
}

impl<'a> StageRun<'a> {
    /// Fingerprints `inputs` and hashes `config` (the part of the configuration that shapes the outputs).
    /// Takes the output directory's lock (exit 1 naming the holder when another process has
    /// it), then fingerprints the inputs.
    pub fn begin<C: Serialize>(stage: &'static str, out_dir: &'a Path, config: &C, inputs: &[PathBuf]) -> Result<Self> {
        let lock = lock::exclusive_dir(out_dir, stage)?;
        Self::with(stage, out_dir, manifest::manifest_path(out_dir), Scope::Dir, lock, config, inputs)
    }

    fn with<C: Serialize>(
        stage: &'static str,
        out_dir: &'a Path,
        manifest: PathBuf,
        scope: Scope,
        lock: Lock,
        config: &C,
        inputs: &[PathBuf],
    ) -> Result<Self> {
        let (config_hash, config) = manifest::config_hash(config)?;
        let inputs = inputs.iter().map(|p| manifest::fingerprint(p)).collect::<Result<Vec<_>>>()?;
        let (started, locks) = (Instant::now(), vec![lock]);
        Ok(Self { stage, out_dir, manifest, config_hash, config, inputs, started, scope, locks, data: None })
    }

    /// Like [`StageRun::begin`] for a stage whose output is one file: its manifest is
    /// `<file>.manifest.json` beside it, its lock `.<file>.lock`.
    pub fn begin_file<C: Serialize>(
        stage: &'static str,
        out_file: &'a Path,
        config: &C,
        inputs: &[PathBuf],
    ) -> Result<Self> {
        let lock = lock::exclusive_file(out_file, stage)?;
        let name = out_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let manifest = manifest::file_manifest_path(out_file);
        Self::with(stage, out_file, manifest, Scope::File(name), lock, config, inputs)
    }

    /// Like [`StageRun::begin`] for one shard writing its parts into `out_dir`: manifest
    /// `_manifest.part-….json`, the directory lock shared with the other shards.
    pub fn begin_shard<C: Serialize>(
        stage: &'static str,
        out_dir: &'a Path,
        shard: Shard,
        config: &C,
        inputs: &[PathBuf],
    ) -> Result<Self> {
        let lock = lock::shard(out_dir, &shard.tag(), stage)?;
        let manifest = out_dir.join(shard.manifest_name());
        Self::with(stage, out_dir, manifest, Scope::Shard(shard), lock, config, inputs)
    }

    /// Holds a shared lock on an input directory until the stage ends, so that no other process
    /// rewrites it meanwhile (fails at once if one is rewriting it now).
    pub fn read_lock(&mut self, dir: &Path) -> Result<()> {
        if let Some(l) = lock::read_dir(dir, self.stage)? {
            self.locks.push(l);
        }
        Ok(())
    }

    /// True when a finished run with the same inputs and config is already there.
    pub fn up_to_date(&self) -> bool {
        manifest::up_to_date(&self.manifest, self.stage, &self.config_hash, &self.inputs)
    }

    /// Step (1) of the manifest protocol: mark the outputs unfinished.
    /// Also clears what an earlier run killed half-way left behind (temporaries of this run's
    /// outputs; for a directory, the manifests of sharded runs, and for a shard, the whole-directory
    /// manifest and the manifests of other shard counts). Safe: we hold the output lock.
    pub fn invalidate(&self) -> Result<()> {
        manifest::invalidate_path(&self.manifest)?;
        let dir = match self.scope {
            Scope::File(_) => self.out_dir.parent().unwrap_or(Path::new(".")),
            _ => self.out_dir,
        };
        let (stage_manifest, tmp) = (manifest::manifest_path(self.out_dir), ".tmp-");
        match &self.scope {
            Scope::Dir => manifest::remove_matching(dir, 2, |n| {
                (n.starts_with('.') && n.contains(tmp)) || (n.starts_with("_manifest.part-") && n.ends_with(".json"))
            }),
            Scope::File(name) => manifest::remove_matching(dir, 1, |n| n.starts_with(&format!(".{name}{tmp}"))),
            Scope::Shard(s) => {
                manifest::invalidate_path(&stage_manifest)?;
                let tag = s.tag();
                manifest::remove_matching(dir, 2, |n| {
                    let other_count = Shard::from_name(n).is_some_and(|o| o.count != s.count);
                    (n.starts_with('.') && n.contains(tmp) && n.contains(&tag)) || other_count
                })
            }
        }
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

    /// The data contract the manifest is to carry (ingest, split).
    pub fn set_data(&mut self, data: DataContract) {
        self.data = Some(data);
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
            data: self.data,
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
