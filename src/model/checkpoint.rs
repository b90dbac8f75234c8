//! Checkpoints: the whole model (embedding tables with their optimizer state, tower weights and
//! Adam moments) plus a JSON header (spec, calibration, training state, config hash, data
//! fingerprints), in one little-endian file written atomically; after the model's own arrays,
//! each ensemble snapshot's tables (weights only) and tower parameters. `model.bin` (best epoch,
//! [`save_model`]: the tables' weights only) and `checkpoint.bin` (latest epoch, for `--resume`:
//! everything) share the format.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::embedding::Embedding;
use super::esmm::{Model, ModelSpec, Snapshot};
use super::towers::Towers;
use super::vocab::Vocab;
use crate::manifest::{AtomicFile, FileEntry};

const MAGIC: &[u8; 8] = b"ESMMCKP1";

/// Everything but the float arrays.
#[derive(Serialize, Deserialize)]
pub struct Header<S> {
    pub spec: ModelSpec,
    /// Trainer state (epochs done, best score, history), opaque here.
    pub state: S,
    pub config_hash: String,
    pub inputs: Vec<FileEntry>,
    /// The output calibration (absent in checkpoints written before it: identity).
    #[serde(default)]
    pub calibration: Calibration,
    tables: Vec<Embedding>,
    tower_step: u64,
    tower_lens: Vec<usize>,
    /// Per ensemble snapshot, its tables' metadata (absent for a single model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    snapshots: Vec<Vec<Embedding>>,
}

