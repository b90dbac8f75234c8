//! Reading a samples file in input order, batch by batch, for scoring: validation, the
//! calibration fit and `predict` (the one scoring loop).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::esmm::Model;
use crate::batches::{self, Batch, CommonTable, LoaderConfig, ShuffleUnit};

/// Calls `f(batch)` for every batch of `samples` (joined to `common` the way `model` was
/// trained), in file order; the loader runs on its own thread. `f` scores with
/// [`Model::predict`] (probabilities), [`Model::evaluate`] or [`Model::logits`].
pub fn for_each_batch(
    model: &Model,
    samples: &Path,
    common: &Arc<CommonTable>,
    batch_size: usize,
    f: impl FnMut(&Batch) -> Result<()>,
) -> Result<()> {
    for_batches_in(model, samples, common, batch_size, 0..u64::MAX, f)
}

/// [`for_each_batch`] over the batches numbered `range` only (a shard of the file): the ones
/// before are decoded but not scored, and the loader stops at the range's end.
pub fn for_batches_in(
    model: &Model,
    samples: &Path,
    common: &Arc<CommonTable>,
    batch_size: usize,
    range: Range<u64>,
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
        keep_unclicked: 1.0,
    });
    // Dropping the receiver at the range's end hangs up on the loader.
    for (k, batch) in (0..range.end).zip(rx) {
        let batch = batch?;
        if k >= range.start {
            f(&batch)?;
        }
    }
    Ok(())
}
