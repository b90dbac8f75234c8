//! The pipeline configuration (`pipeline/*.yaml`): one struct per stage, strict keys.
//!
//! Every key has a default, so a file only names what it changes; an unknown key is an error
//! that names it (and the file). Relative paths are relative to the working directory.
//! PaddleRec's own `config.yaml` is accepted too ([`paddle`]). Command-line flags override the
//! file ([`crate::stages::settings`]). Every error found here is a configuration error (exit
//! status 2, [`crate::error`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::UsageResult;
use crate::schema::{field_index, FIELDS};

pub mod model;
pub mod paddle;
pub mod preset;
pub use model::{Backbone, CalibrationKind, ModelConfig, OutputBias, SelectOn, TrainConfig};
pub use paddle::{PaddleHyper, PaddleRunner, PaddleUse};

/// The whole file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Names this run in reports and metrics tables.
    pub run_id: String,
    /// Worker threads for every stage; 0 = all cores.
    pub threads: usize,
    pub paths: Paths,
    /// Present ⇒ `esmm run` generates the raw data first (synthetic runs); absent for real data.
    pub generate: Option<GenerateConfig>,
    pub ingest: IngestConfig,
    pub split: SplitConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    #[serde(skip_serializing_if = "PredictConfig::is_default")]
    pub predict: PredictConfig,
    /// PaddleRec `config.yaml` sections, resolved onto the native ones by [`paddle::apply`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyper_parameters: Option<PaddleHyper>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<PaddleRunner>,
    /// What the PaddleRec sections did (ignored keys, PaddleRec-format chain); not a key.
    #[serde(skip)]
    pub paddle: PaddleUse,
}

/// `predict:` — scoring.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictConfig {
    /// Rows per scoring batch (default: `train.batch_size`, at least 1024; PaddleRec's
    /// `runner.infer_batch_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

impl PredictConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Where each stage reads and writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Raw input: the four Ali-CCP CSVs (format aliccp) or `train/` + `test/` CSV folders (paddlerec).
    pub raw: PathBuf,
    /// Format paddlerec: the train and the test folders, when not `raw/train`, `raw/test`
    /// (PaddleRec's `runner.train_data_dir`, `test_data_dir`; both or neither; may be one folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_train: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_test: Option<PathBuf>,
    /// Hashed Parquet written by `ingest`.
    pub ingest: PathBuf,
    /// Materialized train/valid/test written by `split`.
    pub split: PathBuf,
    /// Model checkpoints and the per-epoch log written by `train`.
    pub model: PathBuf,
    /// Predictions (`<split>.parquet`) written by `predict`.
    pub predictions: PathBuf,
    /// Metrics and the summary written by `evaluate`.
    pub metrics: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            raw: "data/raw".into(),
            raw_train: None,
            raw_test: None,
            ingest: "data/ingest".into(),
            split: "data/split".into(),
            model: "data/model".into(),
            predictions: "data/predictions".into(),
            metrics: "data/metrics".into(),
        }
    }
}

impl Paths {
    /// The PaddleRec-format train and test folders, when given apart from `raw`.
    pub fn raw_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.raw_train.clone()?, self.raw_test.clone()?))
    }

    fn validate(&self, format: Format) -> Result<()> {
        match (&self.raw_train, &self.raw_test) {
            (None, None) => Ok(()),
            (Some(_), Some(_)) if format == Format::Paddlerec => Ok(()),
            (Some(_), Some(_)) => bail!("paths.raw_train / raw_test need ingest.format: paddlerec"),
            _ => bail!("paths.raw_train and paths.raw_test go together"),
        }
    }
}

