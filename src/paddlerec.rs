//! PaddleRec's preprocessed ESMM CSV (`models/multitask/esmm/data`): one line per impression,
//! `sample_id,click,buy,key,field:feat_id,field:feat_id,...`, user and item fields inline, no
//! values (every weight is 1.0). The `key` column is ignored: rows are joined to the common
//! (user-side) table by a hash of their user-side features, so identical user sides share one
//! common row and the samples contract is the same as for Ali-CCP.

use xxhash_rust::xxh3::Xxh3;

use crate::aliccp::reader::Chunk;
use crate::aliccp::skips::{Notes, Reason};
use crate::aliccp::tokenizer::{
    looks_like_header, parse_label, parse_line, parse_u64, FeatureParser, IntError, SampleRows,
};
use crate::schema::{Side, FIELDS};

/// Parses one chunk of a PaddleRec file into sample rows with their user side.
pub fn parse_chunk(chunk: &Chunk, p: &FeatureParser) -> SampleRows {
    let mut rows = SampleRows::new(true);
    let mut notes = Notes::default();
    for (lineno, line, unterminated) in chunk.lines() {
        rows.lines_read += 1;
        parse_line(&mut rows, lineno, unterminated, &mut notes, |rows, notes| parse_row(line, lineno, p, rows, notes));
    }
    rows.notes = notes;
    rows
}

fn parse_row(line: &[u8], lineno: u64, p: &FeatureParser, rows: &mut SampleRows, notes: &mut Notes) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return notes.add(lineno, Reason::BlankLine, || "empty line".into());
    }
    let mut cols = line.split(|&b| b == b',');
    let (Some(sid), Some(click), Some(buy), Some(_key)) = (cols.next(), cols.next(), cols.next(), cols.next()) else {
        if looks_like_header(line) {
            return notes.add(lineno, Reason::HeaderLine, || String::from_utf8_lossy(line).into_owned());
        }
        return notes.add(lineno, Reason::WrongColumnCount, || "fewer than 4 columns".into());
    };
    let sample_id = match parse_u64(sid) {
        Ok(v) => v,
        Err(_) if looks_like_header(sid) => {
            return notes.add(lineno, Reason::HeaderLine, || String::from_utf8_lossy(line).into_owned())
        }
        Err(_) => {
            return notes.add(lineno, Reason::BadSampleId, || format!("sample_id `{}`", String::from_utf8_lossy(sid)))
        }
    };
    let (Some(click), Some(buy)) = (parse_label(click), parse_label(buy)) else {
        return notes.add(lineno, Reason::BadLabel, || "click or buy not 0/1".into());
    };
    let mut key = Xxh3::new();
    let mut features = 0;
    let users = match rows.users.as_mut() {
        Some(u) => u,
        None => return,
    };
    for tok in cols {
        if tok.is_empty() {
            notes.add(lineno, Reason::EmptyFeature, || "empty column".into());
            continue;
        }
        features += 1;
        let Some(colon) = memchr::memchr(b':', tok) else {
            notes.add(lineno, Reason::MalformedToken, || format!("no `:` in `{}`", String::from_utf8_lossy(tok)));
            continue;
        };
        let Some(field) = p.table.lookup(&tok[..colon]) else {
            notes.add(lineno, Reason::UnknownField, || format!("field `{}`", String::from_utf8_lossy(&tok[..colon])));
            continue;
        };
        let raw_id = match parse_u64(&tok[colon + 1..]) {
            Ok(v) => v,
            Err(IntError::Overflow) => {
                notes.add(lineno, Reason::IdOverflow, || format!("`{}`", String::from_utf8_lossy(tok)));
                continue;
            }
            Err(IntError::Invalid) => {
                notes.add(lineno, Reason::MalformedToken, || format!("`{}`", String::from_utf8_lossy(tok)));
                continue;
            }
        };
        if FIELDS[field].side == Side::User {
            key.update(&[field as u8]);
            key.update(&raw_id.to_le_bytes());
            p.push(field, raw_id, 1.0, lineno, users, notes);
        } else {
            p.push(field, raw_id, 1.0, lineno, &mut rows.items, notes);
        }
    }
    if features == 0 {
        return notes.add(lineno, Reason::EmptyFeatureList, || "no features".into());
    }
    if click == 0 && buy == 1 {
        notes.add(lineno, Reason::ClickNoBuyOne, String::new);
    }
    rows.push_row(lineno, sample_id, click, buy, key.digest());
}
