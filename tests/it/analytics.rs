//! Analytics over a small generated run directory laid out like `data/demo` (split/, model*/,
//! predictions*/, metrics*/ for esmm with two seeds, naive_cvr and esmm_ns):
//! - every `sql/*.sql` gives the same rows in polars SQL (our `esmm sql` path) and in DuckDB
//!   (Python, over the views `esmm sql --duckdb-views` prints);
//! - `esmm report` writes decodable, non-blank PNGs that report.md references, and the
//!   paper-style table with mean ± std over the two esmm seeds;
//! - the `esmm sql` command line: table output, CSV and Parquet files, usage errors.

use crate::common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use esmm::analytics::sql::{self, Cell};
use esmm::analytics::tables;
use esmm::config::{GenerateConfig, IngestConfig, ModelConfig, SplitConfig, TrainConfig};
use esmm::model::ModelKind;
use esmm::schema::Split;
use esmm::stages::{evaluate, predict, report, train};

/// (directory suffix, kind, run_id, seed) of the runs in the fixture.
const RUNS: [(&str, ModelKind, &str, u64); 4] = [
    ("", ModelKind::Esmm, "t-esmm", 1),
    ("_seed2", ModelKind::Esmm, "t-esmm-2", 2),
    ("_naive", ModelKind::NaiveCvr, "t-naive", 1),
    ("_ns", ModelKind::EsmmNs, "t-ns", 1),
];

/// Builds the run directory once per test binary.
fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = temp_dir("analytics");
        let world = GenerateConfig {
            train_rows: 8_000,
            test_rows: 3_000,
            users: 300,
            items: 1_000,
            history_mean: 30.0,
            ctr: 0.1,
            cvr: 0.2,
            ..Default::default()
        };
        generate(&root, world);
        // 2^14 embedding rows: the four models' checkpoints stay a few MB (2^20 would be ~1.5 GB).
        let ingest = IngestConfig { hash_buckets: 1 << 14, ..Default::default() };
        ingest_and_split_with(&root, SplitConfig { row_group_rows: 2048, ..Default::default() }, ingest);
        let data = root.join("split");
        for (suffix, kind, run_id, seed) in RUNS {
            let model_dir = root.join(format!("model{suffix}"));
            let preds = root.join(format!("predictions{suffix}/test.parquet"));
            let model = ModelConfig { kind, seed, ..Default::default() };
            let params =
                TrainConfig { epochs: 2, batch_size: 256, early_stopping_patience: 0, seed, ..Default::default() };
            train::run(&train::TrainStage { force: false, ..train_stage(&data, &model_dir, model, params) }).unwrap();
            predict::run(&predict::PredictStage {
                batch_size: 1024,
                force: false,
                ..predict_stage(&model_dir, &data, Split::Test, &preds)
            })
            .unwrap();
            let model_name = serde_json::to_value(kind).unwrap().as_str().unwrap().to_string();
            evaluate::run(&evaluate::EvaluateStage {
                truth: Some(root.join("raw/truth_test.csv")),
                run_id: run_id.into(),
                model_name,
                force: false,
                ..evaluate_stage(&preds, &root.join(format!("metrics{suffix}")))
            })
            .unwrap();
        }
        root
    })
}

fn sql_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

fn json_cell(v: &serde_json::Value) -> Cell {
    match v {
        serde_json::Value::Null => Cell::Null,
        serde_json::Value::Bool(b) => Cell::Int(*b as i128),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Cell::Int(n.as_i128().unwrap()),
        serde_json::Value::Number(n) => Cell::Float(n.as_f64().unwrap()),
        serde_json::Value::String(s) if s == "NaN" => Cell::Float(f64::NAN),
        serde_json::Value::String(s) => Cell::Text(s.clone()),
        other => panic!("unexpected DuckDB value {other}"),
    }
}

/// Numbers agree within 1e-9 relative (1e-12 absolute near zero), whatever their width; strings
/// and NULLs exactly.
fn same(a: &Cell, b: &Cell) -> bool {
    match (a.number(), b.number()) {
        (Some(x), Some(y)) if x.is_nan() || y.is_nan() => x.is_nan() && y.is_nan(),
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || (x - y).abs() <= 1e-12,
        _ => a == b,
    }
}

