//! `esmm`: the command-line front end. Parses flags, loads the pipeline config (flags override
//! it), runs one stage, and maps the outcome to an exit status: 0 success, 1 failure, 2 usage or
//! configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use esmm::analytics::{sql, tables};
use esmm::config::{Format, PipelineConfig};
use esmm::model::ModelKind;
use esmm::schema::Split;
use esmm::shard::Shard;
use esmm::stages::run::Stage;
use esmm::stages::{evaluate, export, generate, ingest, predict, report, run, split, train, StageReport};

/// mimalloc keeps freed blocks for reuse: dfdx allocates its activations and gradients every
/// step, and glibc's malloc returned them to the kernel (page faults on every step).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AFTER_HELP: &str = "\
Exit status: 0 success (also when every stage was up to date), 1 failure (bad input under
--strict, I/O error, output locked by another running esmm, ...), 2 usage or configuration
error (unknown flag or config key, invalid value). Logs go to stderr; --log-format json writes
one JSON object per line.

Every stage writes its outputs under temporary names, renames them when complete, and writes
_manifest.json last; a stage whose inputs and config are unchanged is skipped (--force reruns it).";

const SQL_HELP: &str = "\
Run one SQL statement with polars SQL over the Parquet outputs of a run directory DIR (the
directories of pipeline/demo*.yaml) and print the result as a table on stdout.

Tables (missing files are left out; --table NAME=FILE.parquet adds or replaces one):
  train, valid, test                            DIR/split/<split>/samples.parquet
  train_common, valid_common, test_common       DIR/split/<split>/common.parquet
  predictions, predictions_<x>                  DIR/predictions[_<x>]/test.parquet
  epochs, epochs_<x>                            DIR/model[_<x>]/epochs.parquet
  metrics                                       every DIR/metrics*/metrics.parquet, stacked

The queries in sql/ (profile, profile_scenario, feature_coverage, calibration, compare_runs,
table2) use only SQL that polars and DuckDB both run, with the same results. For DuckDB:
  esmm sql --duckdb-views --run data/demo > views.sql
  cat views.sql sql/calibration.sql | duckdb

Examples:
  esmm sql sql/calibration.sql --run data/demo
  esmm sql sql/table2.sql --run data/demo --out table2.csv
  esmm sql --query \"SELECT model, task, value FROM metrics WHERE metric = 'auc'\" --run data/demo";

const REPORT_HELP: &str = "\
Write DIR/report/report.md and its PNG figures from the outputs of a run directory DIR:

  training<x>.png          loss and validation AUC per epoch      (DIR/model*/epochs.parquet)
  roc_{ctr,cvr,ctcvr}.png  ROC curves of every run, with AUC       (DIR/predictions*/test.parquet)
  reliability_*.png        observed rate vs mean prediction, deciles
  report.md                the paper's Table 2 (AUC x 100 of naive_cvr, esmm_ns, esmm and the
                           oracle, mean +- std when a kind has several runs), group AUC per user
                           and per session with its coverage, the data profile
                           (sql/profile.sql), and the figures

Runs are the directories model<x>/, predictions<x>/, metrics<x>/ with the same suffix <x> (none,
_naive, _ns, ...), named after the model kind and run_id in their metrics table. Several seeds of
one kind: copies of a pipeline with their own run_id and model_/predictions_/metrics_ paths.
Skipped when its inputs are unchanged (--force rebuilds).";

#[derive(Parser)]
#[command(name = "esmm", version, about = "ESMM conversion-rate pipeline: raw Ali-CCP CSV → hashed Parquet → splits",
    long_about = "ESMM conversion-rate pipeline (Entire Space Multi-Task Model, SIGIR 2018).\n\n\
    Raw Ali-CCP CSVs (or PaddleRec's preprocessed CSV) are hashed into Parquet, split into\n\
    train/valid/test, and handed to the model stages. `esmm run pipeline/demo.yaml` runs the chain.",
    after_help = AFTER_HELP)]
