//! Shared helpers for the integration tests: temp dirs, raw fixtures, the `esmm` runner, the
//! stage settings every test starts from, reading Parquet back.
#![allow(dead_code)]

pub mod mutate;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, UInt32Type, UInt64Type, UInt8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

static N: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, `esmm-it-<pid>-<tag>-<n>`. Directories of test
/// processes that are no longer running are removed first, so repeated runs do not pile up.
pub fn temp_dir(tag: &str) -> PathBuf {
    remove_stale_dirs();
    let dir =
        std::env::temp_dir().join(format!("esmm-it-{}-{tag}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn remove_stale_dirs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("esmm-it-").and_then(|r| r.split('-').next()) else { continue };
            let alive = Path::new("/proc").join(pid).exists();
            if !alive && pid.parse::<u32>().is_ok() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// `field\x02id\x03value`
pub fn feat(field: &str, id: u64, value: &str) -> String {
    format!("{field}\x02{id}\x03{value}")
}

pub fn list(features: &[String]) -> String {
    features.join("\x01")
}

/// One column value of a row read back from Parquet.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    F32(f32),
    /// Nulls read as NaN.
    F64(f64),
    Str(String),
    IdList(Vec<u32>),
    WeightList(Vec<f32>),
}

/// Every row of a Parquet file as column name → value (scalars as u64, lists of u32 / f32;
/// both list widths are accepted).
pub fn read_rows(path: &Path) -> Vec<BTreeMap<String, Value>> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| BTreeMap::new()));
        for (f, col) in schema.fields().iter().zip(batch.columns()) {
            for r in 0..batch.num_rows() {
                let v = match col.data_type() {
                    DataType::UInt64 => Value::U64(col.as_primitive::<UInt64Type>().value(r)),
                    DataType::UInt32 => Value::U64(col.as_primitive::<UInt32Type>().value(r) as u64),
                    DataType::UInt8 => Value::U64(col.as_primitive::<UInt8Type>().value(r) as u64),
                    DataType::Float32 => Value::F32(col.as_primitive::<Float32Type>().value(r)),
                    DataType::Float64 if col.is_null(r) => Value::F64(f64::NAN),
                    DataType::Float64 => Value::F64(col.as_primitive::<Float64Type>().value(r)),
                    DataType::Utf8 => Value::Str(col.as_string::<i32>().value(r).to_string()),
                    DataType::List(_) | DataType::LargeList(_) => {
                        let item = match col.data_type() {
                            DataType::List(_) => col.as_list::<i32>().value(r),
                            _ => col.as_list::<i64>().value(r),
                        };
                        match item.data_type() {
                            DataType::UInt32 => Value::IdList(item.as_primitive::<UInt32Type>().values().to_vec()),
                            DataType::Float32 => {
                                Value::WeightList(item.as_primitive::<Float32Type>().values().to_vec())
                            }
                            t => panic!("unexpected list item type {t}"),
                        }
                    }
                    t => panic!("unexpected column type {t} for {}", f.name()),
                };
                rows[start + r].insert(f.name().clone(), v);
            }
        }
    }
    rows
}

pub fn u(row: &BTreeMap<String, Value>, col: &str) -> u64 {
    match row.get(col) {
        Some(Value::U64(v)) => *v,
        other => panic!("{col}: {other:?}"),
    }
}

pub fn f(row: &BTreeMap<String, Value>, col: &str) -> f64 {
    match row.get(col) {
        Some(Value::F64(v)) => *v,
        Some(Value::F32(v)) => *v as f64,
        other => panic!("{col}: {other:?}"),
    }
}

pub fn ids(row: &BTreeMap<String, Value>, col: &str) -> Vec<u32> {
    match row.get(col) {
        Some(Value::IdList(v)) => v.clone(),
        other => panic!("{col}: {other:?}"),
    }
}

pub fn weights(row: &BTreeMap<String, Value>, col: &str) -> Vec<f32> {
    match row.get(col) {
        Some(Value::WeightList(v)) => v.clone(),
        other => panic!("{col}: {other:?}"),
    }
}

