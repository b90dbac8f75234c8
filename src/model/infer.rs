//! Scoring a whole samples file in input order, batch by batch (predict, validation).

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
        let batch = batch?;
        let (p_ctr, p_cvr) = model.predict(&batch, common);
        f(&batch, &p_ctr, &p_cvr)?;
    }
    Ok(())
}
