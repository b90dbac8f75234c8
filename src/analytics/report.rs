//! The content of `esmm report`: finds the runs of a run directory, draws the figures, and
//! writes `report.md` with the paper-style comparison table (ESMM, SIGIR 2018, Table 2), the
//! data profile (`sql/profile.sql`), training curves, ROC curves and reliability diagrams.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::inputs::{self, MetricRow, Run};
use super::plot::Canvas;
use super::sql::{self, Cell};
use super::{curves, figures, tables};
use crate::manifest::AtomicFile;
use crate::schema::{is_planted, ORACLE, SEMI_ORACLE};

pub const REPORT_FILE: &str = "report.md";
/// Equal-count bins of the reliability diagrams (deciles, as in `sql/calibration.sql`).
pub const BINS: usize = 10;
/// Points kept per ROC curve.
const ROC_POINTS: usize = 400;

/// The shipped data-profile query, run on the split tables of the directory.
const PROFILE_SQL: &str = include_str!("../../sql/profile.sql");

/// Model kinds in the paper's row order; other kinds follow alphabetically, the semi-oracle and
/// the oracle last.
const KIND_ORDER: [&str; 3] = ["naive_cvr", "esmm_ns", "esmm"];
/// Table 2 columns: (task in the metrics table, header).
const TABLE2_TASKS: [(&str, &str); 4] = [
    ("ctr", "CTR AUC"),
    ("cvr", "CVR AUC (clicked)"),
    ("ctcvr", "CTCVR AUC"),
    ("cvr_entire_space", "CVR AUC (entire space)"),
];

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

fn mean_std(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1).then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

fn kind_rank(kind: &str) -> (usize, String) {
    let pos = KIND_ORDER.iter().position(|k| *k == kind);
    let last = match kind {
        SEMI_ORACLE => usize::MAX - 1,
        ORACLE => usize::MAX,
        _ => KIND_ORDER.len(),
    };
    (pos.unwrap_or(last), kind.to_string())
}