pub fn manifest(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("_manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ESMM_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(venv.exists(), "no Python with pyarrow/duckdb: run `make test` (it creates .venv) or set ESMM_PYTHON");
    venv
}

/// The venv of a pinned tool that a test runs for real (`airflow`, `duckdb-cli`), made once from
/// `tests/requirements-<name>.txt` by `tests/tool_venv.sh` and reused: `$ESMM_<NAME>_VENV` (the
/// Makefile sets it), else `~/.cache/esmm/<name>-venv`. `None` only when PyPI is unreachable: the
/// caller then skips, and the notice goes to the terminal itself (past the test harness's output
/// capture), so a skip is never silent. Any other install failure fails the test.
pub fn tool_venv(name: &str, test: &str) -> Option<PathBuf> {
    let var = format!("ESMM_{}_VENV", name.to_uppercase().replace('-', "_"));
    let venv = match std::env::var_os(&var) {
        Some(v) => PathBuf::from(v),
        None => Path::new(&std::env::var_os("HOME").expect("HOME is not set")).join(format!(".cache/esmm/{name}-venv")),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join("tests/tool_venv.sh"))
        .arg(&venv)
        .arg(root.join(format!("tests/requirements-{name}.txt")))
        .status()
        .expect("running tests/tool_venv.sh");
    match status.code() {
        Some(0) => Some(venv),
        Some(3) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: PyPI is unreachable, so {name} is not installed");
            None
        }
        _ => panic!("tests/tool_venv.sh could not install {name} into {} ({status}; see above)", venv.display()),
    }
}

