//! Reading a whole samples file in input order, batch by batch, for scoring (validation, the
//! calibration fit).

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::esmm::Model;
use crate::batches::{self, Batch, CommonTable, LoaderConfig, ShuffleUnit};

/// Calls `f(batch)` for every batch of `samples` (joined to `common` the way `model` was
/// trained), in file order; the loader runs on its own thread. `f` scores with
/// [`Model::predict`] (probabilities) or [`Model::logits`].
pub fn for_each_batch(
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
