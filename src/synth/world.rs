//! The planted world: users and items with their latent effects, the category/shop/brand/
//! intention-node structure, the global feature-id space, and the intercepts (calibrated by
//! [`super::calibrate`]).
//! It depends only on the generator config (seed and world shape), never on row counts or
//! thread counts, so train and test draw from the same world.

use anyhow::{anyhow, Result};

use super::format::WeightTable;
use super::{field, model};
use crate::config::GenerateConfig;
use crate::error::usage;
use crate::rng::{hash_words, mix64, power_law, unit, Alias, Rng};
use crate::schema::FIELDS;

/// Latent dimension of the user × item interaction terms.
pub const DIM: usize = 4;
/// Largest `users` / `items` the generator accepts (memory: ~100 bytes per entity).
pub const MAX_ENTITIES: u64 = 20_000_000;
/// Largest `rows_per_md5` (a session is rendered inside one chunk buffer).
pub const MAX_ROWS_PER_MD5: f64 = 10_000.0;
/// Profile fields `121 122 124 125 126 127 128 129` and their vocabulary sizes.
pub const PROFILE_FIELDS: [usize; 8] = [5, 6, 7, 8, 9, 10, 11, 12];
pub const PROFILE_VOCAB: [u32; 8] = [12, 7, 3, 8, 4, 3, 3, 5];
/// Most intention nodes (`210`) one item carries.
pub const MAX_NODES: usize = 15;
/// Combination ids encode (attribute, count level) with this many levels.
pub const COMBO_LEVELS: u64 = 8;

const TAG_WORLD: u64 = 0x5752_4c44;
const TAG_IDS: u64 = 0x4944_5321;
const TAG_NODE: u64 = 0x4e4f_4445;
const TAG_MD5: u64 = 0x4d44_3521;

#[derive(Clone, Debug)]
pub struct ItemInfo {
    pub cat: u32,
    pub shop: u32,
    pub brand: u32,
    pub n_nodes: u8,
    /// Latent clickbait factor: raises the click logit, lowers the buy logit.
    pub attract: f32,
    /// Item part of the click logit (includes `+attract`).
    pub ctr_bias: f32,
    /// Item part of the buy-given-click logit (includes `-CLICKBAIT_CVR * attract`).
    pub cvr_bias: f32,
    /// The group parts of `ctr_bias` / `cvr_bias` (category, shop, brand, shop clickbait):
    /// what the semi-oracle knows of the item.
    pub ctr_group: f32,
    pub cvr_group: f32,
    pub q: [f32; DIM],
    pub q2: [f32; DIM],
}

#[derive(Clone, Debug)]
pub struct UserInfo {
    /// Value index per profile field (see [`PROFILE_FIELDS`]).
    pub profile: [u8; 8],
    /// Number of favourite categories (2..=8), listed in `fav`.
    pub n_fav: u8,
    pub fav: [u32; 8],
    pub ctr_bias: f32,
    pub cvr_bias: f32,
    /// The profile parts of `ctr_bias` / `cvr_bias`: what the group oracle knows of the user.
    pub ctr_group: f32,
    pub cvr_group: f32,
    pub p: [f32; DIM],
    pub p2: [f32; DIM],
}

/// One global feature-id space: each field owns a disjoint, randomly placed range, and entity
/// `x` of a field gets id `offset + 3x + jitter(x)` (distinct, irregular-looking ids).
#[derive(Clone, Debug)]
pub struct IdSpace {
    offset: [u64; FIELDS.len()],
    salt: [u64; FIELDS.len()],
    size: [u64; FIELDS.len()],
}

impl IdSpace {
    #[inline]
    pub fn id(&self, field: usize, x: u64) -> u64 {
        self.offset[field] + 3 * x + mix64(x ^ self.salt[field]) % 3
    }

    /// The ids field `field` can use: `[lo, hi)`.
    pub fn range(&self, field: usize) -> (u64, u64) {
        (self.offset[field], self.offset[field] + 3 * self.size[field])
    }

