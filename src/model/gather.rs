//! Between the embedding table(s) and the towers: gather-and-pool (forward) and scatter
//! (backward), for [PaddleRec's field layout](crate::schema::FIELDS) (user fields first), at
//! the model's embedding dimension `dim` (the tower input is `[n × 23·dim]`).
//!
//! - **Pool**: each (row, field) is summed in registers from its embedding rows and stored once
//!   into the row's slice of the tower input. The user side is pooled once per
//!   distinct common row of the batch (the rows of one session share it) and copied to its rows,
//!   or pooled straight into the input when every row has a common row of its own.
//! - **Scatter**: the input gradient (both towers' summed on the fly when they share a table) is
//!   accumulated per embedding row; the user part is first summed per distinct common row, so a
//!   session's user ids are touched once per batch.
//!
//! Parallel and deterministic: pooling is split over rows, each output element computed by one
//! task in a fixed order; the scatter is split over partitions of the table's rows (`row mod
//! P`, one [`SparseGrad`] each, which the optimizer then applies in parallel), every partition
//! walking the batch in the same order. Each gradient is therefore summed in the same order and
//! the results are bit-identical for any thread count.
//!
//! The dimension is chosen at run time: [`with_lanes!`] runs the loops below with fixed-size
//! vectors for the common dimensions and run-time-sized ones for any other ([`super::lanes`]).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::embedding::{Embedding, SparseGrad};
use super::lanes::{with_lanes, Lanes};
use super::vocab::Vocab;
use crate::batches::{distinct_rows, Batch, CommonTable, FieldCsr};
use crate::schema::{Side, FIELDS};

/// The user-side fields come first in [`FIELDS`]: their pooled block is `x[.., ..USER_FIELDS·dim]`.
const USER_FIELDS: usize = 13;
const _: () = {
    let mut f = 0;
    while f < FIELDS.len() {
        assert!(matches!(FIELDS[f].side, Side::User) == (f < USER_FIELDS), "user fields must come first");
        f += 1;
    }
};

/// How a field's embedding rows are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Plain sum (PaddleRec parity: values ignored).
    Sum,
    /// Sum weighted by the raw values for the weighted fields (histories, combinations).
    Weighted,
    /// `weighted`, with each weighted field divided by its id count: a history of 500 ids then
    /// enters the towers at the scale of a single id (a one-id field, e.g. a combination feature
    /// with its count value, is unchanged).
    Mean,
}

/// Rows per parallel task when pooling (small enough to balance, large enough to amortize).
const CHUNK: usize = 64;

/// Batch rows between a prefetch and the pooling that uses it.
const PREFETCH_AHEAD: usize = 4;

/// The user side of a batch: the distinct common rows, where their lists live, and how the
/// batch's rows map onto them.
pub struct Users<'a> {
    /// The user-side lists: gathered by the loader ([`Batch::users`]) or the whole table.
    fields: &'a [FieldCsr],
    /// Per distinct common row, its row in `fields`.
    rows: Vec<u32>,
    /// Per batch row: its index into `rows`.
    local: std::borrow::Cow<'a, [u32]>,
    /// Batch rows of each distinct common row (CSR over `members`, rows ascending).
    starts: Vec<u32>,
    members: Vec<u32>,
}

impl<'a> Users<'a> {
    pub fn of(batch: &'a Batch, common: &'a CommonTable) -> Self {
        let (fields, rows, local) = match &batch.users {
            Some(u) => {
                let distinct = u.fields.first().map_or(0, |f| f.offsets.len() - 1);
                (&u.fields[..], (0..distinct as u32).collect(), std::borrow::Cow::Borrowed(&u.local[..]))
            }
            None => {
                let (rows, local) = distinct_rows(&batch.common_row);
                (&common.fields[..], rows, std::borrow::Cow::Owned(local))
            }
        };
        let mut starts = vec![0u32; rows.len() + 1];
        for &l in local.iter() {
            starts[l as usize + 1] += 1;
        }
        for u in 0..rows.len() {
            starts[u + 1] += starts[u];
        }
        let mut fill = starts.clone();
        let mut members = vec![0u32; local.len()];
        for (i, &l) in local.iter().enumerate() {
            members[fill[l as usize] as usize] = i as u32;
            fill[l as usize] += 1;
        }
        Self { fields, rows, local, starts, members }
    }

