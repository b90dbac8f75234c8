//! `esmm sql`: runs a SQL query with polars SQL over the tables of a run directory (see
//! [`super::tables`]) and renders the result as an aligned text table, CSV or Parquet
//! ([`command`]: the whole subcommand, printing on stdout).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use polars::prelude as pl;
use polars::sql::SQLContext;

use super::tables::{self, scan, Table};
use crate::error::usage;
use crate::manifest::AtomicFile;

/// What `esmm sql` was asked.
#[derive(Clone, Debug, Default)]
pub struct SqlCommand {
    pub file: Option<PathBuf>,
    pub query: Option<String>,
    /// The run directory whose outputs become tables.
    pub run: Option<PathBuf>,
    /// `--table NAME=FILE.parquet` flags.
    pub tables: Vec<String>,
    pub out: Option<PathBuf>,
    /// Rows printed on stdout (0 = none).
    pub limit: usize,
    pub duckdb_views: bool,
}

/// `esmm sql`: registers the tables, runs the query, prints the result on stdout (and writes it
/// to `--out`). A missing or malformed flag is a usage error; a closed stdout ends it quietly.
pub fn command(a: &SqlCommand) -> Result<()> {
    let extra = a.tables.iter().map(|t| tables::parse_table_arg(t)).collect::<Result<Vec<_>>>()?;
    if a.run.is_none() && extra.is_empty() {
        return Err(usage(anyhow!("--run DIR (or at least one --table) is required")));
    }
    let found = match &a.run {
        Some(dir) => tables::run_tables(dir)?,
        None => Vec::new(),
    };
    let all = tables::merge(found, extra);
    if a.duckdb_views {
        return crate::error::print(&tables::duckdb_views(&all));
    }
    let mut df = match (&a.file, &a.query) {
        (Some(f), _) => query_file(f, &all)?,
        (None, Some(q)) => query(q, &all)?,
        (None, None) => return Err(usage(anyhow!("give a FILE.sql or --query"))),
    };
    let mut printed = Ok(());
    if a.limit > 0 {
        let shown = rows(&df.head(Some(a.limit)))?;
        printed = crate::error::print(&format_table(&shown, a.limit, df.height()));
    }
    // --out is written even when the reader of stdout has gone
    if let Some(out) = &a.out {
        write_result(out, &mut df)?;
        eprintln!("sql: {} rows -> {}", df.height(), out.display());
    }
    printed
}

/// One value of a result, as both engines' results are compared (numbers by value, whatever
/// their integer or float width).
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i128),
    Float(f64),
    Text(String),
}

impl Cell {
    /// The numeric value of an Int or Float cell.
    pub fn number(&self) -> Option<f64> {
        match self {
            Cell::Int(v) => Some(*v as f64),
            Cell::Float(v) => Some(*v),
            _ => None,
        }
    }
}

/// A query result: column names and rows.
#[derive(Clone, Debug)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Runs one SQL statement over `tables` with polars SQL.
pub fn query(sql: &str, tables: &[Table]) -> Result<pl::DataFrame> {
    let ctx = SQLContext::new();
    for t in tables {
        ctx.register(&t.name, scan(t)?);
    }
    let text = sql.trim().trim_end_matches(';');
    let mut ctx = ctx;
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let lf = ctx.execute(text).with_context(|| format!("polars SQL (tables: {})", names.join(", ")))?;
    lf.collect().with_context(|| format!("running the query (tables: {})", names.join(", ")))
}

/// Runs the SQL file `path` over `tables`.
pub fn query_file(path: &Path, tables: &[Table]) -> Result<pl::DataFrame> {
    let sql = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    query(&sql, tables).with_context(|| format!("{}", path.display()))
}

fn cell(v: pl::AnyValue<'_>) -> Cell {
    use pl::AnyValue as A;
    match v {
        A::Null => Cell::Null,
        A::Boolean(b) => Cell::Int(b as i128),
        A::UInt8(x) => Cell::Int(x.into()),
        A::UInt16(x) => Cell::Int(x.into()),
        A::UInt32(x) => Cell::Int(x.into()),
        A::UInt64(x) => Cell::Int(x.into()),
        A::Int8(x) => Cell::Int(x.into()),
        A::Int16(x) => Cell::Int(x.into()),
        A::Int32(x) => Cell::Int(x.into()),
        A::Int64(x) => Cell::Int(x.into()),
        A::Int128(x) => Cell::Int(x),
        A::Float32(x) => Cell::Float(x.into()),
        A::Float64(x) => Cell::Float(x),
        A::String(s) => Cell::Text(s.to_string()),
        A::StringOwned(s) => Cell::Text(s.to_string()),
        A::List(s) => {
            let items: Vec<String> = s.iter().map(|v| render(&cell(v))).collect();
            Cell::Text(format!("[{}]", items.join(", ")))
        }
        other => Cell::Text(format!("{other:?}")),
    }
}