    fn new(rng: &mut Rng, sizes: &[u64; FIELDS.len()]) -> Self {
        let mut order: Vec<usize> = (0..FIELDS.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut offset = [0u64; FIELDS.len()];
        let mut salt = [0u64; FIELDS.len()];
        let mut cursor = 1 + rng.below(1_000_000);
        for f in order {
            offset[f] = cursor + rng.below(30_000_000);
            salt[f] = rng.next_u64();
            cursor = offset[f] + 3 * sizes[f] + 3;
        }
        Self { offset, salt, size: *sizes }
    }
}

pub struct World {
    pub seed: u64,
    pub users: Vec<UserInfo>,
    pub items: Vec<ItemInfo>,
    pub user_alias: Alias,
    pub item_alias: Alias,
    /// Items of category `c` are `cat_items[cat_start[c]..cat_start[c + 1]]`, most popular first.
    pub cat_start: Vec<u32>,
    pub cat_items: Vec<u32>,
    pub n_nodes: u32,
    pub ids: IdSpace,
    pub weights: WeightTable,
    pub rows_per_md5: f64,
    pub history_mean: f64,
    /// Latent factor per category: an item's `q` without its own part (the semi-oracle's).
    pub cat_vec: Vec<[f32; DIM]>,
    /// Latent factor per age value (profile field `122`): a user's `p` without its own part
    /// (the group oracle's).
    pub age_vec: Vec<[f32; DIM]>,
    /// Calibrated intercepts of the click and buy-given-click logits.
    pub b_click: f64,
    pub b_buy: f64,
    /// The same for the semi-oracle's logits (calibrated to the same rates on its own terms).
    pub b_click_semi: f64,
    pub b_buy_semi: f64,
    /// The same for the group oracle's logits.
    pub b_click_group: f64,
    pub b_buy_group: f64,
}

fn normal_vec(rng: &mut Rng, sd: f64) -> [f32; DIM] {
    let mut v = [0f32; DIM];
    for x in &mut v {
        *x = (rng.normal() * sd) as f32;
    }
    v
}

/// `v + sd·ε` per coordinate, `ε` of unit variance with the given tail (see [`Rng::unit_tail`]).
fn plus_individual(mut v: [f32; DIM], rng: &mut Rng, sd: f64, df: u32) -> [f32; DIM] {
    for x in &mut v {
        *x += (sd * rng.unit_tail(df)) as f32;
    }
    v
}

/// The second-task factor `ρ·v + sd·ε` (`ρ` = [`model::SHARED_FACTOR`]), summed in f64.
fn shared_individual(v: [f32; DIM], rng: &mut Rng, sd: f64, df: u32) -> [f32; DIM] {
    v.map(|x| (model::SHARED_FACTOR * x as f64 + sd * rng.unit_tail(df)) as f32)
}

impl World {
    /// The world with zero intercepts (the calibration sample only needs the other terms).
    pub fn build_uncalibrated(params: &GenerateConfig) -> Result<Self> {
        params.validate()?;
        // Beyond the config's own checks: what the world's index types can hold.
        // (configuration errors like the config's own: exit status 2)
        if params.users > MAX_ENTITIES || params.items > MAX_ENTITIES {
            return Err(usage(anyhow!("generate.users and generate.items must be at most {MAX_ENTITIES}")));
        }
        if params.rows_per_md5 > MAX_ROWS_PER_MD5 {
            let n = params.rows_per_md5;
            return Err(usage(anyhow!("generate.rows_per_md5 must be at most {MAX_ROWS_PER_MD5}, got {n}")));
        }
        let (indiv, df) = (params.individual_sd, params.individual_df);
        let bait_cvr = model::CLICKBAIT_CVR * params.selection_bias;
        let seed = params.seed;
        let mut rng = Rng::new(hash_words(&[seed, TAG_WORLD]));
        let n_items = params.items as usize;
        let n_users = params.users as usize;
        let n_cats = (n_items / 50).max(1);
        let n_shops = (n_items / 15).max(1);
        let n_brands = (n_items / 30).max(1);
        let n_nodes = (n_items / 20).max(1);

        // group-level effects: categories, shops, brands
        let cat_alias = Alias::new(&power_law(n_cats, 0.8, 5.0));
        let shop_alias = Alias::new(&power_law(n_shops, 0.7, 5.0));
        let brand_alias = Alias::new(&power_law(n_brands, 0.8, 5.0));
        let cat_c: Vec<f64> = (0..n_cats).map(|_| 0.3 * rng.normal()).collect();
        let cat_v: Vec<f64> = (0..n_cats).map(|_| 0.3 * rng.normal()).collect();
        let cat_vec: Vec<[f32; DIM]> = (0..n_cats).map(|_| normal_vec(&mut rng, 0.4)).collect();
        let shop_c: Vec<f64> = (0..n_shops).map(|_| 0.2 * rng.normal()).collect();
        let shop_v: Vec<f64> = (0..n_shops).map(|_| 0.3 * rng.normal()).collect();
        let shop_bait: Vec<f64> = (0..n_shops).map(|_| model::SHOP_BAIT_SD * rng.normal()).collect();
        let brand_c: Vec<f64> = (0..n_brands).map(|_| 0.15 * rng.normal()).collect();
        let brand_v: Vec<f64> = (0..n_brands).map(|_| 0.3 * rng.normal()).collect();

        let mut items = Vec::with_capacity(n_items);
        for _ in 0..n_items {
            let cat = cat_alias.sample(&mut rng);
            let shop = shop_alias.sample(&mut rng);
            let brand = brand_alias.sample(&mut rng);
            let attract = shop_bait[shop] + indiv * rng.unit_tail(df);
            let ctr_group = cat_c[cat] + shop_c[shop] + brand_c[brand] + shop_bait[shop];
            let cvr_group = cat_v[cat] + shop_v[shop] + brand_v[brand] - bait_cvr * shop_bait[shop];
            let ctr_bias = cat_c[cat] + shop_c[shop] + brand_c[brand] + indiv * rng.unit_tail(df) + attract;
            let cvr_bias = cat_v[cat] + shop_v[shop] + brand_v[brand] + indiv * rng.unit_tail(df) - bait_cvr * attract;
            let q = plus_individual(cat_vec[cat], &mut rng, indiv, df);
            let q2 = shared_individual(q, &mut rng, indiv, df);
            let n_nodes = node_count(rng.next_u64());
            items.push(ItemInfo {
                cat: cat as u32,
                shop: shop as u32,
                brand: brand as u32,
                n_nodes,
                attract: attract as f32,
                ctr_bias: ctr_bias as f32,
                cvr_bias: cvr_bias as f32,
                ctr_group: ctr_group as f32,
                cvr_group: cvr_group as f32,
                q,
                q2,
            });
        }
        // items by category, in popularity (index) order
        let mut cat_start = vec![0u32; n_cats + 1];
        for it in &items {
            cat_start[it.cat as usize + 1] += 1;
        }
        for c in 0..n_cats {
            cat_start[c + 1] += cat_start[c];
        }
        let mut fill = cat_start.clone();
        let mut cat_items = vec![0u32; n_items];
        for (i, it) in items.iter().enumerate() {
            let slot = &mut fill[it.cat as usize];
            cat_items[*slot as usize] = i as u32;
            *slot += 1;
        }

        // users: profile-driven effects plus individual ones; favourite categories are those
        // of popularity-drawn items
        let item_alias = Alias::new(&power_law(n_items, 0.9, 20.0));
        let profile_alias: Vec<Alias> =
            PROFILE_VOCAB.iter().map(|&n| Alias::new(&power_law(n as usize, 1.0, 1.0))).collect();
        let prof_c: Vec<Vec<f64>> =
            PROFILE_VOCAB.iter().map(|&n| (0..n).map(|_| 0.2 * rng.normal()).collect()).collect();
        let prof_v: Vec<Vec<f64>> =
            PROFILE_VOCAB.iter().map(|&n| (0..n).map(|_| 0.2 * rng.normal()).collect()).collect();
        let age_vec: Vec<[f32; DIM]> = (0..PROFILE_VOCAB[1]).map(|_| normal_vec(&mut rng, 0.4)).collect();
        let mut users = Vec::with_capacity(n_users);
        for _ in 0..n_users {
            let mut profile = [0u8; 8];
            let (mut uc, mut uv) = (0.0, 0.0);
            for f in 0..8 {
                let v = profile_alias[f].sample(&mut rng);
                profile[f] = v as u8;
                uc += prof_c[f][v];
                uv += prof_v[f][v];
            }
            let (ctr_group, cvr_group) = (uc as f32, uv as f32);
            uc += indiv * rng.unit_tail(df);
            uv += indiv * rng.unit_tail(df);
            let p = plus_individual(age_vec[profile[1] as usize], &mut rng, indiv, df);
            let p2 = shared_individual(p, &mut rng, indiv, df);
            let n_fav = 2 + rng.below(7) as u8;
            let mut fav = [0u32; 8];
            for f in fav.iter_mut().take(n_fav as usize) {
                *f = items[item_alias.sample(&mut rng)].cat;
            }
            users.push(UserInfo {
                profile,
                n_fav,
                fav,
                ctr_bias: uc as f32,
                cvr_bias: uv as f32,
                ctr_group,
                cvr_group,
                p,
                p2,
            });
        }

        let mut sizes = [0u64; FIELDS.len()];
        sizes[field::F101] = n_users as u64;
        sizes[field::F109_14] = n_cats as u64;
        sizes[field::F110_14] = n_shops as u64;
        sizes[field::F127_14] = n_brands as u64;
        sizes[field::F150_14] = n_nodes as u64;
        for (k, &f) in PROFILE_FIELDS.iter().enumerate() {
            sizes[f] = PROFILE_VOCAB[k] as u64;
        }
        sizes[field::F205] = n_items as u64;
        sizes[field::F206] = n_cats as u64;
        sizes[field::F207] = n_shops as u64;
        sizes[field::F210] = n_nodes as u64;
        sizes[field::F216] = n_brands as u64;
        sizes[field::F508] = n_cats as u64 * COMBO_LEVELS;
        sizes[field::F509] = n_shops as u64 * COMBO_LEVELS;
        sizes[field::F702] = n_brands as u64 * COMBO_LEVELS;
        sizes[field::F853] = n_nodes as u64 * COMBO_LEVELS;
        sizes[field::F301] = model::SCENARIO_PROBS.len() as u64;
        let mut id_rng = Rng::new(hash_words(&[seed, TAG_IDS]));
        let ids = IdSpace::new(&mut id_rng, &sizes);

        Ok(Self {
            seed,
            user_alias: Alias::new(&power_law(n_users, 0.9, 20.0)),
            item_alias,
            users,
            items,
            cat_start,
            cat_items,
            n_nodes: n_nodes as u32,
            ids,
            weights: WeightTable::new(4096),
            rows_per_md5: params.rows_per_md5,
            history_mean: params.history_mean,
            cat_vec,
            age_vec,
            b_click: 0.0,
            b_buy: 0.0,
            b_click_semi: 0.0,
            b_buy_semi: 0.0,
            b_click_group: 0.0,
            b_buy_group: 0.0,
        })
    }

