//! Hand-written number formatting into byte buffers (the generator's hot loop): decimal
//! integers, 16-digit lowercase hex md5s, fixed-point decimals with trailing zeros trimmed
//! (`0.69315`, `2.3979`), probabilities with ~6 significant digits, and a table of the
//! formatted log-count weights `ln(1 + count)`.

const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

const POW10: [u64; 18] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
];

/// Appends `v` in decimal.
#[inline]
pub fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = 20;
    while v >= 100 {
        let d = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        tmp[i] = DIGIT_PAIRS[d];
        tmp[i + 1] = DIGIT_PAIRS[d + 1];
    }
    if v >= 10 {
        let d = v as usize * 2;
        i -= 2;
        tmp[i] = DIGIT_PAIRS[d];
        tmp[i + 1] = DIGIT_PAIRS[d + 1];
    } else {
        i -= 1;
        tmp[i] = b'0' + v as u8;
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// `v` as exactly 16 lowercase hex digits (`%016x`).
#[inline]
pub fn hex16(v: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    for (k, b) in tmp.iter_mut().enumerate() {
        *b = HEX[((v >> (60 - 4 * k)) & 0xf) as usize];
    }
    tmp
}

/// Appends `v` as exactly 16 lowercase hex digits.
#[inline]
pub fn push_hex16(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&hex16(v));
}

/// Appends `x` (finite, >= 0) rounded to `decimals` (<= 17) decimals, trailing zeros trimmed but
/// at least one decimal kept (`2.0`). Values too large for the integer path use `{}`.
pub fn push_fixed(buf: &mut Vec<u8>, x: f64, decimals: usize) {
    let d = decimals.min(17);
    let scale = POW10[d];
    let scaled = (x * scale as f64).round();
    if !(0.0..9.0e18).contains(&scaled) {
        buf.extend_from_slice(format!("{x}").as_bytes());
        return;
    }
    let m = scaled as u64;
    push_u64(buf, m / scale);
    buf.push(b'.');
    let mut frac = m % scale;
    if frac == 0 || d == 0 {
        buf.push(b'0');
        return;
    }
    let mut width = d;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    let start = buf.len();
    push_u64(buf, frac);
    let digits = buf.len() - start;
    if digits < width {
        // left-pad the fraction with zeros
        buf.splice(start..start, std::iter::repeat_n(b'0', width - digits));
    }
}

/// Appends a probability in `[0, 1]` with about 6 significant digits, in fixed notation.
#[inline]
pub fn push_prob(buf: &mut Vec<u8>, p: f64) {
    let p = if p.is_finite() { p.clamp(0.0, 1.0) } else { 0.0 };
    let mut decimals = 6;
    let mut limit = 0.1;
    while p < limit && decimals < 17 {
        limit *= 0.1;
        decimals += 1;
    }
    push_fixed(buf, p, decimals);
}

/// Formatted `ln(1 + count)` weights with 5 decimals, precomputed for counts up to a limit.
#[derive(Clone, Debug)]
pub struct WeightTable {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl WeightTable {
    pub const TINY: &'static [u8] = b"1e-05";
    pub const TINY_VALUE: f64 = 1e-5;

    pub fn new(max_count: u32) -> Self {
        let mut bytes = Vec::new();
        let mut ends = vec![0u32];
        for c in 1..=max_count {
            push_fixed(&mut bytes, Self::value(c), 5);
            ends.push(bytes.len() as u32);
        }
        Self { bytes, ends }
    }

    /// The weight of a count as the planted model uses it.
    #[inline]
    pub fn value(count: u32) -> f64 {
        (count as f64).ln_1p()
    }

    /// Appends the weight of `count` (>= 1; 0 is treated as 1).
    #[inline]
    pub fn push(&self, buf: &mut Vec<u8>, count: u32) {
        let c = count.max(1) as usize;
        if c < self.ends.len() {
            buf.extend_from_slice(&self.bytes[self.ends[c - 1] as usize..self.ends[c] as usize]);
        } else {
            push_fixed(buf, Self::value(c as u32), 5);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut b = Vec::new();
        f(&mut b);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn integers_and_hex() {
        for v in [0u64, 7, 10, 99, 100, 12345, 999_999_999, u64::MAX] {
            assert_eq!(s(|b| push_u64(b, v)), v.to_string());
            assert_eq!(s(|b| push_hex16(b, v)), format!("{v:016x}"));
        }
    }

    #[test]
    fn fixed_and_weights() {
        assert_eq!(s(|b| push_fixed(b, 1.0f64.ln_1p(), 5)), "0.69315");
        assert_eq!(s(|b| push_fixed(b, 10.0f64.ln_1p(), 5)), "2.3979");
        assert_eq!(s(|b| push_fixed(b, 2.0f64.ln_1p(), 5)), "1.09861");
        assert_eq!(s(|b| push_fixed(b, 2.0, 5)), "2.0");
        assert_eq!(s(|b| push_fixed(b, 0.000123, 6)), "0.000123");
        assert_eq!(s(|b| push_fixed(b, 0.05, 3)), "0.05");
        let t = WeightTable::new(100);
        assert_eq!(s(|b| t.push(b, 1)), "0.69315");
        assert_eq!(s(|b| t.push(b, 10)), "2.3979");
        assert_eq!(s(|b| t.push(b, 5000)), s(|b| push_fixed(b, 5000f64.ln_1p(), 5)));
        for c in 1..300u32 {
            let v: f64 = s(|b| t.push(b, c)).parse().unwrap();
            assert!((v - WeightTable::value(c)).abs() < 6e-6);
        }
    }

    #[test]
    fn probabilities_keep_six_significant_digits() {
        for p in [0.5, 0.0412345678, 0.000123456789, 3.3e-9, 0.999999, 1.0, 0.0, 0.1, 0.099999999] {
            let text = s(|b| push_prob(b, p));
            let v: f64 = text.parse().unwrap();
            assert!((v - p).abs() <= p * 6e-6 + 1e-17, "{p} -> {text}");
            assert!(!text.contains('e'), "{text}");
        }
    }
}
