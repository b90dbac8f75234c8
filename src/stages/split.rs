//! `esmm split`: materializes `OUT/{train,valid,test}/` from the ingested tables.
//!
//! valid = the train rows whose md5 falls in a deterministic `valid_fraction` of md5 space
//! (so a session never spans train and valid); test = the test file. Each split directory gets
//! its `samples.parquet` (same schema as ingest, re-chunked into `row_group_rows` row groups)
//! and the `common.parquet` its `common_row` points into (a hard link when possible).
//! A polars scan of every output then profiles it (rows, clicks, buys, md5s) into the manifest.
//!
//! Membership: `valid ⇔ mix64(md5 ^ hash_words([seed])) < valid_fraction · 2^64` (`mix64` is the
//! splitmix64 finalizer, see [`crate::rng`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::{Array, BooleanArray, UInt64Array};
use arrow::compute::filter_record_batch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use polars::prelude as pl;

use super::{StageReport, StageRun};
use crate::config::SplitConfig;
use crate::manifest;
use crate::parquet_out::ParquetOut;
use crate::rng::{hash_words, mix64};
use crate::schema::{self, Split, BUY, CLICK, COMMON_FILE, MD5, SAMPLES_FILE};

pub struct SplitStage {
    /// An `ingest` output directory.
    pub input: PathBuf,
    pub out: PathBuf,
    pub params: SplitConfig,
    pub threads: usize,
    pub force: bool,
}

/// The valid-membership rule (module doc).
pub struct ValidRule {
    salt: u64,
    threshold: u64,
}

impl ValidRule {
    pub fn new(fraction: f64, seed: u64) -> Self {
        Self {
            salt: hash_words(&[seed]),
            threshold: (fraction.clamp(0.0, 1.0) * 2f64.powi(64)).min(u64::MAX as f64) as u64,
        }
    }
    #[inline]
    pub fn is_valid(&self, md5: u64) -> bool {
        mix64(md5 ^ self.salt) < self.threshold
    }
}

pub fn run(cfg: &SplitStage) -> Result<StageReport> {
    cfg.params.validate()?;
    let ingest = manifest::require(&cfg.input, "ingest")?;
    let hash_buckets =
        ingest.config.get("hash_buckets").and_then(|v| v.as_u64()).context("ingest manifest lacks hash_buckets")?;
    let src = |s: Split, f: &str| cfg.input.join(s.name()).join(f);
    let inputs: Vec<PathBuf> =
        Split::SOURCES.iter().flat_map(|&s| [src(s, SAMPLES_FILE), src(s, COMMON_FILE)]).collect();
    let st = StageRun::begin("split", &cfg.out, &cfg.params, &inputs)?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    let out = |s: Split, f: &str| cfg.out.join(s.name()).join(f);
    let rule = ValidRule::new(cfg.params.valid_fraction, cfg.params.seed);
    let rg = cfg.params.row_group_rows;

    // train → train + valid; test → test (re-chunked).
    let mut train = ParquetOut::create(&out(Split::Train, SAMPLES_FILE), schema::samples_schema(), rg)?;
    let mut valid = ParquetOut::create(&out(Split::Valid, SAMPLES_FILE), schema::samples_schema(), rg)?;
    for_each_batch(&src(Split::Train, SAMPLES_FILE), rg, |batch| {
        let md5 = batch
            .column_by_name(MD5)
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .context("samples table without a u64 md5 column")?;
        let mask: BooleanArray = md5.values().iter().map(|&m| Some(rule.is_valid(m))).collect();
        let to_valid = filter_record_batch(&batch, &mask)?;
        let to_train = filter_record_batch(&batch, &arrow::compute::not(&mask)?)?;
        if to_train.num_rows() > 0 {
            train.write(&to_train)?;
        }
        if to_valid.num_rows() > 0 {
            valid.write(&to_valid)?;
        }
        Ok(())
    })?;
    train.close()?;
    valid.close()?;
    let mut test = ParquetOut::create(&out(Split::Test, SAMPLES_FILE), schema::samples_schema(), rg)?;
    for_each_batch(&src(Split::Test, SAMPLES_FILE), rg, |batch| test.write(&batch))?;
    test.close()?;
    for (split, from) in [(Split::Train, Split::Train), (Split::Valid, Split::Train), (Split::Test, Split::Test)] {
        link_or_copy(&src(from, COMMON_FILE), &out(split, COMMON_FILE))?;
    }

    let mut counts = BTreeMap::from([("hash_buckets".to_string(), hash_buckets)]);
    let mut outputs = Vec::new();
    for split in Split::ALL {
        profile(&out(split, SAMPLES_FILE), split, &mut counts)?;
        outputs.push(out(split, SAMPLES_FILE));
        outputs.push(out(split, COMMON_FILE));
    }
    st.finish(&outputs, counts, BTreeMap::new(), cfg.threads)
}

/// Streams the record batches of a Parquet file.
fn for_each_batch(
    path: &Path,
    batch_rows: usize,
    mut f: impl FnMut(arrow::record_batch::RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading Parquet footer of {}", path.display()))?
        .with_batch_size(batch_rows)
        .build()?;
    for batch in reader {
        f(batch.with_context(|| format!("reading {}", path.display()))?)?;
    }
    Ok(())
}

/// Hard-links `from` to `to` (atomically, via a temporary name), copying if linking fails.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(from, &tmp).is_err() {
        fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    }
    fs::rename(&tmp, to).with_context(|| format!("renaming into {}", to.display()))
}

/// Rows, clicks, buys and distinct md5s of a samples file, computed by polars' own reader.
fn profile(path: &Path, split: Split, counts: &mut BTreeMap<String, u64>) -> Result<()> {
    let p = pl::PlRefPath::try_from_path(path)?;
    let df = pl::LazyFrame::scan_parquet(p, Default::default())?
        .select([
            pl::len().cast(pl::DataType::UInt64).alias("rows"),
            pl::col(CLICK).cast(pl::DataType::UInt64).sum().alias("clicks"),
            pl::col(BUY).cast(pl::DataType::UInt64).sum().alias("buys"),
            pl::col(MD5).n_unique().cast(pl::DataType::UInt64).alias("md5s"),
        ])
        .collect()
        .with_context(|| format!("profiling {} with polars", path.display()))?;
    for name in ["rows", "clicks", "buys", "md5s"] {
        let v = df.column(name)?.u64()?.get(0).unwrap_or(0);
        counts.insert(format!("{split}.{name}"), v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_rule_fraction_and_determinism() {
        let r = ValidRule::new(0.1, 3);
        let n = (0..100_000u64).filter(|&m| r.is_valid(mix64(m))).count();
        assert!((9_000..11_000).contains(&n), "{n}");
        let r2 = ValidRule::new(0.1, 4);
        let same = (0..1000u64).filter(|&m| r.is_valid(m) == r2.is_valid(m)).count();
        assert!(same < 1000, "seed must change the split");
        assert!(!(0..1000u64).any(|m| ValidRule::new(0.0, 1).is_valid(m)));
    }
}
