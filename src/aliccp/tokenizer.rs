//! Line tokenizers for the two Ali-CCP files. A skeleton line is
//! `sample_id,click,buy,md5,feature_num,feature_list`, a common line `md5,feature_num,feature_list`;
//! `feature_list` is features joined by `\x01`, a feature is `field\x02id\x03value`.
//! Broken units are skipped and counted in [`Notes`]; nothing here panics on input.

use crate::columns::{ListColumns, RowMark};
use crate::hashing::FeatureHasher;
use crate::schema::{Side, FIELDS, USER_ID_FIELD};

use super::reader::Chunk;
use super::skips::{Notes, Reason};

/// Raw field name → index into [`FIELDS`] in O(1): names are `ddd` or `ddd_14`.
#[derive(Clone)]
pub struct FieldTable([u8; 2000]);

impl Default for FieldTable {
    fn default() -> Self {
        let mut t = [u8::MAX; 2000];
        for (i, f) in FIELDS.iter().enumerate() {
            if let Some(code) = Self::code(f.name.as_bytes()) {
                t[code] = i as u8;
            }
        }
        Self(t)
    }
}

impl FieldTable {
    #[inline]
    fn code(name: &[u8]) -> Option<usize> {
        let digits =
            |d: &[u8]| d.iter().try_fold(0usize, |a, &b| b.is_ascii_digit().then(|| a * 10 + (b - b'0') as usize));
        match name.len() {
            3 => digits(name),
            6 if &name[3..] == b"_14" => digits(&name[..3]).map(|c| c + 1000),
            _ => None,
        }
    }

    #[inline]
    pub fn lookup(&self, name: &[u8]) -> Option<usize> {
        Self::code(name).map(|c| self.0[c]).filter(|&i| i != u8::MAX).map(usize::from)
    }
}

/// Why an integer failed to parse.
#[derive(Debug, PartialEq, Eq)]
pub enum IntError {
    Invalid,
    Overflow,
}

/// Decimal u64: digits only, no sign, no spaces.
#[inline]
pub fn parse_u64(b: &[u8]) -> Result<u64, IntError> {
    if b.is_empty() {
        return Err(IntError::Invalid);
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return Err(IntError::Invalid);
        }
        v = v.checked_mul(10).and_then(|v| v.checked_add((c - b'0') as u64)).ok_or(IntError::Overflow)?;
    }
    Ok(v)
}

/// 16 hex characters (either case) → u64.
pub fn parse_md5(b: &[u8]) -> Option<u64> {
    if b.len() != 16 {
        return None;
    }
    b.iter().try_fold(0u64, |a, &c| (c as char).to_digit(16).map(|d| a << 4 | d as u64))
}

/// `0` or `1`.
#[inline]
pub fn parse_label(b: &[u8]) -> Option<u8> {
    match b {
        b"0" => Some(0),
        b"1" => Some(1),
        _ => None,
    }
}

/// A finite decimal number (`1.0`, `0.69315`, `1e-05`); NaN and infinities are rejected.
#[inline]
pub fn parse_value(b: &[u8]) -> Option<f32> {
    if b == b"1.0" {
        return Some(1.0);
    }
    let v: f32 = std::str::from_utf8(b).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// A header line names its columns: the first column starts with a letter that is not hex.
pub fn looks_like_header(first_column: &[u8]) -> bool {
    first_column.first().is_some_and(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit())
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(60)]).escape_debug().to_string();
    if b.len() > 60 {
        format!("{s}…")
    } else {
        s
    }
}

/// Turns raw features into hashed ids in [`ListColumns`], applying the skip policy.
pub struct FeatureParser<'a> {
    pub hasher: &'a FeatureHasher,
    pub caps: [usize; FIELDS.len()],
    pub table: FieldTable,
}