/// Every value of a data frame.
pub fn rows(df: &pl::DataFrame) -> Result<Rows> {
    let columns: Vec<String> = df.columns().iter().map(|c| c.name().to_string()).collect();
    let mut rows = vec![Vec::with_capacity(columns.len()); df.height()];
    for col in df.columns() {
        for (i, row) in rows.iter_mut().enumerate() {
            row.push(cell(col.get(i).with_context(|| format!("reading column {}", col.name()))?));
        }
    }
    Ok(Rows { columns, rows })
}

/// A float for people: 6 significant digits, scientific outside [1e-4, 1e9).
pub fn human_float(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-4..9).contains(&mag) {
        return format!("{v:.4e}");
    }
    let s = format!("{v:.*}", (5 - mag).max(0) as usize);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn render(c: &Cell) -> String {
    match c {
        Cell::Null => "NULL".into(),
        Cell::Int(v) => v.to_string(),
        Cell::Float(v) => human_float(*v),
        Cell::Text(s) => s.clone(),
    }
}

/// An aligned text table (numbers right-aligned) of at most `limit` rows of `r`, then a line
/// counting the `total` rows of the result (`r` may hold only its first rows).
pub fn format_table(r: &Rows, limit: usize, total: usize) -> String {
    let shown = &r.rows[..r.rows.len().min(limit)];
    let text: Vec<Vec<String>> = shown.iter().map(|row| row.iter().map(render).collect()).collect();
    let mut widths: Vec<usize> = r.columns.iter().map(|c| c.chars().count()).collect();
    for row in &text {
        for (w, s) in widths.iter_mut().zip(row) {
            *w = (*w).max(s.chars().count());
        }
    }
    let numeric: Vec<bool> =
        (0..r.columns.len()).map(|j| shown.iter().any(|row| matches!(row[j], Cell::Int(_) | Cell::Float(_)))).collect();
    let mut out = String::new();
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(
                |(j, s)| if numeric[j] { format!("{s:>w$}", w = widths[j]) } else { format!("{s:<w$}", w = widths[j]) },
            )
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(r.columns.clone()));
    let _ = writeln!(out, "{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in text {
        let _ = writeln!(out, "{}", line(row));
    }
    let n = total.max(shown.len());
    if n > shown.len() {
        let _ = writeln!(out, "({n} rows, {} shown; --limit or --out for all)", shown.len());
    } else {
        let _ = writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" });
    }
    out
}

fn csv_field(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Int(v) => v.to_string(),
        Cell::Float(v) => format!("{v}"),
        Cell::Text(s) if s.contains([',', '"', '\n', '\r']) => format!("\"{}\"", s.replace('"', "\"\"")),
        Cell::Text(s) => s.clone(),
    }
}

/// CSV with a header; floats at full precision, NULL as an empty field.
pub fn to_csv(r: &Rows) -> String {
    let mut out = String::new();
    let header: Vec<Cell> = r.columns.iter().map(|c| Cell::Text(c.clone())).collect();
    for row in std::iter::once(&header).chain(&r.rows) {
        let fields: Vec<String> = row.iter().map(csv_field).collect();
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

/// Writes the result to `path` (`.parquet` or `.csv`) under a temporary name, then renames it.
pub fn write_result(path: &Path, df: &mut pl::DataFrame) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mut f = AtomicFile::create(path)?;
    match ext.as_str() {
        "parquet" => {
            // Snappy like every other output of the pipeline (readers without zstd read it too).
            pl::ParquetWriter::new(&mut f)
                .with_compression(pl::ParquetCompression::Snappy)
                .finish(df)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        "csv" => f.write_all(to_csv(&rows(df)?).as_bytes()).with_context(|| format!("writing {}", path.display()))?,
        _ => bail!("--out {}: the file name must end in .parquet or .csv", path.display()),
    }
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tables_and_csv() {
        let r = Rows {
            columns: vec!["task".into(), "auc".into(), "n".into()],
            rows: vec![
                vec![Cell::Text("ctr".into()), Cell::Float(0.7253470738), Cell::Int(1000000)],
                vec![Cell::Text("a,\"b\"".into()), Cell::Null, Cell::Int(7)],
            ],
        };
        let t = format_table(&r, 10, 2);
        assert_eq!(
            t,
            "task        auc        n\n-----  --------  -------\nctr    0.725347  1000000\na,\"b\"      NULL        7\n(2 rows)\n"
        );
        assert!(format_table(&r, 1, 2).ends_with("(2 rows, 1 shown; --limit or --out for all)\n"));
        assert_eq!(to_csv(&r), "task,auc,n\nctr,0.7253470738,1000000\n\"a,\"\"b\"\"\",,7\n");
        assert_eq!(human_float(0.0001234567), "0.000123457");
        assert_eq!(human_float(2.5e-7), "2.5000e-7");
        assert_eq!(human_float(1500.0), "1500");
        assert_eq!(Cell::Int(3).number(), Some(3.0));
    }
}
