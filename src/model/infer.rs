//! Scoring a whole samples file in input order, batch by batch (predict, validation, the
//! calibration fit).

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::esmm::Model;
use crate::batches::{self, Batch, CommonTable, LoaderConfig, ShuffleUnit};

/// Calls `f(batch, p_ctr, p_cvr)` for every batch of `samples`, in file order; the loader runs
/// on its own thread.
pub fn score_file(
    model: &Model,
    samples: &Path,
    common: &Arc<CommonTable>,
    batch_size: usize,
    mut f: impl FnMut(&Batch, &[f32], &[f32]) -> Result<()>,
) -> Result<()> {
    each_batch(model, samples, common, batch_size, |b| {
        let (p_ctr, p_cvr) = model.predict(b, common);
        f(b, &p_ctr, &p_cvr)
    })
}

/// [`score_file`] with the towers' raw logits `(zc, zv)` instead of probabilities.
pub fn logits_file(
    model: &Model,
    samples: &Path,
    common: &Arc<CommonTable>,
    batch_size: usize,
    mut f: impl FnMut(&Batch, &[f32], &[f32]) -> Result<()>,
) -> Result<()> {
    each_batch(model, samples, common, batch_size, |b| {
        let (zc, zv) = model.logits(b, common);
        f(b, &zc, &zv)
    })
}

fn each_batch(
    model: &Model,
    samples: &Path,
    common: &Arc<CommonTable>,
    batch_size: usize,
    mut f: impl FnMut(&Batch) -> Result<()>,
) -> Result<()> {
    let rx = batches::spawn(LoaderConfig {
        path: samples.to_path_buf(),
        batch_size,
        shuffle_seed: None,
        shuffle_unit: ShuffleUnit::Rows,
        pool_row_groups: 1,
        buckets: model.spec.hash_buckets,
        common: Some(Arc::clone(common)),
    });
    for batch in rx {
        f(&batch?)?;
    }
    Ok(())
}
