//! Parquet samples → training batches. A loader thread reads one row group at a time (projected
//! columns, both list widths), fills a bounded shuffle pool of `pool_row_groups` row groups,
//! permutes it (per epoch, by seed) and cuts batches; a bounded channel lets compute run while
//! the next batch is read. The user side stays in the in-memory [`CommonTable`], joined through
//! `common_row` at batch time: the loader thread copies the distinct common rows a batch uses
//! into the batch ([`BatchUsers`]), so compute reads them from a few contiguous kilobytes
//! instead of chasing rows across the whole table.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, UInt32Type, UInt64Type, UInt8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::rng::{hash_words, unit, Rng};
use crate::schema::{self, side_fields, Side, FIELDS};

/// Tag of the per-row hash that decides [`LoaderConfig::keep_unclicked`].
const NEGATIVE_TAG: u64 = 0x4e45_4741;

/// One field's lists for a set of rows (CSR): row `r` holds `ids[offsets[r]..offsets[r+1]]`.
#[derive(Clone, Debug, Default)]
pub struct FieldCsr {
    pub offsets: Vec<usize>,
    pub ids: Vec<u32>,
    /// Parallel to `ids` for weighted fields; empty otherwise.
    pub weights: Vec<f32>,
}

impl FieldCsr {
    fn new() -> Self {
        Self { offsets: vec![0], ids: Vec::new(), weights: Vec::new() }
    }

    #[inline]
    pub fn ids(&self, row: usize) -> &[u32] {
        &self.ids[self.offsets[row]..self.offsets[row + 1]]
    }

    /// Weights of `row`, or `None` for an unweighted field.
    #[inline]
    pub fn weights(&self, row: usize) -> Option<&[f32]> {
        (!self.weights.is_empty()).then(|| &self.weights[self.offsets[row]..self.offsets[row + 1]])
    }

    /// An empty CSR with room for `rows` rows and `ids` ids (weights too when `weighted`).
    fn with_capacity(rows: usize, ids: usize, weighted: bool) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self { offsets, ids: Vec::with_capacity(ids), weights: Vec::with_capacity(if weighted { ids } else { 0 }) }
    }

    /// The first id `>= limit` as (row, id), if any: ids index an embedding table of `limit` rows.
    fn first_id_at_least(&self, limit: usize) -> Option<(usize, u32)> {
        if (self.ids.iter().fold(0, |m, &v| m.max(v)) as usize) < limit {
            return None;
        }
        let at = self.ids.iter().position(|&v| v as usize >= limit)?;
        Some((self.offsets.partition_point(|&o| o <= at) - 1, self.ids[at]))
    }

    fn push_from(&mut self, other: &FieldCsr, row: usize) {
        let (a, b) = (other.offsets[row], other.offsets[row + 1]);
        // Most lists hold a few ids: element pushes beat a memmove call per list.
        if b - a <= 4 {
            self.ids.extend(other.ids[a..b].iter().copied());
            if !other.weights.is_empty() {
                self.weights.extend(other.weights[a..b].iter().copied());
            }
        } else {
            self.ids.extend_from_slice(&other.ids[a..b]);
            if !other.weights.is_empty() {
                self.weights.extend_from_slice(&other.weights[a..b]);
            }
        }
        self.offsets.push(self.ids.len());
    }

    fn append(&mut self, other: FieldCsr) {
        let base = self.ids.len();
        self.offsets.extend(other.offsets[1..].iter().map(|o| o + base));
        self.ids.extend(other.ids);
        self.weights.extend(other.weights);
    }
}

/// Reads a `list<u32>` (or large list) column into CSR, with an optional parallel weights column.
fn read_lists(ids: &ArrayRef, weights: Option<&ArrayRef>) -> Result<FieldCsr> {
    fn parts(a: &ArrayRef) -> Result<(Vec<usize>, ArrayRef)> {
        Ok(match a.data_type() {
            DataType::List(_) => {
                let l = a.as_list::<i32>();
                let base = l.value_offsets()[0] as usize;
                (
                    l.value_offsets().iter().map(|&o| o as usize - base).collect(),
                    l.values().slice(base, l.value_offsets()[l.len()] as usize - base),
                )
            }
            DataType::LargeList(_) => {
                let l = a.as_list::<i64>();
                let base = l.value_offsets()[0] as usize;
                (
                    l.value_offsets().iter().map(|&o| o as usize - base).collect(),
                    l.values().slice(base, l.value_offsets()[l.len()] as usize - base),
                )
            }
            t => bail!("expected a list column, found {t}"),
        })
    }
    let (offsets, values) = parts(ids)?;
    let ids = values.as_primitive_opt::<UInt32Type>().context("list items must be u32")?.values().to_vec();
    let weights = match weights {
        Some(w) => {
            let (woff, wvals) = parts(w)?;
            if woff != offsets {
                bail!("weights lists do not match the id lists");
            }
            wvals.as_primitive_opt::<Float32Type>().context("weights must be f32")?.values().to_vec()
        }
        None => Vec::new(),
    };
    Ok(FieldCsr { offsets, ids, weights })
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).with_context(|| format!("missing column {name}"))
}

