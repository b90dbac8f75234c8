//! PaddleRec's own configs (`models/multitask/esmm/config.yaml`, `config_bigdata.yaml`, and
//! the same two of `models/multitask/escm2`), accepted unchanged. Their `hyper_parameters:` and `runner:` keys with a meaning here map
//! onto the native sections (a value given both ways must agree); the keys without one (its
//! Python readers, GPUs, AUC printing, per-epoch inference, inference-model export) are accepted
//! and returned by [`apply`], so that loading the file names them once in a notice; any other
//! key is an error naming it.
//!
//! `runner.train_data_dir` and `runner.test_data_dir` (in a file that sets neither `paths.raw`
//! nor `ingest.format`) make the file a PaddleRec-format chain: ingest reads `--format
//! paddlerec` from those two folders (relative to the working directory, as every path here),
//! and every output goes under `runner.model_save_path` (default [`DEFAULT_SAVE_PATH`]):
//! `ingest/`, `split/`, `model/`, `predictions/`, `metrics/` — except the `paths.*` the file
//! gives itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::{Format, IngestConfig, ModelConfig, PipelineConfig, TrainConfig};
use crate::config::model::{Backbone, SparseKind};
use crate::model::{Mmoe, ModelKind};
use crate::schema::FIELDS;

/// Where a PaddleRec-format chain writes when its file has no `runner.model_save_path`
/// (PaddleRec's `tools/trainer.py` default).
pub const DEFAULT_SAVE_PATH: &str = "model_output";

/// PaddleRec `hyper_parameters:`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaddleHyper {
    /// Vocabulary size: becomes `ingest.hash_buckets`.
    pub sparse_feature_number: Option<u64>,
    /// `model.embedding_dim`.
    pub sparse_feature_dim: Option<usize>,
    /// Checked: must be the 23 Ali-CCP fields.
    pub num_field: Option<usize>,
    pub ctr_fc_sizes: Option<Vec<usize>>,
    pub cvr_fc_sizes: Option<Vec<usize>>,
    pub max_len: Option<usize>,
    /// escm2: `model.global_w` (the CTCVR loss's weight).
    pub global_w: Option<f64>,
    /// escm2: `model.counterfactual_w` (the counterfactual CVR loss's weight).
    pub counterfactual_w: Option<f64>,
    /// escm2's mixture of experts: any of these three sets `model.backbone: mmoe`;
    /// `model.mmoe.experts`.
    pub expert_num: Option<usize>,
    /// `model.mmoe.expert_size`.
    pub expert_size: Option<usize>,
    /// `model.mmoe.tower_sizes: [tower_size]`.
    pub tower_size: Option<usize>,
    /// Ignored: one gate per task, from the model kind (as escm2's net.py derives it from
    /// `counterfact_mode`).
    pub gate_num: Option<usize>,
    /// Checked: the towers' input width, 23 × `sparse_feature_dim`.
    pub feature_size: Option<usize>,
    pub optimizer: Option<PaddleOptimizer>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaddleOptimizer {
    pub class: Option<String>,
    pub learning_rate: Option<f32>,
    /// Ignored (PaddleRec's parameter-server strategy).
    pub strategy: Option<Value>,
}

/// PaddleRec `runner:`: the keys with a meaning here, and the others (checked against [`IGNORED`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PaddleRunner {
    pub train_data_dir: Option<PathBuf>,
    pub test_data_dir: Option<PathBuf>,
    pub model_save_path: Option<PathBuf>,
    pub train_batch_size: Option<usize>,
    pub epochs: Option<usize>,
    pub infer_batch_size: Option<usize>,
    /// escm2: `DR` → `model.kind: escm2_dr`, `IPW` (or `IPS`) → `escm2_ips`.
    pub counterfact_mode: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// PaddleRec keys accepted without a meaning here, and why (docs/paddlerec.md's table says the same).
