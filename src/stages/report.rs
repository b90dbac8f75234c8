//! `esmm report`: the evaluation report of a run directory — `report.md` and its PNG figures in
//! `<DIR>/report/` (content in [`crate::analytics::report`]). The stage protocol as everywhere:
//! the manifest is removed first, every figure is written under a temporary name and renamed,
//! `report.md` is written after its figures, figures of an older report that the new one does not
//! draw are removed, and the manifest comes last. Skipped when its inputs are unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use super::{StageReport, StageRun};
use crate::analytics::report;

pub struct ReportStage {
    /// The run directory (e.g. `data/demo`).
    pub run: PathBuf,
    /// Output directory; `<run>/report` by default.
    pub out: PathBuf,
    pub threads: usize,
    pub force: bool,
}

#[derive(Serialize)]
struct Params {
    /// Bumped when the report's content changes, so old reports are rebuilt.
    format: u32,
    bins: usize,
}

pub fn run(cfg: &ReportStage) -> Result<StageReport> {
    ensure!(cfg.run.is_dir(), "run directory {} does not exist", cfg.run.display());
    let inputs = report::inputs(&cfg.run)?;
    ensure!(
        !inputs.is_empty(),
        "{}: no model*/, predictions*/, metrics*/ or split/ outputs to report on",
        cfg.run.display()
    );
    let st = StageRun::begin("report", &cfg.out, &Params { format: 2, bins: report::BINS }, &inputs)?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let outputs = report::build(&cfg.run, &cfg.out)?;
    for entry in std::fs::read_dir(&cfg.out).with_context(|| format!("listing {}", cfg.out.display()))? {
        let path = entry.with_context(|| format!("listing {}", cfg.out.display()))?.path();
        if path.extension().is_some_and(|e| e == "png") && !outputs.contains(&path) {
            std::fs::remove_file(&path).with_context(|| format!("removing the stale figure {}", path.display()))?;
        }
    }
    let pngs = outputs.iter().filter(|p| p.extension().is_some_and(|e| e == "png")).count() as u64;
    let counts = BTreeMap::from([("figures".to_string(), pngs), ("inputs".to_string(), inputs.len() as u64)]);
    st.finish(&outputs, counts, BTreeMap::new(), cfg.threads)
}