/// The synthetic data generator (`generate:`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    pub train_rows: u64,
    pub test_rows: u64,
    pub seed: u64,
    /// Target click rate over all impressions.
    pub ctr: f64,
    /// Target buy rate among clicks.
    pub cvr: f64,
    /// Mean skeleton rows per md5 (one common-feature line per md5).
    pub rows_per_md5: f64,
    /// Size of the planted world; shared by train and test.
    pub users: u64,
    pub items: u64,
    /// Mean number of history features per common line (heavy-tailed).
    pub history_mean: f64,
    /// Standard deviation of each user's and item's own effects (bias, clickbait and latent
    /// parts beyond their profile/category/shop/brand groups). A model sees an entity in ~100
    /// impressions here, too few to identify such effects, while the oracle knows them: larger
    /// values widen the gap no model can close (at 0.2 the test CTR AUC gap measured 0.012 wider).
    pub individual_sd: f64,
    /// Tail of those individual effects: 0 = normal, else Student-t with this many degrees of
    /// freedom (3..=30, scaled to sd `individual_sd`): a few entities with very strong effects,
    /// as real ids have.
    pub individual_df: u32,
    /// Selection bias: how strongly clickbait (the shop's and the item's pull on clicks) lowers
    /// the buy logit, as a multiple of the planted λ = 1.2. 1 = the default world; larger, the
    /// clicked population's conversion drifts further from the entire space's (ESMM's
    /// estimation bias grows); 0 = none.
    pub selection_bias: f64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            train_rows: 2_000_000,
            test_rows: 1_000_000,
            seed: 42,
            ctr: 0.04,
            cvr: 0.02,
            rows_per_md5: 55.0,
            users: 20_000,
            items: 30_000,
            history_mean: 480.0,
            individual_sd: 0.05,
            individual_df: 0,
            selection_bias: 1.0,
        }
    }
}

impl GenerateConfig {
    /// Checks the values; an error is a configuration error (exit status 2).
    pub fn validate(&self) -> Result<()> {
        self.check().usage()
    }

    fn check(&self) -> Result<()> {
        check_rate("generate.ctr", self.ctr)?;
        check_rate("generate.cvr", self.cvr)?;
        if !(self.rows_per_md5 >= 1.0 && self.rows_per_md5.is_finite()) {
            bail!("generate.rows_per_md5 must be >= 1, got {}", self.rows_per_md5);
        }
        if self.users < 1 || self.items < 1 {
            bail!("generate.users and generate.items must be >= 1");
        }
        if !(self.history_mean >= 0.0 && self.history_mean.is_finite()) {
            bail!("generate.history_mean must be >= 0, got {}", self.history_mean);
        }
        if !(self.individual_sd >= 0.0 && self.individual_sd <= 2.0) {
            bail!("generate.individual_sd must be in [0, 2], got {}", self.individual_sd);
        }
        if !(self.selection_bias >= 0.0 && self.selection_bias <= 10.0) {
            bail!("generate.selection_bias must be in [0, 10], got {}", self.selection_bias);
        }
        if self.individual_df != 0 && !(3..=30).contains(&self.individual_df) {
            bail!("generate.individual_df must be 0 (normal) or in 3..=30, got {}", self.individual_df);
        }
        Ok(())
    }
}

fn check_rate(key: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v < 1.0) {
        bail!("{key} must be in (0, 1), got {v}");
    }
    Ok(())
}

/// Raw input layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The four Ali-CCP files (`sample_skeleton_*.csv`, `common_features_*.csv`).
    #[default]
    Aliccp,
    /// PaddleRec's preprocessed ESMM CSV: `train/` and `test/` folders of
    /// `sample_id,click,buy,key,field:feat_id,...` files.
    Paddlerec,
}

/// Raw → hashed Parquet.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub format: Format,
    /// Embedding buckets including the padding bucket 0 (docs/data.md, "Data contracts").
    pub hash_buckets: u64,
    pub hash_seed: u64,
    /// First bad input is an error (file, line, reason) instead of a counted skip.
    pub strict: bool,
    /// Optional cap on ids kept per field and row, e.g. `{"210": 64}`; the first ids are kept.
    pub max_ids_per_field: BTreeMap<String, usize>,
    /// Rows per Parquet row group of the samples table.
    pub row_group_rows: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            format: Format::Aliccp,
            hash_buckets: 1 << 20,
            hash_seed: 0,
            strict: false,
            max_ids_per_field: BTreeMap::new(),
            row_group_rows: 65_536,
        }
    }
}

