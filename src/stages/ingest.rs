//! `esmm ingest`: raw CSV → hashed Parquet (tables of [`crate::schema`]), streaming with bounded memory.
//!
//! Per source split: the common file first (md5 → row index kept in memory, ~16 B per md5),
//! then the skeleton, joined by md5 (not by runs). Lines are parsed in parallel chunks and
//! written in input order, so the output does not depend on `--threads`. Output:
//! `OUT/{train,test}/{common,samples}.parquet` and `OUT/_manifest.json`, or with `--shard i/n`
//! one shard's sessions as `….part-0000i-of-0000n.parquet` (see [`crate::shard`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, BooleanArray, UInt32Array, UInt64Array, UInt8Array};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;

use super::{StageReport, StageRun};
use crate::aliccp::{self, Chunk, ChunkReader, FeatureParser, Issue, Notes, Reason, SampleRows};
use crate::columns::ListColumns;
use crate::config::{Format, IngestConfig};
use crate::hashing::FeatureHasher;
use crate::occupancy::Occupancy;
use crate::parallel::ordered_map;
use crate::parquet_out::ParquetOut;
use crate::schema::{self, Split, COMMON_FILE, COMMON_ROW_GROUP_ROWS, SAMPLES_FILE};
use crate::shard::Shard;

/// Bytes of raw text per parse task.
const CHUNK_BYTES: usize = 4 << 20;

pub struct IngestStage {
    pub raw: PathBuf,
    /// Format paddlerec: the train and test folders instead of `raw/train`, `raw/test`
    /// (PaddleRec's `runner.train_data_dir`, `test_data_dir`; they may be one folder).
    pub split_dirs: Option<(PathBuf, PathBuf)>,
    pub out: PathBuf,
    pub params: IngestConfig,
    pub threads: usize,
    pub force: bool,
}

pub fn run(cfg: &IngestStage) -> Result<StageReport> {
    run_inner(cfg, None)
}

/// One shard of a fanned-out ingest (`--shard i/n`): the sessions (md5s) of `shard` only, into
/// `OUT/{train,test}/{common,samples}.part-….parquet` and `OUT/_manifest.part-….json`
/// (see [`crate::shard`]). `split` reads the parts once all `n` manifests are there.
pub fn run_shard(cfg: &IngestStage, shard: Shard) -> Result<StageReport> {
    if cfg.params.format == Format::Paddlerec {
        bail!(
            "--shard needs --format aliccp: PaddleRec rows find their user side only by parsing them \
             (split the train/ and test/ folders into separate ingests instead)"
        );
    }
    run_inner(cfg, Some(shard))
}

fn run_inner(cfg: &IngestStage, shard: Option<Shard>) -> Result<StageReport> {
    cfg.params.validate()?;
    let inputs: Vec<PathBuf> =
        Split::SOURCES.iter().map(|&s| input_files(cfg, s)).collect::<Result<Vec<_>>>()?.concat();
    let mut st = match shard {
        None => StageRun::begin("ingest", &cfg.out, &cfg.params, &inputs)?,
        Some(s) => StageRun::begin_shard("ingest", &cfg.out, s, &cfg.params, &inputs)?,
    };
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    let hasher = FeatureHasher::new(cfg.params.hash_buckets, cfg.params.hash_seed)?;
    let parser = FeatureParser { hasher: &hasher, caps: cfg.params.caps(), table: Default::default() };
    let mut counts = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    let mut outputs = Vec::new();
    for split in Split::SOURCES {
        let dir = cfg.out.join(split.name());
        let files = input_files(cfg, split)?;
        let out = Outputs::new(&dir, shard);
        let tally = match cfg.params.format {
            Format::Aliccp => ingest_aliccp(cfg, &parser, &files, &out, shard)?,
            Format::Paddlerec => ingest_paddlerec(cfg, &parser, &files, &out)?,
        };
        tally.record(split, &mut counts, &mut skipped);
        outputs.push(out.common);
        outputs.push(out.samples);
    }
    if let Some(s) = shard {
        counts.insert("shard_index".into(), s.index as u64);
        counts.insert("shard_count".into(), s.count as u64);
    }
    st.set_data(cfg.params.contract());
    st.finish(&outputs, counts, skipped, cfg.threads)
}

/// The two tables of one split: whole, or one shard's parts.
struct Outputs {
    common: PathBuf,
    samples: PathBuf,
}

