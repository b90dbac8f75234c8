//! In-memory column builders for one chunk of rows, turned into arrow arrays of the contract
//! schemas. Feature lists are built per field (`offsets` + `ids` (+ `weights`)) as the tokenizer
//! walks a line, so a row can be rolled back when it turns out to be broken.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, ListArray, UInt32Array};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::Field;

use crate::schema::{side_fields, Side, FIELDS, SCENARIO_FIELD};

const NO_SLOT: u8 = u8::MAX;

/// One side's feature lists (the fields of [`Side`]) for a chunk of rows.
pub struct ListColumns {
    fields: Vec<usize>,
    slot: [u8; FIELDS.len()],
    offsets: Vec<Vec<i32>>,
    ids: Vec<Vec<u32>>,
    weights: Vec<Vec<f32>>,
    /// Raw id of the first scenario (`301`) feature per finished row, 0 if none (item side).
    scenario: Vec<u64>,
    current_scenario: u64,
}

/// Lengths at a row start, to roll a row back (ids and offsets per field).
pub struct RowMark(Vec<(usize, usize)>);

impl ListColumns {
    pub fn new(side: Side) -> Self {
        let fields = side_fields(side);
        let mut slot = [NO_SLOT; FIELDS.len()];
        for (s, &f) in fields.iter().enumerate() {
            slot[f] = s as u8;
        }
        let n = fields.len();
        Self {
            fields,
            slot,
            offsets: vec![vec![0]; n],
            ids: vec![Vec::new(); n],
            weights: vec![Vec::new(); n],
            scenario: Vec::new(),
            current_scenario: 0,
        }
    }

    /// True if `field` belongs to this side.
    #[inline]
    pub fn has(&self, field: usize) -> bool {
        self.slot[field] != NO_SLOT
    }

    /// Ids of `field` already pushed in the current (unfinished) row.
    #[inline]
    pub fn row_len(&self, field: usize) -> usize {
        let s = self.slot[field] as usize;
        self.ids[s].len() - *self.offsets[s].last().unwrap_or(&0) as usize
    }

    /// Appends one hashed id (and its weight, kept only for weighted fields) to the current row;
    /// `raw_id` is remembered for the scenario field.
    #[inline]
    pub fn push(&mut self, field: usize, raw_id: u64, id: u32, weight: f32) {
        if field == SCENARIO_FIELD && self.current_scenario == 0 {
            self.current_scenario = raw_id;
        }
        let s = self.slot[field] as usize;
        self.ids[s].push(id);
        if FIELDS[field].weighted {
            self.weights[s].push(weight);
        }
    }

    pub fn end_row(&mut self) {
        for (off, ids) in self.offsets.iter_mut().zip(&self.ids) {
            off.push(ids.len() as i32);
        }
        self.scenario.push(std::mem::take(&mut self.current_scenario));
    }

    /// The scenario raw id of each finished row.
    pub fn scenario(&self) -> &[u64] {
        &self.scenario
    }

    pub fn mark(&self) -> RowMark {
        RowMark(self.ids.iter().zip(&self.offsets).map(|(i, o)| (i.len(), o.len())).collect())
    }

    /// Drops everything pushed since `mark`, finished rows included.
    pub fn rollback(&mut self, mark: &RowMark) {
        self.current_scenario = 0;
        self.scenario.truncate(mark.0.first().map_or(0, |m| m.1.saturating_sub(1)));
        for (s, &(ids, offsets)) in mark.0.iter().enumerate() {
            self.ids[s].truncate(ids);
            self.weights[s].truncate(ids); // no-op for unweighted fields (always empty)
            self.offsets[s].truncate(offsets);
        }
    }

    /// Every field of the side with its hashed ids (all rows, in order).
    pub fn field_ids(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.fields.iter().zip(&self.ids).map(|(&f, ids)| (f, ids.as_slice()))
    }

    pub fn rows(&self) -> usize {
        self.offsets[0].len() - 1
    }

    /// Arrays in schema order: per field the ids list, then the weights list if weighted.
    pub fn into_arrays(self) -> Vec<ArrayRef> {
        let mut out = Vec::with_capacity(self.fields.len() * 2);
        let mut weights = self.weights.into_iter();
        for ((field, offsets), ids) in self.fields.iter().zip(self.offsets).zip(self.ids) {
            let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
            let w = weights.next().unwrap_or_default();
            if FIELDS[*field].weighted {
                out.push(list(offsets.clone(), Arc::new(UInt32Array::from(ids))));
                out.push(list(offsets, Arc::new(Float32Array::from(w))));
            } else {
                out.push(list(offsets, Arc::new(UInt32Array::from(ids))));
            }
        }
        out
    }
}

fn list(offsets: OffsetBuffer<i32>, values: ArrayRef) -> ArrayRef {
    let item = Arc::new(Field::new("item", values.data_type().clone(), false));
    Arc::new(ListArray::new(item, offsets, values, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn rows_rollback_and_arrays() {
        let mut c = ListColumns::new(Side::Item);
        let f205 = crate::schema::field_index(b"205").unwrap();
        let f508 = crate::schema::field_index(b"508").unwrap();
        c.push(f205, 70, 7, 1.0);
        c.push(SCENARIO_FIELD, 33, 9, 1.0);
        c.push(f508, 90, 9, 0.5);
        c.end_row();
        let m = c.mark();
        c.push(f205, 80, 8, 1.0);
        c.push(SCENARIO_FIELD, 44, 9, 1.0);
        c.rollback(&m);
        c.push(f508, 100, 10, 2.0);
        assert_eq!(c.row_len(f508), 1);
        c.end_row();
        assert_eq!(c.rows(), 2);
        assert_eq!(c.scenario(), &[33, 0]);
        let arrays = c.into_arrays();
        assert_eq!(arrays.len(), 14); // 10 id lists + 4 weight lists
        let ids205 = arrays[0].as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(ids205.value_offsets(), &[0, 1, 1]);
        assert_eq!(ids205.len(), 2);
    }
}