/// The paper-style table from the metrics rows of every run (one `Vec<MetricRow>` per metrics
/// file): AUC × 100 of each model kind, mean ± sample standard deviation over its runs.
pub fn table2(metrics: &[Vec<MetricRow>]) -> String {
    // split → kind → task → one value per (file, run_id).
    let mut t: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>> = BTreeMap::new();
    let mut runs: BTreeMap<(String, String), std::collections::BTreeSet<(usize, String)>> = BTreeMap::new();
    for (file, rows) in metrics.iter().enumerate() {
        for r in rows.iter().filter(|r| r.slice == "all" && r.metric == "auc") {
            let Some(v) = r.value else { continue };
            t.entry(r.split.clone())
                .or_default()
                .entry(r.model.clone())
                .or_default()
                .entry(r.task.clone())
                .or_default()
                .push(v);
            runs.entry((r.split.clone(), r.model.clone())).or_default().insert((file, r.run_id.clone()));
        }
    }
    let mut s = String::new();
    for (split, kinds) in &t {
        let cols: Vec<(&str, &str)> =
            TABLE2_TASKS.iter().copied().filter(|(task, _)| kinds.values().any(|k| k.contains_key(*task))).collect();
        let _ = writeln!(s, "Split `{split}`, AUC × 100 (mean ± standard deviation over runs):\n");
        let _ = writeln!(s, "| model | runs | {} |", cols.iter().map(|c| c.1).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "|---|---:|{}", "---:|".repeat(cols.len()));
        let mut order: Vec<&String> = kinds.keys().collect();
        order.sort_by_key(|k| kind_rank(k));
        for kind in order {
            // The oracles (the planted truth) are the same in every run's table: one value, no spread.
            let oracle = is_planted(kind);
            let n = runs.get(&(split.clone(), kind.clone())).map_or(0, |r| r.len());
            let n = if oracle { "–".to_string() } else { n.to_string() };
            let cells: Vec<String> = cols
                .iter()
                .map(|(task, _)| match kinds[kind].get(*task) {
                    Some(v) if !v.is_empty() => match mean_std(v) {
                        (m, Some(sd)) if !oracle => format!("{:.2} ± {:.2}", m * 100.0, sd * 100.0),
                        (m, _) => format!("{:.2}", m * 100.0),
                    },
                    _ => "–".into(),
                })
                .collect();
            let _ = writeln!(s, "| {kind} | {n} | {} |", cells.join(" | "));
        }
        let mean = |kind: &str, task: &str| kinds.get(kind).and_then(|k| k.get(task)).map(|v| mean_std(v).0);
        let gains: Vec<String> = ["cvr", "ctcvr"]
            .iter()
            .filter_map(|task| {
                let (e, b) = (mean("esmm", task)?, mean("naive_cvr", task)?);
                Some(format!("{} {:+.2}", task.to_uppercase(), (e - b) * 100.0))
            })
            .collect();
        if !gains.is_empty() {
            let _ = writeln!(s, "\nESMM − naive CVR (AUC points): {}.", gains.join(", "));
        }
        s.push('\n');
    }
    if s.is_empty() {
        s.push_str("No metrics tables (`metrics*/metrics.parquet`) found.\n");
    }
    s
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
    let _ = writeln!(md, "\n## Model comparison (the paper's Table 2)\n\n{}", table2(&metrics));
    md.push_str(
        "CVR AUC (clicked) scores pCVR on clicked impressions against buy, as in the paper; CVR AUC \
         (entire space) scores pCVR on every impression against the planted p(buy | click) (synthetic data \
         only). Several runs of one kind (seeds: copies of a pipeline with its own run_id and \
         `metrics_<name>/`) give mean ± std. The query `sql/table2.sql` gives the same means.\n\n",
    );

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
        let per_run: Vec<(String, Vec<(&'static str, Vec<f32>, Vec<bool>)>)> =
            scored.iter().map(|(l, s)| (l.clone(), inputs::tasks(s))).collect();
        md.push_str(
            "## ROC curves\n\nTest predictions (`predictions*/test.parquet`): CTR on every impression, \
             CVR on clicked impressions, CTCVR (pCTR·pCVR against click ∧ buy) on every impression.\n\n",
        );
        for (k, task) in ["ctr", "cvr", "ctcvr"].iter().enumerate() {
            let curves: Vec<(String, Vec<(f64, f64)>)> = per_run
                .iter()
                .filter_map(|(l, t)| Some((l.clone(), curves::roc(&t[k].1, &t[k].2, ROC_POINTS)?)))
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
    md.push_str("Query the same outputs with `esmm sql sql/<query>.sql --run DIR` or DuckDB (see the README).\n");
    let path = out.join(REPORT_FILE);
    let mut f = AtomicFile::create(&path)?;
    f.write_all(md.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    f.commit()?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run: &str, model: &str, task: &str, v: f64) -> MetricRow {
        MetricRow {
            run_id: run.into(),
            split: "test".into(),
            slice: "all".into(),
            model: model.into(),
            task: task.into(),
            metric: "auc".into(),
            value: Some(v),
        }
    }

    #[test]
    fn table2_orders_kinds_and_gives_mean_and_std() {
        let m = vec![
            vec![row("a", "esmm", "cvr", 0.70), row("a", "esmm", "ctcvr", 0.66), row("a", ORACLE, "cvr", 0.8)],
            vec![row("b", "esmm", "cvr", 0.72), row("b", "esmm", "ctcvr", 0.68)],
            vec![row("c", "naive_cvr", "cvr", 0.68), row("c", "naive_cvr", "ctcvr", 0.65)],
        ];
        let t = table2(&m);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "| model | runs | CVR AUC (clicked) | CTCVR AUC |");
        assert_eq!(lines[4], "| naive_cvr | 1 | 68.00 | 65.00 |");
        assert_eq!(lines[5], "| esmm | 2 | 71.00 ± 1.41 | 67.00 ± 1.41 |");
        assert_eq!(lines[6], "| oracle | – | 80.00 | – |");
        assert!(t.contains("ESMM − naive CVR (AUC points): CVR +3.00, CTCVR +2.00."), "{t}");
        assert!(table2(&[]).starts_with("No metrics tables"));
    }
}