/// Runs the esmm binary with `args` in `cwd` and waits for it.
pub fn esmm(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esmm")).args(args).current_dir(cwd).output().expect("running esmm")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit status (-1 when killed by a signal) and stderr of a finished run.
pub fn code_and_stderr(o: &Output) -> (i32, String) {
    (o.status.code().unwrap_or(-1), stderr(o))
}

// The settings each stage starts from in the tests: 2 threads, forced, the library's defaults
// otherwise. A test changes what it needs with `Stage { field, ..xxx_stage(…) }`.

pub fn generate_stage(out: &Path, params: esmm::config::GenerateConfig) -> esmm::stages::generate::GenerateStage {
    esmm::stages::generate::GenerateStage { out: out.into(), params, threads: 2, force: false }
}

pub fn ingest_stage(raw: &Path, out: &Path, params: esmm::config::IngestConfig) -> esmm::stages::ingest::IngestStage {
    esmm::stages::ingest::IngestStage {
        raw: raw.into(),
        split_dirs: None,
        out: out.into(),
        params,
        threads: 2,
        force: true,
    }
}

pub fn split_stage(input: &Path, out: &Path, params: esmm::config::SplitConfig) -> esmm::stages::split::SplitStage {
    esmm::stages::split::SplitStage { input: input.into(), out: out.into(), params, threads: 2, force: false }
}

pub fn train_stage(
    data: &Path,
    out: &Path,
    model: esmm::config::ModelConfig,
    train: esmm::config::TrainConfig,
) -> esmm::stages::train::TrainStage {
    esmm::stages::train::TrainStage {
        data: data.into(),
        out: out.into(),
        model,
        train,
        threads: 2,
        force: true,
        resume: false,
    }
}

/// Batches of 1000.
pub fn predict_stage(
    model: &Path,
    data: &Path,
    split: esmm::schema::Split,
    out: &Path,
) -> esmm::stages::predict::PredictStage {
    esmm::stages::predict::PredictStage {
        model: model.into(),
        data: data.into(),
        split,
        out: out.into(),
        batch_size: 1000,
        threads: 2,
        force: true,
    }
}

/// Run id `t`, model `esmm`, no truth file, suspect results reported but not failed.
pub fn evaluate_stage(predictions: &Path, out: &Path) -> esmm::stages::evaluate::EvaluateStage {
    esmm::stages::evaluate::EvaluateStage {
        predictions: predictions.into(),
        out: out.into(),
        truth: None,
        run_id: "t".into(),
        model_name: "esmm".into(),
        fail_on_suspect: false,
        threads: 2,
        force: true,
    }
}

/// Trains `model` / `train` on the split directory `data` into `out` (2 threads, forced).
pub fn train_with(
    data: &Path,
    out: &Path,
    model: esmm::config::ModelConfig,
    train: esmm::config::TrainConfig,
    resume: bool,
) -> esmm::stages::StageReport {
    let stage = esmm::stages::train::TrainStage { resume, ..train_stage(data, out, model, train) };
    esmm::stages::train::run(&stage).unwrap()
}

/// Predicts `split` of `data` with the model directory `model` into `out` (batches of 1000,
/// 2 threads, forced).
pub fn predict_split(model: &Path, data: &Path, split: esmm::schema::Split, out: &Path) {
    esmm::stages::predict::run(&predict_stage(model, data, split, out)).unwrap();
}

/// generate → `root/raw` (the stage is skipped when already there).
pub fn generate(root: &Path, params: esmm::config::GenerateConfig) -> esmm::stages::StageReport {
    esmm::stages::generate::run(&generate_stage(&root.join("raw"), params)).unwrap()
}

/// `root/raw` → ingest (`root/ingest`) → split (`root/split`); returns both reports.
pub fn ingest_and_split(
    root: &Path,
    params: esmm::config::SplitConfig,
) -> (esmm::stages::StageReport, esmm::stages::StageReport) {
    ingest_and_split_with(root, params, Default::default())
}

/// The small world the training tests learn on (30 k train rows, rich labels).
pub fn small_world() -> esmm::config::GenerateConfig {
    esmm::config::GenerateConfig {
        train_rows: 30_000,
        test_rows: 8_000,
        users: 400,
        items: 1_500,
        history_mean: 40.0,
        ctr: 0.1,
        cvr: 0.1,
        ..Default::default()
    }
}

/// Ingest and split for training tests: 2^16 buckets (a small world has ~10 k ids), so each
/// checkpoint stays ~10 MB instead of 300 MB. Returns the split directory.
pub fn ingest_and_split_small(root: &Path) -> PathBuf {
    let ingest = esmm::config::IngestConfig { hash_buckets: 1 << 16, ..Default::default() };
    ingest_and_split_with(root, esmm::config::SplitConfig { row_group_rows: 4096, ..Default::default() }, ingest);
    root.join("split")
}

/// [`ingest_and_split`] with explicit ingest settings (e.g. fewer hash buckets, so the model
/// files of a training test stay small). Neither stage is forced.
pub fn ingest_and_split_with(
    root: &Path,
    params: esmm::config::SplitConfig,
    ingest_params: esmm::config::IngestConfig,
) -> (esmm::stages::StageReport, esmm::stages::StageReport) {
    use esmm::stages::{ingest, split};
    let ingest_stage =
        ingest::IngestStage { force: false, ..ingest_stage(&root.join("raw"), &root.join("ingest"), ingest_params) };
    let ing = ingest::run(&ingest_stage).unwrap();
    let spl = split::run(&split_stage(&root.join("ingest"), &root.join("split"), params)).unwrap();
    (ing, spl)
}

/// Checkpoints hold the same weights and optimizer state (headers differ in timings only).
pub fn same_weights(a: &Path, b: &Path) -> bool {
    let load = |p: &Path| esmm::model::checkpoint::load::<serde_json::Value>(p).unwrap().0;
    let (a, b) = (load(a), load(b));
    let members = |m: &esmm::model::Model| -> Vec<(Vec<Vec<f32>>, Vec<Vec<f32>>)> {
        m.members().map(|(t, tw)| (t.iter().map(|t| t.raw().to_vec()).collect(), tw.params())).collect()
    };
    a.tables.iter().zip(&b.tables).all(|(x, y)| x.raw() == y.raw() && x.step == y.step)
        && members(&a) == members(&b)
        && a.towers.adam_state().1 == b.towers.adam_state().1
        && a.towers.adam_state().2 == b.towers.adam_state().2
}

/// One `all`-slice metric of `model` from the metrics.parquet of evaluate output `dir` (whose
/// summary.md must be there too).
pub fn metric(dir: &Path, model: &str, task: &str, name: &str) -> f64 {
    let text = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(!text.is_empty());
    let rows = read_metrics(&dir.join("metrics.parquet"));
    rows.iter()
        .find(|r| r.0 == model && r.1 == task && r.2 == name && r.4 == "all")
        .map(|r| r.3)
        .unwrap_or_else(|| panic!("no {model} {task} {name}"))
}

/// (model, task, metric, value, slice) rows of a metrics file.
pub fn read_metrics(path: &Path) -> Vec<(String, String, String, f64, String)> {
    use arrow::array::{Array, AsArray, Float64Array};
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (m, t, k, sl) = (s("model"), s("task"), s("metric"), s("slice"));
        let v = b.column_by_name("value").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
        for i in 0..b.num_rows() {
            out.push((
                m.value(i).into(),
                t.value(i).into(),
                k.value(i).into(),
                if v.is_null(i) { f64::NAN } else { v.value(i) },
                sl.value(i).into(),
            ));
        }
    }
    out
}
