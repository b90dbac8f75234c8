//! `esmm split`: materializes `OUT/{train,valid,test}/` from the ingested tables.
//!
//! valid = the train rows whose md5 falls in a deterministic `valid_fraction` of md5 space
//! (so a session never spans train and valid); test = the test file. Each split directory gets
//! its `samples.parquet` (same schema as ingest, re-chunked into `row_group_rows` row groups)
//! and the `common.parquet` its `common_row` points into (a hard link when possible).
//! A polars scan of every output then profiles it (rows, clicks, buys, md5s) into the manifest.
//! The input may also be a sharded ingest (`esmm ingest --shard i/n`): its parts are read in
//! shard order and their common tables concatenated (see [`Sources`]).
//!
//! Membership: `valid ⇔ mix64(md5 ^ hash_words([seed])) < valid_fraction · 2^64` (`mix64` is the
//! splitmix64 finalizer, see [`crate::rng`]). When that would leave the train split empty (data
//! of one or a few sessions, like PaddleRec's `small.txt`: one user side), every train row stays
//! in train and valid is empty instead (a notice, and `valid_moved_to_train` in the manifest);
//! `train` then trains without validation.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, BooleanArray, UInt32Array, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use polars::prelude as pl;

use super::{StageReport, StageRun};
use crate::config::{IngestConfig, SplitConfig};
use crate::manifest;
use crate::parquet_out::ParquetOut;
use crate::rng::{hash_words, mix64};
use crate::schema::{
    self, DataContract, Split, BUY, CLICK, COMMON_FILE, COMMON_ROW, COMMON_ROW_GROUP_ROWS, MD5, SAMPLES_FILE,
};
use crate::shard::Shard;

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
    let sources = Sources::find(&cfg.input)?;
    let data = sources.data()?;
    let inputs: Vec<PathBuf> = Split::SOURCES.iter().flat_map(|&s| sources.files(s)).collect();
    let mut st = StageRun::begin("split", &cfg.out, &cfg.params, &inputs)?;
    st.read_lock(&cfg.input)?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    let out = |s: Split, f: &str| cfg.out.join(s.name()).join(f);
    let rule = ValidRule::new(cfg.params.valid_fraction, cfg.params.seed);
    let rg = cfg.params.row_group_rows;

    // train → train + valid; test → test (re-chunked).
    let (train_rows, valid_rows) = train_and_valid(&sources, &rule, rg, &out)?;
    let moved = (train_rows == 0 && valid_rows > 0).then_some(valid_rows);
    if let Some(rows) = moved {
        crate::log::event("valid_moved_to_train", serde_json::json!({ "rows": rows }), || {
            format!("split: every train session fell in valid ({rows} rows): they stay in train, valid is empty")
        });
        train_and_valid(&sources, &ValidRule::new(0.0, 0), rg, &out)?;
    }
    let mut test = ParquetOut::create(&out(Split::Test, SAMPLES_FILE), schema::samples_schema(), rg)?;
    sources.for_each_batch(Split::Test, rg, |batch| test.write(&batch))?;
    test.close()?;
    for (split, from) in [(Split::Train, Split::Train), (Split::Valid, Split::Train), (Split::Test, Split::Test)] {
        let to = out(split, COMMON_FILE);
        match (split, &sources.parts) {
            (Split::Valid, Some(_)) => link_or_copy(&out(Split::Train, COMMON_FILE), &to)?,
            _ => sources.write_common(from, &to)?,
        }
    }

    st.set_data(data);
    let mut counts = BTreeMap::new();
    if let Some(n) = sources.parts {
        counts.insert("ingest_shards".into(), n as u64);
    }
    if let Some(rows) = moved {
        counts.insert("valid_moved_to_train".into(), rows);
    }
    let mut outputs = Vec::new();
    for split in Split::ALL {
        profile(&out(split, SAMPLES_FILE), split, &mut counts)?;
        outputs.push(out(split, SAMPLES_FILE));
        outputs.push(out(split, COMMON_FILE));
    }
    st.finish(&outputs, counts, BTreeMap::new(), cfg.threads)
}

