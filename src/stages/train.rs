//! `esmm train`: ESMM (or a baseline) on `DATA/train`, validated on `DATA/valid` at the end of
//! every epoch (and `train.evals_per_epoch` times an epoch, or every `train.eval_every_steps`
//! steps) with exact AUCs; the best evaluation by `train.select_on` (valid loss or CTCVR AUC)
//! is kept as `model.bin` and early stopping waits for a better one ([`super::selection`]);
//! a checkpoint per epoch (`checkpoint.bin`, for `--resume`) and a log per evaluation
//! (`epochs.parquet`); with `train.calibration: level` or `platt`, the kept model's output
//! calibration is then fitted on the valid split. With `train.reset_embeddings` each epoch
//! after the first starts from freshly drawn embedding tables, the towers kept, and with
//! `train.ensemble_epochs` (the default) the finished epochs stay in the model as frozen members
//! whose logits it averages (validation, selection and calibration score the ensemble). Deterministic
//! for a given config, seed and thread count; `--resume` continues from the last finished epoch
//! bit-identically.
//!
//! An empty valid split (data with a single session, like PaddleRec's `small.txt`) is no error:
//! training validates nothing — each epoch's end still logs its training loss, with null valid
//! metrics, in `epochs.parquet` —, never stops early, keeps the last epoch's model as
//! `model.bin`, and skips `train.calibration`; a notice says so.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, UInt32Array, UInt64Array};
use serde::{Deserialize, Serialize};

use super::selection::{self, EarlyStopping};
use super::{StageReport, StageRun};
use crate::batches::{self, CommonTable, LoaderConfig};
use crate::config::{CalibrationKind, ModelConfig, OutputBias, TrainConfig};
use crate::manifest;
use crate::metrics::{self, Scored};
use crate::model::{checkpoint, infer, Calibration, FrozenSum, Model, ModelKind, ModelSpec, Platt, StepLoss, Vocab};
use crate::parquet_out::ParquetOut;
use crate::schema::{self, Split, CHECKPOINT_FILE, COMMON_FILE, EPOCHS_FILE, MODEL_FILE, SAMPLES_FILE};

pub struct TrainStage {
    /// A `split` output directory.
    pub data: PathBuf,
    /// The model directory.
    pub out: PathBuf,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub threads: usize,
    pub force: bool,
    /// Continue from `checkpoint.bin` in `out` (same config and data required).
    pub resume: bool,
}

/// What shapes the outputs (hashed for the manifest and checked on resume).
#[derive(Serialize)]
struct Params<'a> {
    model: &'a ModelConfig,
    train: &'a TrainConfig,
    hash_buckets: u64,
}

/// One evaluation on the valid split (at the end of each epoch, and when
/// [`selection::validation_due`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    /// The epoch the evaluation fell in (1-based).
    pub epoch: u32,
    /// Training steps (batches) done over all epochs.
    pub step: u64,
    /// Epochs of training done, fractional within an epoch (x axis of the curves).
    pub epoch_progress: f64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    pub valid_loss: Option<f64>,
    pub valid_auc_ctr: Option<f64>,
    pub valid_auc_cvr: Option<f64>,
    pub valid_auc_ctcvr: Option<f64>,
    /// The entire-space logloss on valid: CTR logloss + CTCVR logloss over every valid
    /// impression, from pCTR and pCTCVR = pCTR·pCVR (ESMM's objective at `global_w` 1): the
    /// same yardstick for every kind, where `valid_loss` is each kind's own objective.
    #[serde(default)]
    pub valid_es_logloss: Option<f64>,
    /// Wall time since the previous evaluation (training and this validation).
    pub seconds: f64,
    pub samples_per_second: f64,
}

/// The trainer's state between epochs (stored in checkpoints).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    pub steps: u64,
    pub stop: EarlyStopping,
    pub history: Vec<EpochLog>,
}

/// Mixed into the seed of an epoch's fresh embeddings (`train.reset_embeddings`).
const RESET_TAG: u64 = 0x5245_5345_5421;

/// Per-epoch shuffle seed.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    crate::rng::hash_words(&[seed, epoch as u64])
}