    /// A random favourite category of `user`.
    #[inline]
    pub fn fav_cat(&self, user: u32, rng: &mut Rng) -> u32 {
        let u = &self.users[user as usize];
        u.fav[(rng.below(u.n_fav as u64) as usize).min(7)]
    }

    /// An item of category `cat`, skewed towards the popular ones.
    #[inline]
    pub fn item_in_cat(&self, cat: u32, rng: &mut Rng) -> u32 {
        let c = cat as usize;
        let (lo, hi) = (self.cat_start[c] as usize, self.cat_start[c + 1] as usize);
        if hi <= lo {
            return self.item_alias.sample(rng) as u32;
        }
        let u = rng.f64();
        let k = ((hi - lo) as f64 * u * u) as usize;
        self.cat_items[lo + k.min(hi - lo - 1)]
    }

    /// Intention nodes (`210`) of an item, duplicates removed; returns how many were written.
    /// Even slots are tied to the item's category (shared by related items), odd ones are not.
    #[inline]
    pub fn nodes(&self, item: u32, out: &mut [u32; MAX_NODES]) -> usize {
        let it = &self.items[item as usize];
        let mut n = 0;
        for j in 0..(it.n_nodes as usize).min(MAX_NODES) {
            let h = hash_words(&[self.seed, TAG_NODE, item as u64, j as u64]);
            let node = if j % 2 == 0 {
                ((it.cat as u64 * 16 + h % 16) % self.n_nodes as u64) as u32
            } else {
                (h % self.n_nodes as u64) as u32
            };
            if !out[..n].contains(&node) {
                out[n] = node;
                n += 1;
            }
        }
        n
    }

