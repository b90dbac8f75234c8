//! esmm: the ESMM conversion-rate pipeline (Ali-CCP raw CSV → hashed Parquet → splits → model
//! → predictions and metrics in Parquet → report; the model exported to ONNX for serving).
//!
//! Data flows one way: raw files → [`aliccp`] / [`paddlerec`] → [`hashing`] → [`schema`] → Parquet.

/// Raw Ali-CCP format: line reader, tokenizer, skip reasons and counters.
pub mod aliccp;
/// SQL over a run's outputs (polars SQL and DuckDB table convention), the evaluation report.
pub mod analytics;
/// Parquet samples → training batches (loader thread, shuffle pool).
pub mod batches;
/// In-memory column builders → arrow arrays.
pub mod columns;
/// YAML pipeline configuration with strict keys.
pub mod config;
/// Error kinds that decide the exit status (usage/config 2, failure 1, closed stdout 0).
pub mod error;
/// Serving export: the model as an ONNX graph and the hashing contract (`esmm export`).
pub mod export;
/// Feature hashing contract (xxh3) with test vectors.
pub mod hashing;
/// Output locks (flock): one writer per output directory, readers shared.
pub mod lock;
/// Stage events on stderr (text or JSON lines).
pub mod log;
/// Stage manifests, fingerprints, atomic outputs.
pub mod manifest;
/// Exact metrics: AUC, logloss, calibration, group AUC.
pub mod metrics;
/// The ESMM model: embedding tables, the towers (gemm by default, dfdx), the loss, calibration,
/// checkpoints.
pub mod model;
/// The buckets a split's hashed ids use, and the distinct ids and collisions they imply.
pub mod occupancy;
/// PaddleRec's preprocessed ESMM CSV (`sample_id,click,buy,key,field:id,...`).
pub mod paddlerec;
/// Ordered parallel map with bounded memory.
pub mod parallel;
/// Parquet writers for the contract tables.
pub mod parquet_out;
/// Progress bars on a terminal only.
pub mod progress;
/// Deterministic PRNG and hashing of seeds (splitmix64, xoshiro256**), samplers.
pub mod rng;
/// The data contract: fields, column names, schemas, file names.
pub mod schema;
/// Sharded fan-out (`--shard i/n`): shard of a session, part file names.
pub mod shard;
/// The pipeline stages, one module each (`generate`, `ingest`, `split`, `train`, `predict`,
/// `evaluate`, `report`, `export`), and `run` (the DAG over them).
pub mod stages;
/// The planted model behind `generate`.
pub mod synth;

#[cfg(test)]
pub(crate) mod testutil;