impl IngestConfig {
    /// Checks the values; an error is a configuration error (exit status 2).
    pub fn validate(&self) -> Result<()> {
        self.check().usage()
    }

    fn check(&self) -> Result<()> {
        crate::hashing::FeatureHasher::new(self.hash_buckets, self.hash_seed).context("ingest.hash_buckets")?;
        for (field, &cap) in &self.max_ids_per_field {
            if field_index(field.as_bytes()).is_none() {
                let known: Vec<_> = FIELDS.iter().map(|f| f.name).collect();
                bail!("ingest.max_ids_per_field: unknown field `{field}` (fields: {})", known.join(" "));
            }
            if cap == 0 {
                bail!("ingest.max_ids_per_field.{field} must be >= 1");
            }
        }
        if self.row_group_rows == 0 {
            bail!("ingest.row_group_rows must be >= 1");
        }
        Ok(())
    }

    /// The data contract of the tables this ingest writes.
    pub fn contract(&self) -> crate::schema::DataContract {
        let format = match self.format {
            Format::Aliccp => "aliccp",
            Format::Paddlerec => "paddlerec",
        };
        crate::schema::DataContract {
            format: format.into(),
            hash_buckets: self.hash_buckets,
            hash_seed: self.hash_seed,
            max_ids_per_field: self.max_ids_per_field.clone(),
        }
    }

    /// Per-field cap as an array indexed like [`FIELDS`] (`usize::MAX` = no cap).
    pub fn caps(&self) -> [usize; FIELDS.len()] {
        let mut caps = [usize::MAX; FIELDS.len()];
        for (field, &cap) in &self.max_ids_per_field {
            if let Some(i) = field_index(field.as_bytes()) {
                caps[i] = cap;
            }
        }
        caps
    }
}

/// Hashed Parquet → train / valid / test.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// Share of train md5 groups (sessions) moved to valid.
    pub valid_fraction: f64,
    pub seed: u64,
    pub row_group_rows: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { valid_fraction: 0.1, seed: 0, row_group_rows: 65_536 }
    }
}

impl SplitConfig {
    /// Checks the values; an error is a configuration error (exit status 2).
    pub fn validate(&self) -> Result<()> {
        self.check().usage()
    }

    fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.valid_fraction) {
            bail!("split.valid_fraction must be in [0, 1), got {}", self.valid_fraction);
        }
        if self.row_group_rows == 0 {
            bail!("split.row_group_rows must be >= 1");
        }
        Ok(())
    }
}

