//! Fixed chunks of sessions and their rendering to raw Ali-CCP bytes (skeleton, common and
//! truth lines). The [`Planner`] cuts a split's row stream into chunks deterministically (it
//! only draws session lengths), so the bytes do not depend on the number of worker threads.

use super::field::*;
use super::format::{hex16, push_prob, push_u64, WeightTable};
use super::session::{session_len, session_rng, CountMap, Impression, Session};
use super::world::{sigmoid, World, PROFILE_FIELDS};
use super::{model, stream_of};
use crate::schema::Split;

/// A chunk ends after this many sessions or once it holds this many rows.
pub const SESSIONS_PER_CHUNK: usize = 64;
pub const ROWS_PER_CHUNK: u64 = 16_384;

const ONE: &[u8] = b"1.0";

/// Sessions `first_session..first_session + lens.len()` of a stream, with their row counts.
#[derive(Clone, Debug)]
pub struct ChunkPlan {
    pub stream: u64,
    pub first_session: u64,
    /// `sample_id` of the chunk's first skeleton row.
    pub first_sample_id: u64,
    pub lens: Vec<u32>,
}

/// Cuts `rows` skeleton rows of a split into [`ChunkPlan`]s (the last session is truncated).
pub struct Planner<'w> {
    world: &'w World,
    stream: u64,
    total: u64,
    done: u64,
    next_session: u64,
}

impl<'w> Planner<'w> {
    pub fn new(world: &'w World, split: Split, rows: u64) -> Self {
        Self { world, stream: stream_of(split), total: rows, done: 0, next_session: 0 }
    }
}

impl Iterator for Planner<'_> {
    type Item = ChunkPlan;

    fn next(&mut self) -> Option<ChunkPlan> {
        if self.done >= self.total {
            return None;
        }
        let mut plan = ChunkPlan {
            stream: self.stream,
            first_session: self.next_session,
            first_sample_id: self.done + 1,
            lens: Vec::with_capacity(SESSIONS_PER_CHUNK),
        };
        let mut rows = 0u64;
        while plan.lens.len() < SESSIONS_PER_CHUNK && rows < ROWS_PER_CHUNK && self.done < self.total {
            let len = session_len(self.world, self.stream, self.next_session).min(self.total - self.done);
            plan.lens.push(len as u32);
            self.next_session += 1;
            self.done += len;
            rows += len;
        }
        Some(plan)
    }
}

/// Counters of a chunk (summed by the writer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkStats {
    pub rows: u64,
    pub clicks: u64,
    /// Rows with buy = 1, including the click = 0 noise rows.
    pub buys: u64,
    pub click0_buy1: u64,
    pub md5s: u64,
    pub md5s_without_user_id: u64,
    pub skeleton_features: u64,
    pub common_features: u64,
}

impl ChunkStats {
    pub fn add(&mut self, o: &ChunkStats) {
        self.rows += o.rows;
        self.clicks += o.clicks;
        self.buys += o.buys;
        self.click0_buy1 += o.click0_buy1;
        self.md5s += o.md5s;
        self.md5s_without_user_id += o.md5s_without_user_id;
        self.skeleton_features += o.skeleton_features;
        self.common_features += o.common_features;
    }
}

/// The rendered bytes of a chunk, one buffer per output file.
#[derive(Default)]
pub struct ChunkOut {
    pub skeleton: Vec<u8>,
    pub common: Vec<u8>,
    pub truth: Vec<u8>,
    pub stats: ChunkStats,
}

/// Starts a feature `field \x02 id \x03` (preceded by `\x01` unless first).
#[inline]
fn feat(buf: &mut Vec<u8>, first: &mut bool, field: usize, id: u64) {
    if !*first {
        buf.push(1);
    }
    *first = false;
    buf.extend_from_slice(PREFIX[field]);
    push_u64(buf, id);
    buf.push(3);
}

#[inline]
fn weight(buf: &mut Vec<u8>, table: &WeightTable, m: &CountMap, e: usize) {
    if m.tiny(e) {
        buf.extend_from_slice(WeightTable::TINY);
    } else {
        table.push(buf, m.count(e));
    }
}

/// Combination id level of a count: `floor(log2(count))`, at most 7.
#[inline]
fn level(count: u32) -> u64 {
    (31 - count.max(1).leading_zeros()).min(7) as u64
}