pub fn run(cfg: &TrainStage) -> Result<StageReport> {
    cfg.model.validate()?;
    cfg.train.validate()?;
    let split = manifest::require(&cfg.data, "split")?;
    let hash_buckets = split.hash_buckets().context("the split manifest has no data contract (rerun split)")?;
    let path = |s: Split, f: &str| cfg.data.join(s.name()).join(f);
    let inputs = [path(Split::Train, SAMPLES_FILE), path(Split::Train, COMMON_FILE), path(Split::Valid, SAMPLES_FILE)];
    let params = Params { model: &cfg.model, train: &cfg.train, hash_buckets };
    let mut st = StageRun::begin("train", &cfg.out, &params, &inputs)?;
    st.read_lock(&cfg.data)?;
    // What a checkpoint must match to be resumed: everything but the epoch budget.
    let more_epochs = TrainConfig { epochs: 0, ..cfg.train.clone() };
    let (resume_key, _) = manifest::config_hash(&Params { train: &more_epochs, ..params })?;
    if !cfg.force && !cfg.resume && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    let spec = ModelSpec {
        kind: cfg.model.kind,
        hash_buckets: hash_buckets as usize,
        embedding_dim: cfg.model.embedding_dim,
        pooling: cfg.model.pooling,
        max_len: cfg.model.max_len_vec(),
        sparse: cfg.model.sparse(),
        dense: cfg.model.dense(),
        init_scale: cfg.model.init_scale,
        seed: cfg.model.seed,
        towers: cfg.model.towers(),
        min_sessions: cfg.model.min_sessions,
        shrink_sessions: cfg.model.shrink_sessions,
        loss: cfg.model.loss(),
    };
    let (model, mut state) = if cfg.resume {
        let ckpt = cfg.out.join(CHECKPOINT_FILE);
        let (model, header) = checkpoint::load::<TrainState>(&ckpt).context("--resume")?;
        if header.config_hash != resume_key || header.inputs != st.inputs {
            bail!("--resume: {} was written for another config or other data; rerun without --resume", ckpt.display());
        }
        (Some(model), header.state)
    } else {
        (None, TrainState::default())
    };
    st.invalidate()?;
    let common = Arc::new(CommonTable::load(&path(Split::Train, COMMON_FILE), spec.hash_buckets)?);
    let mut model = match model {
        Some(m) => m,
        None => {
            let mut model = new_model(spec, &path(Split::Train, SAMPLES_FILE), &common)?;
            let [ctr, cvr, ctcvr] = base_rate_logits(&split.counts);
            if cfg.model.output_bias == OutputBias::BaseRate {
                // AITM's second tower is pCTCVR's: buys per row
                let second = if cfg.model.kind == ModelKind::Aitm { ctcvr } else { cvr };
                model.towers.set_output_biases([ctr, second]);
            }
            // An auxiliary tower starts at what it estimates, whatever `output_bias` says: DR's
            // imputed label at the buys per click, DCMT's counterfactual pCVR* = 1 − pCVR at one
            // minus them (from 0.5, the first steps would pull every unclicked row's pCVR there).
            match cfg.model.kind {
                ModelKind::Escm2Dr => model.towers.set_aux_output_bias(cvr),
                ModelKind::Dcmt => model.towers.set_aux_output_bias(-cvr),
                _ => {}
            }
            model
        }
    };
    let valid_rows = batches::count_rows(&path(Split::Valid, SAMPLES_FILE))?;
    if valid_rows == 0 {
        crate::log::event("no_validation", serde_json::json!({ "valid": path(Split::Valid, SAMPLES_FILE) }), || {
            format!(
                "train: the valid split {} is empty: no validation, no early stopping; model.bin is the last \
                 epoch's model (epochs.parquet: null valid metrics)",
                cfg.data.join(Split::Valid.name()).display()
            )
        });
    }
    let trainer = Trainer {
        cfg,
        valid_rows,
        train_rows: batches::count_rows(&path(Split::Train, SAMPLES_FILE))?,
        train: path(Split::Train, SAMPLES_FILE),
        valid: path(Split::Valid, SAMPLES_FILE),
        common,
        rates: pooled_rates(&split.counts),
        resume_key,
        inputs: st.inputs.clone(),
        frozen: Mutex::default(),
    };
    while state.epochs_done < cfg.train.epochs && !state.stop.stopped {
        trainer.epoch(&mut model, &mut state)?;
    }
    if !cfg.train.calibration.is_none() {
        trainer.calibrate()?;
    }
    let outputs: Vec<PathBuf> = [MODEL_FILE, CHECKPOINT_FILE, EPOCHS_FILE].iter().map(|f| cfg.out.join(f)).collect();
    let mut counts = BTreeMap::from([
        ("epochs".to_string(), state.epochs_done as u64),
        ("steps".to_string(), state.steps),
        ("best_epoch".to_string(), state.stop.best_epoch.unwrap_or(0) as u64),
        ("best_step".to_string(), state.stop.best_step.unwrap_or(0)),
        ("train_rows".to_string(), trainer.train_rows),
        ("stopped_early".to_string(), state.stop.stopped as u64),
    ]);
    if model.vocab().enabled() {
        counts.insert("admitted_ids".to_string(), model.vocab().admitted() as u64);
    }
    st.finish(&outputs, counts, BTreeMap::new(), cfg.threads)
}

