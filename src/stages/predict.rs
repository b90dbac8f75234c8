//! `esmm predict`: per-sample pCTR, pCVR and pCTCVR for every row of a split, in input order,
//! streamed batch by batch into Parquet (`sample_id, split, click, buy, p_ctr, p_cvr, p_ctcvr,
//! scenario`). The manifest goes beside the file as `<file>.manifest.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float32Array, RecordBatch, StringArray, UInt64Array, UInt8Array};
use serde::Serialize;

use super::{StageReport, StageRun};
use crate::batches::CommonTable;
use crate::manifest;
use crate::model::{checkpoint, infer};
use crate::parquet_out::ParquetOut;
use crate::schema::{self, Split, COMMON_FILE, MODEL_FILE, SAMPLES_FILE};

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
}

pub fn run(cfg: &PredictStage) -> Result<StageReport> {
    manifest::require(&cfg.model, "train")?;
    manifest::require(&cfg.data, "split")?;
    let dir = cfg.data.join(cfg.split.name());
    let inputs = [cfg.model.join(MODEL_FILE), dir.join(SAMPLES_FILE), dir.join(COMMON_FILE)];
    let st = StageRun::begin_file("predict", &cfg.out, &Params { split: cfg.split.name().into() }, &inputs)?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    let (model, _) = checkpoint::load::<serde_json::Value>(&cfg.model.join(MODEL_FILE))?;
    let common = CommonTable::load(&dir.join(COMMON_FILE))?;
    let mut out = ParquetOut::create(&cfg.out, schema::predictions_schema(), 1 << 17)?;
    let split_name = cfg.split.name();
    infer::score_file(&model, &dir.join(SAMPLES_FILE), &common, cfg.batch_size, |b, p_ctr, p_cvr| {
        let p_ctcvr: Float32Array = p_ctr.iter().zip(p_cvr).map(|(a, b)| a * b).collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(b.sample_id.clone())),
            Arc::new(StringArray::from(vec![split_name; b.len()])),
            Arc::new(UInt8Array::from(b.click.clone())),
            Arc::new(UInt8Array::from(b.buy.clone())),
            Arc::new(Float32Array::from(p_ctr.to_vec())),
            Arc::new(Float32Array::from(p_cvr.to_vec())),
            Arc::new(p_ctcvr),
            Arc::new(UInt64Array::from(b.scenario.clone())),
        ];
        out.write(&RecordBatch::try_new(schema::predictions_schema(), cols).context("building predictions batch")?)
    })?;
    let rows = out.close()?;
    st.finish(&[cfg.out.clone()], BTreeMap::from([("rows".to_string(), rows)]), BTreeMap::new(), cfg.threads)
}
