//! `esmm predict`: per-sample pCTR, pCVR and pCTCVR for every row of a split, in input order,
//! streamed batch by batch into Parquet (`sample_id, split, click, buy, p_ctr, p_cvr, p_ctcvr,
//! scenario, user_key, md5`: the last two, from the sample's common row, group the rows by user
//! and session for group AUC). The manifest goes beside the file as `<file>.manifest.json`. With `--shard i/n`,
//! one contiguous range of batches into a part file (see [`run_shard`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt64Array, UInt8Array};
use serde::Serialize;

use super::{StageReport, StageRun};
use crate::batches::{self, CommonTable};
use crate::manifest;
use crate::model::{checkpoint, infer};
use crate::parquet_out::ParquetOut;
use crate::schema::{self, Split, COMMON_FILE, MODEL_FILE, SAMPLES_FILE};
use crate::shard::Shard;

pub struct PredictStage {
    /// A `train` output directory.
    pub model: PathBuf,
    /// A `split` output directory.
    pub data: PathBuf,
    pub split: Split,
    /// The predictions Parquet file.
    pub out: PathBuf,
    pub batch_size: usize,
    pub threads: usize,
    pub force: bool,
}

#[derive(Serialize)]
struct Params {
    split: String,
    /// Fixes the batches, hence shard boundaries and the float arithmetic.
    batch_size: usize,
}

pub fn run(cfg: &PredictStage) -> Result<StageReport> {
    run_inner(cfg, None)
}

/// One shard of a fanned-out predict (`--shard i/n`): the `i`-th of `n` contiguous ranges of
/// batches, into `<out stem>.part-0000i-of-0000n.parquet` (+ its manifest). The parts,
/// concatenated in shard order, are the unsharded file row for row and value for value (the
/// batches, hence the float arithmetic, are the same).
pub fn run_shard(cfg: &PredictStage, shard: Shard) -> Result<StageReport> {
    run_inner(cfg, Some(shard))
}

fn run_inner(cfg: &PredictStage, shard: Option<Shard>) -> Result<StageReport> {
    manifest::require(&cfg.model, "train")?;
    let split = manifest::require(&cfg.data, "split")?;
    let dir = cfg.data.join(cfg.split.name());
    let inputs = [cfg.model.join(MODEL_FILE), dir.join(SAMPLES_FILE), dir.join(COMMON_FILE)];
    let out = shard.map_or_else(|| cfg.out.clone(), |s| s.part_path(&cfg.out));
    let params = Params { split: cfg.split.name().into(), batch_size: cfg.batch_size };
    let mut st = StageRun::begin_file("predict", &out, &params, &inputs)?;
    st.read_lock(&cfg.model)?;
    st.read_lock(&cfg.data)?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    let (model, _) = checkpoint::load::<serde_json::Value>(&cfg.model.join(MODEL_FILE))?;
    if let Some(b) = split.hash_buckets().filter(|&b| b != model.spec.hash_buckets as u64) {
        bail!(
            "{} was hashed into {b} buckets, the model in {} into {}: predict on data ingested like its training data",
            cfg.data.display(),
            cfg.model.display(),
            model.spec.hash_buckets
        );
    }
    let common = Arc::new(CommonTable::load(&dir.join(COMMON_FILE), model.spec.hash_buckets)?);
    let samples = dir.join(SAMPLES_FILE);
    let batch_size = cfg.batch_size.max(1);
    let batches = batches::count_rows(&samples)?.div_ceil(batch_size as u64);
    let (first, end) = match shard {
        None => (0, batches),
        Some(s) => (batches * s.index as u64 / s.count as u64, batches * (s.index as u64 + 1) / s.count as u64),
    };
    let started = std::time::Instant::now();
    let mut writer = ParquetOut::create(&out, schema::predictions_schema(), 1 << 17)?;
    let split_name = cfg.split.name();
    infer::for_batches_in(&model, &samples, &common, batch_size, first..end, |b| {
        let (p_ctr, p_cvr) = model.predict(b, &common);
        let p_ctcvr: Float32Array = p_ctr.iter().zip(&p_cvr).map(|(a, b)| a * b).collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(b.sample_id.clone())),
            Arc::new(StringArray::from(vec![split_name; b.len()])),
            Arc::new(UInt8Array::from(b.click.clone())),
            Arc::new(UInt8Array::from(b.buy.clone())),
            Arc::new(Float32Array::from(p_ctr)),
            Arc::new(Float32Array::from(p_cvr)),
            Arc::new(p_ctcvr),
            Arc::new(UInt64Array::from(b.scenario.clone())),
            Arc::new(UInt64Array::from(common.user_keys(&b.common_row))),
            Arc::new(UInt64Array::from(common.md5s(&b.common_row))),
        ];
        writer.write(&RecordBatch::try_new(schema::predictions_schema(), cols).context("building predictions batch")?)
    })?;
    let rows = writer.close()?;
    // The scoring loop alone (Parquet read and write included, model and common table load not).
    let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
    crate::log::event("scored", serde_json::json!({ "rows": rows, "samples_per_second": rate }), || {
        format!("predict: {rows} rows scored at {rate:.0} samples/s")
    });
    let mut counts = BTreeMap::from([("rows".to_string(), rows)]);
    if let Some(s) = shard {
        counts.extend([("shard_index".to_string(), s.index as u64), ("shard_count".to_string(), s.count as u64)]);
    }
    st.finish(&[out.clone()], counts, BTreeMap::new(), cfg.threads)
}
