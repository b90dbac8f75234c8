//! Serving export (`esmm export`): a trained model as one ONNX graph (standard opset
//! [`graph::OPSET`]) that computes what `esmm predict` computes, and `contract.json`, what a
//! serving system needs to feed it (field order, input names, how ingest hashes raw ids).
//!
//! Graph inputs, per field of [`FIELDS`] (user side first, given per row: serving has no common
//! table): `f_<field>` int64 `[batch, len_<field>]`, the hashed ids padded with 0 at the end,
//! and for the weighted fields under `weighted` / `mean` pooling `w_<field>` float32 of the
//! same shape (0 where padded). `len` is free per input (at least 1). Outputs `p_ctr`,
//! `p_cvr`, `p_ctcvr`, float32 `[batch]`.
//!
//! - [`graph`]: the protobuf builder;
//! - [`pooling`]: ids → pooled embeddings (id admission, `max_len`, the three poolings);
//! - [`towers`]: the two MLPs, the calibration and the product;
//! - [`contract`]: `contract.json` and where the ingest settings come from.

pub mod contract;
pub mod graph;
pub mod pooling;
pub mod towers;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::ModelProto;

use crate::model::Model;
use crate::schema::{ids_column, weights_column, FIELDS};
use graph::{Dim, Graph};

/// The ONNX model of `model`, and its node count per op type.
pub fn onnx_model(model: &Model) -> Result<(ModelProto, BTreeMap<String, usize>)> {
    let dim = embedding_dim(model)?;
    let mut g = Graph::new("esmm");
    for f in 0..FIELDS.len() {
        let len = format!("len_{}", FIELDS[f].name);
        let dims = [Dim::Free("batch"), Dim::Free(&len)];
        g.input(&ids_column(f), DataType::INT64, &dims);
        if pooling::has_weights(f, model.spec.pooling) {
            g.input(&weights_column(f), DataType::FLOAT, &dims);
        }
    }
    let c = pooling::Consts::new(&mut g);
    let inputs: Vec<(String, String)> = (pooling::pooled(&mut g, &c, model, dim)?.into_iter())
        .map(|x| {
            let xv = x.get(1).unwrap_or(&x[0]).clone();
            (x[0].clone(), xv)
        })
        .collect();
    towers::heads(&mut g, &c, model, &inputs, FIELDS.len() * dim)?;
    for out in towers::OUTPUTS {
        g.output(out, DataType::FLOAT, &[Dim::Free("batch")]);
    }
    let ops = g.op_counts();
    let doc = format!(
        "esmm {:?} model, {:?} pooling, embedding dim {dim}, {} hash buckets, {} ensemble member(s); inputs and \
         hashing in contract.json",
        model.spec.kind,
        model.spec.pooling,
        model.spec.hash_buckets,
        model.member_count()
    );
    Ok((g.into_model(&doc), ops))
}

/// The embedding dimension of the model's tables (all the same, one per tower or shared).
pub fn embedding_dim(model: &Model) -> Result<usize> {
    let dim = model.tables.first().map_or(0, |t| t.dim);
    let all = model.members().flat_map(|(tables, _)| tables);
    ensure!(dim > 0 && all.into_iter().all(|t| t.dim == dim), "the model's tables differ in dimension");
    Ok(dim)
}