#[test]
fn every_sql_file_gives_the_same_rows_in_polars_and_duckdb() {
    let dir = run_dir();
    let tabs = tables::run_tables(dir).unwrap();
    let names: Vec<&str> = tabs.iter().map(|t| t.name.as_str()).collect();
    for want in ["train", "valid", "test", "test_common", "predictions", "predictions_naive", "epochs_ns", "metrics"] {
        assert!(names.contains(&want), "table {want} missing from {names:?}");
    }
    let metrics = tabs.iter().find(|t| t.name == "metrics").unwrap();
    assert_eq!(metrics.files.len(), RUNS.len(), "one metrics file per run, stacked");

    let views = dir.join("views.sql");
    std::fs::write(&views, tables::duckdb_views(&tabs)).unwrap();
    let files = sql_files();
    assert!(files.len() >= 6, "{files:?}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sql_duckdb.py");
    let out = Command::new(python()).arg(script).arg(&views).args(&files).output().expect("running sql_duckdb.py");
    assert!(out.status.success(), "sql_duckdb.py: {}", String::from_utf8_lossy(&out.stderr));
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let ours = sql::rows(&sql::query_file(file, &tabs).unwrap()).unwrap();
        let theirs = &duck[&name];
        let columns: Vec<String> =
            theirs["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        assert_eq!(ours.columns, columns, "{name}: column names");
        let rows = theirs["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{name}: no rows");
        assert_eq!(ours.rows.len(), rows.len(), "{name}: row count");
        for (i, (a, b)) in ours.rows.iter().zip(rows).enumerate() {
            let b: Vec<Cell> = b.as_array().unwrap().iter().map(json_cell).collect();
            for (j, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(same(x, y), "{name} row {i} column {}: polars {x:?}, DuckDB {y:?}", columns[j]);
            }
        }
    }
}

#[test]
fn sql_results_are_right() {
    let dir = run_dir();
    let tabs = tables::run_tables(dir).unwrap();
    let q = |f: &str| {
        sql::rows(&sql::query_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sql").join(f), &tabs).unwrap()).unwrap()
    };
    // Calibration: ten bins per task covering every scored row; CVR scores clicked rows only.
    let cal = q("calibration.sql");
    let rows_of = |task: &str| -> i128 {
        cal.rows
            .iter()
            .filter(|r| r[0] == Cell::Text(task.into()))
            .map(|r| match r[2] {
                Cell::Int(n) => n,
                _ => 0,
            })
            .sum()
    };
    let test = read_rows(&dir.join("split/test/samples.parquet"));
    let clicks = test.iter().filter(|r| u(r, "click") == 1).count() as i128;
    assert_eq!((rows_of("ctr"), rows_of("cvr"), rows_of("ctcvr")), (test.len() as i128, clicks, test.len() as i128));
    assert_eq!(cal.rows.len(), 30);
    // Mean predictions rise with the decile.
    let means: Vec<f64> =
        cal.rows.iter().filter(|r| r[0] == Cell::Text("ctr".into())).map(|r| r[3].number().unwrap()).collect();
    assert!(means.windows(2).all(|w| w[0] <= w[1]), "{means:?}");
    // Feature coverage: 23 fields per split; the scenario field is always present.
    let cov = q("feature_coverage.sql");
    assert_eq!(cov.rows.len(), 23 * 3);
    let scen = cov.rows.iter().find(|r| r[0] == Cell::Text("test".into()) && r[1] == Cell::Text("301".into())).unwrap();
    assert_eq!((scen[3].clone(), scen[4].number()), (Cell::Int(test.len() as i128), Some(1.0)));
    // Table 2: four model kinds, both esmm seeds counted.
    let t2 = q("table2.sql");
    let all_ctr =
        t2.rows.iter().find(|r| r[1] == Cell::Text("all".into()) && r[2] == Cell::Text("ctr".into())).unwrap();
    assert_eq!(all_ctr[3], Cell::Int(4), "model runs: {all_ctr:?}");
}

/// A minimal PNG decoder (RGB 8-bit, all five filter types), independent of the encoder.
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let (mut at, mut w, mut h, mut idat) = (8, 0usize, 0usize, Vec::new());
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&bytes[at + 4..at + 8 + len]), "CRC");
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(&data[8..10], &[8, 2], "8-bit RGB");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
    let stride = w * 3;
    assert_eq!(raw.len(), (stride + 1) * h);
    let mut img = vec![0u8; stride * h];
    for y in 0..h {
        let f = raw[y * (stride + 1)];
        for x in 0..stride {
            let v = raw[y * (stride + 1) + 1 + x];
            let a = if x >= 3 { img[y * stride + x - 3] as i32 } else { 0 };
            let b = if y > 0 { img[(y - 1) * stride + x] as i32 } else { 0 };
            let c = if x >= 3 && y > 0 { img[(y - 1) * stride + x - 3] as i32 } else { 0 };
            let pred = match f {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                _ => panic!("filter {f}"),
            };
            img[y * stride + x] = (v as i32 + pred) as u8;
        }
    }
    (w, h, img.chunks(3).map(|p| [p[0], p[1], p[2]]).collect())
}

