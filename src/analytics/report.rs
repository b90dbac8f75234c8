//! The content of `esmm report`: finds the runs of a run directory, draws the figures, and
//! writes `report.md` with the paper-style comparison table (ESMM, SIGIR 2018, Table 2), group
//! AUC per user and per session, the data profile (`sql/profile.sql`), training curves, ROC
//! curves and reliability diagrams.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::inputs::{self, MetricRow, Run};
use super::plot::Canvas;
use super::sql::{self, Cell};
use super::{comparison, curves, figures, tables};
use crate::manifest::AtomicFile;

pub const REPORT_FILE: &str = "report.md";
/// Equal-count bins of the reliability diagrams (deciles, as in `sql/calibration.sql`).
pub const BINS: usize = 10;
/// Points kept per ROC curve.
const ROC_POINTS: usize = 400;

/// The shipped data-profile query, run on the split tables of the directory.
const PROFILE_SQL: &str = include_str!("../../sql/profile.sql");

/// Every file the report reads from `dir` (for the stage manifest).
pub fn inputs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for r in inputs::discover(dir)? {
        files.extend([r.epochs, r.predictions, r.metrics].into_iter().flatten());
    }
    for t in tables::run_tables(dir)? {
        if ["train", "valid", "test"].contains(&t.name.as_str()) {
            files.extend(t.files);
        }
    }
    Ok(files)
}

fn write_png(dir: &Path, name: &str, cv: &Canvas, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(name);
    let mut f = AtomicFile::create(&path)?;
    f.write_all(&cv.png()?).with_context(|| format!("writing {}", path.display()))?;
    f.commit()?;
    written.push(path);
    Ok(())
}

fn markdown_table(r: &sql::Rows) -> String {
    let mut s = format!("| {} |\n|{}\n", r.columns.join(" | "), "---|".repeat(r.columns.len()));
    for row in &r.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| match c {
                Cell::Null => "–".into(),
                Cell::Int(v) => v.to_string(),
                Cell::Float(v) => sql::human_float(*v),
                Cell::Text(t) => t.clone(),
            })
            .collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

/// Writes the figures, then `report.md`, of the run directory `dir` into `out` (each file under a
/// temporary name, renamed when complete); returns the files written.
pub fn build(dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let runs: Vec<Run> = inputs::discover(dir)?;
    let mut written = Vec::new();
    let mut md = String::new();
    let _ = writeln!(md, "# esmm report: `{}`\n", dir.display());
    let _ = writeln!(md, "Runs found (directories paired by suffix):\n\n| run | training log | predictions | metrics |\n|---|---|---|---|");
    let tick = |p: &Option<PathBuf>| if p.is_some() { "yes" } else { "–" };
    for r in &runs {
        let _ =
            writeln!(md, "| {} | {} | {} | {} |", r.label(), tick(&r.epochs), tick(&r.predictions), tick(&r.metrics));
    }

    let metrics: Vec<Vec<MetricRow>> =
        runs.iter().filter_map(|r| r.metrics.as_ref()).map(|p| inputs::read_metrics(p)).collect::<Result<_>>()?;
    let _ = writeln!(md, "\n## Model comparison (the paper's Table 2)\n\n{}", comparison::table2(&metrics));
    md.push_str(
        "CVR AUC (clicked) scores pCVR on clicked impressions against buy, as in the paper; CVR AUC \
         (entire space) scores pCVR on every impression against the planted p(buy | click), and against the \
         counterfactual labels (would it have converted had it been clicked; synthetic data only). Several runs of one kind (seeds: copies of a pipeline with its own run_id and \
         `metrics_<name>/`) give mean ± std. The query `sql/table2.sql` gives the same means.\n\n",
    );
    md.push_str(&comparison::group_auc_section(&metrics));

    let split_tables: Vec<tables::Table> = tables::run_tables(dir)?
        .into_iter()
        .filter(|t| ["train", "valid", "test"].contains(&t.name.as_str()))
        .collect();
    if split_tables.len() == 3 {
        let df = sql::query(PROFILE_SQL, &split_tables).context("sql/profile.sql")?;
        let _ = writeln!(md, "## Data (`sql/profile.sql`)\n\n{}", markdown_table(&sql::rows(&df)?));
    }

    let trained: Vec<&Run> = runs.iter().filter(|r| r.epochs.is_some()).collect();
    if !trained.is_empty() {
        md.push_str("## Training curves\n\nLoss and validation AUC per epoch (`model*/epochs.parquet`).\n\n");
    }
    for r in trained {
        let Some(path) = &r.epochs else { continue };
        let e = inputs::read_epochs(path)?;
        let name = format!("training{}.png", r.suffix);
        write_png(out, &name, &figures::training(&r.label(), &e), &mut written)?;
        let _ = writeln!(md, "![training curves of {}]({name})\n", r.label());
    }

    let scored: Vec<(String, crate::metrics::Scored)> = runs
        .iter()
        .filter_map(|r| r.predictions.as_ref().map(|p| (r.label(), p)))
        .map(|(label, p)| Ok((label, crate::metrics::inputs::read_predictions(p)?.scored)))
        .collect::<Result<_>>()?;
    if !scored.is_empty() {
        let per_run: Vec<(String, [(&'static str, Vec<f32>, Vec<bool>); 3])> =
            scored.iter().map(|(l, s)| (l.clone(), s.tasks())).collect();
        md.push_str(
            "## ROC curves\n\nTest predictions (`predictions*/test.parquet`): CTR on every impression, \
             CVR on clicked impressions, CTCVR (pCTR·pCVR against click ∧ buy) on every impression.\n\n",
        );
        for (k, task) in ["ctr", "cvr", "ctcvr"].iter().enumerate() {
            // the legend's AUC is the metric's (every point), not the thinned curve's area
            let curves: Vec<(String, f64, Vec<(f64, f64)>)> = per_run
                .iter()
                .filter_map(|(l, t)| {
                    let (p, y) = (&t[k].1, &t[k].2);
                    Some((l.clone(), crate::metrics::auc(p, y)?, curves::roc(p, y, ROC_POINTS)?))
                })
                .collect();
            let name = format!("roc_{task}.png");
            write_png(out, &name, &figures::roc(&format!("ROC: {}", task.to_uppercase()), &curves), &mut written)?;
            let _ = writeln!(md, "![ROC curves, {task}]({name})\n");
        }
        md.push_str(
            "## Reliability diagrams\n\nRows sorted by prediction and cut into ten equal-count bins \
             (`sql/calibration.sql` gives the numbers); points on the diagonal are calibrated.\n\n",
        );
        for (k, task) in ["ctr", "cvr", "ctcvr"].iter().enumerate() {
            let bins: Vec<(String, Vec<curves::Bin>)> =
                per_run.iter().map(|(l, t)| (l.clone(), curves::reliability(&t[k].1, &t[k].2, BINS))).collect();
            let name = format!("reliability_{task}.png");
            let title = format!("Reliability: {}", task.to_uppercase());
            write_png(out, &name, &figures::reliability(&title, &bins), &mut written)?;
            let _ = writeln!(md, "![reliability diagram, {task}]({name})\n");
        }
    }
    md.push_str("Query the same outputs with `esmm sql sql/<query>.sql --run DIR` or DuckDB (docs/analytics.md).\n");
    let path = out.join(REPORT_FILE);
    let mut f = AtomicFile::create(&path)?;
    f.write_all(md.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    f.commit()?;
    written.push(path);
    Ok(written)
}
