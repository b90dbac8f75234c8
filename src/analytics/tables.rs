//! The table-name convention behind `esmm sql` and `esmm report`: which Parquet files of a run
//! directory are visible to SQL under which name. One definition, used to register polars SQL
//! tables and to print the equivalent DuckDB views, so a `sql/*.sql` file runs unchanged in both.
//!
//! A run directory holds the pipeline's stage directories (as in `pipeline/demo*.yaml`):
//!
//! | table | files |
//! |---|---|
//! | `train`, `valid`, `test` | `DIR/split/<split>/samples.parquet` |
//! | `train_common`, `valid_common`, `test_common` | `DIR/split/<split>/common.parquet` |
//! | `predictions`, `predictions_<x>` | `DIR/predictions[_<x>]/test.parquet` |
//! | `epochs`, `epochs_<x>` | `DIR/model[_<x>]/epochs.parquet` |
//! | `metrics` | every `DIR/metrics*/metrics.parquet`, stacked (rows carry run_id and model) |
//!
//! Tables whose files are missing are not registered. `--table NAME=FILE.parquet` adds a table
//! or replaces one of these.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use polars::prelude as pl;

use crate::error::{usage, UsageResult};
use crate::schema::{Split, COMMON_FILE, EPOCHS_FILE, METRICS_FILE, SAMPLES_FILE};

/// Stage directories inside a run directory (the `paths:` of the demo pipelines).
pub const SPLIT_DIR: &str = "split";
pub const PREDICTIONS_DIR: &str = "predictions";
pub const MODEL_DIR: &str = "model";
pub const METRICS_DIR: &str = "metrics";
/// The predictions file the tables and the report read (the split `esmm run` predicts).
pub const PREDICTIONS_FILE: &str = "test.parquet";
/// Table names that are not derived from a directory name.
pub const METRICS_TABLE: &str = "metrics";
pub const EPOCHS_TABLE: &str = "epochs";

/// A SQL table: a name and the Parquet files stacked under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub name: String,
    pub files: Vec<PathBuf>,
}

/// Subdirectories of `run` whose name is `prefix` or `prefix_<suffix>`, as (suffix, path),
/// sorted by name; the suffix is `""` or `"_<suffix>"`.
pub fn variants(run: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(run) {
        Ok(e) => e,
        // a usage error: the run directory is named on the command line
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(usage(anyhow!("run directory {} does not exist", run.display())))
        }
        Err(e) => return Err(e).with_context(|| format!("listing {}", run.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", run.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(suffix) = name.strip_prefix(prefix) else { continue };
        let ok = suffix.is_empty()
            || (suffix.starts_with('_') && suffix[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if ok && entry.path().is_dir() {
            out.push((suffix.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The tables of a run directory, by the convention above.
pub fn run_tables(run: &Path) -> Result<Vec<Table>> {
    let mut tables = Vec::new();
    let mut add = |name: String, files: Vec<PathBuf>| {
        let files: Vec<PathBuf> = files.into_iter().filter(|f| f.is_file()).collect();
        if !files.is_empty() {
            tables.push(Table { name, files });
        }
    };
    for split in Split::ALL {
        let dir = run.join(SPLIT_DIR).join(split.name());
        add(split.name().to_string(), vec![dir.join(SAMPLES_FILE)]);
        add(format!("{split}_common"), vec![dir.join(COMMON_FILE)]);
    }
    for (suffix, dir) in variants(run, PREDICTIONS_DIR)? {
        add(format!("{PREDICTIONS_DIR}{suffix}"), vec![dir.join(PREDICTIONS_FILE)]);
    }
    for (suffix, dir) in variants(run, MODEL_DIR)? {
        add(format!("{EPOCHS_TABLE}{suffix}"), vec![dir.join(EPOCHS_FILE)]);
    }
    let metrics = variants(run, METRICS_DIR)?.into_iter().map(|(_, d)| d.join(METRICS_FILE)).collect();
    add(METRICS_TABLE.to_string(), metrics);
    Ok(tables)
}

/// Parses `NAME=FILE.parquet` (a `--table` flag); a malformed one is a usage error.
pub fn parse_table_arg(arg: &str) -> Result<Table> {
    let (name, file) =
        arg.split_once('=').with_context(|| format!("--table {arg}: expected NAME=FILE.parquet")).usage()?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(usage(anyhow!("--table {arg}: the name must be letters, digits and _")));
    }
    Ok(Table { name: name.to_string(), files: vec![PathBuf::from(file)] })
}

/// Adds `extra` to `tables`, replacing tables of the same name.
pub fn merge(mut tables: Vec<Table>, extra: Vec<Table>) -> Vec<Table> {
    for t in extra {
        tables.retain(|x| x.name != t.name);
        tables.push(t);
    }
    tables
}

/// DuckDB statements that create the same tables as views.
pub fn duckdb_views(tables: &[Table]) -> String {
    let mut s = String::new();
    for t in tables {
        let files: Vec<String> =
            t.files.iter().map(|f| format!("'{}'", f.to_string_lossy().replace('\'', "''"))).collect();
        s.push_str(&format!(
            "CREATE OR REPLACE VIEW {} AS SELECT * FROM read_parquet([{}], union_by_name = true);\n",
            t.name,
            files.join(", ")
        ));
    }
    s
}

/// A lazy scan of a table's files (stacked in order).
pub fn scan(t: &Table) -> Result<pl::LazyFrame> {
    let mut frames = Vec::with_capacity(t.files.len());
    for f in &t.files {
        ensure!(f.is_file(), "table {}: {} does not exist", t.name, f.display());
        let p = pl::PlRefPath::try_from_path(f).with_context(|| format!("table {}: {}", t.name, f.display()))?;
        frames.push(
            pl::LazyFrame::scan_parquet(p, Default::default())
                .with_context(|| format!("table {}: scanning {}", t.name, f.display()))?,
        );
    }
    match frames.len() {
        0 => bail!("table {} has no files", t.name),
        1 => Ok(frames.remove(0)),
        _ => pl::concat(frames, Default::default()).with_context(|| format!("table {}: stacking files", t.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convention_names_the_run_directories() {
        let dir = std::env::temp_dir().join(format!("esmm-tables-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in [
            "split/train/samples.parquet",
            "split/train/common.parquet",
            "split/test/samples.parquet",
            "predictions/test.parquet",
            "predictions_naive/test.parquet",
            "predictions-old/test.parquet",
            "model/epochs.parquet",
            "model_ns/epochs.parquet",
            "metrics/metrics.parquet",
            "metrics_naive/metrics.parquet",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"").unwrap();
        }
        let t = run_tables(&dir).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["train", "train_common", "test", "predictions", "predictions_naive", "epochs", "epochs_ns", "metrics"]
        );
        assert_eq!(t[7].files, [dir.join("metrics/metrics.parquet"), dir.join("metrics_naive/metrics.parquet")]);
        let views = duckdb_views(&t[3..4]);
        assert_eq!(
            views,
            format!(
                "CREATE OR REPLACE VIEW predictions AS SELECT * FROM read_parquet(['{}'], union_by_name = true);\n",
                dir.join("predictions/test.parquet").display()
            )
        );
        let extra = parse_table_arg("predictions=x.parquet").unwrap();
        let merged = merge(t, vec![extra]);
        assert_eq!(merged.iter().filter(|t| t.name == "predictions").count(), 1);
        assert_eq!(merged.last().unwrap().files, [PathBuf::from("x.parquet")]);
        assert!(parse_table_arg("bad name=x").is_err() && parse_table_arg("x").is_err());
        assert!(run_tables(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
