//! Reads a raw text file as chunks of whole lines (a few MiB each), for parallel parsing.
//! Strips a UTF-8 BOM, numbers lines, and flags a last line that has no newline.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// Whole lines of a file; `first_line` is the 1-based number of its first line.
pub struct Chunk {
    pub data: Vec<u8>,
    pub first_line: u64,
    /// The file ends inside this chunk without a final newline: its last line is unterminated.
    pub unterminated_tail: bool,
}

impl Chunk {
    /// Lines with their numbers, without `\n` (a trailing `\r` is the tokenizer's business).
    pub fn lines(&self) -> impl Iterator<Item = (u64, &[u8], bool)> + '_ {
        let data = &self.data[..];
        let mut start = 0usize;
        let mut line = self.first_line;
        let unterminated = self.unterminated_tail;
        std::iter::from_fn(move || {
            if start >= data.len() {
                return None;
            }
            let (text, next, last) = match memchr::memchr(b'\n', &data[start..]) {
                Some(i) => (&data[start..start + i], start + i + 1, false),
                None => (&data[start..], data.len(), unterminated),
            };
            let item = (line, text, last);
            start = next;
            line += 1;
            Some(item)
        })
    }
}

/// Iterator over the [`Chunk`]s of one file.
pub struct ChunkReader {
    file: File,
    path: String,
    chunk_bytes: usize,
    carry: Vec<u8>,
    next_line: u64,
    at_start: bool,
    done: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl ChunkReader {
    pub fn open(path: &Path, chunk_bytes: usize) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            file,
            path: path.display().to_string(),
            chunk_bytes: chunk_bytes.max(1024),
            carry: Vec::new(),
            next_line: 1,
            at_start: true,
            done: false,
        })
    }

    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> Result<bool> {
        let start = buf.len();
        buf.resize(start + want, 0);
        let mut n = 0;
        while n < want {
            match self.file.read(&mut buf[start + n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", self.path)),
            }
        }
        buf.truncate(start + n);
        Ok(n < want) // true at end of file
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.carry);
        let mut eof;
        loop {
            let want = self.chunk_bytes.saturating_sub(buf.len()).max(self.chunk_bytes / 4);
            let from = buf.len();
            eof = self.fill(&mut buf, want)?;
            if self.at_start {
                // the first read holds at least 1 KiB, or the whole file
                self.at_start = false;
                if buf.starts_with(BOM) {
                    buf.drain(..BOM.len());
                }
            }
            if eof || memchr::memrchr(b'\n', &buf[from.min(buf.len())..]).is_some() {
                break;
            }
        }
        let cut = if eof { buf.len() } else { memchr::memrchr(b'\n', &buf).map_or(buf.len(), |i| i + 1) };
        self.carry = buf.split_off(cut);
        if eof {
            self.done = true;
            if buf.is_empty() {
                return Ok(None);
            }
        }
        let first_line = self.next_line;
        self.next_line += memchr::memchr_iter(b'\n', &buf).count() as u64;
        let unterminated_tail = eof && buf.last() != Some(&b'\n');
        Ok(Some(Chunk { data: buf, first_line, unterminated_tail }))
    }
}

impl Iterator for ChunkReader {
    type Item = Result<Chunk>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8], chunk: usize) -> Vec<(u64, Vec<u8>, bool)> {
        let dir = crate::testutil::temp_dir("reader");
        let p = dir.join("f.csv");
        std::fs::write(&p, bytes).unwrap();
        let mut out = Vec::new();
        for c in ChunkReader::open(&p, chunk).unwrap() {
            let c = c.unwrap();
            out.extend(c.lines().map(|(n, l, last)| (n, l.to_vec(), last)));
        }
        out
    }

    #[test]
    fn lines_numbers_bom_and_unterminated_tail() {
        let mut text = b"\xEF\xBB\xBFa,1\r\n".to_vec();
        for i in 0..3000 {
            text.extend_from_slice(format!("line{i},xxxxxxxxxxxxxxxxxxxxxxx\n").as_bytes());
        }
        text.extend_from_slice(b"last");
        for chunk in [1024, 4096, 1 << 20] {
            let got = lines_of(&text, chunk);
            assert_eq!(got.len(), 3002);
            assert_eq!(got[0], (1, b"a,1\r".to_vec(), false));
            assert_eq!(got[1].0, 2);
            assert_eq!(got[3001], (3002, b"last".to_vec(), true));
        }
        let got = lines_of(b"x\n\ny\n", 1024);
        assert_eq!(got, vec![(1, b"x".to_vec(), false), (2, b"".to_vec(), false), (3, b"y".to_vec(), false)]);
        assert!(lines_of(b"", 1024).is_empty());
        assert_eq!(lines_of(b"\xEF\xBB\xBF", 1024).len(), 0);
    }

    #[test]
    fn long_lines_span_reads() {
        let long = vec![b'z'; 5000];
        let mut text = long.clone();
        text.push(b'\n');
        text.extend_from_slice(&long);
        let got = lines_of(&text, 1024);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1.len(), 5000);
        assert!(got[1].2);
    }
}