/// `md5,feature_num,feature_list\n`; returns feature_num.
fn write_common(buf: &mut Vec<u8>, world: &World, sess: &Session, md5: &[u8; 16]) -> u64 {
    let user = &world.users[sess.user as usize];
    let hist = [(F109_14, &sess.cats), (F110_14, &sess.shops), (F127_14, &sess.brands), (F150_14, &sess.nodes)];
    let n = sess.has_user_id as usize + PROFILE_FIELDS.len() + hist.iter().map(|h| h.1.len()).sum::<usize>();
    buf.extend_from_slice(md5);
    buf.push(b',');
    push_u64(buf, n as u64);
    buf.push(b',');
    let mut first = true;
    if sess.has_user_id {
        feat(buf, &mut first, F101, world.ids.id(F101, sess.user as u64));
        buf.extend_from_slice(ONE);
    }
    for (k, &f) in PROFILE_FIELDS.iter().enumerate() {
        feat(buf, &mut first, f, world.ids.id(f, user.profile[k] as u64));
        buf.extend_from_slice(ONE);
    }
    for (f, m) in hist {
        for e in 0..m.len() {
            feat(buf, &mut first, f, world.ids.id(f, m.key(e) as u64));
            weight(buf, &world.weights, m, e);
        }
    }
    buf.push(b'\n');
    n as u64
}

/// `sample_id,click,buy,md5,feature_num,feature_list\n`; returns feature_num.
#[allow(clippy::too_many_arguments)]
fn write_skeleton(
    buf: &mut Vec<u8>,
    world: &World,
    sess: &Session,
    imp: &Impression,
    sample_id: u64,
    click: bool,
    buy: bool,
    md5: &[u8; 16],
) -> u64 {
    let it = &world.items[imp.item as usize];
    let ids = &world.ids;
    let node_hits = imp.node_hit[..imp.n_nodes].iter().filter(|&&h| h != 0).count();
    let n = 5
        + imp.n_nodes
        + (imp.cat_hit != 0) as usize
        + (imp.shop_hit != 0) as usize
        + (imp.brand_hit != 0) as usize
        + node_hits;
    push_u64(buf, sample_id);
    buf.extend_from_slice(if click { b",1," } else { b",0," });
    buf.extend_from_slice(if buy { b"1," } else { b"0," });
    buf.extend_from_slice(md5);
    buf.push(b',');
    push_u64(buf, n as u64);
    buf.push(b',');
    let mut first = true;
    for (f, x) in [(F205, imp.item), (F206, it.cat), (F207, it.shop)] {
        feat(buf, &mut first, f, ids.id(f, x as u64));
        buf.extend_from_slice(ONE);
    }
    for &node in &imp.nodes[..imp.n_nodes] {
        feat(buf, &mut first, F210, ids.id(F210, node as u64));
        buf.extend_from_slice(ONE);
    }
    feat(buf, &mut first, F216, ids.id(F216, it.brand as u64));
    buf.extend_from_slice(ONE);
    let combos =
        [(F508, imp.cat_hit, &sess.cats), (F509, imp.shop_hit, &sess.shops), (F702, imp.brand_hit, &sess.brands)];
    for (f, h, m) in combos {
        if h != 0 {
            let e = h as usize - 1;
            let x = m.key(e) as u64 * super::world::COMBO_LEVELS + level(m.count(e));
            feat(buf, &mut first, f, ids.id(f, x));
            weight(buf, &world.weights, m, e);
        }
    }
    for &h in imp.node_hit[..imp.n_nodes].iter().filter(|&&h| h != 0) {
        let e = h as usize - 1;
        let x = sess.nodes.key(e) as u64 * super::world::COMBO_LEVELS + level(sess.nodes.count(e));
        feat(buf, &mut first, F853, ids.id(F853, x));
        weight(buf, &world.weights, &sess.nodes, e);
    }
    feat(buf, &mut first, F301, ids.id(F301, sess.scenario as u64));
    buf.extend_from_slice(ONE);
    buf.push(b'\n');
    n as u64
}

