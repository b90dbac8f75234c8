//! One way from the command line and the pipeline file to each stage's settings.
//!
//! A stage command gives flag overrides (`*Flags`: `None` = not given) and a [`Base`]: the
//! pipeline file (or the defaults when there is none), whether a file was given, and `--force`.
//! The functions here turn the two into the stage's settings struct, the one its `run` takes:
//! a flag overrides the file's value; a missing path flag falls back to the file's `paths`
//! only when a file was given, else it is a usage error naming the flag. `esmm run` resolves
//! every stage through the same functions with no flags ([`super::run`]), so a stage run alone
//! with `--config` and the same stage inside `esmm run` get the same settings (and skip each
//! other as up to date). Everything here is pure: nothing is read or written.
//!
//! Every error is a usage or configuration error (exit status 2, see [`crate::error`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use super::{evaluate, export, generate, ingest, predict, report, split, train};
use crate::config::{Format, Paths, PipelineConfig};
use crate::error::{usage, UsageResult};
use crate::model::ModelKind;
use crate::schema::{truth_file, Split};

/// What every stage is resolved against.
#[derive(Clone, Copy)]
pub struct Base<'a> {
    /// The pipeline file with `--threads` applied, or the defaults without a file.
    pub config: &'a PipelineConfig,
    /// A file was given: its `paths` stand in for the path flags not given.
    pub from_file: bool,
    /// `--force`: rerun even when up to date.
    pub force: bool,
}

impl Base<'_> {
    fn threads(&self) -> usize {
        self.config.worker_threads()
    }

    /// The flag's path, else (with a file) the file's, else a usage error naming the flag.
    fn path(&self, flag: Option<PathBuf>, name: &str, file: impl FnOnce(&Paths) -> Option<PathBuf>) -> Result<PathBuf> {
        let file = || if self.from_file { file(&self.config.paths) } else { None };
        flag.or_else(file).ok_or_else(|| usage(anyhow!("{name} is required (or set it in --config)")))
    }
}

/// Loads the pipeline file when there is one (else the defaults) and applies `--threads`.
pub fn load(file: Option<&Path>, threads: Option<usize>) -> Result<PipelineConfig> {
    let mut config = match file {
        Some(path) => PipelineConfig::load(path)?,
        None => PipelineConfig::default(),
    };
    if let Some(t) = threads {
        config.threads = t;
    }
    Ok(config)
}