pub const IGNORED: &[(&str, &str)] = &[
    ("runner.train_reader_path", "PaddleRec's Python reader module; esmm reads the format itself"),
    ("runner.infer_reader_path", "PaddleRec's Python reader module; esmm reads the format itself"),
    ("runner.use_gpu", "esmm trains on the CPU (`threads:`)"),
    ("runner.use_xpu", "esmm trains on the CPU"),
    ("runner.use_npu", "esmm trains on the CPU"),
    ("runner.use_auc", "AUCs are always computed, exactly (valid in train, test in evaluate)"),
    ("runner.auc_num", "AUCs are always computed, exactly (valid in train, test in evaluate)"),
    ("runner.print_interval", "esmm logs each evaluation (`train.evals_per_epoch`)"),
    ("runner.use_visual", "VisualDL logging; `esmm report` draws the curves"),
    ("runner.model_init_path", "warm start from a Paddle model; `esmm train --resume` continues its own checkpoint"),
    ("runner.infer_load_path", "predict reads the model of `paths.model` (under `model_save_path`)"),
    ("runner.infer_start_epoch", "esmm keeps the best evaluation's model (model.bin), not one per epoch"),
    ("runner.infer_end_epoch", "esmm keeps the best evaluation's model (model.bin), not one per epoch"),
    ("runner.use_inference", "Paddle inference-model export; model.bin is read by `esmm predict`"),
    ("runner.save_inference_feed_varnames", "Paddle inference-model export"),
    ("runner.save_inference_fetch_varnames", "Paddle inference-model export"),
    ("runner.thread_num", "PaddleRec's static-graph reader threads (`threads:` here)"),
    ("runner.reader_type", "PaddleRec's static-graph reader"),
    ("runner.sync_mode", "PaddleRec's distributed training"),
    ("runner.split_file_list", "PaddleRec's distributed training"),
    ("runner.use_fleet", "PaddleRec's distributed training"),
    ("runner.save_checkpoint_interval", "train writes checkpoint.bin every epoch"),
    ("hyper_parameters.optimizer.strategy", "PaddleRec's parameter-server strategy; esmm trains in one process"),
    (
        "hyper_parameters.gate_num",
        "one gate per task, from the model kind (escm2_dr: 3, else 2), as escm2's net.py derives it from counterfact_mode",
    ),
];

/// What the PaddleRec sections of a file did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PaddleUse {
    /// The accepted keys without a meaning here, `section.key` in file order of [`IGNORED`].
    pub ignored: Vec<String>,
    /// The file is a PaddleRec-format chain (`runner.train_data_dir` / `test_data_dir`).
    pub chain: bool,
}

/// Applies the PaddleRec sections of `config` (parsed from `file`) onto its native sections.
pub fn apply(config: &mut PipelineConfig, file: &Value) -> Result<PaddleUse> {
    let mut used = PaddleUse::default();
    if let Some(h) = config.hyper_parameters.clone() {
        apply_hyper(&h, &mut config.model, &mut config.ingest.hash_buckets)?;
        if h.optimizer.as_ref().is_some_and(|o| o.strategy.is_some()) {
            used.ignored.push("hyper_parameters.optimizer.strategy".into());
        }
        if h.gate_num.is_some() {
            used.ignored.push("hyper_parameters.gate_num".into());
        }
    }
    let Some(r) = config.runner.clone() else { return Ok(used) };
    let dt = TrainConfig::default();
    set("runner.train_batch_size", r.train_batch_size, &mut config.train.batch_size, dt.batch_size)?;
    set("runner.epochs", r.epochs, &mut config.train.epochs, dt.epochs)?;
    if let Some(mode) = &r.counterfact_mode {
        let kind = match mode.to_ascii_uppercase().as_str() {
            "DR" => ModelKind::Escm2Dr,
            "IPW" | "IPS" => ModelKind::Escm2Ips,
            _ => bail!("runner.counterfact_mode: `{mode}` is not a mode (DR, IPW)"),
        };
        set("runner.counterfact_mode", Some(kind), &mut config.model.kind, ModelConfig::default().kind)?;
    }
    if let Some(n) = r.infer_batch_size {
        match config.predict.batch_size {
            Some(p) if p != n => bail!("runner.infer_batch_size = {n} conflicts with predict.batch_size {p}"),
            _ => config.predict.batch_size = Some(n),
        }
    }
    for key in r.other.keys() {
        let name = format!("runner.{key}");
        ensure!(IGNORED.iter().any(|(k, _)| *k == name), "unknown key `{name}`");
    }
    let mut runner_ignored: Vec<String> = r.other.keys().map(|k| format!("runner.{k}")).collect();
    used.chain = data_dirs(config, &r, file, &mut runner_ignored)?;
    let save = r.model_save_path.clone().or_else(|| used.chain.then(|| DEFAULT_SAVE_PATH.into()));
    if let Some(root) = save {
        save_under(config, &root, file);
    }
    runner_ignored.sort_by_key(|k| IGNORED.iter().position(|(i, _)| i == k).unwrap_or(usize::MAX));
    used.ignored.splice(0..0, runner_ignored);
    Ok(used)
}