impl PipelineConfig {
    /// Reads and validates a YAML file; errors (configuration errors, exit status 2) name the
    /// file and the offending key. The PaddleRec keys without a meaning here are named once, in
    /// a notice on stderr.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display())).usage()?;
        let config = Self::parse(&text).with_context(|| format!("config {}", path.display()))?;
        config.notices(path);
        Ok(config)
    }

    fn notices(&self, path: &Path) {
        let (file, p) = (path.display().to_string(), &self.paddle);
        if !p.ignored.is_empty() {
            crate::log::event("config_ignored", serde_json::json!({ "file": file, "keys": p.ignored }), || {
                format!("config {file}: ignored (no meaning here): {}", p.ignored.join(", "))
            });
        }
        if let (true, Some((train, test))) = (p.chain, self.paths.raw_dirs()) {
            let json = serde_json::json!({ "file": file, "train": train, "test": test, "model": self.paths.model });
            crate::log::event("config_paddlerec", json, || {
                format!(
                    "config {file}: PaddleRec runner: ingest --format paddlerec from {} (train) and {} (test); \
                     outputs under {}",
                    train.display(),
                    test.display(),
                    self.paths.model.parent().unwrap_or(Path::new(".")).display()
                )
            });
        }
    }

    /// Parses and validates YAML text; an error is a configuration error (exit status 2).
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_yaml(text).usage()
    }

    fn from_yaml(text: &str) -> Result<Self> {
        let mut config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?
        };
        let file: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
        if let Some(preset) = config.model.preset {
            // the file parsed as it is: its errors name its keys; the preset only adds valid ones
            let file = preset.fill(serde_yaml::from_str(text)?)?;
            config = serde_yaml::from_value(file).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        config.paddle = paddle::apply(&mut config, &file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section; an error is a configuration error (exit status 2).
    pub fn validate(&self) -> Result<()> {
        self.check().usage()
    }

    fn check(&self) -> Result<()> {
        if let Some(g) = &self.generate {
            g.validate()?;
        }
        self.ingest.validate()?;
        self.paths.validate(self.ingest.format)?;
        self.split.validate()?;
        if self.predict.batch_size == Some(0) {
            bail!("predict.batch_size must be >= 1");
        }
        self.model.validate()?;
        self.train.validate()
    }

    /// Threads to use: the configured count, or all cores for 0.
    pub fn worker_threads(&self) -> usize {
        resolve_threads(self.threads)
    }
}

/// A thread count, with 0 meaning all cores.
pub fn resolve_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = PipelineConfig::parse("ingest:\n  hash_bucket: 10\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("hash_bucket"), "{msg}");
        let err = PipelineConfig::parse("nonsense: 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("nonsense"));
    }

    #[test]
    fn defaults_and_overrides() {
        let c = PipelineConfig::parse("").unwrap();
        assert_eq!(c.ingest.hash_buckets, 1 << 20);
        assert!(c.generate.is_none());
        let c = PipelineConfig::parse("generate: {train_rows: 10}\nsplit: {valid_fraction: 0.2}\n").unwrap();
        assert_eq!(c.generate.unwrap().train_rows, 10);
        assert_eq!(c.split.valid_fraction, 0.2);
    }

    /// The shipped pipeline files parse; the demo and every model of its Table 2 (the
    /// `demo_*.yaml` that `make all` runs beside it, each its own kind) run the default model
    /// and training settings on the demo's data stages, writing into one run directory.
    #[test]
    fn the_demo_pipelines_run_the_defaults_on_shared_data() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline");
        let load = |name: &str| PipelineConfig::load(&dir.join(name)).unwrap();
        load("aliccp.yaml");
        let demo = load("demo.yaml");
        let makefile = std::fs::read_to_string(dir.join("../Makefile")).unwrap();
        fn json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap()
        }
        // tower sizes as resolved: the demo spells out the backend's default ones
        let sized = |m: ModelConfig| {
            let t = m.towers();
            ModelConfig { ctr_fc_sizes: Some(t.ctr_fc_sizes), cvr_fc_sizes: Some(t.cvr_fc_sizes), ..m }
        };
        let defaults = |name: &str, c: &PipelineConfig| {
            let model = sized(ModelConfig { kind: ModelConfig::default().kind, ..c.model.clone() });
            let same = model == sized(ModelConfig::default()) && c.train == TrainConfig::default();
            assert!(same, "{name}: not the defaults");
        };
        defaults("demo.yaml", &demo);
        let mut kinds = vec![demo.model.kind];
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !(name.starts_with("demo_") && name.ends_with(".yaml")) {
                continue;
            }
            let c = load(&name);
            assert!(makefile.contains(&format!("pipeline/{name}")), "make all does not run {name}");
            assert_eq!(json(&c.generate), json(&demo.generate), "{name}");
            assert_eq!(json(&c.ingest), json(&demo.ingest), "{name}");
            assert_eq!(json(&c.split), json(&demo.split), "{name}");
            assert_eq!((&c.paths.raw, &c.paths.split), (&demo.paths.raw, &demo.paths.split), "{name}");
            assert_eq!(c.paths.metrics.parent(), demo.paths.metrics.parent(), "{name}: one run directory");
            assert!(c.paths.model != demo.paths.model && c.run_id != demo.run_id, "{name}");
            defaults(&name, &c);
            kinds.push(c.model.kind);
        }
        kinds.sort_by_key(|k| format!("{k:?}"));
        kinds.dedup();
        assert_eq!(kinds.len(), crate::model::ModelKind::ALL.len(), "every kind once: {kinds:?}");
    }

    #[test]
    fn any_embedding_dim_on_gemm() {
        for dim in [1, 5, 16, 64, 100] {
            let c = PipelineConfig::parse(&format!("model: {{embedding_dim: {dim}}}\n")).unwrap();
            assert_eq!(c.model.embedding_dim, dim);
        }
        PipelineConfig::parse("model: {embedding_dim: 12, backend: dfdx}\n").unwrap();
    }

    /// Towers without sizes take their backend's: gemm [128, 64], dfdx its compiled [256, 64];
    /// the paddlerec preset pins [256, 64]; sizes a file gives win over both.
    #[test]
    fn tower_sizes_default_per_backend() {
        let sizes = |yaml: &str| {
            let t = PipelineConfig::parse(yaml).unwrap().model.towers();
            (t.ctr_fc_sizes, t.cvr_fc_sizes)
        };
        assert_eq!(sizes(""), (vec![128, 64], vec![128, 64]));
        assert_eq!(sizes("model: {backend: dfdx}\n"), (vec![256, 64], vec![256, 64]));
        assert_eq!(sizes("model: {preset: paddlerec}\n"), (vec![256, 64], vec![256, 64]));
        assert_eq!(sizes("model: {preset: paddlerec, cvr_fc_sizes: [32]}\n"), (vec![256, 64], vec![32]));
        assert_eq!(sizes("model: {ctr_fc_sizes: [16, 8]}\n"), (vec![16, 8], vec![128, 64]));
    }

    #[test]
    fn invalid_values_are_rejected_with_key() {
        for (yaml, key) in [
            ("split: {valid_fraction: 1.5}", "split.valid_fraction"),
            ("ingest: {hash_buckets: 1}", "ingest.hash_buckets"),
            ("ingest: {max_ids_per_field: {\"999\": 3}}", "999"),
            ("generate: {ctr: 0}", "generate.ctr"),
            ("model: {embedding_dim: 0}", "model.embedding_dim must be >= 1"),
            (
                "model: {embedding_dim: 16, backend: dfdx}",
                "model.embedding_dim: model.backend: dfdx is compiled for 12",
            ),
            ("model: {kind: aitm, backend: dfdx}", "model.kind: aitm needs model.backend: gemm"),
            ("model: {backbone: mmoe, backend: dfdx}", "model.backbone: mmoe runs on model.backend: gemm"),
            ("model: {backbone: mmoe, mmoe: {experts: 0}}", "model.mmoe.experts must be >= 1"),
            ("model: {calibrator_w: -1}", "model.calibrator_w must be >= 0"),
        ] {
            let msg = format!("{:#}", PipelineConfig::parse(yaml).unwrap_err());
            assert!(msg.contains(key), "{yaml}: {msg}");
        }
    }

    /// Every way a configuration is rejected is a configuration error (exit status 2).
    #[test]
    fn errors_are_configuration_errors() {
        use crate::error::Kind;
        let kind = |e: anyhow::Error| Kind::of(&e);
        assert_eq!(kind(PipelineConfig::parse("nonsense: 1\n").unwrap_err()), Kind::Usage);
        assert_eq!(kind(PipelineConfig::parse("train: {epochs: 0}\n").unwrap_err()), Kind::Usage);
        assert_eq!(kind(PipelineConfig::load(Path::new("/nonexistent.yaml")).unwrap_err()), Kind::Usage);
        assert_eq!(kind(GenerateConfig { ctr: 2.0, ..Default::default() }.validate().unwrap_err()), Kind::Usage);
        assert_eq!(kind(SplitConfig { row_group_rows: 0, ..Default::default() }.validate().unwrap_err()), Kind::Usage);
        let model = ModelConfig { learning_rate: 0.0, ..Default::default() };
        assert_eq!(kind(model.validate().unwrap_err()), Kind::Usage);
        assert_eq!(kind(TrainConfig { epochs: 0, ..Default::default() }.validate().unwrap_err()), Kind::Usage);
    }
}