/// A length-prefixed little-endian array of `N`-byte values.
fn write_array<T, const N: usize>(out: &mut impl Write, v: &[T], bytes: impl Fn(&T) -> [u8; N]) -> Result<()> {
    out.write_all(&(v.len() as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(v.len() * N);
    for x in v {
        buf.extend_from_slice(&bytes(x));
    }
    out.write_all(&buf)?;
    Ok(())
}

fn read_array<T, const N: usize>(inp: &mut impl Read, value: impl Fn([u8; N]) -> T) -> Result<Vec<T>> {
    let mut n = [0u8; 8];
    inp.read_exact(&mut n)?;
    let n = u64::from_le_bytes(n) as usize;
    ensure!(n <= (1 << 36) / N, "an array of {n} values");
    let mut buf = vec![0u8; n * N];
    inp.read_exact(&mut buf)?;
    Ok(buf.chunks_exact(N).map(|c| value(c.try_into().expect("chunks of N bytes"))).collect())
}

fn write_f32s(out: &mut impl Write, v: &[f32]) -> Result<()> {
    write_array(out, v, |x| x.to_le_bytes())
}

fn read_f32s(inp: &mut impl Read) -> Result<Vec<f32>> {
    read_array(inp, f32::from_le_bytes)
}

/// Writes `model` and `state` to `path` (temp name, renamed when complete), everything training
/// needs to continue (`checkpoint.bin`, `--resume`).
pub fn save<S: Serialize>(
    path: &Path,
    model: &Model,
    state: &S,
    config_hash: &str,
    inputs: &[FileEntry],
) -> Result<()> {
    write(path, model, state, (config_hash, inputs), false)
}

/// [`save`] without the embedding tables' optimizer state (their weights only, as the ensemble's
/// frozen members are kept): what predicting and exporting read (`model.bin`), a third of the
/// tables' bytes with Adam. It loads like any checkpoint; training does not continue from it.
pub fn save_model<S: Serialize>(
    path: &Path,
    model: &Model,
    state: &S,
    config_hash: &str,
    inputs: &[FileEntry],
) -> Result<()> {
    write(path, model, state, (config_hash, inputs), true)
}

/// A table's floats: everything it holds, or its weights alone.
fn write_table(out: &mut impl Write, t: &Embedding, weights_only: bool) -> Result<()> {
    if !weights_only {
        return write_f32s(out, t.raw());
    }
    out.write_all(&((t.rows * t.dim) as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(t.dim * 4 * 4096);
    for row in t.weight_rows() {
        row.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        if buf.len() >= buf.capacity() - t.dim * 4 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    Ok(())
}

fn write<S: Serialize>(
    path: &Path,
    model: &Model,
    state: &S,
    (config_hash, inputs): (&str, &[FileEntry]),
    weights_only: bool,
) -> Result<()> {
    let (tower_step, m, v) = model.towers.adam_state();
    let params = model.towers.params();
    let header = Header {
        spec: model.spec.clone(),
        state,
        config_hash: config_hash.to_string(),
        inputs: inputs.to_vec(),
        calibration: model.calibration,
        tables: model.tables.iter().map(|t| if weights_only { t.frozen_meta() } else { t.meta() }).collect(),
        tower_step,
        tower_lens: params.iter().map(Vec::len).collect(),
        snapshots: model.snapshots.iter().map(|s| s.tables.iter().map(Embedding::meta).collect()).collect(),
    };
    let json = serde_json::to_vec(&header)?;
    let mut out = AtomicFile::create(path)?;
    out.write_all(MAGIC)?;
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(&json)?;
    for t in &model.tables {
        write_table(&mut out, t, weights_only)?;
    }
    if model.vocab().enabled() {
        let (_, _, admitted, scale) = model.vocab().parts();
        write_array(&mut out, admitted, |w| w.to_le_bytes())?;
        if model.spec.shrink_sessions > 0.0 {
            write_f32s(&mut out, scale)?;
        }
    }
    for group in [&params[..], m, v] {
        for p in group {
            write_f32s(&mut out, p)?;
        }
    }
    for snapshot in &model.snapshots {
        for t in &snapshot.tables {
            write_f32s(&mut out, t.raw())?;
        }
        for p in snapshot.towers.params() {
            write_f32s(&mut out, &p)?;
        }
    }
    out.commit().with_context(|| format!("writing checkpoint {}", path.display()))
}

/// The tables of `metas` (as many as the model kind has), their data read from `inp`.
fn read_tables(inp: &mut impl Read, metas: &[Embedding], want: usize) -> Result<Vec<Embedding>> {
    ensure!(metas.len() == want, "{} tables, the model has {want}", metas.len());
    let mut tables = Vec::with_capacity(want);
    for meta in metas {
        let mut t = meta.meta();
        t.set_raw(read_f32s(inp)?)?;
        tables.push(t);
    }
    Ok(tables)
}

/// Reads a checkpoint: the model and the trainer state.
pub fn load<S: for<'de> Deserialize<'de>>(path: &Path) -> Result<(Model, Header<S>)> {
    let file = File::open(path).with_context(|| format!("opening checkpoint {}", path.display()))?;
    let mut inp = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    if inp.read_exact(&mut magic).is_err() || &magic != MAGIC {
        bail!("{} is not an esmm checkpoint", path.display());
    }
    let loaded = read_body(&mut inp).and_then(|loaded| {
        let mut rest = [0u8; 1];
        ensure!(inp.read(&mut rest)? == 0, "bytes after the last array");
        Ok(loaded)
    });
    loaded.map_err(|e| match e.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            anyhow::anyhow!("checkpoint {} is truncated (the file ends inside its data)", path.display())
        }
        _ => e.context(format!("checkpoint {} is corrupt", path.display())),
    })
}

/// Everything after the magic bytes: header, tables, admitted ids, tower parameters.
fn read_body<S: for<'de> Deserialize<'de>>(inp: &mut impl Read) -> Result<(Model, Header<S>)> {
    let mut len = [0u8; 8];
    inp.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len) as usize;
    ensure!(len < 1 << 30, "header of {len} bytes");
    let mut json = vec![0u8; len];
    inp.read_exact(&mut json)?;
    let header: Header<S> = serde_json::from_slice(&json).context("header")?;
    let want = Model::table_count(header.spec.kind);
    let tables = read_tables(inp, &header.tables, want)?;
    let spec = &header.spec;
    let vocab = match spec.min_sessions {
        0 => Vocab::off(),
        m => {
            let admitted = read_array(inp, u64::from_le_bytes)?;
            let scale = if spec.shrink_sessions > 0.0 { read_f32s(inp)? } else { Vec::new() };
            Vocab::from_parts(m, spec.hash_buckets as u32, admitted, scale)?
        }
    };
    let towers = Towers::with_spec(&spec.towers, spec.embedding_dim, spec.dense, || 0.0)?;
    let mut model = Model::assemble(spec.clone(), tables, towers, vocab)?;
    ensure!(
        header.tower_lens == model.towers.lens(),
        "tower parameter shapes {:?} do not match the model's {:?} (embedding_dim {}, ctr_fc_sizes {:?}, cvr_fc_sizes {:?})",
        header.tower_lens,
        model.towers.lens(),
        spec.embedding_dim,
        spec.towers.ctr_fc_sizes,
        spec.towers.cvr_fc_sizes
    );
    model.calibration = header.calibration;
    let n = header.tower_lens.len();
    let mut arrays = Vec::with_capacity(3 * n);
    for _ in 0..3 * n {
        arrays.push(read_f32s(inp)?);
    }
    let v = arrays.split_off(2 * n);
    let m = arrays.split_off(n);
    model.towers.set_params(&arrays)?;
    model.towers.set_adam_state(header.tower_step, m, v)?;
    for (k, metas) in header.snapshots.iter().enumerate() {
        let tables = read_tables(inp, metas, want).with_context(|| format!("ensemble snapshot {}", k + 1))?;
        ensure!(
            tables.iter().all(|t| t.dim == spec.embedding_dim && t.rows == spec.table_rows()),
            "ensemble snapshot {}: tables of another shape than the model's",
            k + 1
        );
        let params = (0..n).map(|_| read_f32s(inp)).collect::<Result<Vec<_>>>()?;
        let towers = Towers::from_params(&spec.towers, spec.embedding_dim, spec.dense, &params)
            .with_context(|| format!("ensemble snapshot {}", k + 1))?;
        model.snapshots.push(Snapshot { tables, towers });
    }
    Ok((model, header))
}