/// A fresh model, with its id admission counted on the training samples.
fn new_model(spec: ModelSpec, samples: &Path, common: &CommonTable) -> Result<Model> {
    let (vocab, seen) = Vocab::count(samples, common, spec.hash_buckets, spec.min_sessions, spec.shrink_sessions)?;
    if vocab.enabled() {
        let admitted = vocab.admitted();
        crate::log::event("vocab", serde_json::json!({ "seen": seen, "admitted": admitted }), || {
            format!("ids seen in >= {} training sessions: {admitted} of {seen} get their own row", spec.min_sessions)
        });
    }
    Model::new(spec, vocab)
}

/// Logits of the training split's click rate, buys per click and buys per row (from the split manifest),
/// smoothed by half a count so that no rate is 0 or 1.
fn base_rate_logits(counts: &BTreeMap<String, u64>) -> [f32; 3] {
    let n = |k: &str| counts.get(&format!("train.{k}")).copied().unwrap_or(0) as f64;
    let logit = |k: f64, n: f64| ((k + 0.5) / (n - k + 0.5)).ln() as f32;
    [logit(n("clicks"), n("rows")), logit(n("buys"), n("clicks")), logit(n("buys"), n("rows"))]
}

/// Click rate and buys per click of the train and valid splits together (split manifest).
fn pooled_rates(counts: &BTreeMap<String, u64>) -> [Option<f64>; 2] {
    let n = |k: &str| ["train", "valid"].iter().map(|s| counts.get(&format!("{s}.{k}")).copied().unwrap_or(0)).sum();
    let rate = |k: u64, n: u64| (n > 0).then(|| k as f64 / n as f64);
    [rate(n("clicks"), n("rows")), rate(n("buys"), n("clicks"))]
}

/// Running CTR AUC over the last rows seen, for the progress bar.
struct Running {
    p: VecDeque<f32>,
    y: VecDeque<bool>,
}

impl Running {
    const WINDOW: usize = 1 << 17;
    fn push(&mut self, p: &[f32], y: &[u8]) {
        self.p.extend(p);
        self.y.extend(y.iter().map(|&c| c == 1));
        while self.p.len() > Self::WINDOW {
            self.p.pop_front();
            self.y.pop_front();
        }
    }
    fn auc(&self) -> Option<f64> {
        let p: Vec<f32> = self.p.iter().copied().collect();
        let y: Vec<bool> = self.y.iter().copied().collect();
        metrics::auc(&p, &y)
    }
}

/// Training since the previous evaluation.
struct Window {
    started: Instant,
    loss_sum: f64,
    rows: usize,
}

impl Window {
    fn new() -> Self {
        Self { started: Instant::now(), loss_sum: 0.0, rows: 0 }
    }
}

