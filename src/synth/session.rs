//! One session (md5): the user, scenario and behaviour history behind a common line, and the
//! impressions shown in it with their planted click and buy logits. Every random draw comes
//! from a stream seeded by (seed, split stream, session index), so a session's content does
//! not depend on how sessions are grouped into chunks or on threads.

use super::format::WeightTable;
use super::model;
use super::world::{World, MAX_NODES};
use crate::rng::{hash_words, Rng};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const TAG_SESSION: u64 = 0x5345_5353;
const TAG_LEN: u64 = 0x4c45_4e21;
/// Impressions per session in the calibration sample (lengths are independent of content,
/// so short sessions give the same per-row distribution with more users).
const CALIBRATION_SESSION_ROWS: u64 = 16;

/// Counts of distinct `u32` keys in insertion order (open addressing, linear probing), with a
/// weight per key once [`CountMap::finish_weights`] ran.
pub struct CountMap {
    /// 0 = empty, else entry index + 1.
    slots: Vec<u32>,
    shift: u32,
    keys: Vec<u32>,
    counts: Vec<u32>,
    weights: Vec<f32>,
    tiny: Vec<bool>,
}

impl Default for CountMap {
    fn default() -> Self {
        Self {
            slots: vec![0; 64],
            shift: 64 - 6,
            keys: Vec::new(),
            counts: Vec::new(),
            weights: Vec::new(),
            tiny: Vec::new(),
        }
    }
}

impl CountMap {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn clear(&mut self) {
        self.slots.fill(0);
        self.keys.clear();
        self.counts.clear();
        self.weights.clear();
        self.tiny.clear();
    }

    #[inline]
    fn home(&self, key: u32) -> usize {
        ((key as u64 ^ 0x5bd1_e995).wrapping_mul(GOLDEN) >> self.shift) as usize
    }