fn side_lists(batch: &RecordBatch, side: Side) -> Result<Vec<FieldCsr>> {
    side_fields(side)
        .into_iter()
        .map(|f| {
            let ids = column(batch, &schema::ids_column(f))?;
            let w = if FIELDS[f].weighted { Some(column(batch, &schema::weights_column(f))?) } else { None };
            read_lists(ids, w).with_context(|| format!("column {}", schema::ids_column(f)))
        })
        .collect()
}

/// Fails on the first id of `lists` (one per field of `side`) outside an embedding table of
/// `buckets` rows, naming the column and the row (`row_name(row)`).
fn check_ids(lists: &[FieldCsr], side: Side, buckets: usize, row_name: impl Fn(usize) -> String) -> Result<()> {
    for (f, csr) in side_fields(side).into_iter().zip(lists) {
        if let Some((row, id)) = csr.first_id_at_least(buckets) {
            bail!(
                "{}: column {}: id {id} is outside the {buckets} hash buckets (data hashed with other settings?)",
                row_name(row),
                schema::ids_column(f)
            );
        }
    }
    Ok(())
}

/// The user side of one split, in memory (Ali-CCP: ~730 k rows).
pub struct CommonTable {
    /// One entry per user-side field, in [`FIELDS`] order (the first is the user id `101`).
    pub fields: Vec<FieldCsr>,
    pub rows: usize,
    /// The session key of each row.
    pub md5: Vec<u64>,
}

impl CommonTable {
    /// Loads `path`; every id must index a table of `buckets` rows.
    pub fn load(path: &Path, buckets: usize) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(8192).build()?;
        let mut fields: Vec<FieldCsr> = side_fields(Side::User).iter().map(|_| FieldCsr::new()).collect();
        let (mut rows, mut md5) = (0, Vec::new());
        for batch in reader {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            let lists = side_lists(&batch, Side::User).with_context(|| format!("decoding {}", path.display()))?;
            check_ids(&lists, Side::User, buckets, |r| format!("{}: row {}", path.display(), rows + r))?;
            let keys = column(&batch, schema::MD5).with_context(|| format!("decoding {}", path.display()))?;
            let keys = keys.as_primitive_opt::<UInt64Type>().with_context(|| {
                format!("{}: column {} must be u64, found {}", path.display(), schema::MD5, keys.data_type())
            })?;
            if let Some(r) = (0..keys.len()).find(|&r| keys.is_null(r)) {
                bail!("{}: row {}: column {} is null", path.display(), rows + r, schema::MD5);
            }
            md5.extend_from_slice(keys.values());
            rows += batch.num_rows();
            for (acc, part) in fields.iter_mut().zip(lists) {
                acc.append(part);
            }
        }
        Ok(Self { fields, rows, md5 })
    }

    /// The user key of each of `rows`: the first `101` id (a hash bucket), 0 for a row without one.
    pub fn user_keys(&self, rows: &[u32]) -> Vec<u64> {
        let users = &self.fields[0];
        rows.iter().map(|&r| users.ids(r as usize).first().map_or(0, |&id| id as u64)).collect()
    }

    /// The md5 (session key) of each of `rows`.
    pub fn md5s(&self, rows: &[u32]) -> Vec<u64> {
        rows.iter().map(|&r| self.md5[r as usize]).collect()
    }
}

/// A batch of samples: labels, join rows, and the item-side lists (one per item field).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub sample_id: Vec<u64>,
    pub click: Vec<u8>,
    pub buy: Vec<u8>,
    pub common_row: Vec<u32>,
    /// Raw id of the sample's scenario (`301`), for per-scenario slices.
    pub scenario: Vec<u64>,
    pub items: Vec<FieldCsr>,
    /// The user side of the batch's common rows, when the loader gathered it.
    pub users: Option<BatchUsers>,
}