#[test]
fn report_draws_figures_and_the_paper_table() {
    let dir = run_dir();
    let out = dir.join("report");
    let stage = |force| report::run(&report::ReportStage { run: dir.into(), out: out.clone(), threads: 2, force });
    let first = stage(false).unwrap();
    assert!(!first.up_to_date);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let mut pngs: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    pngs.sort();
    let want: BTreeSet<&str> = [
        "training.png",
        "training_naive.png",
        "training_ns.png",
        "training_seed2.png",
        "roc_ctr.png",
        "roc_cvr.png",
        "roc_ctcvr.png",
        "reliability_ctr.png",
        "reliability_cvr.png",
        "reliability_ctcvr.png",
    ]
    .into();
    assert_eq!(pngs.iter().map(String::as_str).collect::<BTreeSet<_>>(), want);
    for name in &pngs {
        assert!(md.contains(&format!("]({name})")), "report.md does not show {name}");
        let (w, h, px) = decode_png(&std::fs::read(out.join(name)).unwrap());
        assert!(w >= 400 && h >= 300, "{name}: {w}x{h}");
        let colours: BTreeSet<[u8; 3]> = px.iter().copied().collect();
        assert!(colours.len() >= 4, "{name}: only {} colours", colours.len());
        // The plot area (the middle of the image) is drawn on, in a series colour.
        let inner = |x: usize, y: usize| x > w / 6 && x < w * 5 / 6 && y > h / 6 && y < h * 5 / 6;
        let inked = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| inner(x, y) && px[y * w + x] != [255; 3])
            .count();
        assert!(inked > w * h / 200, "{name}: {inked} drawn pixels in the plot area");
        let blue = px.iter().filter(|p| **p == [31, 119, 180]).count();
        assert!(blue > 50, "{name}: first series colour drawn {blue} times");
    }
    // The paper-style table: every kind, the oracle, and mean ± std over the two esmm seeds.
    for line in ["| naive_cvr | 1 |", "| esmm_ns | 1 |", "| esmm | 2 |", "| oracle |"] {
        assert!(md.contains(line), "no `{line}` in report.md:\n{md}");
    }
    let esmm = md.lines().find(|l| l.starts_with("| esmm | 2 |")).unwrap();
    assert_eq!(esmm.matches('±').count(), 5, "{esmm}");
    assert!(md.contains("CVR AUC (entire space)") && md.contains("## Data (`sql/profile.sql`)"), "{md}");
    assert!(md.contains("CVR AUC (entire space, counterfactual labels)"), "{md}");
    // Group AUC: per task and grouping, mean ± std over the esmm seeds, and its coverage.
    let groups = &md[md.find("## Group AUC").expect("no group AUC section")..];
    assert!(groups.contains("| model | runs | CTR user | CTR session | CVR (clicked) user |"), "{groups}");
    let esmm = groups.lines().find(|l| l.starts_with("| esmm | 2 |")).unwrap();
    assert_eq!(esmm.matches('±').count(), 6, "{esmm}");
    assert!(groups.lines().any(|l| l.starts_with("| oracle | – |")), "{groups}");
    let ctr = groups.lines().find(|l| l.starts_with("| CTR | ")).expect("no coverage row");
    assert_eq!(ctr.matches(" %)").count(), 2, "{ctr}");

    // Unchanged inputs: skipped; a stale figure goes away on a rebuild.
    assert!(stage(false).unwrap().up_to_date);
    std::fs::write(out.join("old.png"), b"x").unwrap();
    assert!(!stage(true).unwrap().up_to_date);
    assert!(!out.join("old.png").exists());
    assert!(out.join("_manifest.json").exists());
}

