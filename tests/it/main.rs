//! The integration tests: one test binary (`cargo test --test it`) with one module per area, so
//! polars, arrow and dfdx are linked once instead of once per file. The shared helpers (temp
//! dirs, the `esmm` runner, the stage settings the tests start from, reading Parquet back) are in
//! `common`. A new area is a file here plus a `mod` line below; `cargo test --test it train::`
//! runs one module.

mod common;

mod analytics;
mod bad_input;
mod cli;
mod crash;
mod cvr_family;
mod docs;
mod external_readers;
mod group_auc;
mod hostile;
mod onnx_export;
mod ops;
mod paddlerec;
mod paddlerec_config;
mod roundtrip;
mod towers;
mod train;