/// The distinct common rows of a batch, in order of first appearance, copied out of the
/// [`CommonTable`].
#[derive(Clone, Debug, Default)]
pub struct BatchUsers {
    /// Per batch row: its index into the distinct rows.
    pub local: Vec<u32>,
    /// One CSR per user-side field (like [`CommonTable::fields`]), one entry per distinct row.
    pub fields: Vec<FieldCsr>,
}

impl Batch {
    fn empty() -> Self {
        Self { items: side_fields(Side::Item).iter().map(|_| FieldCsr::new()).collect(), ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.click.len()
    }

    pub fn is_empty(&self) -> bool {
        self.click.is_empty()
    }

    fn from_record_batch(b: &RecordBatch) -> Result<Self> {
        let prim = |name: &str| -> Result<&ArrayRef> {
            let c = column(b, name)?;
            ensure!(c.null_count() == 0, "column {name} has {} null values", c.null_count());
            Ok(c)
        };
        Ok(Self {
            sample_id: prim(schema::SAMPLE_ID)?
                .as_primitive_opt::<UInt64Type>()
                .context("sample_id must be u64")?
                .values()
                .to_vec(),
            click: prim(schema::CLICK)?.as_primitive_opt::<UInt8Type>().context("click must be u8")?.values().to_vec(),
            buy: prim(schema::BUY)?.as_primitive_opt::<UInt8Type>().context("buy must be u8")?.values().to_vec(),
            common_row: prim(schema::COMMON_ROW)?
                .as_primitive_opt::<UInt32Type>()
                .context("common_row must be u32")?
                .values()
                .to_vec(),
            scenario: prim(schema::SCENARIO)?
                .as_primitive_opt::<UInt64Type>()
                .context("scenario must be u64")?
                .values()
                .to_vec(),
            items: side_lists(b, Side::Item)?,
            users: None,
        })
    }

    fn append(&mut self, other: Batch) {
        self.sample_id.extend(other.sample_id);
        self.click.extend(other.click);
        self.buy.extend(other.buy);
        self.common_row.extend(other.common_row);
        self.scenario.extend(other.scenario);
        for (a, o) in self.items.iter_mut().zip(other.items) {
            a.append(o);
        }
    }

    /// Copies the user side of the batch's common rows out of `common` into [`Batch::users`].
    pub fn gather_users(&mut self, common: &CommonTable) -> Result<()> {
        if let Some(r) = self.common_row.iter().find(|&&r| r as usize >= common.rows) {
            bail!("common_row {r} is outside the common table ({} rows)", common.rows);
        }
        let (distinct, local) = distinct_rows(&self.common_row);
        let fields = common
            .fields
            .iter()
            .map(|src| {
                let len: usize = distinct.iter().map(|&r| src.offsets[r as usize + 1] - src.offsets[r as usize]).sum();
                let mut dst = FieldCsr::with_capacity(distinct.len(), len, !src.weights.is_empty());
                for &r in &distinct {
                    dst.push_from(src, r as usize);
                }
                dst
            })
            .collect();
        self.users = Some(BatchUsers { local, fields });
        Ok(())
    }

    /// An empty batch with room for as many rows and ids as this one holds (the next batch
    /// of a stream is about as large: no regrowing, no fresh pages per batch).
    fn empty_like(&self) -> Self {
        let n = self.len();
        Self {
            sample_id: Vec::with_capacity(n),
            click: Vec::with_capacity(n),
            buy: Vec::with_capacity(n),
            common_row: Vec::with_capacity(n),
            scenario: Vec::with_capacity(n),
            items: self.items.iter().map(|f| FieldCsr::with_capacity(n, f.ids.len(), !f.weights.is_empty())).collect(),
            users: None,
        }
    }

    fn push_row(&mut self, from: &Batch, r: usize) {
        self.sample_id.push(from.sample_id[r]);
        self.click.push(from.click[r]);
        self.buy.push(from.buy[r]);
        self.common_row.push(from.common_row[r]);
        self.scenario.push(from.scenario[r]);
        for (a, o) in self.items.iter_mut().zip(&from.items) {
            a.push_from(o, r);
        }
    }
}

/// The distinct values of `rows` in order of first appearance, and each entry's index into
/// them (a run of equal values, as a session's rows are, costs one lookup).
pub fn distinct_rows(rows: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut index = std::collections::HashMap::with_capacity(rows.len());
    let mut distinct = Vec::new();
    let mut last: Option<(u32, u32)> = None;
    let local = rows
        .iter()
        .map(|&r| {
            let l = match last {
                Some((row, l)) if row == r => l,
                _ => *index.entry(r).or_insert_with(|| {
                    distinct.push(r);
                    distinct.len() as u32 - 1
                }),
            };
            last = Some((r, l));
            l
        })
        .collect();
    (distinct, local)
}

/// What the shuffle permutes inside the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShuffleUnit {
    /// Whole sessions (runs of rows sharing a common row): a batch holds ~20 sessions, so the
    /// user side (~500 ids) is pooled once per session instead of once per row.
    Sessions,
    /// Single rows.
    Rows,
}

