//! A small builder over the ONNX protobuf messages (`onnx-protobuf`): nodes with generated
//! output names, initializers stored as little-endian `raw_data`, typed graph inputs and
//! outputs with symbolic dimensions, and the final `ModelProto` (standard domain only).

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Tensor};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// The default-domain opset the graph is written for, and the IR version that goes with it.
pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

/// One dimension of a graph input or output.
pub enum Dim<'a> {
    Fixed(i64),
    /// A symbolic dimension (`batch`, `len_f_101`): any size at run time.
    Free(&'a str),
}

/// A graph under construction.
#[derive(Default)]
pub struct Graph {
    g: GraphProto,
    next: usize,
}

/// An integer attribute.
pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INT.into(), i: v, ..Default::default() }
}

/// An integer-list attribute (`perm`).
pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INTS.into(), ints: v.to_vec(), ..Default::default() }
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Free(p) => dimension::Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = Tensor {
        elem_type: elem as i32,
        shape: Some(TensorShapeProto { dim, ..Default::default() }).into(),
        ..Default::default()
    };
    let t = TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() };
    ValueInfoProto { name: name.into(), type_: Some(t).into(), ..Default::default() }
}

impl Graph {
    pub fn new(name: &str) -> Self {
        Self { g: GraphProto { name: name.into(), ..Default::default() }, next: 0 }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// Adds node `op` reading `inputs`; returns its (generated) output name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.op_into(op, inputs, attrs, &out);
        out
    }

    /// Adds node `op` writing the tensor named `out` (graph outputs).
    pub fn op_into(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        self.g.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("n{}_{out}", self.g.node.len()),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn init(&mut self, name: &str, elem: DataType, dims: &[usize], raw: Vec<u8>) -> String {
        self.g.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// A float32 initializer of shape `dims` (row-major `data`).
    pub fn f32s(&mut self, name: &str, dims: &[usize], data: impl IntoIterator<Item = f32>) -> String {
        let raw = data.into_iter().flat_map(f32::to_le_bytes).collect();
        self.init(name, DataType::FLOAT, dims, raw)
    }

    /// An int32 initializer (index tables).
    pub fn i32s(&mut self, name: &str, dims: &[usize], data: impl IntoIterator<Item = i32>) -> String {
        let raw = data.into_iter().flat_map(i32::to_le_bytes).collect();
        self.init(name, DataType::INT32, dims, raw)
    }

    /// An int64 initializer (axes, slice bounds, shapes).
    pub fn i64s(&mut self, name: &str, data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.init(name, DataType::INT64, &[data.len()], raw)
    }

    /// A graph input.
    pub fn input(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.g.input.push(value_info(name, elem, dims));
    }

    /// A graph output (some node must write `name`).
    pub fn output(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.g.output.push(value_info(name, elem, dims));
    }

    /// Node count by op type (for the report and tests).
    pub fn op_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for n in &self.g.node {
            *m.entry(n.op_type.clone()).or_insert(0) += 1;
        }
        m
    }

    /// The model: this graph, opset [`OPSET`] of the default domain.
    pub fn into_model(self, doc: &str) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET, ..Default::default() }],
            producer_name: "esmm".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(self.g).into(),
            ..Default::default()
        }
    }
}