/// Writes the train and valid samples of the source train split by `rule`; their row counts.
fn train_and_valid(
    sources: &Sources,
    rule: &ValidRule,
    rg: usize,
    out: &impl Fn(Split, &str) -> PathBuf,
) -> Result<(u64, u64)> {
    let mut train = ParquetOut::create(&out(Split::Train, SAMPLES_FILE), schema::samples_schema(), rg)?;
    let mut valid = ParquetOut::create(&out(Split::Valid, SAMPLES_FILE), schema::samples_schema(), rg)?;
    sources.for_each_batch(Split::Train, rg, |batch| {
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
    Ok((train.close()?, valid.close()?))
}

/// The ingested tables split reads: `{train,test}/{samples,common}.parquet` of a whole ingest, or
/// the parts of a sharded one (all `n` shard manifests required, one config). Parts are read in
/// shard order; each part's `common_row` is shifted by the common rows of the parts before it,
/// so the concatenated common table is what the rows point into.
struct Sources {
    dir: PathBuf,
    /// `Some(n)`: a sharded ingest of `n` parts.
    parts: Option<u32>,
    /// The ingest config (from a manifest).
    config: serde_json::Value,
}

impl Sources {
    /// The ingest's data contract (rebuilt from its config: manifests before the contract
    /// existed have the same keys there).
    fn data(&self) -> Result<DataContract> {
        let ingest: IngestConfig = serde_json::from_value(self.config.clone())
            .with_context(|| format!("the ingest config in the manifest of {}", self.dir.display()))?;
        Ok(ingest.contract())
    }

    fn find(dir: &Path) -> Result<Self> {
        if let Some(m) = manifest::read(dir)? {
            return Ok(Self { dir: dir.to_path_buf(), parts: None, config: m.config });
        }
        let mut shards: Vec<Shard> = match fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    Shard::from_name(&name).filter(|s| name == s.manifest_name())
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if shards.is_empty() {
            manifest::require(dir, "ingest")?;
            bail!("{} changed while split was reading it", dir.display());
        }
        shards.sort_by_key(|s| (s.count, s.index));
        let n = shards[0].count;
        if shards.iter().any(|s| s.count != n) {
            bail!("{} holds parts of sharded ingests with different shard counts; rerun the ingest", dir.display());
        }
        let missing: Vec<String> =
            (0..n).filter(|i| !shards.iter().any(|s| s.index == *i)).map(|i| format!("{i}/{n}")).collect();
        if !missing.is_empty() {
            bail!(
                "{} is a sharded ingest with {} of {n} shards finished: run `esmm ingest --shard I/{n}` for {}",
                dir.display(),
                n as usize - missing.len(),
                missing.join(", ")
            );
        }
        let mut config: Option<(String, serde_json::Value)> = None;
        for s in &shards {
            let path = dir.join(s.manifest_name());
            let m = manifest::read_path(&path)?.with_context(|| format!("{} vanished", path.display()))?;
            match &config {
                Some((hash, _)) if *hash != m.config_hash => {
                    bail!("{}: shard {s} was ingested with another config than shard 0/{n}", dir.display())
                }
                Some(_) => {}
                None => config = Some((m.config_hash, m.config)),
            }
        }
        let config = config.map(|(_, c)| c).unwrap_or_default();
        Ok(Self { dir: dir.to_path_buf(), parts: Some(n), config })
    }

    /// The (samples, common) files of a source split, in shard order.
    fn tables(&self, split: Split) -> Vec<(PathBuf, PathBuf)> {
        let d = self.dir.join(split.name());
        let (samples, common) = (d.join(SAMPLES_FILE), d.join(COMMON_FILE));
        match self.parts {
            None => vec![(samples, common)],
            Some(n) => (0..n)
                .map(|index| {
                    let s = Shard { index, count: n };
                    (s.part_path(&samples), s.part_path(&common))
                })
                .collect(),
        }
    }

    fn files(&self, split: Split) -> Vec<PathBuf> {
        self.tables(split).into_iter().flat_map(|(s, c)| [s, c]).collect()
    }

    /// Every samples batch of a source split, `common_row` pointing into the concatenated common table.
    fn for_each_batch(&self, split: Split, rows: usize, mut f: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        let mut offset = 0u64;
        for (samples, common) in self.tables(split) {
            for_each_batch(&samples, rows, |b| f(if offset == 0 { b } else { shift_common_row(&b, offset)? }))?;
            offset += crate::batches::count_rows(&common)?;
        }
        if offset > u32::MAX as u64 {
            bail!("{} common rows in {}: more than a u32 common_row can index", offset, self.dir.display());
        }
        Ok(())
    }

    /// The common table of a source split at `to`: a link to the whole file, or the parts concatenated.
    fn write_common(&self, split: Split, to: &Path) -> Result<()> {
        let tables = self.tables(split);
        if self.parts.is_none() {
            return link_or_copy(&tables[0].1, to);
        }
        let mut out = ParquetOut::create(to, schema::common_schema(), COMMON_ROW_GROUP_ROWS)?;
        for (_, common) in &tables {
            for_each_batch(common, COMMON_ROW_GROUP_ROWS, |b| out.write(&b))?;
        }
        out.close()?;
        Ok(())
    }
}

/// `batch` with `offset` added to its `common_row` column.
fn shift_common_row(batch: &RecordBatch, offset: u64) -> Result<RecordBatch> {
    let idx = batch.schema().index_of(COMMON_ROW).context("samples table without common_row")?;
    let col = batch.column(idx).as_any().downcast_ref::<UInt32Array>().context("common_row is not u32")?;
    let shifted: UInt32Array = col
        .values()
        .iter()
        .map(|&r| u32::try_from(r as u64 + offset).context("common_row overflows u32"))
        .collect::<Result<Vec<u32>>>()?
        .into();
    let mut cols = batch.columns().to_vec();
    cols[idx] = Arc::new(shifted);
    RecordBatch::try_new(batch.schema(), cols).context("shifting common_row")
}

/// Streams the record batches of a Parquet file.
fn for_each_batch(path: &Path, batch_rows: usize, mut f: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
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
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = to.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
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
