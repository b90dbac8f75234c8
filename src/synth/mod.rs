//! The planted model behind `generate`: a synthetic Ali-CCP world whose true click and
//! buy-given-click probabilities are known per sample, with sample selection bias built in.
//!
//! Layout: [`rng`] (PRNG, samplers), [`format`] (hand-written number formatting), [`world`]
//! (users, items, ids, intercepts), `calibrate` (the intercepts met by simulation), [`session`] (one md5: user-side history and its
//! impressions with labels), [`chunk`] (fixed chunks of sessions rendered to raw CSV bytes).
//!
//! The planted model, per impression of item `i` to user `u` in scenario `s` (σ = logistic):
//!
//! ```text
//! p_click         = σ(b_c + α_u + β_i + A_i + γ_s + ⟨p_u, q_i⟩  + Σ_k c_k·w_k)
//! p_buy | click   = σ(b_v + α'_u + β'_i − λ·A_i + γ'_s + ⟨p'_u, q'_i⟩ + Σ_k c'_k·w_k)
//! ```
//!
//! `A_i` is the item's clickbait attractiveness (raises clicks, lowers buys), `w_k` are the
//! log-count weights of the user × item combination features `508 509 702 853` (category,
//! shop, brand, intention node seen in the session's history), with category affinity driving
//! clicks and shop/brand loyalty driving buys. `p'`, `q'` share only part of `p`, `q`.
//! `b_c`, `b_v` are calibrated by bisection so that the expected CTR and CVR-among-clicks
//! match the config. See [`model`] for the coefficients.

mod calibrate;
pub mod chunk;
pub mod format;
pub mod session;
pub mod world;

pub use chunk::{render_chunk, ChunkOut, ChunkPlan, ChunkStats, Planner};
pub use world::{sigmoid, World};

use crate::schema::Split;

/// Indices into [`crate::schema::FIELDS`] (checked against the schema by a test).
pub mod field {
    pub const F101: usize = 0;
    pub const F109_14: usize = 1;
    pub const F110_14: usize = 2;
    pub const F127_14: usize = 3;
    pub const F150_14: usize = 4;
    pub const F205: usize = 13;
    pub const F206: usize = 14;
    pub const F207: usize = 15;
    pub const F210: usize = 16;
    pub const F216: usize = 17;
    pub const F508: usize = 18;
    pub const F509: usize = 19;
    pub const F702: usize = 20;
    pub const F853: usize = 21;
    pub const F301: usize = 22;

    /// `field \x02` of each field, in [`crate::schema::FIELDS`] order.
    pub const PREFIX: [&[u8]; 23] = [
        b"101\x02",
        b"109_14\x02",
        b"110_14\x02",
        b"127_14\x02",
        b"150_14\x02",
        b"121\x02",
        b"122\x02",
        b"124\x02",
        b"125\x02",
        b"126\x02",
        b"127\x02",
        b"128\x02",
        b"129\x02",
        b"205\x02",
        b"206\x02",
        b"207\x02",
        b"210\x02",
        b"216\x02",
        b"508\x02",
        b"509\x02",
        b"702\x02",
        b"853\x02",
        b"301\x02",
    ];
}

/// Coefficients of the planted model and of the session process.
pub mod model {
    /// Standard deviation of the shop-level clickbait factor, the learnable bulk of `A_i`
    /// (visible as field 207). The item's own part, like every entity's own (non-group) bias
    /// and latent-factor parts, has sd `generate.individual_sd`.
    pub const SHOP_BAIT_SD: f64 = 0.6;
    /// λ: how much clickbait lowers the buy logit.
    pub const CLICKBAIT_CVR: f64 = 1.2;
    /// Share of the click interaction factors carried into the buy factors (`p' = ρp + ...`).
    pub const SHARED_FACTOR: f64 = 0.6;
    /// Scenario `301` frequencies and effects on the two logits (opposite signs).
    pub const SCENARIO_PROBS: [f64; 3] = [0.55, 0.30, 0.15];
    pub const SCENARIO_CTR: [f64; 3] = [0.0, -0.35, 0.25];
    pub const SCENARIO_CVR: [f64; 3] = [0.0, 0.25, -0.3];
    /// Weights of the combination features `508 509 702 853` (log-count values) per task;
    /// intention-node matches count at most [`MAX_NODE_TERMS`] times.
    pub const COMBO_CTR: [f64; 4] = [0.15, 0.05, 0.05, 0.04];
    pub const COMBO_CVR: [f64; 4] = [0.03, 0.30, 0.20, 0.02];
    pub const MAX_NODE_TERMS: usize = 3;
    /// Share of common lines without the user id `101`.
    pub const P_NO_USER_ID: f64 = 0.14;
    /// Rows with click = 0 and buy = 1 (label noise of the real data).
    pub const P_NOISE_BUY: f64 = 5e-6;
    /// Share of history entries whose weight is the tiny `1e-05`.
    pub const P_TINY_WEIGHT: f64 = 1.0 / 3000.0;
    /// Log-scale spread of the history length (lognormal) and its cap (features per line).
    pub const HISTORY_SIGMA: f64 = 0.9;
    pub const HISTORY_CAP: usize = 2680;
    /// Impressions used to calibrate the intercepts.
    pub const CALIBRATION_ROWS: usize = 1 << 17;
}

/// Row stream of a split (`Split::Valid` is never generated but gets its own stream).
pub fn stream_of(split: Split) -> u64 {
    match split {
        Split::Train => 0,
        Split::Test => 1,
        Split::Valid => 2,
    }
}

/// The stream the calibration sample is drawn from (never written to a file).
pub const CALIBRATION_STREAM: u64 = 0x7f;

#[cfg(test)]
mod tests {
    use super::field::*;
    use crate::schema::{field_index, FIELDS};

    #[test]
    fn field_constants_match_the_schema() {
        for (i, f) in FIELDS.iter().enumerate() {
            let mut p = f.name.as_bytes().to_vec();
            p.push(2);
            assert_eq!(PREFIX[i], &p[..]);
        }
        for (idx, name) in [
            (F101, "101"),
            (F109_14, "109_14"),
            (F110_14, "110_14"),
            (F127_14, "127_14"),
            (F150_14, "150_14"),
            (F205, "205"),
            (F206, "206"),
            (F207, "207"),
            (F210, "210"),
            (F216, "216"),
            (F508, "508"),
            (F509, "509"),
            (F702, "702"),
            (F853, "853"),
            (F301, "301"),
        ] {
            assert_eq!(field_index(name.as_bytes()), Some(idx), "{name}");
        }
        let profile: Vec<&str> = super::world::PROFILE_FIELDS.iter().map(|&i| FIELDS[i].name).collect();
        assert_eq!(profile, ["121", "122", "124", "125", "126", "127", "128", "129"]);
    }
}
