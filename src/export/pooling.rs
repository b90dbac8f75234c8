//! The embedding half of the exported graph: per field, the padded ids `[batch, len]` (and
//! weights) → one pooled vector per table `[batch, dim]`, exactly as `model::gather` pools them
//! (the `visit` there is the definition; this is its tensor form):
//!
//! - the first `max_len` positions are kept (`Slice`), and a position counts when its id is not
//!   0 (padding): `mask = Cast(ids > 0)`;
//! - the weight of a position is 1 (`sum` pooling, or an unweighted field) or the input weight
//!   (`weighted`), times `1 / max(ids kept, 1)` for `mean` (weighted fields only);
//! - id admission off: `pooled = Σ w·E[id]` (`Gather`, then a batched `MatMul` of the weights
//!   row with the gathered rows);
//! - id admission on: the table is compacted to its admitted rows (row 0 a zero row, read by
//!   every id without a row of its own), `bucket_row` maps a bucket to its row and, with
//!   shrinkage, `bucket_scale` to the weight of its own row; both are filled from
//!   [`Vocab::own_weight`], never recomputed here. `pooled = Σ (w·scale)·E[row] + (Σ w)·shared`,
//!   `shared` the field's shared row ([`Vocab::field_row`]).
//!
//! An ensemble ([`Model::members`]) pools once per member, from its own tables (initializers
//! prefixed `s{k}_` for snapshot `k`; the model's own keep their names), the ids, weights and
//! admission maps shared.

use anyhow::{ensure, Result};
use onnx_protobuf::tensor_proto::DataType;

use super::graph::{int, Graph};
use crate::model::{Model, Pooling, Vocab};
use crate::schema::{ids_column, weights_column, FIELDS};

/// Names of the shared constant tensors.
pub struct Consts {
    pub zero: String,
    pub one: String,
    pub axis1: String,
}

impl Consts {
    pub fn new(g: &mut Graph) -> Self {
        Self { zero: g.i64s("zero_i64", &[0]), one: g.f32s("one_f32", &[1], [1.0]), axis1: g.i64s("axis_1", &[1]) }
    }
}

/// Where field ids read their rows.
struct Lookup {
    /// Per member, one table per model table: `[rows, dim]` (compacted with admission).
    tables: Vec<Vec<String>>,
    /// Admission: `bucket → table row` (int32) and, with shrinkage, `bucket → own-row weight`.
    rows: Option<String>,
    scale: Option<String>,
    /// Admission: per member, per table, per field, the shared row `[1, dim]`.
    shared: Vec<Vec<Vec<String>>>,
}

/// The initializer-name prefix of member `k` of `members` (the model's own, last: none).
pub fn member_prefix(k: usize, members: usize) -> String {
    if k + 1 == members {
        String::new()
    } else {
        format!("s{k}_")
    }
}

fn rows_of<'a>(t: &'a crate::model::Embedding, rows: impl Iterator<Item = u32> + 'a) -> impl Iterator<Item = f32> + 'a {
    rows.flat_map(move |r| t.weights(r).iter().copied())
}

fn lookup(g: &mut Graph, model: &Model, dim: usize) -> Result<Lookup> {
    let vocab: &Vocab = model.vocab();
    let members: Vec<_> = model.members().map(|(tables, _)| tables).collect();
    if !vocab.enabled() {
        let mut tables = Vec::new();
        for (k, member) in members.iter().enumerate() {
            let prefix = member_prefix(k, members.len());
            let names = (member.iter().enumerate())
                .map(|(t, e)| g.f32s(&format!("{prefix}table{t}"), &[e.rows, dim], rows_of(e, 0..e.rows as u32)));
            tables.push(names.collect());
        }
        return Ok(Lookup { tables, rows: None, scale: None, shared: Vec::new() });
    }
    let buckets = model.spec.hash_buckets;
    ensure!(buckets <= i32::MAX as usize, "{buckets} hash buckets do not fit the int32 row map");
    let own: Vec<Option<f32>> = (0..buckets as u32).map(|b| vocab.own_weight(b)).collect();
    let admitted: Vec<u32> = (0..buckets as u32).filter(|&b| own[b as usize].is_some()).collect();
    let mut next = 0i32;
    let row_of = |w: &Option<f32>| match w {
        Some(_) => {
            next += 1;
            next
        }
        None => 0,
    };
    let rows = g.i32s("bucket_row", &[buckets], own.iter().map(row_of));
    let shrunk = own.iter().any(|w| w.is_some_and(|s| s != 1.0));
    let scale = shrunk.then(|| g.f32s("bucket_scale", &[buckets], own.iter().map(|w| w.unwrap_or(0.0))));
    let (mut tables, mut shared) = (Vec::new(), Vec::new());
    for (k, member) in members.iter().enumerate() {
        let prefix = member_prefix(k, members.len());
        let (mut member_tables, mut member_shared) = (Vec::new(), Vec::new());
        for (t, e) in member.iter().enumerate() {
            let data = std::iter::repeat_n(0.0, dim).chain(rows_of(e, admitted.iter().copied()));
            member_tables.push(g.f32s(&format!("{prefix}table{t}"), &[1 + admitted.len(), dim], data));
            let field_rows = (0..FIELDS.len()).map(|f| {
                let name = format!("{prefix}shared{t}_{}", FIELDS[f].name);
                g.f32s(&name, &[1, dim], rows_of(e, std::iter::once(vocab.field_row(f))))
            });
            member_shared.push(field_rows.collect());
        }
        tables.push(member_tables);
        shared.push(member_shared);
    }
    Ok(Lookup { tables, rows: Some(rows), scale, shared })
}