impl Outputs {
    fn new(dir: &Path, shard: Option<Shard>) -> Self {
        let (common, samples) = (dir.join(COMMON_FILE), dir.join(SAMPLES_FILE));
        match shard {
            None => Self { common, samples },
            Some(s) => Self { common: s.part_path(&common), samples: s.part_path(&samples) },
        }
    }
}

/// The raw files of one split: the skeleton and common file (aliccp), or every file of the
/// split's folder in name order (paddlerec: `raw/<split>`, or the folder of `split_dirs`).
fn input_files(cfg: &IngestStage, split: Split) -> Result<Vec<PathBuf>> {
    match cfg.params.format {
        Format::Aliccp => {
            let files =
                vec![cfg.raw.join(schema::common_features_file(split)), cfg.raw.join(schema::skeleton_file(split))];
            for f in &files {
                if !f.is_file() {
                    bail!(
                        "missing raw input {} (expected the four Ali-CCP files in {})",
                        f.display(),
                        cfg.raw.display()
                    );
                }
            }
            Ok(files)
        }
        Format::Paddlerec => {
            let (dir, expected) = match (&cfg.split_dirs, split) {
                (Some((train, _)), Split::Train) => (train.clone(), "the train data folder"),
                (Some((_, test)), _) => (test.clone(), "the test data folder"),
                (None, _) => (cfg.raw.join(split.name()), "paddlerec format expects train/ and test/ folders"),
            };
            let mut files: Vec<PathBuf> = fs::read_dir(&dir)
                .with_context(|| format!("listing {} ({expected})", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("no files in {}", dir.display());
            }
            Ok(files)
        }
    }
}

/// Counts of one split, for the manifest.
#[derive(Default)]
struct Tally {
    skeleton_lines: u64,
    common_lines: u64,
    samples_rows: u64,
    common_rows: u64,
    clicks: u64,
    buys: u64,
    conversions: u64,
    skeleton: Notes,
    common: Notes,
    /// The buckets the split's ids use (unsharded runs: a shard sees part of the table).
    occupancy: Option<Occupancy>,
}

impl Tally {
    fn record(&self, split: Split, counts: &mut BTreeMap<String, u64>, skipped: &mut BTreeMap<String, u64>) {
        for (k, v) in [
            ("skeleton_lines", self.skeleton_lines),
            ("common_lines", self.common_lines),
            ("samples_rows", self.samples_rows),
            ("common_rows", self.common_rows),
            ("clicks", self.clicks),
            ("buys", self.buys),
            ("click_and_buy", self.conversions),
        ] {
            counts.insert(format!("{split}.{k}"), v);
        }
        self.skeleton.to_map(&format!("{split}.skeleton."), skipped);
        self.common.to_map(&format!("{split}.common."), skipped);
        if let Some(o) = &self.occupancy {
            o.record(&format!("{split}."), counts);
        }
    }

    /// Counts the buckets of `cols` in the occupancy, if kept.
    fn occupy(&mut self, cols: &ListColumns) {
        if let Some(o) = &mut self.occupancy {
            cols.field_ids().for_each(|(field, ids)| o.add(field, ids));
        }
    }
}

/// Reads files as chunks tagged with the file index, for one ordered parallel pass.
fn chunks_of(files: &[PathBuf]) -> Result<impl Iterator<Item = Result<(usize, Chunk)>> + Send + '_> {
    let readers = files.iter().map(|f| ChunkReader::open(f, CHUNK_BYTES)).collect::<Result<Vec<_>>>()?;
    Ok(readers.into_iter().enumerate().flat_map(|(i, r)| r.map(move |c| c.map(|c| (i, c)))))
}

fn total_bytes(files: &[PathBuf]) -> u64 {
    files.iter().filter_map(|f| fs::metadata(f).ok()).map(|m| m.len()).sum()
}

/// Under `--strict`, the earliest of the worker's and the sink's first issues is an error.
fn strict_check(strict: bool, file: &Path, a: &Option<Issue>, b: &Option<Issue>) -> Result<()> {
    if !strict {
        return Ok(());
    }
    let first = match (a, b) {
        (Some(x), Some(y)) => Some(if x.line <= y.line { x } else { y }),
        (x, y) => x.as_ref().or(y.as_ref()),
    };
    match first {
        Some(issue) => bail!("{} (--strict)", issue.message(&file.display().to_string())),
        None => Ok(()),
    }
}

