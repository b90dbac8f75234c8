//! The command line of the `esmm` binary (clap): subcommands, flags and their help. Part of the
//! binary, not of the library (declared in `main.rs`): clap types stay here. Flags are turned
//! into stage settings by `esmm::stages::settings`; value parsers map strings onto the
//! library's types (`ModelKind`, `Format`, `Stage`, `Split`, `Shard`).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use esmm::config::Format;
use esmm::model::ModelKind;
use esmm::schema::Split;
use esmm::shard::Shard;
use esmm::stages::run::Stage;

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
pub struct Cli {
    /// Pipeline YAML; its values are defaults that flags override.
    #[arg(long, global = true, value_name = "PIPELINE.yaml")]
    pub config: Option<PathBuf>,
    /// Worker threads (0 = all cores). Data-stage outputs do not depend on it; a trained model is
    /// reproducible for the same seed and thread count.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
        #[arg(long, value_parser = format_parser())]
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
        /// Model kind: esmm, naive_cvr, esmm_ns, escm2_ips, escm2_dr, dcmt or aitm.
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
        #[arg(long, value_parser = stage_parser(), value_name = "STAGE")]
        from: Option<Stage>,
        /// Stop after this stage.
        #[arg(long, value_parser = stage_parser(), value_name = "STAGE")]
        until: Option<Stage>,
        #[command(flatten)]
        common: CommonFlags,
    },
}

#[derive(Args)]
pub struct CommonFlags {
    /// Rerun even if the outputs are up to date.
    #[arg(long)]
    pub force: bool,
}

fn parse_kind(s: &str) -> Result<ModelKind, String> {
    serde_yaml::from_str(s).map_err(|_| {
        let names: Vec<String> = ModelKind::ALL.into_iter().map(esmm::stages::settings::model_name).collect();
        format!("unknown model kind `{s}` ({})", names.join(", "))
    })
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s).map_err(|e| format!("{e:#}"))
}

fn parse_split(s: &str) -> Result<Split, String> {
    Split::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| format!("unknown split `{s}` (train, valid, test)"))
}

/// `--format`: the library's [`Format`] with clap's possible values and their help.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// The four Ali-CCP files (`sample_skeleton_*.csv`, `common_features_*.csv`).
    Aliccp,
    /// PaddleRec's preprocessed ESMM CSV: `train/` and `test/` folders of
    /// `sample_id,click,buy,key,field:feat_id,...` files.
    Paddlerec,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Aliccp => Format::Aliccp,
            FormatArg::Paddlerec => Format::Paddlerec,
        }
    }
}

fn format_parser() -> impl TypedValueParser<Value = Format> {
    clap::builder::EnumValueParser::<FormatArg>::new().map(Format::from)
}

/// `--from` / `--until`: a [`Stage`] by name.
fn stage_parser() -> impl TypedValueParser<Value = Stage> {
    PossibleValuesParser::new(Stage::ALL.map(Stage::name)).map(|s| s.parse::<Stage>().expect("a listed stage"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag values are the names the pipeline file uses.
    #[test]
    fn value_names_match_the_library() {
        for f in FormatArg::value_variants() {
            let name = f.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(serde_json::to_value(Format::from(*f)).unwrap(), name);
        }
        assert_eq!(FormatArg::value_variants().len(), 2);
        let names = ["esmm", "naive_cvr", "esmm_ns", "escm2_ips", "escm2_dr", "dcmt", "aitm"];
        let kinds = names.map(|k| parse_kind(k).unwrap());
        assert_eq!(kinds.map(|k| serde_json::to_value(k).unwrap()), names);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
