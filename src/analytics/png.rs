//! A minimal PNG encoder for the report's plots: 8-bit RGB, one zlib-compressed IDAT chunk
//! (flate2 and crc32fast, both already in the build through polars' Parquet codecs).
//!
//! Every scanline uses filter type 0 (none): plots are mostly flat colour, which deflate
//! compresses well without per-line filtering.

use std::io::Write;

use anyhow::{ensure, Context, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// Encodes `rgb` (row-major, 3 bytes per pixel, `width × height` pixels) as a PNG file.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    ensure!(width > 0 && height > 0, "empty image {width}x{height}");
    let row = width as usize * 3;
    ensure!(rgb.len() == row * height as usize, "pixel buffer of {} bytes for {width}x{height}", rgb.len());
    let mut out = SIGNATURE.to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = ZlibEncoder::new(Vec::with_capacity(rgb.len() / 8), Compression::new(6));
    for line in rgb.chunks_exact(row) {
        z.write_all(&[0]).context("compressing PNG pixels")?;
        z.write_all(line).context("compressing PNG pixels")?;
    }
    let idat = z.finish().context("compressing PNG pixels")?;
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    /// Splits a PNG into chunks, checking every CRC.
    fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        assert_eq!(png[..8], SIGNATURE);
        let mut at = 8;
        let mut out = Vec::new();
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = png[at + 4..at + 8].try_into().unwrap();
            let data = png[at + 8..at + 8 + len].to_vec();
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc, crc32fast::hash(&png[at + 4..at + 8 + len]), "CRC of {:?}", kind);
            out.push((kind, data));
            at += 12 + len;
        }
        out
    }

    #[test]
    fn round_trips_pixels() {
        let (w, h) = (5u32, 3u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 17 % 256) as u8).collect();
        let png = encode_rgb(w, h, &rgb).unwrap();
        let c = chunks(&png);
        assert_eq!(c.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [*b"IHDR", *b"IDAT", *b"IEND"]);
        assert_eq!(c[0].1, [0, 0, 0, 5, 0, 0, 0, 3, 8, 2, 0, 0, 0]);
        let mut raw = Vec::new();
        ZlibDecoder::new(&c[1].1[..]).read_to_end(&mut raw).unwrap();
        assert_eq!(raw.len(), (w as usize * 3 + 1) * h as usize);
        for (y, line) in raw.chunks(w as usize * 3 + 1).enumerate() {
            assert_eq!(line[0], 0, "filter byte");
            assert_eq!(&line[1..], &rgb[y * 15..(y + 1) * 15]);
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(encode_rgb(0, 1, &[]).is_err());
        assert!(encode_rgb(2, 2, &[0; 11]).is_err());
    }
}