    /// Every batch row has its own common row (`local[i] == i`): no sharing to exploit.
    fn identity(&self) -> bool {
        self.rows.len() == self.local.len()
    }
}

/// Which ids of a field the model reads and how it weighs them.
pub struct Gather {
    pooling: Pooling,
    /// Ids kept per field (first ones), indexed like [`FIELDS`].
    max_len: Vec<usize>,
    /// Which table row each id reads.
    vocab: Vocab,
    /// The embedding dimension (of every table this pools from or scatters to).
    dim: usize,
}

impl Gather {
    pub fn new(pooling: Pooling, max_len: Vec<usize>, vocab: Vocab, dim: usize) -> Self {
        Self { pooling, max_len, vocab, dim }
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Calls `visit(table row, weight)` for the ids of field `f` in `csr` row `r` the model
    /// uses. With id admission, admitted ids visit their own rows and the field's shared row is
    /// visited once with the weights of all ids (see [`Vocab`]).
    #[inline(always)]
    fn visit(&self, f: usize, csr: &FieldCsr, r: usize, mut visit: impl FnMut(u32, f32)) {
        let ids = csr.ids(r);
        let take = ids.len().min(self.max_len[f]);
        let weights = csr.weights(r).filter(|_| self.pooling != Pooling::Sum);
        let scale = if self.pooling == Pooling::Mean { 1.0 / take.max(1) as f32 } else { 1.0 };
        if !self.vocab.enabled() {
            // one loop per case: the hot path of every lookup, kept free of per-id branches
            match weights {
                Some(w) if self.pooling == Pooling::Weighted => (0..take).for_each(|k| visit(ids[k], w[k])),
                Some(w) => (0..take).for_each(|k| visit(ids[k], w[k] * scale)),
                None => ids[..take].iter().for_each(|&id| visit(id, 1.0)),
            }
            return;
        }
        let weight = |k: usize| weights.map_or(1.0, |w| w[k] * scale);
        let mut total = 0.0;
        for k in 0..take {
            let w = weight(k);
            total += w;
            if let Some(s) = self.vocab.own_weight(ids[k]) {
                visit(ids[k], w * s);
            }
        }
        if take > 0 {
            visit(self.vocab.field_row(f), total);
        }
    }

    /// Pooled embedding of field `f`, row `r`, into `dst` (`dim` floats).
    #[inline(always)]
    fn pool_field<L: Lanes>(&self, l: L, table: &Embedding, f: usize, csr: &FieldCsr, r: usize, dst: &mut [f32]) {
        let mut acc = l.zeros();
        self.visit(f, csr, r, |id, w| l.add_scaled(&mut acc, w, table.weights(id)));
        dst.copy_from_slice(acc.as_ref());
    }

    /// Adds `w · grad()` to the rows of partition `part = (p, of)` among field `f`'s ids of
    /// `csr` row `r` (`grad` evaluated at most once).
    #[inline(always)]
    fn scatter_field<V: AsRef<[f32]>>(
        &self,
        g: &mut SparseGrad,
        (p, of): (usize, usize),
        f: usize,
        csr: &FieldCsr,
        r: usize,
        grad: impl Fn() -> V,
    ) {
        let mut got: Option<V> = None;
        self.visit(f, csr, r, |id, w| {
            if of == 1 || id as usize % of == p {
                g.add(id, w, got.get_or_insert_with(&grad).as_ref());
            }
        });
    }

    /// Prefetches the embedding rows batch row `i` will read (the table is far larger than the
    /// caches; a few rows ahead, the misses overlap instead of queueing).
    #[inline]
    fn prefetch_row(&self, table: &Embedding, batch: &Batch, users: &Users, i: usize) {
        if users.identity() {
            for f in 0..USER_FIELDS {
                self.visit(f, &users.fields[f], users.rows[i] as usize, |id, _| table.prefetch_weights(id));
            }
        }
        for (j, csr) in batch.items.iter().enumerate() {
            self.visit(USER_FIELDS + j, csr, i, |id, _| table.prefetch_weights(id));
        }
    }

    /// Tower input `x = [n × 23·dim]` from `table`; `xu` is scratch for the user side.
    pub fn pool(&self, table: &Embedding, batch: &Batch, users: &Users, xu: &mut Vec<f32>, x: &mut Vec<f32>) {
        with_lanes!(self.dim, |l| self.pool_in(l, table, batch, users, xu, x))
    }

    /// [`Gather::pool`] with the vectors of `l`.
    fn pool_in<L: Lanes>(
        &self,
        l: L,
        table: &Embedding,
        batch: &Batch,
        users: &Users,
        xu: &mut Vec<f32>,
        x: &mut Vec<f32>,
    ) {
        let dim = l.dim();
        let (user_width, input) = (USER_FIELDS * dim, FIELDS.len() * dim);
        let user_block = |row: usize, dst: &mut [f32]| {
            for (f, d) in dst.chunks_exact_mut(dim).enumerate() {
                self.pool_field(l, table, f, &users.fields[f], row, d);
            }
        };
        let identity = users.identity();
        if !identity {
            xu.resize(users.rows.len() * user_width, 0.0);
            xu.par_chunks_mut(user_width * CHUNK).enumerate().for_each(|(c, block)| {
                for (k, dst) in block.chunks_exact_mut(user_width).enumerate() {
                    user_block(users.rows[c * CHUNK + k] as usize, dst);
                }
            });
        }
        x.resize(batch.len() * input, 0.0);
        let n = batch.len();
        x.par_chunks_mut(input * CHUNK).enumerate().for_each(|(c, block)| {
            for (k, row) in block.chunks_exact_mut(input).enumerate() {
                let i = c * CHUNK + k;
                if i + PREFETCH_AHEAD < n {
                    self.prefetch_row(table, batch, users, i + PREFETCH_AHEAD);
                }
                let (user, item) = row.split_at_mut(user_width);
                if identity {
                    user_block(users.rows[i] as usize, user);
                } else {
                    let u = users.local[i] as usize;
                    user.copy_from_slice(&xu[u * user_width..(u + 1) * user_width]);
                }
                for (j, d) in item.chunks_exact_mut(dim).enumerate() {
                    let f = USER_FIELDS + j;
                    self.pool_field(l, table, f, &batch.items[j], i, d);
                }
            }
        });
    }

    /// Accumulates the input gradient `Σ sources` (each `[n × 23·dim]`) into `parts`, the
    /// gradient partitions of one table (partition `p` owns the rows `≡ p mod parts.len()`);
    /// `du` is scratch for the per-common-row sums.
    pub fn scatter(
        &self,
        parts: &mut [SparseGrad],
        batch: &Batch,
        users: &Users,
        sources: &[&[f32]],
        du: &mut Vec<f32>,
    ) {
        with_lanes!(self.dim, |l| self.scatter_in(l, parts, batch, users, sources, du))
    }

    /// [`Gather::scatter`] with the vectors of `l`.
    fn scatter_in<L: Lanes>(
        &self,
        l: L,
        parts: &mut [SparseGrad],
        batch: &Batch,
        users: &Users,
        sources: &[&[f32]],
        du: &mut Vec<f32>,
    ) {
        let dim = l.dim();
        let (user_width, input) = (USER_FIELDS * dim, FIELDS.len() * dim);
        let identity = users.identity();
        if !identity {
            du.resize(users.rows.len() * user_width, 0.0);
            du.par_chunks_mut(user_width * CHUNK).enumerate().for_each(|(c, block)| {
                for (k, dst) in block.chunks_exact_mut(user_width).enumerate() {
                    let u = c * CHUNK + k;
                    dst.fill(0.0);
                    for &i in &users.members[users.starts[u] as usize..users.starts[u + 1] as usize] {
                        for (j, d) in dst.chunks_exact_mut(dim).enumerate() {
                            l.add(d, l.summed(sources, i as usize * input + j * dim).as_ref());
                        }
                    }
                }
            });
        }
        let n_parts = parts.len();
        let du: &[f32] = du;
        parts.par_iter_mut().enumerate().for_each(|(p, g)| {
            for (u, &row) in users.rows.iter().enumerate() {
                for f in 0..USER_FIELDS {
                    self.scatter_field(g, (p, n_parts), f, &users.fields[f], row as usize, || match identity {
                        true => l.summed(sources, u * input + f * dim),
                        false => l.vector(&du[u * user_width + f * dim..]),
                    });
                }
            }
            for i in 0..batch.len() {
                for (j, csr) in batch.items.iter().enumerate() {
                    let f = USER_FIELDS + j;
                    self.scatter_field(g, (p, n_parts), f, csr, i, || l.summed(sources, i * input + f * dim));
                }
            }
        });
    }
}