/// The model's name in the metrics table: its kind (`esmm`, `naive_cvr`, `esmm_ns`, `escm2_ips`, `escm2_dr`,
/// `dcmt`, `aitm`).
pub fn model_name(kind: ModelKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Rows per scoring batch of `predict`: `predict.batch_size`, else the training batch size, at
/// least 1024.
pub fn predict_batch_size(c: &PipelineConfig) -> usize {
    c.predict.batch_size.unwrap_or(c.train.batch_size.max(1024))
}

/// The predictions file of `split`: `paths.predictions/<split>.parquet`.
pub fn predictions_file(c: &PipelineConfig, split: Split) -> PathBuf {
    c.paths.predictions.join(format!("{split}.parquet"))
}

#[derive(Clone, Debug, Default)]
pub struct GenerateFlags {
    pub out: Option<PathBuf>,
    pub train_rows: Option<u64>,
    pub test_rows: Option<u64>,
    pub seed: Option<u64>,
}

pub fn generate(b: Base, f: GenerateFlags) -> Result<generate::GenerateStage> {
    let mut params = b.config.generate.clone().unwrap_or_default();
    params.train_rows = f.train_rows.unwrap_or(params.train_rows);
    params.test_rows = f.test_rows.unwrap_or(params.test_rows);
    params.seed = f.seed.unwrap_or(params.seed);
    params.validate().usage()?;
    let out = b.path(f.out, "--out", |p| Some(p.raw.clone()))?;
    Ok(generate::GenerateStage { out, params, threads: b.threads(), force: b.force })
}

#[derive(Clone, Debug, Default)]
pub struct IngestFlags {
    pub raw: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub format: Option<Format>,
    /// `--strict` (can only turn `ingest.strict` on).
    pub strict: bool,
    pub hash_buckets: Option<u64>,
}

pub fn ingest(b: Base, f: IngestFlags) -> Result<ingest::IngestStage> {
    let mut params = b.config.ingest.clone();
    params.format = f.format.unwrap_or(params.format);
    params.strict |= f.strict;
    params.hash_buckets = f.hash_buckets.unwrap_or(params.hash_buckets);
    params.validate().usage()?;
    // PaddleRec's runner.train_data_dir / test_data_dir, unless --raw is given
    let split_dirs = if f.raw.is_some() { None } else { b.config.paths.raw_dirs() };
    let raw = b.path(f.raw, "--raw", |p| Some(p.raw.clone()))?;
    let out = b.path(f.out, "--out", |p| Some(p.ingest.clone()))?;
    Ok(ingest::IngestStage { raw, split_dirs, out, params, threads: b.threads(), force: b.force })
}

#[derive(Clone, Debug, Default)]
pub struct SplitFlags {
    pub input: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub valid_fraction: Option<f64>,
}

pub fn split(b: Base, f: SplitFlags) -> Result<split::SplitStage> {
    let mut params = b.config.split.clone();
    params.valid_fraction = f.valid_fraction.unwrap_or(params.valid_fraction);
    params.validate().usage()?;
    let input = b.path(f.input, "--in", |p| Some(p.ingest.clone()))?;
    let out = b.path(f.out, "--out", |p| Some(p.split.clone()))?;
    Ok(split::SplitStage { input, out, params, threads: b.threads(), force: b.force })
}

#[derive(Clone, Debug, Default)]
pub struct TrainFlags {
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: bool,
    pub kind: Option<ModelKind>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
}

pub fn train(b: Base, f: TrainFlags) -> Result<train::TrainStage> {
    let (mut model, mut train) = (b.config.model.clone(), b.config.train.clone());
    model.kind = f.kind.unwrap_or(model.kind);
    train.epochs = f.epochs.unwrap_or(train.epochs);
    train.batch_size = f.batch_size.unwrap_or(train.batch_size);
    model.validate().usage()?;
    train.validate().usage()?;
    let data = b.path(f.data, "--data", |p| Some(p.split.clone()))?;
    let out = b.path(f.out, "--out", |p| Some(p.model.clone()))?;
    Ok(train::TrainStage { data, out, model, train, threads: b.threads(), force: b.force, resume: f.resume })
}

#[derive(Clone, Debug, Default)]
pub struct PredictFlags {
    pub model: Option<PathBuf>,
    pub data: Option<PathBuf>,
    /// Default: test.
    pub split: Option<Split>,
    pub out: Option<PathBuf>,
}

pub fn predict(b: Base, f: PredictFlags) -> Result<predict::PredictStage> {
    let split = f.split.unwrap_or(Split::Test);
    let model = b.path(f.model, "--model", |p| Some(p.model.clone()))?;
    let data = b.path(f.data, "--data", |p| Some(p.split.clone()))?;
    let out = b.path(f.out, "--out", |_| Some(predictions_file(b.config, split)))?;
    let batch_size = predict_batch_size(b.config);
    Ok(predict::PredictStage { model, data, split, out, batch_size, threads: b.threads(), force: b.force })
}

#[derive(Clone, Debug, Default)]
pub struct ExportFlags {
    pub model: Option<PathBuf>,
    /// Required: the file has no key for it.
    pub out: Option<PathBuf>,
    pub data: Option<PathBuf>,
}

pub fn export(b: Base, f: ExportFlags) -> Result<export::ExportStage> {
    let model = b.path(f.model, "--model", |p| Some(p.model.clone()))?;
    let out = b.path(f.out, "--out", |_| None)?;
    Ok(export::ExportStage { model, out, data: f.data, threads: b.threads(), force: b.force })
}

#[derive(Clone, Debug, Default)]
pub struct EvaluateFlags {
    pub predictions: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub truth: Option<PathBuf>,
    pub fail_on_suspect: bool,
}

impl EvaluateFlags {
    /// What `esmm run` evaluates with: the planted truth of the test split when the pipeline
    /// generates its data (`esmm evaluate` takes the truth only from `--truth`).
    pub fn for_run(c: &PipelineConfig) -> Self {
        Self { truth: c.generate.is_some().then(|| c.paths.raw.join(truth_file(Split::Test))), ..Self::default() }
    }
}

pub fn evaluate(b: Base, f: EvaluateFlags) -> Result<evaluate::EvaluateStage> {
    let predictions = b.path(f.predictions, "--predictions", |_| Some(predictions_file(b.config, Split::Test)))?;
    let out = b.path(f.out, "--out", |p| Some(p.metrics.clone()))?;
    Ok(evaluate::EvaluateStage {
        predictions,
        out,
        truth: f.truth,
        run_id: b.config.run_id.clone(),
        model_name: model_name(b.config.model.kind),
        fail_on_suspect: f.fail_on_suspect,
        threads: b.threads(),
        force: b.force,
    })
}

#[derive(Clone, Debug, Default)]
pub struct ReportFlags {
    pub run: Option<PathBuf>,
    /// Default: `<run>/report`.
    pub out: Option<PathBuf>,
}

pub fn report(b: Base, f: ReportFlags) -> Result<report::ReportStage> {
    let run = b.path(f.run, "--run", |p| p.metrics.parent().map(PathBuf::from))?;
    let out = f.out.unwrap_or_else(|| run.join("report"));
    Ok(report::ReportStage { run, out, threads: b.threads(), force: b.force })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn file(yaml: &str) -> PipelineConfig {
        PipelineConfig::parse(yaml).unwrap()
    }

    fn base(config: &PipelineConfig, from_file: bool) -> Base<'_> {
        Base { config, from_file, force: false }
    }

    const PATHS: &str = "paths: {raw: r, ingest: i, split: s, model: m, predictions: p, metrics: x/metrics}\n";

    /// Without a file every path flag is required, named in a usage error; the defaults fill
    /// the rest.
    #[test]
    fn without_a_file_path_flags_are_required() {
        let none = PipelineConfig::default();
        let b = base(&none, false);
        let errors = [
            generate(b, GenerateFlags::default()).err(),
            ingest(b, IngestFlags { out: Some("o".into()), ..Default::default() }).err(),
            split(b, SplitFlags { input: Some("i".into()), ..Default::default() }).err(),
            train(b, TrainFlags { out: Some("o".into()), ..Default::default() }).err(),
            predict(b, PredictFlags { model: Some("m".into()), data: Some("d".into()), ..Default::default() }).err(),
            export(b, ExportFlags { model: Some("m".into()), ..Default::default() }).err(),
            evaluate(b, EvaluateFlags::default()).err(),
            report(b, ReportFlags::default()).err(),
        ];
        let flags = ["--out", "--raw", "--out", "--data", "--out", "--out", "--predictions", "--run"];
        for (e, flag) in errors.into_iter().zip(flags) {
            let e = e.expect("an error");
            assert_eq!(Kind::of(&e), Kind::Usage);
            assert_eq!(format!("{e:#}"), format!("{flag} is required (or set it in --config)"));
        }
        let s = split(b, SplitFlags { input: Some("i".into()), out: Some("o".into()), valid_fraction: None }).unwrap();
        assert_eq!((s.input, s.out, s.params.valid_fraction), ("i".into(), "o".into(), 0.1));
        let r = report(b, ReportFlags { run: Some("d".into()), out: None }).unwrap();
        assert_eq!(r.out, PathBuf::from("d/report"));
    }

    /// With a file its paths and values are the defaults; flags override them.
    #[test]
    fn flags_override_the_file() {
        let c = file(&format!("{PATHS}threads: 3\ngenerate: {{seed: 7, train_rows: 10}}\ntrain: {{epochs: 4}}\n"));
        let b = base(&c, true);
        let g = generate(b, GenerateFlags { train_rows: Some(20), ..Default::default() }).unwrap();
        assert_eq!((g.out, g.params.seed, g.params.train_rows, g.threads), ("r".into(), 7, 20, 3));
        let i = ingest(b, IngestFlags { hash_buckets: Some(1000), strict: true, ..Default::default() }).unwrap();
        assert_eq!((i.raw, i.out, i.params.hash_buckets, i.params.strict), ("r".into(), "i".into(), 1000, true));
        let t = train(b, TrainFlags { kind: Some(ModelKind::NaiveCvr), resume: true, ..Default::default() }).unwrap();
        assert_eq!(
            (t.data, t.out, t.train.epochs, t.model.kind, t.resume),
            ("s".into(), "m".into(), 4, ModelKind::NaiveCvr, true)
        );
        let t = train(b, TrainFlags { epochs: Some(2), out: Some("m2".into()), ..Default::default() }).unwrap();
        assert_eq!((t.out, t.train.epochs, t.model.kind), ("m2".into(), 2, ModelKind::Esmm));
        let p = predict(b, PredictFlags { split: Some(Split::Valid), ..Default::default() }).unwrap();
        assert_eq!((p.model, p.data, p.out, p.split), ("m".into(), "s".into(), "p/valid.parquet".into(), Split::Valid));
        let e = evaluate(b, EvaluateFlags::default()).unwrap();
        assert_eq!(
            (e.predictions, e.out, e.truth, e.model_name),
            ("p/test.parquet".into(), "x/metrics".into(), None, "esmm".into())
        );
        assert_eq!(report(b, ReportFlags::default()).unwrap().run, PathBuf::from("x"));
        // export's --out has no key in the file
        assert!(export(b, ExportFlags::default()).is_err());
        // a file's paths are not used when no file was given
        assert!(generate(base(&c, false), GenerateFlags::default()).is_err());
    }

    /// PaddleRec's train / test folders are ingested unless --raw names another input.
    #[test]
    fn raw_flag_drops_the_paddlerec_folders() {
        let c = file("ingest: {format: paddlerec}\npaths: {raw_train: a, raw_test: b}\n");
        let i = ingest(base(&c, true), IngestFlags::default()).unwrap();
        assert_eq!(i.split_dirs, Some(("a".into(), "b".into())));
        let i = ingest(base(&c, true), IngestFlags { raw: Some("r".into()), ..Default::default() }).unwrap();
        assert_eq!((i.split_dirs, i.raw), (None, "r".into()));
    }

    /// A flag value the config would reject is a configuration error naming the key.
    #[test]
    fn invalid_flag_values_are_usage_errors() {
        let c = PipelineConfig::default();
        let b = base(&c, true);
        let e = [
            split(b, SplitFlags { valid_fraction: Some(1.5), ..Default::default() }).err().unwrap(),
            ingest(b, IngestFlags { hash_buckets: Some(1), ..Default::default() }).err().unwrap(),
            train(b, TrainFlags { epochs: Some(0), ..Default::default() }).err().unwrap(),
        ];
        for (e, key) in e.iter().zip(["split.valid_fraction", "ingest.hash_buckets", "train.epochs"]) {
            assert_eq!(Kind::of(e), Kind::Usage, "{e:#}");
            assert!(format!("{e:#}").contains(key), "{e:#}");
        }
    }

    /// `esmm run`'s settings of a stage: the single-stage command's with `--config` and no
    /// flags; evaluate adds the planted truth of generated data.
    #[test]
    fn run_settings_and_derived_values() {
        let c = file(&format!("{PATHS}generate: {{}}\ntrain: {{batch_size: 4096}}\nmodel: {{kind: esmm_ns}}\n"));
        let e = evaluate(base(&c, true), EvaluateFlags::for_run(&c)).unwrap();
        assert_eq!((e.truth, e.model_name), (Some("r/truth_test.csv".into()), "esmm_ns".into()));
        assert_eq!(EvaluateFlags::for_run(&file("")).truth, None);
        assert_eq!(predict(base(&c, true), PredictFlags::default()).unwrap().batch_size, 4096);
        assert_eq!(predict_batch_size(&file("")), 1024);
        assert_eq!(predict_batch_size(&file("predict: {batch_size: 7}\n")), 7);
        assert_eq!(
            ModelKind::ALL.map(model_name),
            ["esmm", "naive_cvr", "esmm_ns", "escm2_ips", "escm2_dr", "dcmt", "aitm"]
        );
    }

    #[test]
    fn load_applies_threads_and_marks_config_errors() {
        assert_eq!(load(None, Some(5)).unwrap().threads, 5);
        assert_eq!(load(None, None).unwrap().threads, 0);
        let e = load(Some(Path::new("/nonexistent/p.yaml")), None).unwrap_err();
        assert_eq!(Kind::of(&e), Kind::Usage);
        assert!(format!("{e:#}").contains("/nonexistent/p.yaml"), "{e:#}");
    }
}