impl FeatureParser<'_> {
    /// Adds one (field, raw id, value) to the current row of `out`, or counts why not.
    #[inline]
    pub fn push(&self, field: usize, raw_id: u64, value: f32, line: u64, out: &mut ListColumns, notes: &mut Notes) {
        if !out.has(field) {
            return notes.add(line, Reason::MisplacedField, || format!("field {}", FIELDS[field].name));
        }
        if out.row_len(field) >= self.caps[field] {
            return notes.add(line, Reason::FieldCapped, String::new);
        }
        out.push(field, raw_id, self.hasher.bucket(field, raw_id), value);
    }

    /// Parses a `\x01`-joined feature list into the current row; returns the non-empty tokens.
    pub fn parse_list(&self, list: &[u8], line: u64, out: &mut ListColumns, notes: &mut Notes) -> u64 {
        let mut tokens = 0;
        for tok in list.split(|&b| b == 0x01) {
            if tok.is_empty() {
                notes.add(line, Reason::EmptyFeature, || "empty feature between \\x01 separators".into());
                continue;
            }
            tokens += 1;
            self.parse_feature(tok, line, out, notes);
        }
        tokens
    }

    #[inline]
    fn parse_feature(&self, tok: &[u8], line: u64, out: &mut ListColumns, notes: &mut Notes) {
        let Some(p2) = memchr::memchr(0x02, tok) else {
            return notes.add(line, Reason::MalformedToken, || format!("no \\x02 in `{}`", show(tok)));
        };
        let rest = &tok[p2 + 1..];
        let Some(p3) = memchr::memchr(0x03, rest) else {
            return notes.add(line, Reason::MalformedToken, || format!("no \\x03 in `{}`", show(tok)));
        };
        let (name, id, value) = (&tok[..p2], &rest[..p3], &rest[p3 + 1..]);
        let Some(field) = self.table.lookup(name) else {
            return notes.add(line, Reason::UnknownField, || format!("field `{}`", show(name)));
        };
        let raw_id = match parse_u64(id) {
            Ok(v) => v,
            Err(IntError::Overflow) => return notes.add(line, Reason::IdOverflow, || format!("id `{}`", show(id))),
            Err(IntError::Invalid) => {
                return notes.add(line, Reason::MalformedToken, || format!("id `{}` is not an integer", show(id)))
            }
        };
        let Some(value) = parse_value(value) else {
            return notes.add(line, Reason::BadValue, || format!("value `{}`", show(value)));
        };
        self.push(field, raw_id, value, line, out, notes);
    }
}

/// Runs `parse` on one line; on the unterminated last line of a file, any problem means the
/// line was cut short: it is rolled back and counted once as `truncated_last_line`.
pub fn parse_line<R: Rows>(
    rows: &mut R,
    line: u64,
    unterminated: bool,
    notes: &mut Notes,
    parse: impl FnOnce(&mut R, &mut Notes),
) {
    if !unterminated {
        return parse(rows, notes);
    }
    let mark = rows.mark();
    let mut local = Notes::default();
    parse(rows, &mut local);
    if local.clean() {
        notes.merge(&local);
    } else {
        rows.rollback(mark);
        let why = local.first_issue.map(|i| i.reason.name()).unwrap_or_default();
        notes.add(line, Reason::TruncatedLastLine, || format!("last line has no newline and {why}"));
    }
}

/// Row storage that can undo a partly parsed row.
pub trait Rows {
    type Mark;
    fn mark(&self) -> Self::Mark;
    fn rollback(&mut self, mark: Self::Mark);
}

/// Parsed rows of a chunk of a skeleton file (or of a PaddleRec file, which also fills `users`).
pub struct SampleRows {
    pub lines: Vec<u64>,
    pub sample_id: Vec<u64>,
    pub click: Vec<u8>,
    pub buy: Vec<u8>,
    /// The join key: md5 for Ali-CCP, a hash of the user-side features for PaddleRec.
    pub md5: Vec<u64>,
    pub items: ListColumns,
    /// User-side features per row (PaddleRec only; Ali-CCP keeps them in the common file).
    pub users: Option<ListColumns>,
    pub lines_read: u64,
    pub notes: Notes,
}

impl SampleRows {
    pub fn new(with_users: bool) -> Self {
        Self {
            lines: Vec::new(),
            sample_id: Vec::new(),
            click: Vec::new(),
            buy: Vec::new(),
            md5: Vec::new(),
            items: ListColumns::new(Side::Item),
            users: with_users.then(|| ListColumns::new(Side::User)),
            lines_read: 0,
            notes: Notes::default(),
        }
    }