#[test]
fn sql_command_line() {
    let dir = run_dir();
    let bin = env!("CARGO_BIN_EXE_esmm");
    let sql_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let csv = dir.join("cli/profile.csv");
    let out = Command::new(bin)
        .arg("sql")
        .arg(sql_dir.join("profile.sql"))
        .arg("--run")
        .arg(dir)
        .arg("--out")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("split") && stdout.contains("(3 rows)"), "{stdout}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "split,rows,clicks,buys,ctr,cvr");
    assert_eq!(lines.len(), 4);
    let test_rows = read_rows(&dir.join("split/test/samples.parquet")).len();
    assert!(lines[1].starts_with(&format!("test,{test_rows},")), "{}", lines[1]);

    let pq = dir.join("cli/auc.parquet");
    let q = "SELECT model, run_id, task, value FROM metrics WHERE metric = 'auc' AND slice = 'all' ORDER BY model, run_id, task";
    let out = Command::new(bin)
        .args(["sql", "--query", q, "--limit", "2", "--run"])
        .arg(dir)
        .arg("--out")
        .arg(&pq)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 shown"));
    let file = std::fs::File::open(&pq).unwrap();
    let meta = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert!(meta.metadata().file_metadata().num_rows() >= 12, "4 runs x 3 tasks at least");
    let names: Vec<String> = meta.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["model", "run_id", "task", "value"]);

    let out = Command::new(bin).args(["sql", "--duckdb-views", "--run"]).arg(dir).output().unwrap();
    let views = String::from_utf8_lossy(&out.stdout);
    assert!(views.contains("CREATE OR REPLACE VIEW metrics AS SELECT * FROM read_parquet(["), "{views}");

    // A missing table is a failure naming the registered tables; no run directory is a usage error.
    let out = Command::new(bin).args(["sql", "--query", "SELECT * FROM nosuch", "--run"]).arg(dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("predictions_naive"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin).args(["sql", "--query", "SELECT 1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin)
        .arg("sql")
        .arg(sql_dir.join("profile.sql"))
        .args(["--run", "/nonexistent/run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The bash lines of README.md's "Querying the outputs" block under `# DuckDB:`.
fn readme_duckdb_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let lines: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("# DuckDB:"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert!(lines.iter().any(|l| l.contains("| duckdb")), "README: no DuckDB CLI line after `# DuckDB:`: {lines:?}");
    lines
}

/// The fields of one CSV line as the DuckDB CLI writes them (`"` quotes, `""` inside quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// A DuckDB CLI CSV field against our cell: NULL, the same text, or a number that is [`same`].
fn same_as_csv(ours: &Cell, theirs: &str) -> bool {
    match ours {
        Cell::Null => theirs == "NULL",
        Cell::Text(s) => s == theirs,
        _ => theirs.parse::<f64>().is_ok_and(|x| same(ours, &Cell::Float(x))),
    }
}

/// The README's DuckDB lines run as written, by bash with the real DuckDB CLI (the version of
/// tests/requirements-duckdb-cli.txt) and esmm on PATH, in a directory where `data/demo` is the
/// fixture's run directory and `sql/` the repository's; then every sql/ file piped the same way
/// into `duckdb -csv` gives the rows of `esmm sql` (polars), row for row.
#[test]
fn the_readme_duckdb_cli_lines_give_the_rows_of_esmm_sql() {
    let Some(venv) = tool_venv("duckdb-cli", "the_readme_duckdb_cli_lines_give_the_rows_of_esmm_sql") else { return };
    let dir = run_dir();
    let work = temp_dir("readme-duckdb");
    let bin = work.join("bin");
    for d in [work.join("data"), bin.clone()] {
        std::fs::create_dir_all(d).unwrap();
    }
    let links = [
        (dir.to_path_buf(), work.join("data/demo")),
        (Path::new(env!("CARGO_MANIFEST_DIR")).join("sql"), work.join("sql")),
        (PathBuf::from(env!("CARGO_BIN_EXE_esmm")), bin.join("esmm")),
        (venv.join("bin/duckdb"), bin.join("duckdb")),
    ];
    for (target, link) in links {
        std::os::unix::fs::symlink(target, link).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let bash = |script: &str| {
        let o = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(&work)
            .env("PATH", &path)
            .output();
        let o = o.expect("running bash");
        assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };

    let lines = readme_duckdb_lines();
    let shown = bash(&lines.join("\n"));
    let tabs = tables::run_tables(dir).unwrap();
    let query = lines.iter().find_map(|l| l.split_whitespace().find(|w| w.starts_with("sql/"))).expect("a sql/ file");
    let ours = sql::rows(&sql::query_file(&work.join(query), &tabs).unwrap()).unwrap();
    for column in &ours.columns {
        assert!(shown.contains(column.as_str()), "{query}: no column {column} in DuckDB's table:\n{shown}");
    }
    // DuckDB's table shows 40 rows of a longer result and says how many there are.
    assert!(ours.rows.len() <= 40 || shown.contains(&format!("{} rows", ours.rows.len())), "{shown}");

    assert!(work.join("views.sql").is_file(), "the README's first line writes views.sql");
    for file in sql_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let csv = bash(&format!("cat views.sql sql/{name} | duckdb -csv"));
        let mut csv_lines = csv.lines();
        let ours = sql::rows(&sql::query_file(&file, &tabs).unwrap()).unwrap();
        assert_eq!(csv_fields(csv_lines.next().unwrap_or_default()), ours.columns, "{name}: columns");
        let theirs: Vec<Vec<String>> = csv_lines.map(csv_fields).collect();
        assert!(!theirs.is_empty(), "{name}: no rows");
        assert_eq!(ours.rows.len(), theirs.len(), "{name}: row count");
        for (i, (a, b)) in ours.rows.iter().zip(&theirs).enumerate() {
            assert_eq!(a.len(), b.len(), "{name} row {i}");
            for (j, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(same_as_csv(x, y), "{name} row {i} column {}: polars {x:?}, DuckDB CLI {y:?}", ours.columns[j]);
            }
        }
    }
}
