//! `esmm export`: a `train` output directory → `<out>/model.onnx` (the graph of
//! [`crate::export`]: the same pCTR, pCVR, pCTCVR as `esmm predict`) and `<out>/contract.json`
//! (inputs, fields, hashing; see [`crate::export::contract`]). Both are written under temporary
//! names and renamed; the manifest comes last. Skipped when the model and the ingest settings
//! are unchanged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use onnx_protobuf::Message;
use serde::Serialize;

use super::{StageReport, StageRun};
use crate::export::contract::{self, Contract, CONTRACT_FORMAT};
use crate::export::onnx_model;
use crate::manifest::AtomicFile;
use crate::model::checkpoint;
use crate::schema::MODEL_FILE;

/// The graph file inside the output directory.
pub const ONNX_FILE: &str = "model.onnx";
/// The serving contract beside it.
pub const CONTRACT_FILE: &str = "contract.json";

/// One ONNX file holds at most 2 GiB (protobuf's message limit).
const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

pub struct ExportStage {
    /// A `train` output directory.
    pub model: PathBuf,
    pub out: PathBuf,
    /// The split (or ingest) directory the model was trained on, when the train manifest's
    /// paths do not resolve from the working directory.
    pub data: Option<PathBuf>,
    pub threads: usize,
    pub force: bool,
}

#[derive(Serialize)]
struct Params {
    /// Bumped when the graph or the contract changes, so old exports are redone.
    format: u32,
    opset: i64,
}

pub fn run(cfg: &ExportStage) -> Result<StageReport> {
    crate::manifest::require(&cfg.model, "train")?;
    let ingest = contract::find_ingest(&cfg.model, cfg.data.as_deref())?;
    let inputs = [cfg.model.join(MODEL_FILE), ingest.manifest.clone()];
    let params = Params { format: CONTRACT_FORMAT, opset: crate::export::graph::OPSET };
    let mut st = StageRun::begin("export", &cfg.out, &params, &inputs)?;
    st.read_lock(&cfg.model)?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    st.invalidate()?;
    let (model, _) = checkpoint::load::<serde_json::Value>(&cfg.model.join(MODEL_FILE))?;
    ensure!(
        ingest.config.hash_buckets == model.spec.hash_buckets as u64,
        "the model in {} has {} hash buckets, the ingest in {} hashed into {}",
        cfg.model.display(),
        model.spec.hash_buckets,
        ingest.dir.display(),
        ingest.config.hash_buckets
    );
    let (proto, ops) = onnx_model(&model)?;
    let bytes = proto.compute_size();
    ensure!(
        bytes <= PROTOBUF_LIMIT,
        "the ONNX model would take {bytes} bytes, over the 2 GiB of one protobuf file (fewer hash buckets or id admission make it smaller)"
    );
    let onnx_path = cfg.out.join(ONNX_FILE);
    let mut out = AtomicFile::create(&onnx_path)?;
    proto.write_to_writer(&mut out).with_context(|| format!("encoding {}", onnx_path.display()))?;
    out.commit()?;
    let contract_path = cfg.out.join(CONTRACT_FILE);
    let mut out = AtomicFile::create(&contract_path)?;
    out.write_all(&Contract::new(&model, &ingest.config, ONNX_FILE)?.to_json()?)?;
    out.commit()?;
    let graph = proto.graph.as_ref().context("the model has no graph")?;
    let mut counts = BTreeMap::from([
        ("onnx_bytes".to_string(), bytes),
        ("nodes".to_string(), graph.node.len() as u64),
        ("members".to_string(), model.member_count() as u64),
        ("inputs".to_string(), graph.input.len() as u64),
        ("initializers".to_string(), graph.initializer.len() as u64),
        ("admitted_ids".to_string(), model.vocab().admitted() as u64),
    ]);
    counts.extend(ops.into_iter().map(|(op, n)| (format!("op.{op}"), n as u64)));
    st.finish(&[onnx_path, contract_path], counts, BTreeMap::new(), cfg.threads)
}