/// What every epoch of one training run shares.
struct Trainer<'a> {
    cfg: &'a TrainStage,
    common: Arc<CommonTable>,
    train: PathBuf,
    valid: PathBuf,
    train_rows: u64,
    /// Click rate and buys per click of train and valid together (the calibration's level).
    rates: [Option<f64>; 2],
    /// 0: nothing to validate on (only the epochs' ends are logged; the last one is kept).
    valid_rows: u64,
    resume_key: String,
    inputs: Vec<manifest::FileEntry>,
    /// Per valid batch: the summed logits of the ensemble's frozen members scored so far.
    frozen: Mutex<Vec<FrozenSum>>,
}

impl Trainer<'_> {
    /// One pass over the training split (shuffled per epoch, learning rates scaled by
    /// `lr_decay^epoch`), validating when [`selection::validation_due`] and at its end, until
    /// early stopping; then `checkpoint.bin` and `epochs.parquet`.
    fn epoch(&self, model: &mut Model, state: &mut TrainState) -> Result<()> {
        let epoch = state.epochs_done;
        let train = &self.cfg.train;
        if train.reset_embeddings && epoch > 0 {
            if train.ensemble_epochs {
                model.keep_snapshot()?;
            }
            model.reset_embeddings(crate::rng::hash_words(&[self.cfg.model.seed, RESET_TAG, epoch as u64]));
        }
        model.set_lr_scale(train.lr_decay.powi(epoch as i32));
        model.unclicked_w = 1.0 / train.keep_unclicked;
        let rx = batches::spawn(LoaderConfig {
            path: self.train.clone(),
            batch_size: train.batch_size,
            shuffle_seed: Some(epoch_seed(train.seed, epoch)),
            shuffle_unit: train.shuffle,
            pool_row_groups: train.shuffle_pool_row_groups,
            buckets: model.spec.hash_buckets,
            common: Some(Arc::clone(&self.common)),
            keep_unclicked: train.keep_unclicked,
        });
        let bar = crate::progress::rows(&format!("epoch {}", epoch + 1), self.train_rows);
        let mut running = Running { p: VecDeque::new(), y: VecDeque::new() };
        let (mut window, mut epoch_rows) = (Window::new(), 0usize);
        for batch in rx {
            let batch = batch?;
            let (loss, p_ctr) = model.train_step(&batch, &self.common);
            window.loss_sum += loss.value() * batch.len() as f64;
            window.rows += batch.len();
            let before = epoch_rows as u64;
            epoch_rows += batch.len();
            state.steps += 1;
            if !bar.is_hidden() {
                running.push(&p_ctr, &batch.click);
                bar.inc(batch.len() as u64);
                if state.steps % 50 == 0 {
                    let auc = running.auc().map_or("-".into(), |a| format!("{a:.4}"));
                    bar.set_message(format!("loss {:.4} ctr auc {auc}", window.loss_sum / window.rows as f64));
                }
            }
            let due = selection::validation_due(train, state.steps, (before, epoch_rows as u64), self.train_rows);
            if due && self.valid_rows > 0 {
                bar.suspend(|| self.validate(model, state, epoch_rows, &mut window))?;
                if state.stop.stopped {
                    break;
                }
            }
        }
        bar.finish_and_clear();
        // The epoch's end is validated unless its last step just was (or training stopped).
        if !state.stop.stopped && (window.rows > 0 || epoch_rows == 0) {
            self.validate(model, state, epoch_rows, &mut window)?;
        }
        state.epochs_done += 1;
        let out = &self.cfg.out;
        checkpoint::save(&out.join(CHECKPOINT_FILE), model, state, &self.resume_key, &self.inputs)?;
        write_epochs(&out.join(EPOCHS_FILE), &state.history)
    }

    /// Fits the calibration of the kept model (`model.bin`) on the valid split's logits and
    /// rewrites it; a tower without both classes there keeps the identity, said so.
    fn calibrate(&self) -> Result<()> {
        if self.valid_rows == 0 {
            crate::log::event("calibration", serde_json::json!({ "rows": 0, "skipped": "empty valid split" }), || {
                "train.calibration skipped: the valid split is empty (the model keeps σ(logit))".into()
            });
            return Ok(());
        }
        let path = self.cfg.out.join(MODEL_FILE);
        let (mut model, header) = checkpoint::load::<TrainState>(&path)?;
        let (mut zc, mut zv, mut click, mut buy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        infer::for_each_batch(&model, &self.valid, &self.common, 4096, |b| {
            let (c, v) = model.logits(b, &self.common);
            zc.extend_from_slice(&c);
            zv.extend_from_slice(&v);
            click.extend(b.click.iter().map(|&c| c == 1));
            buy.extend(b.buy.iter().map(|&b| b == 1));
            Ok(())
        })?;
        let slope = self.cfg.train.calibration == CalibrationKind::Platt;
        let (cal, fitted) = Calibration::fit(&zc, &zv, (&click, &buy), self.rates, slope);
        let ratio = |z: &[f32], y: &[bool], p: Platt, rows: &dyn Fn(usize) -> bool| {
            let (mut sp, mut sy) = (0.0f64, 0usize);
            for i in (0..z.len()).filter(|&i| rows(i)) {
                sp += p.prob(z[i]) as f64;
                sy += y[i] as usize;
            }
            sp / sy.max(1) as f64
        };
        let all = |_: usize| true;
        let clicked = |i: usize| click[i];
        let before = [ratio(&zc, &click, Platt::default(), &all), ratio(&zv, &buy, Platt::default(), &clicked)];
        let after = [ratio(&zc, &click, cal.ctr, &all), ratio(&zv, &buy, cal.cvr, &clicked)];
        let json = serde_json::json!({ "rows": zc.len(), "fitted": fitted, "ctr": cal.ctr, "cvr": cal.cvr,
            "level_rates": self.rates, "valid_calibration_before": before, "valid_calibration_after": after });
        crate::log::event("calibration", json, || {
            let f = |name: &str, p: Platt, ok: bool, b: f64, a: f64| match ok {
                true => format!("{name} σ({:.4}·z {:+.4}), valid mean p / rate {b:.3} → {a:.3}", p.a, p.b),
                false => format!("{name} left as trained (the valid rows lack one class)"),
            };
            format!(
                "calibration on {} valid rows: {}; {}",
                zc.len(),
                f("pCTR", cal.ctr, fitted[0], before[0], after[0]),
                f("pCVR (clicked)", cal.cvr, fitted[1], before[1], after[1])
            )
        });
        model.calibration = cal;
        checkpoint::save_model(&path, &model, &header.state, &self.resume_key, &self.inputs)
    }

    /// Exact metrics over the whole valid split; the log row; `model.bin` when it is the best.
    fn validate(&self, model: &Model, state: &mut TrainState, epoch_rows: usize, window: &mut Window) -> Result<()> {
        let train_seconds = window.started.elapsed().as_secs_f64();
        let mut scored = Scored::default();
        let mut valid_loss = StepLoss::default();
        let mut frozen = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        let mut k = 0;
        infer::for_each_batch(model, &self.valid, &self.common, 4096, |b| {
            if frozen.len() == k {
                frozen.push(FrozenSum::default());
            }
            let (loss, p_ctr, p_cvr) = model.evaluate_with(b, &self.common, &mut frozen[k]);
            k += 1;
            for i in 0..b.len() {
                scored.push(b.click[i], b.buy[i], p_ctr[i], p_cvr[i]);
            }
            valid_loss.add(&loss);
            Ok(())
        })?;
        let m = scored.metrics();
        let epoch = state.epochs_done;
        let log = EpochLog {
            epoch: epoch as u32 + 1,
            step: state.steps,
            epoch_progress: epoch as f64 + epoch_rows as f64 / self.train_rows.max(1) as f64,
            train_loss: window.loss_sum / window.rows.max(1) as f64,
            valid_loss: (!scored.is_empty()).then(|| valid_loss.value()),
            valid_auc_ctr: Scored::get(&m, "ctr", "auc"),
            valid_auc_cvr: Scored::get(&m, "cvr", "auc"),
            valid_auc_ctcvr: Scored::get(&m, "ctcvr", "auc"),
            valid_es_logloss: Scored::get(&m, "ctr", "logloss")
                .zip(Scored::get(&m, "ctcvr", "logloss"))
                .map(|(a, b)| a + b),
            seconds: window.started.elapsed().as_secs_f64(),
            samples_per_second: window.rows as f64 / train_seconds.max(1e-9),
        };
        log_evaluation(&log, self.cfg.train.epochs);
        let score = self.cfg.train.select_on.score(log.valid_loss, log.valid_auc_ctcvr);
        state.history.push(log);
        if state.stop.observe(score, state.steps, epoch as u32 + 1, self.cfg.train.early_stopping_patience) {
            checkpoint::save_model(&self.cfg.out.join(MODEL_FILE), model, state, &self.resume_key, &self.inputs)?;
        }
        *window = Window::new();
        Ok(())
    }
}