/// How the loader walks a samples file.
#[derive(Clone)]
pub struct LoaderConfig {
    pub path: PathBuf,
    pub batch_size: usize,
    /// `None`: file order (predict). `Some(seed)`: row groups, then sessions or rows, shuffled.
    pub shuffle_seed: Option<u64>,
    pub shuffle_unit: ShuffleUnit,
    /// Row groups held in the shuffle pool.
    pub pool_row_groups: usize,
    /// Rows of the embedding tables: every item-side id must be below it.
    pub buckets: usize,
    /// The split's user side: when given, every batch carries its gathered [`Batch::users`].
    pub common: Option<Arc<CommonTable>>,
    /// Share of the unclicked rows passed on (1 = all); which ones is decided per row by a hash
    /// of its sample id and the shuffle seed (training's negative sampling).
    pub keep_unclicked: f64,
}

/// Rows in the file (from the footer).
pub fn count_rows(path: &Path) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file)?;
    Ok(b.metadata().file_metadata().num_rows() as u64)
}

/// Starts the loader thread for one pass over the file; batches arrive in a bounded channel.
pub fn spawn(cfg: LoaderConfig) -> Receiver<Result<Batch>> {
    let (tx, rx) = sync_channel(4);
    std::thread::spawn(move || {
        if let Err(e) = load(&cfg, |b| tx.send(Ok(b)).is_ok()) {
            let _ = tx.send(Err(e));
        }
    });
    rx
}

/// Whether row `r` of `pool` is passed on: every clicked row, an unclicked one when its hash
/// falls below [`LoaderConfig::keep_unclicked`].
fn keeps(cfg: &LoaderConfig, pool: &Batch, r: usize) -> bool {
    cfg.keep_unclicked >= 1.0
        || pool.click[r] == 1
        || unit(hash_words(&[NEGATIVE_TAG, cfg.shuffle_seed.unwrap_or(0), pool.sample_id[r]])) < cfg.keep_unclicked
}

