//! Vectors of one embedding dimension for the pooling and scatter loops of `gather.rs`, chosen
//! at run time by [`with_lanes!`]: a fixed-size array (kept in registers, its loops unrolled)
//! for the dimensions compiled in — 4, 8, 12, 16, 18, 24, 32 and 64 — and a heap buffer of the
//! run-time size for any other. Both compute every element with the same operations in the same
//! order, so which one runs a dimension changes no result, only the speed.

/// The vectors of one embedding dimension and the few operations the hot loops need.
pub trait Lanes: Copy + Send + Sync {
    /// One vector: `[f32; D]`, or a `Vec` of the run-time dimension.
    type V: AsRef<[f32]> + AsMut<[f32]>;

    /// The embedding dimension.
    fn dim(self) -> usize;

    /// A vector of zeros.
    fn zeros(self) -> Self::V;

    /// The first `dim` floats of `s`.
    #[inline(always)]
    fn vector(self, s: &[f32]) -> Self::V {
        let mut v = self.zeros();
        v.as_mut().copy_from_slice(&s[..self.dim()]);
        v
    }

    /// `acc += w · e[..dim]`.
    #[inline(always)]
    fn add_scaled(self, acc: &mut Self::V, w: f32, e: &[f32]) {
        let (acc, e) = (acc.as_mut(), &e[..self.dim()]);
        for d in 0..self.dim() {
            acc[d] += w * e[d];
        }
    }

    /// `acc += s[..dim]`.
    #[inline(always)]
    fn add(self, acc: &mut [f32], s: &[f32]) {
        let (acc, s) = (&mut acc[..self.dim()], &s[..self.dim()]);
        for d in 0..self.dim() {
            acc[d] += s[d];
        }
    }

    /// `Σ sources[s][at..at + dim]`, summed in source order.
    #[inline(always)]
    fn summed(self, sources: &[&[f32]], at: usize) -> Self::V {
        let mut g = self.vector(&sources[0][at..]);
        for s in &sources[1..] {
            self.add(g.as_mut(), &s[at..]);
        }
        g
    }
}

/// A dimension compiled in: `[f32; D]` vectors.
#[derive(Clone, Copy)]
pub struct Fixed<const D: usize>;

impl<const D: usize> Lanes for Fixed<D> {
    type V = [f32; D];

    #[inline(always)]
    fn dim(self) -> usize {
        D
    }

    #[inline(always)]
    fn zeros(self) -> [f32; D] {
        [0.0; D]
    }
}

/// Any other dimension: heap vectors of the run-time size (one allocation per pooled field).
#[derive(Clone, Copy)]
pub struct Dynamic(pub usize);

impl Lanes for Dynamic {
    type V = Vec<f32>;

    #[inline(always)]
    fn dim(self) -> usize {
        self.0
    }

    #[inline(always)]
    fn zeros(self) -> Vec<f32> {
        vec![0.0; self.0]
    }
}

/// `with_lanes!(dim, |l| body)`: `body` with `l` the [`Lanes`] of `dim` — a [`Fixed`] for the
/// dimensions compiled in (the list below, the only place they are named), [`Dynamic`]
/// otherwise; one monomorphized copy of `body` each.
macro_rules! with_lanes {
    ($dim:expr, |$l:ident| $body:expr) => {
        $crate::model::lanes::with_lanes!(@ $dim, $l, $body, [4, 8, 12, 16, 18, 24, 32, 64])
    };
    (@ $dim:expr, $l:ident, $body:expr, [$($d:literal),*]) => {
        match $dim {
            $($d => {
                let $l = $crate::model::lanes::Fixed::<$d>;
                $body
            })*
            d => {
                let $l = $crate::model::lanes::Dynamic(d);
                $body
            }
        }
    };
}
pub(crate) use with_lanes;

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths give the same bits for the same dimension.
    #[test]
    fn fixed_and_dynamic_agree_bit_for_bit() {
        let e: Vec<f32> = (0..16).map(|k| (k as f32 * 0.37).sin()).collect();
        let (a, b) = (Fixed::<16>, Dynamic(16));
        let (mut x, mut y) = (a.zeros(), b.zeros());
        for w in [0.3f32, -1.7, 2.25] {
            a.add_scaled(&mut x, w, &e);
            b.add_scaled(&mut y, w, &e);
        }
        assert_eq!(&x[..], &y[..]);
        let sources: [&[f32]; 2] = [&e, &x];
        assert_eq!(&a.summed(&sources, 0)[..], &b.summed(&sources, 0)[..]);
        let picked = |dim: usize| with_lanes!(dim, |l| std::any::type_name_of_val(&l).contains("Fixed"));
        assert!([4, 8, 12, 16, 18, 24, 32, 64].into_iter().all(picked) && !picked(5) && !picked(13));
    }
}