fn ingest_aliccp(
    cfg: &IngestStage,
    parser: &FeatureParser,
    files: &[PathBuf],
    out: &Outputs,
    shard: Option<Shard>,
) -> Result<Tally> {
    let (common_file, skeleton_file) = (&files[..1], &files[1..]);
    // A shard parses only the lines of its sessions (crate::shard).
    let owns = move |key: Option<u64>, line: u64| match (shard, key) {
        (None, _) => true,
        (Some(s), Some(k)) => s.owns_key(k),
        (Some(s), None) => s.owns_line(line),
    };
    let mut tally =
        Tally { occupancy: shard.is_none().then(|| Occupancy::new(cfg.params.hash_buckets)), ..Default::default() };
    let strict = cfg.params.strict;
    let bar = crate::progress::bytes("common", total_bytes(common_file));

    // 1. The common table; keep md5 → row for the join.
    let mut md5_row: HashMap<u64, u32> = HashMap::new();
    let mut common_out = ParquetOut::create(&out.common, schema::common_schema(), COMMON_ROW_GROUP_ROWS)?;
    let in_flight = cfg.threads * 2 + 2;
    ordered_map(
        chunks_of(common_file)?,
        cfg.threads,
        in_flight,
        |(_, c)| {
            let rows = aliccp::parse_common_chunk_where(&c, parser, |l, n| owns(aliccp::common_key(l), n));
            Ok((c.data.len(), rows))
        },
        |(bytes, rows)| {
            bar.inc(bytes as u64);
            let mut sink = Notes::default();
            let mut keep = Vec::with_capacity(rows.md5.len());
            for (&md5, &line) in rows.md5.iter().zip(&rows.lines) {
                let next = md5_row.len() as u32;
                let new = *md5_row.entry(md5).or_insert(next) == next;
                if !new {
                    sink.add(line, Reason::DuplicateCommonMd5, || format!("md5 {md5:016x}"));
                }
                keep.push(new);
            }
            strict_check(strict, &common_file[0], &rows.notes.first_issue, &sink.first_issue)?;
            tally.common_lines += rows.lines_read;
            tally.occupy(&rows.users);
            tally.common.merge(&rows.notes);
            tally.common.merge(&sink);
            let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(rows.md5))];
            cols.extend(rows.users.into_arrays());
            write_kept(&mut common_out, schema::common_schema(), cols, keep)
        },
    )?;
    bar.finish_and_clear();
    tally.common_rows = common_out.close()?;
    if md5_row.len() as u64 != tally.common_rows {
        bail!("internal: {} md5s but {} common rows", md5_row.len(), tally.common_rows);
    }

    // 2. The samples, joined to the common rows by md5.
    let bar = crate::progress::bytes("skeleton", total_bytes(skeleton_file));
    let mut samples = SamplesSink::new(&out.samples, cfg.params.row_group_rows)?;
    ordered_map(
        chunks_of(skeleton_file)?,
        cfg.threads,
        in_flight,
        |(_, c)| {
            let rows = aliccp::parse_skeleton_chunk_where(&c, parser, |l, n| owns(aliccp::skeleton_key(l), n));
            Ok((c.data.len(), rows))
        },
        |(bytes, rows)| {
            bar.inc(bytes as u64);
            tally.occupy(&rows.items);
            samples.write(rows, &skeleton_file[0], strict, &mut tally, |md5| md5_row.get(&md5).copied())
        },
    )?;
    bar.finish_and_clear();
    tally.samples_rows = samples.out.close()?;
    Ok(tally)
}

fn ingest_paddlerec(cfg: &IngestStage, parser: &FeatureParser, files: &[PathBuf], out: &Outputs) -> Result<Tally> {
    let mut tally = Tally { occupancy: Some(Occupancy::new(cfg.params.hash_buckets)), ..Default::default() };
    let strict = cfg.params.strict;
    let bar = crate::progress::bytes("paddlerec", total_bytes(files));
    let mut key_row: HashMap<u64, u32> = HashMap::new();
    let mut common_out = ParquetOut::create(&out.common, schema::common_schema(), COMMON_ROW_GROUP_ROWS)?;
    let mut samples = SamplesSink::new(&out.samples, cfg.params.row_group_rows)?;
    let in_flight = cfg.threads * 2 + 2;
    ordered_map(
        chunks_of(files)?,
        cfg.threads,
        in_flight,
        |(i, c)| Ok((i, c.data.len(), crate::paddlerec::parse_chunk(&c, parser))),
        |(i, bytes, mut rows)| {
            bar.inc(bytes as u64);
            tally.occupy(&rows.items);
            if let Some(users) = &rows.users {
                tally.occupy(users);
            }
            // New user sides become common rows, in first-seen order.
            let mut keep = Vec::with_capacity(rows.md5.len());
            for &key in &rows.md5 {
                let next = key_row.len() as u32;
                keep.push(*key_row.entry(key).or_insert(next) == next);
            }
            let users = rows.users.take().map(|u| u.into_arrays()).unwrap_or_default();
            let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(rows.md5.clone()))];
            cols.extend(users);
            write_kept(&mut common_out, schema::common_schema(), cols, keep)?;
            samples.write(rows, &files[i], strict, &mut tally, |key| key_row.get(&key).copied())
        },
    )?;
    bar.finish_and_clear();
    tally.common_rows = common_out.close()?;
    tally.common_lines = tally.common_rows;
    tally.samples_rows = samples.out.close()?;
    Ok(tally)
}