    pub fn push_row(&mut self, line: u64, sample_id: u64, click: u8, buy: u8, md5: u64) {
        self.lines.push(line);
        self.sample_id.push(sample_id);
        self.click.push(click);
        self.buy.push(buy);
        self.md5.push(md5);
        self.items.end_row();
        if let Some(u) = self.users.as_mut() {
            u.end_row();
        }
    }
}

impl Rows for SampleRows {
    type Mark = (usize, RowMark, Option<RowMark>);
    fn mark(&self) -> Self::Mark {
        (self.lines.len(), self.items.mark(), self.users.as_ref().map(ListColumns::mark))
    }
    fn rollback(&mut self, (n, items, users): Self::Mark) {
        self.lines.truncate(n);
        self.sample_id.truncate(n);
        self.click.truncate(n);
        self.buy.truncate(n);
        self.md5.truncate(n);
        self.items.rollback(&items);
        if let (Some(u), Some(m)) = (self.users.as_mut(), users) {
            u.rollback(&m);
        }
    }
}

/// Parsed rows of a chunk of a common features file.
pub struct CommonRows {
    pub lines: Vec<u64>,
    pub md5: Vec<u64>,
    pub users: ListColumns,
    pub lines_read: u64,
    pub notes: Notes,
}

impl Rows for CommonRows {
    type Mark = (usize, RowMark);
    fn mark(&self) -> Self::Mark {
        (self.lines.len(), self.users.mark())
    }
    fn rollback(&mut self, (n, users): Self::Mark) {
        self.lines.truncate(n);
        self.md5.truncate(n);
        self.users.rollback(&users);
    }
}

/// Splits `line` (a trailing `\r` removed) into exactly `n` comma columns, the last one taking
/// the rest; `None` on a different count. Counts blank and header lines.
fn columns<'l, const N: usize>(line: &'l [u8], lineno: u64, notes: &mut Notes) -> Option<[&'l [u8]; N]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        notes.add(lineno, Reason::BlankLine, || "empty line".into());
        return None;
    }
    let mut cols = [&line[..0]; N];
    let mut rest = line;
    for col in cols.iter_mut().take(N - 1) {
        let Some(i) = memchr::memchr(b',', rest) else {
            return wrong_columns(line, lineno, N, notes, &cols[0]);
        };
        *col = &rest[..i];
        rest = &rest[i + 1..];
    }
    if memchr::memchr(b',', rest).is_some() {
        return wrong_columns(line, lineno, N, notes, &cols[0]);
    }
    cols[N - 1] = rest;
    Some(cols)
}

fn wrong_columns<T>(line: &[u8], lineno: u64, n: usize, notes: &mut Notes, first: &[u8]) -> Option<T> {
    let first = if first.is_empty() { line.split(|&b| b == b',').next().unwrap_or(line) } else { first };
    if looks_like_header(first) {
        notes.add(lineno, Reason::HeaderLine, || format!("`{}`", show(line)));
    } else {
        let got = line.iter().filter(|&&b| b == b',').count() + 1;
        notes.add(lineno, Reason::WrongColumnCount, || format!("{got} columns, expected {n}"));
    }
    None
}

/// Checks `feature_num` against the tokens actually found (the list wins).
fn check_feature_num(feature_num: &[u8], tokens: u64, lineno: u64, notes: &mut Notes) {
    if parse_u64(feature_num).ok() != Some(tokens) {
        notes.add(lineno, Reason::FeatureNumMismatch, || {
            format!("feature_num `{}` but {tokens} features", show(feature_num))
        });
    }
}

/// Parses one chunk of `sample_skeleton_*.csv`.
pub fn parse_skeleton_chunk(chunk: &Chunk, p: &FeatureParser) -> SampleRows {
    parse_skeleton_chunk_where(chunk, p, |_, _| true)
}

/// The md5 column of a skeleton line (`sample_id,click,buy,md5,...`), if readable.
pub fn skeleton_key(line: &[u8]) -> Option<u64> {
    line.splitn(5, |&b| b == b',').nth(3).and_then(parse_md5)
}