/// Sets `target` from a PaddleRec alias; a native value other than the default must agree.
fn set<T: PartialEq + Copy + std::fmt::Debug>(alias: &str, value: Option<T>, target: &mut T, default: T) -> Result<()> {
    if let Some(v) = value {
        if *target != default && *target != v {
            bail!("{alias} = {v:?} conflicts with the native key's {:?}", *target);
        }
        *target = v;
    }
    Ok(())
}

fn apply_hyper(h: &PaddleHyper, model: &mut ModelConfig, hash_buckets: &mut u64) -> Result<()> {
    let dm = ModelConfig::default();
    let buckets = IngestConfig::default().hash_buckets;
    set("hyper_parameters.sparse_feature_number", h.sparse_feature_number, hash_buckets, buckets)?;
    set("hyper_parameters.sparse_feature_dim", h.sparse_feature_dim, &mut model.embedding_dim, dm.embedding_dim)?;
    if let Some(n) = h.num_field {
        ensure!(n == FIELDS.len(), "hyper_parameters.num_field must be {} (the Ali-CCP fields), got {n}", FIELDS.len());
    }
    if let Some(s) = &h.ctr_fc_sizes {
        model.ctr_fc_sizes = Some(s.clone());
    }
    if let Some(s) = &h.cvr_fc_sizes {
        model.cvr_fc_sizes = Some(s.clone());
    }
    set("hyper_parameters.max_len", h.max_len, &mut model.max_len, dm.max_len)?;
    set("hyper_parameters.global_w", h.global_w, &mut model.global_w, dm.global_w)?;
    set("hyper_parameters.counterfactual_w", h.counterfactual_w, &mut model.counterfactual_w, dm.counterfactual_w)?;
    apply_mixture(h, model)?;
    if let Some(o) = &h.optimizer {
        set("hyper_parameters.optimizer.learning_rate", o.learning_rate, &mut model.learning_rate, dm.learning_rate)?;
        match o.class.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("adam") => {}
            Some("adagrad") => model.sparse_optimizer = SparseKind::Adagrad,
            Some(other) => bail!("hyper_parameters.optimizer.class: `{other}` is not supported (adam, adagrad)"),
        }
    }
    Ok(())
}

/// escm2's mixture-of-experts keys → `model.backbone: mmoe` and `model.mmoe`; `feature_size`
/// checked against the embedding width.
fn apply_mixture(h: &PaddleHyper, model: &mut ModelConfig) -> Result<()> {
    if let Some(width) = h.feature_size {
        let dim = model.embedding_dim;
        ensure!(
            width == FIELDS.len() * dim,
            "hyper_parameters.feature_size must be {} (23 fields × sparse_feature_dim {dim}), got {width}",
            FIELDS.len() * dim
        );
    }
    if h.expert_num.is_none() && h.expert_size.is_none() && h.tower_size.is_none() {
        return Ok(());
    }
    let dm = Mmoe::default();
    set("hyper_parameters.expert_num", Some(Backbone::Mmoe), &mut model.backbone, Backbone::Towers)?;
    set("hyper_parameters.expert_num", h.expert_num, &mut model.mmoe.experts, dm.experts)?;
    set("hyper_parameters.expert_size", h.expert_size, &mut model.mmoe.expert_size, dm.expert_size)?;
    if let Some(t) = h.tower_size {
        let native = &model.mmoe.tower_sizes;
        ensure!(
            *native == dm.tower_sizes || *native == [t],
            "hyper_parameters.tower_size = {t} conflicts with the native key's {native:?}"
        );
        model.mmoe.tower_sizes = vec![t];
    }
    Ok(())
}