/// Writes the rows of `cols` whose `keep` flag is set.
fn write_kept(
    out: &mut ParquetOut,
    schema: arrow::datatypes::SchemaRef,
    cols: Vec<ArrayRef>,
    keep: Vec<bool>,
) -> Result<()> {
    let batch = RecordBatch::try_new(schema, cols).context("building record batch")?;
    let batch = if keep.iter().all(|&k| k) { batch } else { filter_record_batch(&batch, &BooleanArray::from(keep))? };
    if batch.num_rows() > 0 {
        out.write(&batch)?;
    }
    Ok(())
}

/// The samples writer: resolves `common_row`, drops duplicate sample ids, writes in order.
struct SamplesSink {
    out: ParquetOut,
    seen: SeenIds,
}

impl SamplesSink {
    fn new(path: &Path, row_group_rows: usize) -> Result<Self> {
        Ok(Self { out: ParquetOut::create(path, schema::samples_schema(), row_group_rows)?, seen: SeenIds::default() })
    }

    fn write(
        &mut self,
        rows: SampleRows,
        file: &Path,
        strict: bool,
        tally: &mut Tally,
        common_row: impl Fn(u64) -> Option<u32>,
    ) -> Result<()> {
        let n = rows.sample_id.len();
        let mut sink = Notes::default();
        let mut keep = Vec::with_capacity(n);
        let mut rows_idx = Vec::with_capacity(n);
        for i in 0..n {
            let (line, sid, md5) = (rows.lines[i], rows.sample_id[i], rows.md5[i]);
            let row = common_row(md5);
            let ok = match row {
                None => {
                    sink.add(line, Reason::MissingCommonRow, || format!("md5 {md5:016x}"));
                    false
                }
                Some(_) if !self.seen.insert(sid) => {
                    sink.add(line, Reason::DuplicateSampleId, || format!("sample_id {sid}"));
                    false
                }
                Some(_) => true,
            };
            if ok {
                tally.clicks += rows.click[i] as u64;
                tally.buys += rows.buy[i] as u64;
                tally.conversions += (rows.click[i] & rows.buy[i]) as u64;
            }
            keep.push(ok);
            rows_idx.push(row.unwrap_or(0));
        }
        strict_check(strict, file, &rows.notes.first_issue, &sink.first_issue)?;
        tally.skeleton_lines += rows.lines_read;
        tally.skeleton.merge(&rows.notes);
        tally.skeleton.merge(&sink);
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(rows.sample_id)),
            Arc::new(UInt8Array::from(rows.click)),
            Arc::new(UInt8Array::from(rows.buy)),
            Arc::new(UInt64Array::from(rows.md5)),
            Arc::new(UInt32Array::from(rows_idx)),
            Arc::new(UInt64Array::from(rows.items.scenario().to_vec())),
        ];
        cols.extend(rows.items.into_arrays());
        write_kept(&mut self.out, schema::samples_schema(), cols, keep)
    }
}

/// Sample ids seen in a split: a bitmap for ids below 2^32 (1 bit each, grown to the largest id
/// seen: 5 MB for Ali-CCP's 43 M), a hash set above.
#[derive(Default)]
struct SeenIds {
    bits: Vec<u64>,
    large: HashSet<u64>,
}

impl SeenIds {
    /// True if `id` was not seen before.
    fn insert(&mut self, id: u64) -> bool {
        if id >= 1 << 32 {
            return self.large.insert(id);
        }
        let (word, bit) = ((id / 64) as usize, id % 64);
        if word >= self.bits.len() {
            self.bits.resize((word + 1).max(self.bits.len() * 2), 0);
        }
        let new = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids() {
        let mut s = SeenIds::default();
        assert!(s.insert(5));
        assert!(!s.insert(5));
        assert!(s.insert(1 << 40));
        assert!(!s.insert(1 << 40));
        assert!(s.insert(100_000));
        assert!(s.insert(0));
        assert!(!s.insert(0));
    }
}