/// The md5 column of a common-features line (`md5,...`), if readable.
pub fn common_key(line: &[u8]) -> Option<u64> {
    line.split(|&b| b == b',').next().and_then(parse_md5)
}

/// [`parse_skeleton_chunk`] of the lines `keep(line, lineno)` selects (a shard's lines); the
/// others are neither parsed nor counted.
pub fn parse_skeleton_chunk_where(chunk: &Chunk, p: &FeatureParser, keep: impl Fn(&[u8], u64) -> bool) -> SampleRows {
    let mut rows = SampleRows::new(false);
    let mut notes = Notes::default();
    for (lineno, line, unterminated) in chunk.lines() {
        if !keep(line, lineno) {
            continue;
        }
        rows.lines_read += 1;
        parse_line(&mut rows, lineno, unterminated, &mut notes, |rows, notes| {
            let Some([sid, click, buy, md5, num, list]) = columns::<6>(line, lineno, notes) else { return };
            let sample_id = match parse_u64(sid) {
                Ok(v) => v,
                Err(_) if looks_like_header(sid) => {
                    return notes.add(lineno, Reason::HeaderLine, || format!("`{}`", show(line)))
                }
                Err(_) => return notes.add(lineno, Reason::BadSampleId, || format!("sample_id `{}`", show(sid))),
            };
            let (Some(click), Some(buy)) = (parse_label(click), parse_label(buy)) else {
                return notes.add(lineno, Reason::BadLabel, || format!("click `{}` buy `{}`", show(click), show(buy)));
            };
            let Some(md5) = parse_md5(md5) else {
                return notes.add(lineno, Reason::BadMd5, || format!("md5 `{}`", show(md5)));
            };
            if list.is_empty() {
                return notes.add(lineno, Reason::EmptyFeatureList, || "no features".into());
            }
            let tokens = p.parse_list(list, lineno, &mut rows.items, notes);
            check_feature_num(num, tokens, lineno, notes);
            if click == 0 && buy == 1 {
                notes.add(lineno, Reason::ClickNoBuyOne, String::new);
            }
            rows.push_row(lineno, sample_id, click, buy, md5);
        });
    }
    rows.notes = notes;
    rows
}

/// Parses one chunk of `common_features_*.csv`.
pub fn parse_common_chunk(chunk: &Chunk, p: &FeatureParser) -> CommonRows {
    parse_common_chunk_where(chunk, p, |_, _| true)
}

/// [`parse_common_chunk`] of the lines `keep(line, lineno)` selects.
pub fn parse_common_chunk_where(chunk: &Chunk, p: &FeatureParser, keep: impl Fn(&[u8], u64) -> bool) -> CommonRows {
    let mut rows = CommonRows {
        lines: Vec::new(),
        md5: Vec::new(),
        users: ListColumns::new(Side::User),
        lines_read: 0,
        notes: Notes::default(),
    };
    let mut notes = Notes::default();
    for (lineno, line, unterminated) in chunk.lines() {
        if !keep(line, lineno) {
            continue;
        }
        rows.lines_read += 1;
        parse_line(&mut rows, lineno, unterminated, &mut notes, |rows, notes| {
            let Some([md5, num, list]) = columns::<3>(line, lineno, notes) else { return };
            let Some(md5v) = parse_md5(md5) else {
                if looks_like_header(md5) && parse_u64(num).is_err() {
                    return notes.add(lineno, Reason::HeaderLine, || format!("`{}`", show(line)));
                }
                return notes.add(lineno, Reason::BadMd5, || format!("md5 `{}`", show(md5)));
            };
            if list.is_empty() {
                return notes.add(lineno, Reason::EmptyFeatureList, || "no features".into());
            }
            let tokens = p.parse_list(list, lineno, &mut rows.users, notes);
            check_feature_num(num, tokens, lineno, notes);
            if rows.users.row_len(USER_ID_FIELD) == 0 {
                notes.add(lineno, Reason::NoUserId, String::new);
            }
            rows.users.end_row();
            rows.lines.push(lineno);
            rows.md5.push(md5v);
        });
    }
    rows.notes = notes;
    rows
}