struct Cli {
    /// Pipeline YAML; its values are defaults that flags override.
    #[arg(long, global = true, value_name = "PIPELINE.yaml")]
    config: Option<PathBuf>,
    /// Worker threads (0 = all cores). Data-stage outputs do not depend on it; a trained model is
    /// reproducible for the same seed and thread count.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Write synthetic raw Ali-CCP files (four CSVs) plus truth_{train,test}.csv from a planted model.
    Generate {
        /// Output directory for the raw files.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Skeleton rows in sample_skeleton_train.csv.
        #[arg(long, value_name = "N")]
        train_rows: Option<u64>,
        /// Skeleton rows in sample_skeleton_test.csv.
        #[arg(long, value_name = "M")]
        test_rows: Option<u64>,
        /// Seed of the planted world and of the rows.
        #[arg(long, value_name = "S")]
        seed: Option<u64>,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Convert raw CSVs into hashed Parquet: OUT/{train,test}/{common,samples}.parquet.
    Ingest {
        /// Raw input directory (the four Ali-CCP files, or PaddleRec's train/ and test/ folders).
        #[arg(long, value_name = "DIR")]
        raw: Option<PathBuf>,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Raw layout.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Fail on the first bad input (file, line, reason) instead of skipping and counting it.
        #[arg(long)]
        strict: bool,
        /// Embedding buckets (bucket 0 is padding).
        #[arg(long, value_name = "N")]
        hash_buckets: Option<u64>,
        /// Ingest only shard I of N (0-based) of the sessions (md5s), into *.part-I-of-N.parquet
        /// files; `split` reads the parts once all N shards finished.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<Shard>,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Materialize OUT/{train,valid,test}/ from an ingest directory (valid carved from train by md5).
    Split {
        /// An ingest output directory.
        #[arg(long = "in", value_name = "DIR")]
        input: Option<PathBuf>,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Share of train sessions (md5s) moved to valid.
        #[arg(long, value_name = "F")]
        valid_fraction: Option<f64>,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Train ESMM (or a baseline) on DATA/train, validating on DATA/valid every epoch.
    Train {
        /// A split output directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Model directory (model.bin, checkpoint.bin, epochs.parquet).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Continue from OUT/checkpoint.bin (same config and data), bit-identically.
        #[arg(long)]
        resume: bool,
        /// Model kind: esmm, naive_cvr or esmm_ns.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<ModelKind>,
        /// Epoch budget (train.epochs).
        #[arg(long, value_name = "N")]
        epochs: Option<usize>,
        /// Rows per step (train.batch_size).
        #[arg(long, value_name = "N")]
        batch_size: Option<usize>,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Write pCTR, pCVR, pCTCVR for every row of a split (input order) to a Parquet file.
    Predict {
        /// A train output directory.
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        /// A split output directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Which split to score.
        #[arg(long, value_parser = parse_split, default_value = "test")]
        split: Split,
        /// The predictions file.
        #[arg(long, value_name = "FILE.parquet")]
        out: Option<PathBuf>,
        /// Score only shard I of N (0-based, contiguous batches) into FILE.part-I-of-N.parquet;
        /// the parts in name order are the unsharded file row for row.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<Shard>,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Write OUT/model.onnx (the model as one ONNX graph: the same pCTR, pCVR, pCTCVR as
    /// predict) and OUT/contract.json (input names, fields, how to hash raw ids) for serving.
    Export {
        /// A train output directory.
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        /// Output directory (model.onnx, contract.json).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The split (or ingest) directory the model was trained on; by default found through
        /// the model's manifest.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Exact metrics of a predictions file (AUC, logloss, calibration per task and scenario; group
    /// AUC per user and per session).
    Evaluate {
        /// Predictions Parquet: columns sample_id, split, click, buy, p_ctr, p_cvr (any castable
        /// types; scenario optional, for slices; user_key and md5 optional, for group AUC).
        /// Default with --config: paths.predictions/test.parquet.
        #[arg(long, value_name = "FILE.parquet")]
        predictions: Option<PathBuf>,
        /// Output directory (metrics.parquet, summary.md).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The generator's truth_<split>.csv: adds the oracle's metrics and the CVR AUC over
        /// the entire space.
        #[arg(long, value_name = "FILE")]
        truth: Option<PathBuf>,
        /// Exit 1 when the summary flags likely leakage (AUC >= 0.99), a collapsed model or a
        /// calibration (mean prediction / observed rate) outside [0.8, 1.25].
        #[arg(long)]
        fail_on_suspect: bool,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Query a run directory's Parquet outputs with SQL (polars SQL); the same files run in DuckDB.
    #[command(long_about = SQL_HELP)]
    Sql {
        /// The query file, e.g. sql/calibration.sql (one statement).
        #[arg(value_name = "FILE.sql", required_unless_present_any = ["query", "duckdb_views"])]
        file: Option<PathBuf>,
        /// The query text instead of a file.
        #[arg(long, value_name = "SQL", conflicts_with = "file")]
        query: Option<String>,
        /// Run directory whose outputs become tables (see above).
        #[arg(long, value_name = "DIR")]
        run: Option<PathBuf>,
        /// Add or replace a table: NAME=FILE.parquet (repeatable).
        #[arg(long = "table", value_name = "NAME=FILE.parquet")]
        tables: Vec<String>,
        /// Also write the whole result to FILE.parquet or FILE.csv (written under a temporary
        /// name, then renamed).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Rows printed on stdout (0 = none).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// Print the tables as DuckDB `CREATE VIEW` statements instead of running a query.
        #[arg(long)]
        duckdb_views: bool,
    },
    /// Write DIR/report/report.md with figures: training curves, ROC curves, reliability diagrams,
    /// the paper's Table 2 (esmm vs naive_cvr vs esmm_ns, mean ± std over runs) and group AUC.
    #[command(long_about = REPORT_HELP)]
    Report {
        /// Run directory (default with --config: the parent of paths.metrics, e.g. data/demo).
        #[arg(long, value_name = "DIR")]
        run: Option<PathBuf>,
        /// Output directory (default DIR/report).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        common: CommonFlags,
    },
    /// Run the stages of a pipeline file in order (generate, ingest, split, train, predict,
    /// evaluate), skipping the up-to-date ones.
    Run {
        /// The pipeline file (same as --config).
        #[arg(value_name = "PIPELINE.yaml")]
        pipeline: PathBuf,
        /// Start at this stage; the stages before it must have finished (their manifests exist).
        #[arg(long, value_enum, value_name = "STAGE")]
        from: Option<Stage>,
        /// Stop after this stage.
        #[arg(long, value_enum, value_name = "STAGE")]
        until: Option<Stage>,
        #[command(flatten)]
        common: CommonFlags,
    },
}

#[derive(Args)]
struct CommonFlags {
    /// Rerun even if the outputs are up to date.
    #[arg(long)]
    force: bool,
}

fn parse_kind(s: &str) -> Result<ModelKind, String> {
    serde_yaml::from_str(s).map_err(|_| format!("unknown model kind `{s}` (esmm, naive_cvr, esmm_ns)"))
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s).map_err(|e| format!("{e:#}"))
}

fn parse_split(s: &str) -> Result<Split, String> {
    Split::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| format!("unknown split `{s}` (train, valid, test)"))
}

/// An error in the command line or the configuration: exit status 2.
struct UsageError(anyhow::Error);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let json = cli.log_format == LogFormat::Json;
    esmm::log::set_json(json);
    match dispatch(cli, json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(UsageError(e))) => {
            log_error(json, "usage", &e);
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            log_error(json, "error", &e);
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(UsageError),
    Run(anyhow::Error),
}

fn usage<T>(r: Result<T>) -> Result<T, Failure> {
    r.map_err(|e| Failure::Usage(UsageError(e)))
}

fn failed<T>(r: Result<T>) -> Result<T, Failure> {
    r.map_err(Failure::Run)
}

fn log_error(json: bool, kind: &str, e: &anyhow::Error) {
    if json {
        eprintln!("{}", serde_json::json!({"event": kind, "message": format!("{e:#}")}));
    } else {
        eprintln!("esmm: {kind}: {e:#}");
    }
}

fn log_report(json: bool, r: &StageReport) {
    if json {
        eprintln!(
            "{}",
            serde_json::json!({"event": "stage", "stage": r.stage, "out": r.out_dir, "up_to_date": r.up_to_date,
                "seconds": r.seconds, "counts": r.counts, "skipped": r.skipped})
        );
    } else {
        eprintln!("{}", r.summary());
    }
}

fn require(v: Option<PathBuf>, flag: &str) -> Result<PathBuf, Failure> {
    usage(v.with_context(|| format!("{flag} is required (or set it in --config)")))
}

fn dispatch(cli: Cli, json: bool) -> Result<(), Failure> {
    let from_file = cli.config.is_some();
    let mut config = match (&cli.config, &cli.command) {
        (Some(path), _) | (None, Command::Run { pipeline: path, .. }) => usage(PipelineConfig::load(path))?,
        (None, _) => PipelineConfig::default(),
    };
    if let Some(t) = cli.threads {
        config.threads = t;
    }
    let threads = config.worker_threads();
    // dfdx's matmuls, the AUC sort and the parsers all use this pool.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    let report = match cli.command {
        Command::Generate { out, train_rows, test_rows, seed, common } => {
            let mut params = config.generate.clone().unwrap_or_default();
            params.train_rows = train_rows.unwrap_or(params.train_rows);
            params.test_rows = test_rows.unwrap_or(params.test_rows);
            params.seed = seed.unwrap_or(params.seed);
            usage(params.validate())?;
            let out = require(out.or(from_file.then(|| config.paths.raw.clone())), "--out")?;
            failed(generate::run(&generate::GenerateStage { out, params, threads, force: common.force }))?
        }
        Command::Ingest { raw, out, format, strict, hash_buckets, shard, common } => {
            let mut params = config.ingest.clone();
            params.format = format.unwrap_or(params.format);
            params.strict |= strict;
            params.hash_buckets = hash_buckets.unwrap_or(params.hash_buckets);
            usage(params.validate())?;
            let raw_flag = raw.is_some();
            let raw = require(raw.or(from_file.then(|| config.paths.raw.clone())), "--raw")?;
            let out = require(out.or(from_file.then(|| config.paths.ingest.clone())), "--out")?;
            // PaddleRec's runner.train_data_dir / test_data_dir, unless --raw is given
            let split_dirs = if raw_flag { None } else { config.paths.raw_dirs() };
            let stage = ingest::IngestStage { raw, split_dirs, out, params, threads, force: common.force };
            failed(match shard {
                None => ingest::run(&stage),
                Some(s) => ingest::run_shard(&stage, s),
            })?
        }
        Command::Split { input, out, valid_fraction, common } => {
            let mut params = config.split.clone();
            params.valid_fraction = valid_fraction.unwrap_or(params.valid_fraction);
            usage(params.validate())?;
            let input = require(input.or(from_file.then(|| config.paths.ingest.clone())), "--in")?;
            let out = require(out.or(from_file.then(|| config.paths.split.clone())), "--out")?;
            failed(split::run(&split::SplitStage { input, out, params, threads, force: common.force }))?
        }
        Command::Train { data, out, resume, kind, epochs, batch_size, common } => {
            let mut model = config.model.clone();
            let mut params = config.train.clone();
            model.kind = kind.unwrap_or(model.kind);
            params.epochs = epochs.unwrap_or(params.epochs);
            params.batch_size = batch_size.unwrap_or(params.batch_size);
            usage(model.validate().and_then(|_| params.validate()))?;
            let data = require(data.or(from_file.then(|| config.paths.split.clone())), "--data")?;
            let out = require(out.or(from_file.then(|| config.paths.model.clone())), "--out")?;
            failed(train::run(&train::TrainStage {
                data,
                out,
                model,
                train: params,
                threads,
                force: common.force,
                resume,
            }))?
        }
        Command::Predict { model, data, split, out, shard, common } => {
            let model = require(model.or(from_file.then(|| config.paths.model.clone())), "--model")?;
            let data = require(data.or(from_file.then(|| config.paths.split.clone())), "--data")?;
            let out =
                require(out.or(from_file.then(|| config.paths.predictions.join(format!("{split}.parquet")))), "--out")?;
            let batch_size = run::predict_batch_size(&config);
            let stage = predict::PredictStage { model, data, split, out, batch_size, threads, force: common.force };
            failed(match shard {
                None => predict::run(&stage),
                Some(s) => predict::run_shard(&stage, s),
            })?
        }
        Command::Export { model, out, data, common } => {
            let model = require(model.or(from_file.then(|| config.paths.model.clone())), "--model")?;
            let out = require(out, "--out")?;
            failed(export::run(&export::ExportStage { model, out, data, threads, force: common.force }))?
        }
        Command::Evaluate { predictions, out, truth, fail_on_suspect, common } => {
            let default = from_file.then(|| config.paths.predictions.join(format!("{}.parquet", Split::Test)));
            let predictions = require(predictions.or(default), "--predictions")?;
            let out = require(out.or(from_file.then(|| config.paths.metrics.clone())), "--out")?;
            let run_id = config.run_id.clone();
            let model_name = serde_json::to_value(config.model.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            failed(evaluate::run(&evaluate::EvaluateStage {
                predictions,
                out,
                truth,
                run_id,
                model_name,
                fail_on_suspect,
                threads,
                force: common.force,
            }))?
        }
        Command::Sql { file, query, run, tables, out, limit, duckdb_views } => {
            return sql_command(SqlArgs { file, query, run, tables, out, limit, duckdb_views });
        }
        Command::Report { run, out, common } => {
            let default = from_file.then(|| config.paths.metrics.parent().map(PathBuf::from)).flatten();
            let run = require(run.or(default), "--run")?;
            let out = out.unwrap_or_else(|| run.join("report"));
            failed(report::run(&report::ReportStage { run, out, threads, force: common.force }))?
        }
        Command::Run { from, until, common, .. } => {
            let stage = run::RunStage { config, force: common.force, from, until };
            usage(run::plan(&stage))?;
            failed(run::run(&stage, |r| log_report(json, r)))?;
            return Ok(());
        }
    };
    log_report(json, &report);
    Ok(())
}

struct SqlArgs {
    file: Option<PathBuf>,
    query: Option<String>,
    run: Option<PathBuf>,
    tables: Vec<String>,
    out: Option<PathBuf>,
    limit: usize,
    duckdb_views: bool,
}

/// `esmm sql`: registers the tables, runs the query, prints (and optionally writes) the result.
fn sql_command(a: SqlArgs) -> Result<(), Failure> {
    let extra = usage(a.tables.iter().map(|t| tables::parse_table_arg(t)).collect::<Result<Vec<_>>>())?;
    if a.run.is_none() && extra.is_empty() {
        return usage(Err(anyhow::anyhow!("--run DIR (or at least one --table) is required")));
    }
    let found = match &a.run {
        Some(dir) => usage(tables::run_tables(dir))?,
        None => Vec::new(),
    };
    let all = tables::merge(found, extra);
    if a.duckdb_views {
        print!("{}", tables::duckdb_views(&all));
        return Ok(());
    }
    let mut df = match (&a.file, &a.query) {
        (Some(f), _) => failed(sql::query_file(f, &all))?,
        (None, Some(q)) => failed(sql::query(q, &all))?,
        (None, None) => return usage(Err(anyhow::anyhow!("give a FILE.sql or --query"))),
    };
    if a.limit > 0 {
        let shown = failed(sql::rows(&df.head(Some(a.limit))))?;
        print!("{}", sql::format_table(&shown, a.limit, df.height()));
    }
    if let Some(out) = &a.out {
        failed(sql::write_result(out, &mut df))?;
        eprintln!("sql: {} rows -> {}", df.height(), out.display());
    }
    Ok(())
}
