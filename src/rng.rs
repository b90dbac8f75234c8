//! The project's deterministic randomness: a small PRNG (splitmix64 seeding, xoshiro256**), hashing of u64 words to
//! seeds and uniforms, and the samplers the planted world needs (normal, geometric, lognormal,
//! Walker/Vose alias tables for Zipf-like popularity). No external crates: the bytes the
//! generator writes must not change with a dependency upgrade.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const TWO_POW_M53: f64 = 1.0 / (1u64 << 53) as f64;

/// The splitmix64 finalizer: a bijection on u64 with good avalanche.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Order-sensitive hash of a few words (seeds for per-session streams, per-entity draws).
#[inline]
pub fn hash_words(words: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &w in words {
        h = mix64(h.wrapping_mul(GOLDEN) ^ w);
    }
    h
}

/// Top 53 bits of `h` as a uniform in `[0, 1)`.
#[inline]
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * TWO_POW_M53
}

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            x = x.wrapping_add(GOLDEN);
            *v = mix64(x);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self { s }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn f64(&mut self) -> f64 {
        unit(self.next_u64())
    }

    /// Uniform in `(0, 1)`: safe to take the logarithm of.
    #[inline]
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * TWO_POW_M53
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift; 0 when `n == 0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let r = (-2.0 * self.open01().ln()).sqrt();
        r * (std::f64::consts::TAU * self.f64()).cos()
    }

    /// Unit-variance draw: standard normal for `df = 0`, else Student-t with `df` (> 2) degrees
    /// of freedom scaled to variance 1 (heavier tails, same spread).
    pub fn unit_tail(&mut self, df: u32) -> f64 {
        if df == 0 {
            return self.normal();
        }
        let z = self.normal();
        let chi2: f64 = (0..df).map(|_| self.normal().powi(2)).sum();
        let nu = df as f64;
        z / (chi2 / nu).sqrt() * ((nu - 2.0) / nu).sqrt()
    }

    /// Geometric count of failures `0, 1, 2, ...` with the given mean (0 for mean <= 0).
    pub fn geometric(&mut self, mean: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        let log_q = (mean / (1.0 + mean)).ln();
        if log_q.is_nan() || log_q >= 0.0 {
            return u64::MAX;
        }
        // float → int casts saturate, so a huge quotient cannot overflow
        (self.open01().ln() / log_q).floor() as u64
    }

    /// Lognormal with the given mean (> 0) and log-scale `sigma`.
    pub fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        (mean.ln() - 0.5 * sigma * sigma + sigma * self.normal()).exp()
    }
}

/// Weights `(i + offset)^-exponent` for ranks `i = 0..n`: a Zipf-like popularity curve whose
/// head is flattened by `offset`.
pub fn power_law(n: usize, exponent: f64, offset: f64) -> Vec<f64> {
    (0..n).map(|i| (i as f64 + offset).powf(-exponent)).collect()
}

/// Walker/Vose alias table: O(1) sampling of a discrete distribution from one random u64.
#[derive(Clone, Debug)]
pub struct Alias {
    /// Keep-probability of each bucket scaled to 2^32 (`u32::MAX` = always keep).
    keep: Vec<u32>,
    alias: Vec<u32>,
}

impl Alias {
    /// `weights` must be non-empty, finite and non-negative, with fewer than 2^32 entries; a
    /// zero total falls back to uniform.
    pub fn new(weights: &[f64]) -> Self {
        let n = weights.len().max(1);
        let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
        let mut scaled: Vec<f64> = if total > 0.0 {
            weights.iter().map(|&w| if w.is_finite() && w > 0.0 { w * n as f64 / total } else { 0.0 }).collect()
        } else {
            vec![1.0; n]
        };
        let mut keep = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * 4_294_967_296.0).min(u32::MAX as f64) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // leftovers (rounding) keep themselves: keep = MAX, alias = self
        Self { keep, alias }
    }

    pub fn len(&self) -> usize {
        self.keep.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keep.is_empty()
    }

    /// Sample from 64 random bits (high half picks the bucket, low half the coin).
    #[inline]
    pub fn sample_bits(&self, r: u64) -> usize {
        let i = (((r >> 32) * self.keep.len() as u64) >> 32) as usize;
        if (r as u32) < self.keep[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }

    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> usize {
        self.sample_bits(rng.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_is_deterministic_and_seed_sensitive() {
        let a: Vec<u64> = (0..4).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..4).scan(Rng::new(8), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(hash_words(&[1, 2]), hash_words(&[2, 1]));
    }

    #[test]
    fn samplers_have_the_right_moments() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let x = r.normal();
            s += x;
            s2 += x * x;
        }
        assert!((s / n as f64).abs() < 0.01 && ((s2 / n as f64) - 1.0).abs() < 0.02);
        let g: u64 = (0..n).map(|_| r.geometric(4.0)).sum();
        assert!(((g as f64 / n as f64) - 4.0).abs() < 0.1);
        assert_eq!(r.geometric(0.0), 0);
        let l: f64 = (0..n).map(|_| r.lognormal(50.0, 0.9)).sum();
        assert!(((l / n as f64) - 50.0).abs() < 1.5);
        assert!((0..1000).all(|_| r.below(7) < 7));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn alias_matches_weights() {
        let w = [1.0, 0.0, 3.0, 6.0];
        let a = Alias::new(&w);
        let mut r = Rng::new(3);
        let mut hits = [0u32; 4];
        for _ in 0..100_000 {
            hits[a.sample(&mut r)] += 1;
        }
        assert_eq!(hits[1], 0);
        for (h, w) in hits.iter().zip(w) {
            assert!((*h as f64 / 100_000.0 - w / 10.0).abs() < 0.01, "{hits:?}");
        }
        let u = Alias::new(&[0.0, 0.0]);
        assert!((0..100).all(|_| u.sample(&mut r) < 2));
        let pl = Alias::new(&power_law(1000, 1.0, 1.0));
        let head = (0..10_000).filter(|_| pl.sample(&mut r) < 10).count();
        assert!(head > 3000, "{head}");
    }
}