/// Renders every session of `plan`: its common line, then for each impression the skeleton
/// line (labels drawn from the planted probabilities) and the truth line.
pub fn render_chunk(world: &World, plan: &ChunkPlan) -> ChunkOut {
    let rows: u64 = plan.lens.iter().map(|&l| l as u64).sum();
    let sessions = plan.lens.len();
    let mut out = ChunkOut {
        skeleton: Vec::with_capacity(rows as usize * 320),
        common: Vec::with_capacity(sessions * (world.history_mean.min(3000.0) as usize * 27 + 256)),
        truth: Vec::with_capacity(rows as usize * 64),
        stats: ChunkStats::default(),
    };
    let mut sess = Session::default();
    let mut sample_id = plan.first_sample_id;
    for (k, &len) in plan.lens.iter().enumerate() {
        let index = plan.first_session + k as u64;
        let mut rng = session_rng(world, plan.stream, index);
        sess.draw(world, &mut rng);
        let md5_hex = hex16(world.md5(plan.stream, index));
        let st = &mut out.stats;
        st.md5s += 1;
        st.md5s_without_user_id += !sess.has_user_id as u64;
        st.common_features += write_common(&mut out.common, world, &sess, &md5_hex);
        for _ in 0..len {
            let imp = sess.impression(world, &mut rng);
            let p_click = sigmoid(world.b_click + imp.zc);
            let p_buy = sigmoid(world.b_buy + imp.zv);
            let click = rng.f64() < p_click;
            let u = rng.f64();
            let buy = if click { u < p_buy } else { u < model::P_NOISE_BUY };
            let st = &mut out.stats;
            st.rows += 1;
            st.clicks += click as u64;
            st.buys += buy as u64;
            st.click0_buy1 += (buy && !click) as u64;
            st.skeleton_features +=
                write_skeleton(&mut out.skeleton, world, &sess, &imp, sample_id, click, buy, &md5_hex);
            let t = &mut out.truth;
            push_u64(t, sample_id);
            t.extend_from_slice(if click { b",1," } else { b",0," });
            t.extend_from_slice(if buy { b"1," } else { b"0," });
            push_prob(t, p_click);
            t.push(b',');
            push_prob(t, p_buy);
            t.push(b',');
            push_prob(t, sigmoid(world.b_click_semi + imp.zc_semi));
            t.push(b',');
            push_prob(t, sigmoid(world.b_buy_semi + imp.zv_semi));
            t.push(b',');
            push_prob(t, sigmoid(world.b_click_group + imp.zc_group));
            t.push(b',');
            push_prob(t, sigmoid(world.b_buy_group + imp.zv_group));
            // the counterfactual label: the same draw `buy` would be on a click
            t.extend_from_slice(if u < p_buy { b",1\n" } else { b",0\n" });
            sample_id += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GenerateConfig;

    #[test]
    fn planner_covers_rows_exactly() {
        let params = GenerateConfig { users: 300, items: 500, ..Default::default() };
        let world = World::build_uncalibrated(&params).unwrap();
        for rows in [0u64, 1, 57, 10_000] {
            let plans: Vec<ChunkPlan> = Planner::new(&world, Split::Train, rows).collect();
            let total: u64 = plans.iter().flat_map(|p| p.lens.iter()).map(|&l| l as u64).sum();
            assert_eq!(total, rows);
            let mut next = 1;
            let mut session = 0;
            for p in &plans {
                assert_eq!((p.first_sample_id, p.first_session), (next, session));
                assert!(p.lens.iter().all(|&l| l >= 1));
                next += p.lens.iter().map(|&l| l as u64).sum::<u64>();
                session += p.lens.len() as u64;
            }
        }
        assert_eq!((level(1), level(2), level(3), level(4), level(1000)), (0, 1, 1, 2, 7));
    }

    #[test]
    fn rendering_does_not_depend_on_chunking() {
        let params = GenerateConfig { users: 300, items: 500, history_mean: 50.0, ..Default::default() };
        let world = World::build(&params).unwrap();
        let plans: Vec<ChunkPlan> = Planner::new(&world, Split::Test, 5000).collect();
        let mut whole = Vec::new();
        for p in &plans {
            whole.extend(render_chunk(&world, p).skeleton);
        }
        // one session at a time: same bytes
        let mut split = Vec::new();
        for p in &plans {
            let mut id = p.first_sample_id;
            for (k, &len) in p.lens.iter().enumerate() {
                let single = ChunkPlan {
                    stream: p.stream,
                    first_session: p.first_session + k as u64,
                    first_sample_id: id,
                    lens: vec![len],
                };
                split.extend(render_chunk(&world, &single).skeleton);
                id += len as u64;
            }
        }
        assert!(whole == split);
    }
}