    /// The md5 of session `index` of `stream`: a bijection of (stream, index), so md5s never
    /// repeat within or across splits.
    #[inline]
    pub fn md5(&self, stream: u64, index: u64) -> u64 {
        mix64(((stream << 56) | (index & ((1 << 56) - 1))) ^ hash_words(&[self.seed, TAG_MD5]))
    }
}

/// 1..=5 nodes mostly, sometimes 6..=15 (mean ≈ 4.6).
fn node_count(h: u64) -> u8 {
    let u = unit(h);
    const CUM: [f64; 5] = [0.10, 0.25, 0.45, 0.65, 0.80];
    match CUM.iter().position(|&c| u < c) {
        Some(k) => k as u8 + 1,
        None => 6 + (mix64(h) % 10) as u8,
    }
}

#[inline]
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GenerateConfig {
        GenerateConfig { users: 500, items: 800, ..GenerateConfig::default() }
    }

    #[test]
    fn world_is_a_function_of_the_config() {
        let a = World::build_uncalibrated(&small()).unwrap();
        let b = World::build_uncalibrated(&small()).unwrap();
        assert_eq!(a.items.len(), 800);
        assert!(a.items.iter().zip(&b.items).all(|(x, y)| x.ctr_bias == y.ctr_bias && x.q == y.q));
        let c = World::build_uncalibrated(&GenerateConfig { seed: 43, ..small() }).unwrap();
        assert!(a.items.iter().zip(&c.items).any(|(x, y)| x.ctr_bias != y.ctr_bias));
        assert_ne!(a.md5(0, 5), a.md5(1, 5));
        // items of each category listed once, in index order
        assert_eq!(a.cat_items.len(), 800);
        for c in 0..a.cat_start.len() - 1 {
            let s = &a.cat_items[a.cat_start[c] as usize..a.cat_start[c + 1] as usize];
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            assert!(s.iter().all(|&i| a.items[i as usize].cat == c as u32));
        }
    }

    #[test]
    fn id_ranges_are_disjoint() {
        let w = World::build_uncalibrated(&small()).unwrap();
        let mut ranges: Vec<(u64, u64)> = (0..FIELDS.len()).map(|f| w.ids.range(f)).collect();
        ranges.sort();
        assert!(ranges.windows(2).all(|r| r[0].1 <= r[1].0), "{ranges:?}");
        assert!(ranges.iter().all(|r| r.0 < r.1 && r.1 < 2_000_000_000));
        let (lo, hi) = w.ids.range(field::F205);
        assert!((0..800).all(|x| (lo..hi).contains(&w.ids.id(field::F205, x))));
    }

    #[test]
    fn limits_are_errors_not_panics() {
        for bad in [
            GenerateConfig { users: 0, ..small() },
            GenerateConfig { items: MAX_ENTITIES + 1, ..small() },
            GenerateConfig { rows_per_md5: 1e9, ..small() },
            GenerateConfig { history_mean: f64::NAN, ..small() },
        ] {
            let e = World::build(&bad).err().expect("an error");
            assert_eq!(crate::error::Kind::of(&e), crate::error::Kind::Usage, "{e:#}");
        }
    }
}