fn log_evaluation(log: &EpochLog, epochs: usize) {
    crate::log::event("epoch", serde_json::to_value(log).unwrap_or_default(), || {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
        format!(
            "train: epoch {}/{} step {}: loss {:.5}, valid loss {} auc ctr {} cvr {} ctcvr {} ({:.0} s, {:.0} samples/s)",
            log.epoch,
            epochs,
            log.step,
            log.train_loss,
            f(log.valid_loss),
            f(log.valid_auc_ctr),
            f(log.valid_auc_cvr),
            f(log.valid_auc_ctcvr),
            log.seconds,
            log.samples_per_second
        )
    });
}

fn write_epochs(path: &Path, history: &[EpochLog]) -> Result<()> {
    let f = |g: fn(&EpochLog) -> Option<f64>| -> ArrayRef { Arc::new(history.iter().map(g).collect::<Float64Array>()) };
    let batch = RecordBatch::try_new(
        schema::epochs_schema(),
        vec![
            Arc::new(history.iter().map(|e| e.epoch).collect::<UInt32Array>()),
            Arc::new(history.iter().map(|e| e.step).collect::<UInt64Array>()),
            f(|e| Some(e.epoch_progress)),
            f(|e| Some(e.train_loss)),
            f(|e| e.valid_loss),
            f(|e| e.valid_auc_ctr),
            f(|e| e.valid_auc_cvr),
            f(|e| e.valid_auc_ctcvr),
            f(|e| e.valid_es_logloss),
            f(|e| Some(e.seconds)),
            f(|e| Some(e.samples_per_second)),
        ],
    )?;
    let mut out = ParquetOut::create(path, schema::epochs_schema(), 1 << 16)?;
    out.write(&batch)?;
    out.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::towers::Towers;
    use crate::model::{DenseAdam, TowerSpec};

    /// `model.output_bias: base_rate`: the logits of the smoothed training rates, set on the
    /// two output biases only (any hidden sizes).
    #[test]
    fn output_biases_start_at_the_training_rates() {
        let counts: BTreeMap<String, u64> =
            [("train.rows", 1000), ("train.clicks", 40), ("train.buys", 1)].map(|(k, v)| (k.to_string(), v)).into();
        let [c, v, _] = base_rate_logits(&counts);
        assert!((c - (40.5f32 / 960.5).ln()).abs() < 1e-6 && (v - (1.5f32 / 39.5).ln()).abs() < 1e-6, "{c} {v}");
        let spec = TowerSpec {
            backend: crate::model::Backend::Gemm,
            ctr_fc_sizes: vec![8, 4, 2],
            cvr_fc_sizes: vec![3],
            ..TowerSpec::default()
        };
        let adam = DenseAdam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut t = Towers::with_spec(&spec, 12, adam, || 0.5).unwrap();
        let before = t.params();
        t.set_output_biases([c, v]);
        let after = t.params();
        let changed: Vec<(usize, usize)> = (0..after.len())
            .flat_map(|i| (0..after[i].len()).map(move |j| (i, j)))
            .filter(|&(i, j)| after[i][j] != before[i][j])
            .collect();
        assert_eq!(changed, [(7, 0), (11, 0)]);
        assert_eq!((after[7][0], after[11][0]), (c, v));
    }
}
