//! `contract.json`: what a serving system needs besides `model.onnx` — the fields in graph
//! order with their input names, which are weighted, `max_len` per field, the pooling, and the
//! hashing exactly as ingest applies it (xxh3-64, the seed and bucket count of the ingest that
//! made the training data, per-field seeds, ingest's per-field caps), with test vectors
//! computed by [`FeatureHasher`].
//!
//! The ingest settings are found by following the manifests: the model's training data (a
//! split directory, from the train manifest's inputs) → the ingest directory behind it (from
//! the split manifest's inputs) → its config. Manifest paths are as the stages were given them
//! (often relative to where the pipeline ran); `--data` names the split or ingest directory
//! when they do not resolve from here.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use super::graph::OPSET;
use super::pooling::has_weights;
use super::towers::OUTPUTS;
use crate::config::{Format, IngestConfig};
use crate::hashing::FeatureHasher;
use crate::manifest::{self, Manifest};
use crate::model::{Calibration, Model, ModelKind, Pooling};
use crate::schema::{ids_column, weights_column, Side, FIELDS};

/// Bumped when the contract's meaning changes.
pub const CONTRACT_FORMAT: u32 = 1;

/// The ingest that hashed the model's training data.
pub struct IngestSource {
    pub dir: PathBuf,
    /// Its manifest file (an input of the export).
    pub manifest: PathBuf,
    pub config: IngestConfig,
}

/// A stage manifest of `dir`: `_manifest.json`, or (sharded ingest) the first part manifest.
fn stage_manifest(dir: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let whole = manifest::manifest_path(dir);
    if let Some(m) = manifest::read_path(&whole)? {
        return Ok(Some((whole, m)));
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("_manifest.part-")))
        .collect();
    parts.sort();
    match parts.first() {
        Some(p) => Ok(manifest::read_path(p)?.map(|m| (p.clone(), m))),
        None => Ok(None),
    }
}

/// The directory of a stage's first input file `<dir>/<split>/<file>`.
fn input_dir(m: &Manifest, what: &str) -> Result<PathBuf> {
    let first = m.inputs.first().with_context(|| format!("the {what} manifest lists no inputs"))?;
    let dir = Path::new(&first.path).parent().and_then(Path::parent);
    Ok(dir.map(Path::to_path_buf).unwrap_or_default())
}

/// Follows the manifests from the model (or from `data`, a split or ingest directory) to the
/// ingest that hashed the training data.
pub fn find_ingest(model_dir: &Path, data: Option<&Path>) -> Result<IngestSource> {
    let hint = "pass --data with the split (or ingest) directory the model was trained on";
    let start = match data {
        Some(d) => d.to_path_buf(),
        None => input_dir(&manifest::require(model_dir, "train")?, "train")?,
    };
    let (path, m) = stage_manifest(&start)?.with_context(|| {
        format!("no split or ingest manifest in {} (the model's training data): {hint}", start.display())
    })?;
    let (dir, path, m) = match m.stage.as_str() {
        "ingest" => (start, path, m),
        "split" => {
            let dir = input_dir(&m, "split")?;
            let (p, m) = stage_manifest(&dir)?.with_context(|| {
                format!("no ingest manifest in {} (behind {}): {hint}", dir.display(), start.display())
            })?;
            (dir, p, m)
        }
        other => bail!("{} holds the outputs of `{other}`, not of split or ingest: {hint}", start.display()),
    };
    ensure!(m.stage == "ingest", "{} is the manifest of `{}`, expected ingest", path.display(), m.stage);
    let config: IngestConfig =
        serde_json::from_value(m.config).with_context(|| format!("the ingest config in {}", path.display()))?;
    Ok(IngestSource { dir, manifest: path, config })
}

#[derive(Serialize)]
struct Input {
    name: String,
    dtype: &'static str,
    shape: [String; 2],
}

#[derive(Serialize)]
struct Field {
    name: &'static str,
    side: &'static str,
    ids_input: String,
    /// The `w_` input, when the graph reads weights for this field.
    weights_input: Option<String>,
    /// Carries values (ingest keeps them as weights).
    weighted: bool,
    /// Ids the model reads (the first ones); `null` = all.
    max_len: Option<usize>,
    /// Ids ingest keeps per row (the first ones); `null` = all.
    ingest_max_ids: Option<usize>,
    /// `xxh3_64_with_seed(name, hash_seed)`.
    seed: u64,
}