/// Whether field `f`'s graph has a weights input under `pooling`.
pub fn has_weights(f: usize, pooling: Pooling) -> bool {
    FIELDS[f].weighted && pooling != Pooling::Sum
}

/// `Σ_k w[b, k] · rows[b, k, :]` → `[batch, dim]`.
fn weighted_sum(g: &mut Graph, c: &Consts, w: &str, rows: &str) -> String {
    let w3 = g.op("Unsqueeze", &[w, &c.axis1], vec![]);
    let s = g.op("MatMul", &[&w3, rows], vec![]);
    g.op("Squeeze", &[&s, &c.axis1], vec![])
}

/// The per-position weights of field `f` (`[batch, len]`, 0 at padding) and its kept ids.
fn field_weights(g: &mut Graph, c: &Consts, model: &Model, f: usize) -> (String, String) {
    let (pooling, max_len) = (model.spec.pooling, model.spec.max_len[f]);
    let mut ids = ids_column(f);
    let mut w_in = has_weights(f, pooling).then(|| weights_column(f));
    if let Ok(m) = i64::try_from(max_len) {
        let end = g.i64s(&format!("max_len_{}", FIELDS[f].name), &[m]);
        ids = g.op("Slice", &[&ids, &c.zero, &end, &c.axis1], vec![]);
        w_in = w_in.map(|w| g.op("Slice", &[&w, &c.zero, &end, &c.axis1], vec![]));
    }
    let present = g.op("Greater", &[&ids, &c.zero], vec![]);
    let mask = g.op("Cast", &[&present], vec![int("to", DataType::FLOAT as i64)]);
    let mut w = match &w_in {
        Some(w_in) => g.op("Mul", &[w_in, &mask], vec![]),
        None => mask.clone(),
    };
    if w_in.is_some() && pooling == Pooling::Mean {
        let kept = g.op("ReduceSum", &[&mask, &c.axis1], vec![int("keepdims", 1)]);
        let kept = g.op("Max", &[&kept, &c.one], vec![]);
        let inv = g.op("Reciprocal", &[&kept], vec![]);
        w = g.op("Mul", &[&w, &inv], vec![]);
    }
    (ids, w)
}

/// The tower inputs: per member ([`Model::members`] order), per model table,
/// `[batch, FIELDS.len() · dim]`, fields in [`FIELDS`] order.
pub fn pooled(g: &mut Graph, c: &Consts, model: &Model, dim: usize) -> Result<Vec<Vec<String>>> {
    ensure!(model.spec.max_len.iter().all(|&m| m > 0), "a max_len of 0 keeps no ids");
    let look = lookup(g, model, dim)?;
    let mut parts: Vec<Vec<Vec<String>>> = look.tables.iter().map(|member| vec![Vec::new(); member.len()]).collect();
    for f in 0..FIELDS.len() {
        let (ids, w) = field_weights(g, c, model, f);
        let Some(rows) = &look.rows else {
            for (k, member) in look.tables.iter().enumerate() {
                for (t, table) in member.iter().enumerate() {
                    let e = g.op("Gather", &[table, &ids], vec![int("axis", 0)]);
                    parts[k][t].push(weighted_sum(g, c, &w, &e));
                }
            }
            continue;
        };
        let row = g.op("Gather", &[rows, &ids], vec![int("axis", 0)]);
        let own_w = match &look.scale {
            Some(scale) => {
                let s = g.op("Gather", &[scale, &ids], vec![int("axis", 0)]);
                g.op("Mul", &[&w, &s], vec![])
            }
            None => w.clone(),
        };
        let total = g.op("ReduceSum", &[&w, &c.axis1], vec![int("keepdims", 1)]);
        for (k, member) in look.tables.iter().enumerate() {
            for (t, table) in member.iter().enumerate() {
                let e = g.op("Gather", &[table, &row], vec![int("axis", 0)]);
                let own = weighted_sum(g, c, &own_w, &e);
                let shared = g.op("MatMul", &[&total, &look.shared[k][t][f]], vec![]);
                parts[k][t].push(g.op("Add", &[&own, &shared], vec![]));
            }
        }
    }
    let concat = |g: &mut Graph, parts: &[String]| {
        let names: Vec<&str> = parts.iter().map(String::as_str).collect();
        g.op("Concat", &names, vec![int("axis", 1)])
    };
    Ok(parts.iter().map(|member| member.iter().map(|p| concat(g, p)).collect()).collect())
}
