//! Random damage to raw text lines for the hostile-input property tests: bytes dropped,
//! doubled or replaced by separators and junk, lines cut, files ending mid-line.

use std::collections::BTreeMap;

use esmm::aliccp::{Effect, Reason};
use proptest::prelude::*;

/// One mutation: which file (0 common, 1 skeleton), line, position, operation, byte.
pub type Mutation = (usize, usize, usize, u8, u8);

pub const NASTY: &[u8] = b",\x01\x02\x03\n\r09afg-.e \xff\xef";

/// Applies `m` to `lines` (file `m.0`), recording the touched line or where the file is cut.
pub fn mutate(lines: &mut [Vec<u8>], touched: &mut Vec<usize>, cut_file: &mut Option<usize>, m: &Mutation) {
    let (_, line, pos, op, byte) = *m;
    let li = line % lines.len();
    let l = &mut lines[li];
    let pos = pos % (l.len() + 1);
    match op % 5 {
        0 if pos < l.len() => {
            l.remove(pos);
        }
        1 if pos < l.len() => l.insert(pos, l[pos]),
        2 if pos < l.len() => l[pos] = NASTY[byte as usize % NASTY.len()],
        3 => l.truncate(pos),
        4 => *cut_file = Some(li * 1000 + pos),
        _ => l.insert(pos, NASTY[byte as usize % NASTY.len()]),
    }
    touched.push(li);
}

/// The file text; a cut file ends inside line `li` after `pos` bytes (no final newline).
pub fn render(lines: &[Vec<u8>], cut: Option<usize>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(c) = cut.filter(|c| c / 1000 == i) {
            out.extend_from_slice(&l[..(c % 1000).min(l.len())]);
            return out;
        }
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// Lines a reader sees in `text` (a last line without newline counts).
pub fn lines_in(text: &[u8]) -> u64 {
    let n = text.iter().filter(|&&b| b == b'\n').count() as u64;
    n + u64::from(!text.is_empty() && !text.ends_with(b"\n"))
}

/// Rows skipped (whole lines, not features) for any reason: the report's counts under `prefix`.
pub fn skipped_rows(skipped: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    Reason::ALL
        .iter()
        .filter(|r| r.effect() == Effect::SkipRow)
        .map(|r| skipped.get(&format!("{prefix}{}", r.name())).copied().unwrap_or(0))
        .sum()
}

/// A random [`Mutation`].
pub fn mutation() -> impl Strategy<Value = Mutation> {
    (0usize..2, 0usize..64, 0usize..200, any::<u8>(), any::<u8>())
}