/// One pass: calls `emit` per batch until it returns false.
pub fn load(cfg: &LoaderConfig, mut emit: impl FnMut(Batch) -> bool) -> Result<()> {
    let mut emit = |mut b: Batch| -> Result<bool> {
        if let Some(common) = &cfg.common {
            b.gather_users(common).with_context(|| format!("reading {}", cfg.path.display()))?;
        }
        Ok(emit(b))
    };
    let open = || -> Result<ParquetRecordBatchReaderBuilder<File>> {
        let file = File::open(&cfg.path).with_context(|| format!("opening {}", cfg.path.display()))?;
        ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("reading footer of {}", cfg.path.display()))
    };
    let builder = open()?;
    let groups = builder.metadata().num_row_groups();
    let arrow_schema = builder.schema().clone();
    let wanted: Vec<usize> =
        arrow_schema.fields().iter().enumerate().filter(|(_, f)| f.name() != schema::MD5).map(|(i, _)| i).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let mut order: Vec<usize> = (0..groups).collect();
    let mut rng = Rng::new(cfg.shuffle_seed.unwrap_or(0));
    if cfg.shuffle_seed.is_some() {
        rng.shuffle(&mut order);
    }
    let pool_groups = if cfg.shuffle_seed.is_some() { cfg.pool_row_groups.max(1) } else { 1 };
    let mut carry = Batch::empty();
    for chunk in order.chunks(pool_groups) {
        let reader =
            open()?.with_row_groups(chunk.to_vec()).with_projection(mask.clone()).with_batch_size(1 << 20).build()?;
        let mut pool = Batch::empty();
        for rb in reader {
            let rb = rb.with_context(|| format!("reading {}", cfg.path.display()))?;
            let b = Batch::from_record_batch(&rb).with_context(|| format!("decoding {}", cfg.path.display()))?;
            check_ids(&b.items, Side::Item, cfg.buckets, |r| {
                format!("{}: sample_id {}", cfg.path.display(), b.sample_id[r])
            })?;
            pool.append(b);
        }
        // Units: runs of one common row (sessions) or single rows, permuted when shuffling.
        let mut units: Vec<(usize, usize)> = match cfg.shuffle_unit {
            ShuffleUnit::Rows => (0..pool.len()).map(|r| (r, r + 1)).collect(),
            ShuffleUnit::Sessions => {
                let mut runs = Vec::new();
                let mut start = 0;
                for r in 1..=pool.len() {
                    if r == pool.len() || pool.common_row[r] != pool.common_row[start] {
                        runs.push((start, r));
                        start = r;
                    }
                }
                runs
            }
        };
        if cfg.shuffle_seed.is_some() {
            rng.shuffle(&mut units);
        }
        for r in units.into_iter().flat_map(|(a, b)| a..b) {
            if !keeps(cfg, &pool, r) {
                continue;
            }
            carry.push_row(&pool, r);
            if carry.len() == cfg.batch_size {
                let next = carry.empty_like();
                if !emit(std::mem::replace(&mut carry, next))? {
                    return Ok(());
                }
            }
        }
    }
    if !carry.is_empty() {
        emit(carry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::{UInt32Array, UInt64Array, UInt8Array};
    use arrow::datatypes::{Schema, SchemaRef};

    use super::*;
    use crate::columns::ListColumns;
    use crate::parquet_out::ParquetOut;
    use crate::testutil::temp_dir;

    /// Writes `rows` rows of `schema` (leading scalar columns from `scalars`), with one id per row
    /// in the side's first field: `ids[r]`.
    fn write(path: &Path, schema: SchemaRef, side: Side, scalars: Vec<ArrayRef>, ids: &[u32]) {
        let mut lists = ListColumns::new(side);
        let f = side_fields(side)[0];
        for &id in ids {
            lists.push(f, id as u64, id, 1.0);
            lists.end_row();
        }
        let mut cols = scalars;
        cols.extend(lists.into_arrays());
        let mut out = ParquetOut::create(path, schema.clone(), 2).unwrap();
        out.write(&RecordBatch::try_new(schema, cols).unwrap()).unwrap();
        out.close().unwrap();
    }

    fn samples(path: &Path, schema: SchemaRef, item_ids: &[u32], sample_id: ArrayRef) {
        samples_clicked(path, schema, item_ids, sample_id, vec![0; item_ids.len()]);
    }

    fn samples_clicked(path: &Path, schema: SchemaRef, item_ids: &[u32], sample_id: ArrayRef, click: Vec<u8>) {
        let n = item_ids.len();
        let scalars: Vec<ArrayRef> = vec![
            sample_id,
            Arc::new(UInt8Array::from(click)),
            Arc::new(UInt8Array::from(vec![0; n])),
            Arc::new(UInt64Array::from(vec![9; n])),
            Arc::new(UInt32Array::from(vec![0; n])),
            Arc::new(UInt64Array::from(vec![0; n])),
        ];
        write(path, schema, Side::Item, scalars, item_ids);
    }

    fn loader(path: &Path) -> LoaderConfig {
        LoaderConfig {
            path: path.to_path_buf(),
            batch_size: 2,
            shuffle_seed: Some(3),
            shuffle_unit: ShuffleUnit::Rows,
            pool_row_groups: 2,
            buckets: 100,
            common: None,
            keep_unclicked: 1.0,
        }
    }

    fn load_err(cfg: &LoaderConfig) -> String {
        format!("{:#}", load(cfg, |_| true).err().expect("an error"))
    }

    #[test]
    fn ids_outside_the_table_and_null_keys_are_named_errors() {
        let dir = temp_dir("batches");
        // Five rows, sample ids 10..=14, one item id each.
        let five = |path: &Path, item_ids: [u32; 5]| {
            samples(path, schema::samples_schema(), &item_ids, Arc::new(UInt64Array::from(vec![10, 11, 12, 13, 14])))
        };
        let ok = dir.join("ok.parquet");
        five(&ok, [1, 99, 0, 42, 7]);

        // The same rows as polars writes them by default (zstd pages).
        let zstd = dir.join("zstd.parquet");
        let rows_of = |path: &Path| {
            let mut ids = Vec::new();
            load(&LoaderConfig { shuffle_seed: None, ..loader(path) }, |b| {
                ids.extend(b.sample_id.iter().zip(b.items[0].ids.iter()).map(|(&s, &i)| (s, i)));
                true
            })
            .unwrap();
            ids
        };
        {
            use parquet::arrow::ArrowWriter;
            use parquet::basic::{Compression, ZstdLevel};
            use parquet::file::properties::WriterProperties;
            let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(File::open(&ok).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
            let mut w = ArrowWriter::try_new(File::create(&zstd).unwrap(), batches[0].schema(), Some(props)).unwrap();
            for b in &batches {
                w.write(b).unwrap();
            }
            w.close().unwrap();
        }
        assert_eq!(rows_of(&zstd), rows_of(&ok));
        assert_eq!(rows_of(&ok).len(), 5);

        let big = dir.join("big.parquet");
        five(&big, [1, 99, 0, 100, 7]);
        let e = load_err(&loader(&big));
        let col = schema::ids_column(side_fields(Side::Item)[0]);
        assert!(
            e.contains("big.parquet: sample_id 13") && e.contains(&format!("{col}: id 100 is outside the 100")),
            "{e}"
        );

        // A nullable file with a null sample id (another tool's output): an error, not a 0.
        let nulls = dir.join("nulls.parquet");
        let fields: Vec<_> =
            schema::samples_schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let nullable = Arc::new(Schema::new(fields));
        samples(&nulls, nullable, &[1, 2, 3], Arc::new(UInt64Array::from(vec![Some(1), None, Some(3)])));
        let e = load_err(&loader(&nulls));
        assert!(e.contains("nulls.parquet") && e.contains("column sample_id has 1 null values"), "{e}");

        // The user side: the common table names its row.
        let common = dir.join("common.parquet");
        let md5: ArrayRef = Arc::new(UInt64Array::from(vec![1, 2, 3, 4, 5]));
        write(&common, schema::common_schema(), Side::User, vec![md5], &[5, 6, 7, 250, 8]);
        assert_eq!(CommonTable::load(&common, 251).unwrap().rows, 5);
        let e = format!("{:#}", CommonTable::load(&common, 250).err().unwrap());
        let col = schema::ids_column(side_fields(Side::User)[0]);
        assert!(e.contains("common.parquet: row 3") && e.contains(&format!("{col}: id 250 is outside")), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    /// `keep_unclicked`: every clicked row passes, about that share of the unclicked ones, the
    /// same rows for the same shuffle seed and others for another; at 1 every row.
    #[test]
    fn keep_unclicked_passes_every_click_and_a_share_of_the_rest() {
        let dir = temp_dir("batches_keep");
        let path = dir.join("s.parquet");
        let n = 2000u64;
        let click: Vec<u8> = (0..n).map(|i| (i % 5 == 0) as u8).collect();
        samples_clicked(
            &path,
            schema::samples_schema(),
            &vec![1; n as usize],
            Arc::new(UInt64Array::from_iter_values(0..n)),
            click,
        );
        let passed = |keep: f64, seed: u64| {
            let mut rows = Vec::new();
            load(&LoaderConfig { keep_unclicked: keep, shuffle_seed: Some(seed), ..loader(&path) }, |b| {
                rows.extend(b.sample_id.iter().zip(&b.click).map(|(&s, &c)| (s, c)));
                true
            })
            .unwrap();
            rows.sort_unstable();
            rows
        };
        assert_eq!(passed(1.0, 3).len(), n as usize);
        let a = passed(0.25, 3);
        let clicks = a.iter().filter(|r| r.1 == 1).count();
        let others = a.len() - clicks;
        assert_eq!(clicks, 400, "every clicked row");
        assert!((340..460).contains(&others), "about a quarter of 1600 unclicked rows: {others}");
        assert_eq!(a, passed(0.25, 3), "the same rows for the same seed");
        let b = passed(0.25, 4);
        assert_ne!(a, b, "other rows in another epoch");
        std::fs::remove_dir_all(dir).ok();
    }
}