    /// Adds one to the count of `key`; true when the key is new.
    #[inline]
    pub fn add(&mut self, key: u32) -> bool {
        if (self.keys.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut s = self.home(key);
        loop {
            match self.slots[s] {
                0 => {
                    self.keys.push(key);
                    self.counts.push(1);
                    self.slots[s] = self.keys.len() as u32;
                    return true;
                }
                e if self.keys[e as usize - 1] == key => {
                    self.counts[e as usize - 1] += 1;
                    return false;
                }
                _ => s = (s + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        self.slots = vec![0; size];
        self.shift = 64 - size.trailing_zeros();
        let mask = size - 1;
        for (e, &key) in self.keys.iter().enumerate() {
            let mut s = self.home(key);
            while self.slots[s] != 0 {
                s = (s + 1) & mask;
            }
            self.slots[s] = e as u32 + 1;
        }
    }

    /// Entry index of `key`.
    #[inline]
    pub fn find(&self, key: u32) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut s = self.home(key);
        loop {
            match self.slots[s] {
                0 => return None,
                e if self.keys[e as usize - 1] == key => return Some(e as usize - 1),
                _ => s = (s + 1) & mask,
            }
        }
    }

    #[inline]
    pub fn key(&self, e: usize) -> u32 {
        self.keys[e]
    }
    #[inline]
    pub fn count(&self, e: usize) -> u32 {
        self.counts[e]
    }
    #[inline]
    pub fn weight(&self, e: usize) -> f64 {
        self.weights.get(e).map_or(0.0, |&w| w as f64)
    }
    #[inline]
    pub fn tiny(&self, e: usize) -> bool {
        self.tiny.get(e).copied().unwrap_or(false)
    }

    /// Weights `ln(1 + count)`, or the tiny `1e-05` for a rare entry.
    pub fn finish_weights(&mut self, rng: &mut Rng) {
        self.weights.clear();
        self.tiny.clear();
        for &c in &self.counts {
            let tiny = rng.chance(model::P_TINY_WEIGHT);
            self.tiny.push(tiny);
            self.weights.push(if tiny { WeightTable::TINY_VALUE } else { WeightTable::value(c) } as f32);
        }
    }
}

/// One impression: the item, its intention nodes, which combination features fire (entry
/// index + 1 into the session's history maps, 0 = none) and the logits without intercepts.
pub struct Impression {
    pub item: u32,
    pub n_nodes: usize,
    pub nodes: [u32; MAX_NODES],
    pub node_hit: [u32; MAX_NODES],
    pub cat_hit: u32,
    pub shop_hit: u32,
    pub brand_hit: u32,
    pub zc: f64,
    pub zv: f64,
    /// The same logits without the item's own effects (bias, clickbait and latent parts
    /// beyond its category, shop and brand): the semi-oracle's.
    pub zc_semi: f64,
    pub zv_semi: f64,
    /// The semi-oracle's logits without the user's own effects either (bias and latent parts
    /// beyond its profile): the group oracle's, what a model knows that learns no id's own effect.
    pub zc_group: f64,
    pub zv_group: f64,
}

/// The user side of one md5 and its history (distinct categories, shops, brands, intention
/// nodes and past items with counts), reused across sessions to keep allocations down.
#[derive(Default)]
pub struct Session {
    pub user: u32,
    pub has_user_id: bool,
    pub scenario: u8,
    pub cats: CountMap,
    pub shops: CountMap,
    pub brands: CountMap,
    pub nodes: CountMap,
    pub items: CountMap,
}

/// The random stream of session `index` of `stream`.
pub fn session_rng(world: &World, stream: u64, index: u64) -> Rng {
    Rng::new(hash_words(&[world.seed, TAG_SESSION, stream, index]))
}

/// Skeleton rows of session `index`: `1 + Geometric(mean (m − 1)·Z)` with `Z` lognormal of mean
/// 1, so the mean is `rows_per_md5 = m` with a heavier-than-geometric tail (capped at 20·m).
pub fn session_len(world: &World, stream: u64, index: u64) -> u64 {
    let m = world.rows_per_md5;
    if m.is_nan() || m <= 1.0 {
        return 1;
    }
    let mut rng = Rng::new(hash_words(&[world.seed, TAG_LEN, stream, index]));
    let z = rng.lognormal(1.0, 0.7);
    let cap = (20.0 * m).max(100.0) as u64;
    1 + rng.geometric((m - 1.0) * z).min(cap - 1)
}

fn pick(u: f64, probs: &[f64]) -> usize {
    let mut acc = 0.0;
    for (k, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return k;
        }
    }
    probs.len() - 1
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() as f64
}

impl Session {
    fn distinct(&self) -> usize {
        self.cats.len() + self.shops.len() + self.brands.len() + self.nodes.len()
    }

    /// Draws the user, the scenario and the behaviour history (`109_14 110_14 127_14 150_14`):
    /// past interactions with items of the user's favourite categories (and some popular
    /// items, and repeats) until the history holds about a lognormal number of features.
    pub fn draw(&mut self, world: &World, rng: &mut Rng) {
        self.user = world.user_alias.sample(rng) as u32;
        self.has_user_id = !rng.chance(model::P_NO_USER_ID);
        self.scenario = pick(rng.f64(), &model::SCENARIO_PROBS) as u8;
        for m in [&mut self.cats, &mut self.shops, &mut self.brands, &mut self.nodes, &mut self.items] {
            m.clear();
        }
        let target = if world.history_mean > 0.0 {
            let x = rng.lognormal(world.history_mean, model::HISTORY_SIGMA).round();
            // float → int casts saturate; the cap bounds the line length
            (x as usize).clamp(1, model::HISTORY_CAP)
        } else {
            0
        };
        let mut nodes = [0u32; MAX_NODES];
        // stop early when the world is too small to fill the history (nothing new for a while)
        let max_events = target + 32; // normal worlds need ~0.2–0.4 events per feature
        let (mut events, mut stale, mut seen) = (0, 0, 0);
        while target > 0 && self.distinct() < target && events < max_events && stale < 64 {
            events += 1;
            stale = if self.distinct() > seen { 0 } else { stale + 1 };
            seen = self.distinct();
            let r = rng.f64();
            let item = if !self.items.is_empty() && r < 0.35 {
                self.items.key(rng.below(self.items.len() as u64) as usize)
            } else if r < 0.8 {
                world.item_in_cat(world.fav_cat(self.user, rng), rng)
            } else {
                world.item_alias.sample(rng) as u32
            };
            self.items.add(item);
            let it = &world.items[item as usize];
            self.cats.add(it.cat);
            self.shops.add(it.shop);
            self.brands.add(it.brand);
            let n = world.nodes(item, &mut nodes);
            for &node in &nodes[..n] {
                self.nodes.add(node);
            }
        }
        for m in [&mut self.cats, &mut self.shops, &mut self.brands, &mut self.nodes] {
            m.finish_weights(rng);
        }
    }

    /// Draws one impression of this session: a past item, an item related to one (same
    /// category), an item of a favourite category, or a popular item, and its logits.
    pub fn impression(&self, world: &World, rng: &mut Rng) -> Impression {
        let user = &world.users[self.user as usize];
        let n_past = self.items.len() as u64;
        let r = rng.f64();
        let item = if n_past > 0 && r < 0.15 {
            self.items.key(rng.below(n_past) as usize)
        } else if n_past > 0 && r < 0.45 {
            let past = self.items.key(rng.below(n_past) as usize);
            world.item_in_cat(world.items[past as usize].cat, rng)
        } else if r < 0.6 {
            world.item_in_cat(world.fav_cat(self.user, rng), rng)
        } else {
            world.item_alias.sample(rng) as u32
        };
        let it = &world.items[item as usize];
        let hit = |m: &CountMap, key: u32| m.find(key).map_or(0, |e| e as u32 + 1);
        let w = |m: &CountMap, h: u32| if h == 0 { 0.0 } else { m.weight(h as usize - 1) };
        let mut imp = Impression {
            item,
            n_nodes: 0,
            nodes: [0; MAX_NODES],
            node_hit: [0; MAX_NODES],
            cat_hit: hit(&self.cats, it.cat),
            shop_hit: hit(&self.shops, it.shop),
            brand_hit: hit(&self.brands, it.brand),
            zc: 0.0,
            zv: 0.0,
            zc_semi: 0.0,
            zv_semi: 0.0,
            zc_group: 0.0,
            zv_group: 0.0,
        };
        imp.n_nodes = world.nodes(item, &mut imp.nodes);
        let (mut node_w, mut terms) = (0.0, 0);
        for j in 0..imp.n_nodes {
            imp.node_hit[j] = hit(&self.nodes, imp.nodes[j]);
            if imp.node_hit[j] != 0 && terms < model::MAX_NODE_TERMS {
                node_w += w(&self.nodes, imp.node_hit[j]);
                terms += 1;
            }
        }
        let combo = [w(&self.cats, imp.cat_hit), w(&self.shops, imp.shop_hit), w(&self.brands, imp.brand_hit), node_w];
        let s = self.scenario as usize;
        let (cc, cv) = (&model::COMBO_CTR, &model::COMBO_CVR);
        let (combo_c, combo_v) =
            ((0..4).map(|k| cc[k] * combo[k]).sum::<f64>(), (0..4).map(|k| cv[k] * combo[k]).sum::<f64>());
        imp.zc = user.ctr_bias as f64 + it.ctr_bias as f64 + model::SCENARIO_CTR[s] + dot(&user.p, &it.q) + combo_c;
        imp.zv = user.cvr_bias as f64 + it.cvr_bias as f64 + model::SCENARIO_CVR[s] + dot(&user.p2, &it.q2) + combo_v;
        let q = world.cat_vec[it.cat as usize];
        let q2 = q.map(|x| (model::SHARED_FACTOR * x as f64) as f32);
        imp.zc_semi = user.ctr_bias as f64 + it.ctr_group as f64 + model::SCENARIO_CTR[s] + dot(&user.p, &q) + combo_c;
        imp.zv_semi =
            user.cvr_bias as f64 + it.cvr_group as f64 + model::SCENARIO_CVR[s] + dot(&user.p2, &q2) + combo_v;
        let p = world.age_vec[user.profile[1] as usize];
        let p2 = p.map(|x| (model::SHARED_FACTOR * x as f64) as f32);
        imp.zc_group = user.ctr_group as f64 + it.ctr_group as f64 + model::SCENARIO_CTR[s] + dot(&p, &q) + combo_c;
        imp.zv_group = user.cvr_group as f64 + it.cvr_group as f64 + model::SCENARIO_CVR[s] + dot(&p2, &q2) + combo_v;
        imp
    }
}

/// Logits without intercepts `(z_click, z_buy)` of `rows` impressions of a fixed stream that
/// is never written (used to calibrate the intercepts): the planted ones, the semi-oracle's and
/// the group oracle's of the same impressions.
pub fn calibration_sample(world: &World, rows: usize) -> [Vec<(f64, f64)>; 3] {
    let mut out = Vec::with_capacity(rows);
    let mut semi = Vec::with_capacity(rows);
    let mut group = Vec::with_capacity(rows);
    let mut sess = Session::default();
    let mut index = 0u64;
    while out.len() < rows {
        let len = session_len(world, super::CALIBRATION_STREAM, index).min(CALIBRATION_SESSION_ROWS);
        let mut rng = session_rng(world, super::CALIBRATION_STREAM, index);
        sess.draw(world, &mut rng);
        for _ in 0..(len as usize).min(rows - out.len()) {
            let imp = sess.impression(world, &mut rng);
            out.push((imp.zc, imp.zv));
            semi.push((imp.zc_semi, imp.zv_semi));
            group.push((imp.zc_group, imp.zv_group));
        }
        index += 1;
    }
    [out, semi, group]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GenerateConfig;

    #[test]
    fn count_map_counts_in_insertion_order() {
        let mut m = CountMap::default();
        let keys: Vec<u32> = (0..5000u32).map(|i| i.wrapping_mul(2_654_435_761) % 3000).collect();
        for &k in &keys {
            m.add(k);
        }
        let mut distinct = keys.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(m.len(), distinct.len());
        let total: u32 = (0..m.len()).map(|e| m.count(e)).sum();
        assert_eq!(total, 5000);
        assert_eq!(m.key(0), keys[0]);
        assert!(distinct.iter().all(|&k| m.find(k).is_some_and(|e| m.key(e) == k)));
        assert!(m.find(3001).is_none());
        m.clear();
        assert!(m.is_empty() && m.find(keys[0]).is_none());
    }

    #[test]
    fn sessions_are_reproducible_and_histories_sized() {
        let params = GenerateConfig { users: 1000, items: 2000, history_mean: 200.0, ..Default::default() };
        let world = World::build_uncalibrated(&params).unwrap();
        let mut a = Session::default();
        let mut b = Session::default();
        let mut total = 0usize;
        for idx in 0..200 {
            a.draw(&world, &mut session_rng(&world, 0, idx));
            b.draw(&world, &mut session_rng(&world, 0, idx));
            assert_eq!((a.user, a.scenario, a.cats.len()), (b.user, b.scenario, b.cats.len()));
            total += a.distinct();
        }
        let mean = total as f64 / 200.0;
        assert!((140.0..260.0).contains(&mean), "{mean}");
        let lens: u64 = (0..20_000).map(|i| session_len(&world, 0, i)).sum();
        assert!(((lens as f64 / 20_000.0) - 55.0).abs() < 3.0, "{lens}");
    }

    /// The three logits differ exactly by the entities' own effects: without individual
    /// effects they coincide; with them the semi-oracle drops the item's, the group oracle the
    /// user's as well.
    #[test]
    fn oracle_logits_drop_the_individual_effects() {
        let logits = |individual_sd: f64| {
            let params = GenerateConfig { users: 300, items: 3000, individual_sd, ..Default::default() };
            let world = World::build_uncalibrated(&params).unwrap();
            let mut sess = Session::default();
            let mut out = Vec::new();
            for idx in 0..40 {
                let mut rng = session_rng(&world, 0, idx);
                sess.draw(&world, &mut rng);
                for _ in 0..20 {
                    let imp = sess.impression(&world, &mut rng);
                    out.push(([imp.zc, imp.zc_semi, imp.zc_group], [imp.zv, imp.zv_semi, imp.zv_group]));
                }
            }
            out
        };
        for (c, v) in logits(0.0) {
            for z in [c, v] {
                assert!((z[0] - z[1]).abs() < 1e-5 && (z[1] - z[2]).abs() < 1e-5, "{z:?}");
            }
        }
        let rows = logits(0.3);
        let spread = |k: usize, task: usize| {
            let d: Vec<f64> =
                rows.iter().map(|r| if task == 0 { r.0[k] - r.0[k + 1] } else { r.1[k] - r.1[k + 1] }).collect();
            let m = d.iter().sum::<f64>() / d.len() as f64;
            (d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / d.len() as f64).sqrt()
        };
        for task in [0, 1] {
            assert!(spread(0, task) > 0.1 && spread(1, task) > 0.1, "task {task}");
        }
    }
}