#[derive(Serialize)]
struct Hashing {
    function: &'static str,
    hash_seed: u64,
    hash_buckets: u64,
    field_seed: &'static str,
    bucket: &'static str,
    padding: u32,
    ingest_format: Format,
    weights: &'static str,
}

#[derive(Serialize)]
struct Vector {
    field: &'static str,
    raw_id: u64,
    bucket: u32,
}

#[derive(Serialize)]
struct ModelInfo {
    kind: ModelKind,
    pooling: Pooling,
    embedding_dim: usize,
    min_sessions: u32,
    shrink_sessions: f32,
    admitted_ids: usize,
    calibration: Calibration,
    /// Snapshot-ensemble members whose mean logit the graph computes (1: a single model).
    ensemble_members: usize,
}

/// The whole file.
#[derive(Serialize)]
pub struct Contract {
    format: u32,
    onnx_file: &'static str,
    opset: i64,
    inputs: Vec<Input>,
    outputs: [&'static str; 3],
    model: ModelInfo,
    fields: Vec<Field>,
    hashing: Hashing,
    test_vectors: Vec<Vector>,
}

/// Raw ids of the test vectors: a few per field, the extremes included.
const VECTOR_IDS: [u64; 4] = [0, 1, 123_456_789, u64::MAX];

impl Contract {
    pub fn new(model: &Model, ingest: &IngestConfig, onnx_file: &'static str) -> Result<Self> {
        let hasher = FeatureHasher::new(ingest.hash_buckets, ingest.hash_seed)?;
        let pooling = model.spec.pooling;
        let mut inputs = Vec::new();
        let mut fields = Vec::new();
        for (f, spec) in FIELDS.iter().enumerate() {
            let len = format!("len_{}", spec.name);
            let weights_input = has_weights(f, pooling).then(|| weights_column(f));
            inputs.push(Input { name: ids_column(f), dtype: "int64", shape: ["batch".into(), len.clone()] });
            if let Some(w) = &weights_input {
                inputs.push(Input { name: w.clone(), dtype: "float32", shape: ["batch".into(), len] });
            }
            fields.push(Field {
                name: spec.name,
                side: if spec.side == Side::User { "user" } else { "item" },
                ids_input: ids_column(f),
                weights_input,
                weighted: spec.weighted,
                max_len: Some(model.spec.max_len[f]).filter(|&m| m != usize::MAX),
                ingest_max_ids: Some(ingest.caps()[f]).filter(|&c| c != usize::MAX),
                seed: hasher.field_seed(f),
            });
        }
        let test_vectors = (0..FIELDS.len())
            .flat_map(|f| VECTOR_IDS.map(|raw_id| (f, raw_id)))
            .map(|(f, raw_id)| Vector { field: FIELDS[f].name, raw_id, bucket: hasher.bucket(f, raw_id) })
            .collect();
        Ok(Self {
            format: CONTRACT_FORMAT,
            onnx_file,
            opset: OPSET,
            inputs,
            outputs: OUTPUTS,
            model: ModelInfo {
                kind: model.spec.kind,
                pooling,
                embedding_dim: super::embedding_dim(model)?,
                min_sessions: model.spec.min_sessions,
                shrink_sessions: model.spec.shrink_sessions,
                admitted_ids: model.vocab().admitted(),
                calibration: model.calibration,
                ensemble_members: model.member_count(),
            },
            fields,
            hashing: Hashing {
                function: "xxh3_64 (XXH3-64 of the xxHash specification; Python: xxhash.xxh3_64_intdigest)",
                hash_seed: ingest.hash_seed,
                hash_buckets: ingest.hash_buckets,
                field_seed: "xxh3_64_with_seed(utf8 bytes of the field name, hash_seed)",
                bucket:
                    "1 + xxh3_64_with_seed(raw id as 8 little-endian bytes (u64), field seed) mod (hash_buckets - 1)",
                padding: 0,
                ingest_format: ingest.format,
                weights: match ingest.format {
                    Format::Aliccp => "the feature's value (after \\x03 in the raw file), as float32",
                    Format::Paddlerec => "1.0 (PaddleRec's CSV has no values)",
                },
            },
            test_vectors,
        })
    }

    /// The contract as pretty JSON (integers exact: parse them as 64-bit integers).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }
}