/// `runner.train_data_dir` / `test_data_dir` → the PaddleRec-format ingest, unless the file
/// says where its raw data is itself (then they join the ignored keys). True for a chain.
fn data_dirs(config: &mut PipelineConfig, r: &PaddleRunner, file: &Value, ignored: &mut Vec<String>) -> Result<bool> {
    let given: Vec<&str> = [("runner.train_data_dir", &r.train_data_dir), ("runner.test_data_dir", &r.test_data_dir)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|_| k))
        .collect();
    if given.is_empty() {
        return Ok(false);
    }
    if ["raw", "raw_train", "raw_test"].iter().any(|k| has(file, &["paths", k])) || has(file, &["ingest", "format"]) {
        ignored.extend(given.iter().map(|k| format!("{k} (the file sets paths.raw* / ingest.format)")));
        return Ok(false);
    }
    let (Some(train), Some(test)) = (&r.train_data_dir, &r.test_data_dir) else {
        let missing = if r.train_data_dir.is_none() { "runner.train_data_dir" } else { "runner.test_data_dir" };
        bail!("{} needs {missing} too: ingest reads the train and the test data", given[0]);
    };
    ensure!(
        config.generate.is_none(),
        "runner.train_data_dir reads PaddleRec-format files: a `generate:` section writes Ali-CCP raw files instead"
    );
    config.ingest.format = Format::Paddlerec;
    config.paths.raw_train = Some(train.clone());
    config.paths.raw_test = Some(test.clone());
    Ok(true)
}

/// Every stage output under `root`, except the `paths.*` the file gives.
fn save_under(config: &mut PipelineConfig, root: &Path, file: &Value) {
    let p = &mut config.paths;
    for (key, path) in [
        ("ingest", &mut p.ingest),
        ("split", &mut p.split),
        ("model", &mut p.model),
        ("predictions", &mut p.predictions),
        ("metrics", &mut p.metrics),
    ] {
        if !has(file, &["paths", key]) {
            *path = root.join(key);
        }
    }
}

