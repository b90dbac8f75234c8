//! `esmm`: the command-line front end. Parses flags ([`cli`]), loads the pipeline config,
//! resolves the chosen stage's settings (flags override the file: `esmm::stages::settings`),
//! runs it, and maps the outcome to an exit status by the error's kind (`esmm::error`): 0
//! success (also when stdout was closed by its reader), 1 failure, 2 usage or configuration
//! error.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command, LogFormat};
use esmm::analytics::sql;
use esmm::error::Kind;
use esmm::stages::settings::{self, Base};
use esmm::stages::{evaluate, export, generate, ingest, predict, report, run, split, train, StageReport};

/// mimalloc keeps freed blocks for reuse: dfdx allocates its activations and gradients every
/// step, and glibc's malloc returned them to the kernel (page faults on every step).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let Err(e) = dispatch(cli, json) else { return ExitCode::SUCCESS };
    let kind = Kind::of(&e);
    if kind != Kind::StdoutClosed {
        log_error(json, kind.label(), &e);
    }
    ExitCode::from(kind.exit_code())
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

fn dispatch(cli: Cli, json: bool) -> Result<()> {
    let file = match (&cli.config, &cli.command) {
        (Some(path), _) | (None, Command::Run { pipeline: path, .. }) => Some(path.as_path()),
        (None, _) => None,
    };
    let config = settings::load(file, cli.threads)?;
    // dfdx's matmuls, the AUC sort and the parsers all use this pool.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(config.worker_threads()).build_global();
    let base = |force| Base { config: &config, from_file: cli.config.is_some(), force };
    let report = match cli.command {
        Command::Generate { out, train_rows, test_rows, seed, common } => {
            let flags = settings::GenerateFlags { out, train_rows, test_rows, seed };
            generate::run(&settings::generate(base(common.force), flags)?)?
        }
        Command::Ingest { raw, out, format, strict, hash_buckets, shard, common } => {
            let flags = settings::IngestFlags { raw, out, format, strict, hash_buckets };
            let stage = settings::ingest(base(common.force), flags)?;
            match shard {
                None => ingest::run(&stage)?,
                Some(s) => ingest::run_shard(&stage, s)?,
            }
        }
        Command::Split { input, out, valid_fraction, common } => {
            let flags = settings::SplitFlags { input, out, valid_fraction };
            split::run(&settings::split(base(common.force), flags)?)?
        }
        Command::Train { data, out, resume, kind, epochs, batch_size, common } => {
            let flags = settings::TrainFlags { data, out, resume, kind, epochs, batch_size };
            train::run(&settings::train(base(common.force), flags)?)?
        }
        Command::Predict { model, data, split, out, shard, common } => {
            let flags = settings::PredictFlags { model, data, split: Some(split), out };
            let stage = settings::predict(base(common.force), flags)?;
            match shard {
                None => predict::run(&stage)?,
                Some(s) => predict::run_shard(&stage, s)?,
            }
        }
        Command::Export { model, out, data, common } => {
            let flags = settings::ExportFlags { model, out, data };
            export::run(&settings::export(base(common.force), flags)?)?
        }
        Command::Evaluate { predictions, out, truth, fail_on_suspect, common } => {
            let flags = settings::EvaluateFlags { predictions, out, truth, fail_on_suspect };
            evaluate::run(&settings::evaluate(base(common.force), flags)?)?
        }
        Command::Sql { file, query, run, tables, out, limit, duckdb_views } => {
            return sql::command(&sql::SqlCommand { file, query, run, tables, out, limit, duckdb_views });
        }
        Command::Report { run, out, common } => {
            report::run(&settings::report(base(common.force), settings::ReportFlags { run, out })?)?
        }
        Command::Run { from, until, common, .. } => {
            let stage = run::RunStage { config: config.clone(), force: common.force, from, until };
            run::run(&stage, |r| log_report(json, r))?;
            return Ok(());
        }
    };
    log_report(json, &report);
    Ok(())
}