/// Whether the parsed file gives the key at `path`.
fn has(file: &Value, path: &[&str]) -> bool {
    let mut v = file;
    for key in path {
        match v.get(*key) {
            Some(next) => v = next,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_and_conflicts_are_named() {
        let yaml = "runner:\n  train_batch_size: 512\n  epochs: 3\n  use_gpu: False\n  infer_batch_size: 64\n\
                    hyper_parameters:\n  sparse_feature_number: 737946\n  sparse_feature_dim: 12\n  num_field: 23\n\
                    \x20 ctr_fc_sizes: [256, 64]\n  max_len: 3\n  optimizer:\n    class: adam\n    learning_rate: 0.002\n    strategy: async\n";
        let c = PipelineConfig::parse(yaml).unwrap();
        assert_eq!((c.train.batch_size, c.train.epochs, c.predict.batch_size), (512, 3, Some(64)));
        assert_eq!((c.model.max_len, c.model.learning_rate), (3, 0.002));
        assert_eq!(c.ingest.hash_buckets, 737946);
        assert_eq!(c.paddle.ignored, ["runner.use_gpu", "hyper_parameters.optimizer.strategy"]);
        assert!(!c.paddle.chain);
        assert_eq!(c.paths.model, PathBuf::from("data/model"), "no model_save_path: the native defaults");
        let err = |yaml: &str| format!("{:#}", PipelineConfig::parse(yaml).unwrap_err());
        assert!(err("runner:\n  bogus: 1\n").contains("runner.bogus"));
        assert!(err("runner:\n  epoch: 1\n").contains("runner.epoch"));
        assert!(err("train: {epochs: 6}\nrunner: {epochs: 5}\n").contains("runner.epochs"));
        assert!(err("predict: {batch_size: 4}\nrunner: {infer_batch_size: 5}\n").contains("runner.infer_batch_size"));
        let c = PipelineConfig::parse("hyper_parameters: {sparse_feature_dim: 16}\n").unwrap();
        assert_eq!(c.model.embedding_dim, 16);
        assert!(err("hyper_parameters: {sparse_feature_dim: 0}\n").contains("model.embedding_dim"));
        assert!(err("hyper_parameters: {num_field: 22}\n").contains("num_field"));
        assert!(err("hyper_parameters: {optimizer: {klass: adam}}\n").contains("klass"));
        // escm2's loss weights and counterfactual mode
        let c = PipelineConfig::parse(
            "hyper_parameters: {global_w: 0.5, counterfactual_w: 0.01}\nrunner: {counterfact_mode: \"DR\"}\n",
        )
        .unwrap();
        assert_eq!((c.model.kind, c.model.global_w, c.model.counterfactual_w), (ModelKind::Escm2Dr, 0.5, 0.01));
        let c = PipelineConfig::parse("runner: {counterfact_mode: IPW}\n").unwrap();
        assert_eq!(c.model.kind, ModelKind::Escm2Ips);
        assert!(err("runner: {counterfact_mode: XY}\n").contains("runner.counterfact_mode: `XY`"));
        assert!(err("model: {kind: dcmt}\nrunner: {counterfact_mode: DR}\n").contains("runner.counterfact_mode"));
        // escm2's mixture of experts
        let c = PipelineConfig::parse(
            "hyper_parameters: {expert_num: 4, expert_size: 10, tower_size: 6, gate_num: 3, feature_size: 276}\n",
        )
        .unwrap();
        assert_eq!(c.model.backbone, Backbone::Mmoe);
        assert_eq!(c.model.mmoe, Mmoe { experts: 4, expert_size: 10, tower_sizes: vec![6] });
        assert_eq!(c.paddle.ignored, ["hyper_parameters.gate_num"]);
        let c = PipelineConfig::parse("hyper_parameters: {feature_size: 276}\n").unwrap();
        assert_eq!(c.model.backbone, Backbone::Towers, "feature_size alone is a check");
        assert!(err("hyper_parameters: {feature_size: 270}\n").contains("feature_size must be 276"));
        assert!(err("hyper_parameters: {sparse_feature_dim: 4, feature_size: 276}\n").contains("must be 92"));
        let e = err("model: {mmoe: {tower_sizes: [4]}}\nhyper_parameters: {tower_size: 8}\n");
        assert!(e.contains("hyper_parameters.tower_size"), "{e}");
        let e = err("model: {kind: esmm_ns}\nhyper_parameters: {expert_num: 8}\n");
        assert!(e.contains("model.backbone: mmoe"), "{e}");
    }

    #[test]
    fn data_dirs_make_a_paddlerec_chain_under_model_save_path() {
        let yaml = "runner: {train_data_dir: d/tr, test_data_dir: d/te, model_save_path: out, auc_num: 2}\n\
                    paths: {metrics: m}\n";
        let c = PipelineConfig::parse(yaml).unwrap();
        assert!(c.paddle.chain);
        assert_eq!(c.ingest.format, Format::Paddlerec);
        assert_eq!(c.paths.raw_dirs(), Some((PathBuf::from("d/tr"), PathBuf::from("d/te"))));
        assert_eq!(
            (c.paths.ingest.as_path(), c.paths.model.as_path()),
            (Path::new("out/ingest"), Path::new("out/model"))
        );
        assert_eq!(c.paths.metrics, PathBuf::from("m"), "a path the file gives stays");
        assert_eq!(c.paddle.ignored, ["runner.auc_num"]);
        let c = PipelineConfig::parse("runner: {train_data_dir: a, test_data_dir: a}\n").unwrap();
        assert_eq!(c.paths.split, Path::new(DEFAULT_SAVE_PATH).join("split"));
        // The file's own raw data wins; the dirs are named as ignored.
        let c = PipelineConfig::parse("runner: {train_data_dir: a, test_data_dir: b}\npaths: {raw: r}\n").unwrap();
        assert!(!c.paddle.chain && c.ingest.format == Format::Aliccp && c.paths.raw_dirs().is_none());
        assert_eq!(c.paddle.ignored.len(), 2);
        let e = format!("{:#}", PipelineConfig::parse("runner: {train_data_dir: a}\n").unwrap_err());
        assert!(e.contains("runner.test_data_dir"), "{e}");
    }
}
