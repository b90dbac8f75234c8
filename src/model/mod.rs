//! The ESMM model: sparse embedding table(s), the two dense towers (gemm or dfdx backend), the
//! loss, the calibration of its outputs and the glue between them.

pub mod calibration;
pub mod checkpoint;
pub mod embedding;
pub mod esmm;
mod gather;
pub mod infer;
mod lanes;
pub mod logistic;
pub mod loss;
pub mod towers;
pub mod vocab;

pub use calibration::{Calibration, Platt};
pub use embedding::{Embedding, SparseOptimizer};
pub use esmm::{FrozenSum, Model, ModelKind, ModelSpec, Snapshot};
pub use gather::Pooling;
pub use loss::{LossWeights, StepLoss};
pub use towers::{
    input_width, Backend, DenseAdam, Interactions, Mmoe, TowerSpec, DEFAULT_EMB_DIM, GEMM_HIDDEN, HIDDEN, INPUT,
    MIXTURE_TENSORS, TRANSFER_TENSORS,
};
pub use vocab::Vocab;

#[cfg(test)]
mod gradcheck {
    use super::*;
    use crate::batches::{Batch, CommonTable, FieldCsr};
    use crate::schema::{side_fields, Side, FIELDS};

    fn csr(rows: &[Vec<(u32, f32)>]) -> FieldCsr {
        let mut c = FieldCsr { offsets: vec![0], ids: vec![], weights: vec![] };
        for r in rows {
            for &(id, w) in r {
                c.ids.push(id);
                c.weights.push(w);
            }
            c.offsets.push(c.ids.len());
        }
        c
    }

    /// A tiny batch: 4 samples, 2 common rows, every field populated with 1–2 ids of 40 buckets.
    fn data() -> (Batch, CommonTable) {
        let mut k = 0u32;
        let mut next = |n: usize| -> Vec<(u32, f32)> {
            (0..n)
                .map(|j| {
                    k += 1;
                    (1 + (k * 7 + j as u32) % 39, 0.5 + (k % 3) as f32 * 0.25)
                })
                .collect()
        };
        let users = side_fields(Side::User).iter().map(|_| csr(&[next(2), next(1)])).collect();
        let items = side_fields(Side::Item).iter().map(|_| csr(&[next(1), next(2), next(1), next(1)])).collect();
        let batch = Batch {
            sample_id: vec![1, 2, 3, 4],
            click: vec![1, 0, 1, 0],
            buy: vec![1, 0, 0, 1],
            common_row: vec![0, 1, 1, 0],
            scenario: vec![0; 4],
            items,
            users: None,
        };
        (batch, CommonTable { fields: users, rows: 2, md5: vec![0; 2] })
    }

    /// The model `kind` on the 40 buckets, its towers the default dfdx ones (gemm with the
    /// auxiliary tower of the kinds that train one).
    fn spec(kind: ModelKind) -> ModelSpec {
        let aux_towers = kind.aux_towers();
        let transfer = kind == ModelKind::Aitm;
        let backend = if aux_towers > 0 || transfer { Backend::Gemm } else { Backend::Dfdx };
        ModelSpec {
            kind,
            hash_buckets: 40,
            embedding_dim: DEFAULT_EMB_DIM,
            pooling: Pooling::Weighted,
            max_len: vec![usize::MAX; FIELDS.len()],
            sparse: SparseOptimizer::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            dense: DenseAdam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            init_scale: 0.3,
            seed: 7,
            towers: TowerSpec { backend, aux_towers, transfer, ..TowerSpec::default() },
            min_sessions: 0,
            shrink_sessions: 0.0,
            loss: LossWeights {
                global_w: 0.8,
                counterfactual_w: 0.5,
                max_inverse_propensity: 3.0,
                constraint_w: 0.2,
                calibrator_w: 0.7,
            },
        }
    }

    /// `spec` at embedding dimension `dim`, on the gemm towers (dfdx is compiled for 12).
    fn at_dim(spec: ModelSpec, dim: usize) -> ModelSpec {
        let towers = TowerSpec { backend: Backend::Gemm, ..spec.towers.clone() };
        ModelSpec { embedding_dim: dim, towers, ..spec }
    }

    /// Id admission over the 40 buckets: even ids get rows of their own, odd ones only their
    /// field's shared row (rows 40..63).
    fn even_ids() -> (ModelSpec, Vocab) {
        let mut words = vec![0u64; 1];
        (0..40).step_by(2).for_each(|id| words[0] |= 1 << id);
        (ModelSpec { min_sessions: 1, ..spec(ModelKind::Esmm) }, Vocab::from_parts(1, 40, words, vec![]).unwrap())
    }

    /// [`even_ids`] with shrinkage: the own row of even id `i` weighs `(i + 1) / (i + 3)`.
    fn even_ids_shrunk() -> (ModelSpec, Vocab) {
        let (spec, vocab) = even_ids();
        let scale = (0..40).map(|i| if i % 2 == 0 { (i + 1) as f32 / (i + 3) as f32 } else { 0.0 }).collect();
        let vocab = Vocab::from_parts(1, 40, vocab.parts().2.to_vec(), scale).unwrap();
        (ModelSpec { shrink_sessions: 2.0, ..spec }, vocab)
    }

    fn close(num: f64, ana: f64, what: &str) {
        assert!((num - ana).abs() <= 2e-3 + 3e-2 * ana.abs(), "{what}: finite difference {num} vs analytic {ana}");
    }

    /// What a gradient-check case adds to the towers.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Extra {
        No,
        Pairs,
        Mmoe,
    }

    /// Every kind and pooling at the default dimension (a fixed-size path of `lanes`), and a
    /// few at 16 (another fixed size) and 5 (the run-time-sized path): every touched
    /// embedding row's gradient and a few tower weights' against central differences, the
    /// propensities (ESCM²) held where they were: none of the gradient flows through them.
    #[test]
    fn finite_differences_match_backward_for_every_kind() {
        let (batch, common) = data();
        let kinds = [ModelKind::Esmm, ModelKind::NaiveCvr, ModelKind::EsmmNs, ModelKind::Escm2Ips];
        let cases = kinds
            .into_iter()
            .chain([ModelKind::Escm2Dr, ModelKind::Dcmt, ModelKind::Aitm])
            .flat_map(|k| [(k, Pooling::Weighted), (k, Pooling::Mean), (k, Pooling::Sum)])
            .map(|(k, p)| (k, p, None, DEFAULT_EMB_DIM, Extra::No))
            .chain([
                (ModelKind::Esmm, Pooling::Mean, Some(even_ids()), DEFAULT_EMB_DIM, Extra::No),
                (ModelKind::EsmmNs, Pooling::Weighted, Some(even_ids()), DEFAULT_EMB_DIM, Extra::No),
                (ModelKind::Esmm, Pooling::Weighted, Some(even_ids_shrunk()), DEFAULT_EMB_DIM, Extra::No),
                (ModelKind::Escm2Ips, Pooling::Mean, Some(even_ids_shrunk()), DEFAULT_EMB_DIM, Extra::No),
                (ModelKind::Escm2Dr, Pooling::Mean, Some(even_ids_shrunk()), DEFAULT_EMB_DIM, Extra::No),
                (ModelKind::Dcmt, Pooling::Weighted, Some(even_ids_shrunk()), DEFAULT_EMB_DIM, Extra::No),
            ])
            .chain([16, 5].into_iter().flat_map(|dim| {
                [
                    (ModelKind::Esmm, Pooling::Weighted, None, dim, Extra::No),
                    (ModelKind::EsmmNs, Pooling::Mean, None, dim, Extra::No),
                    (ModelKind::Esmm, Pooling::Weighted, Some(even_ids_shrunk()), dim, Extra::No),
                ]
            }))
            // field interactions, their pair weights away from 0
            .chain([
                (ModelKind::Esmm, Pooling::Mean, Some(even_ids_shrunk()), DEFAULT_EMB_DIM, Extra::Pairs),
                (ModelKind::NaiveCvr, Pooling::Weighted, None, 5, Extra::Pairs),
                (ModelKind::Escm2Dr, Pooling::Weighted, None, DEFAULT_EMB_DIM, Extra::Pairs),
                (ModelKind::Dcmt, Pooling::Mean, Some(even_ids()), 16, Extra::Pairs),
            ])
            // the mixture of experts under every kind with a shared table
            .chain([
                (ModelKind::Esmm, Pooling::Mean, None, DEFAULT_EMB_DIM, Extra::Mmoe),
                (ModelKind::Escm2Ips, Pooling::Weighted, Some(even_ids_shrunk()), DEFAULT_EMB_DIM, Extra::Mmoe),
                (ModelKind::Escm2Dr, Pooling::Mean, None, 5, Extra::Mmoe),
                (ModelKind::Dcmt, Pooling::Sum, Some(even_ids()), DEFAULT_EMB_DIM, Extra::Mmoe),
                (ModelKind::Aitm, Pooling::Mean, Some(even_ids_shrunk()), 5, Extra::Mmoe),
                (ModelKind::Aitm, Pooling::Weighted, None, DEFAULT_EMB_DIM, Extra::Pairs),
            ]);
        for (kind, pooling, vocab, embedding_dim, extra) in cases {
            let admission = vocab.is_some();
            let (spec, vocab) = match vocab {
                Some((s, v)) => (ModelSpec { kind, towers: spec(kind).towers, ..s }, v),
                None => (spec(kind), Vocab::off()),
            };
            let spec = if embedding_dim == DEFAULT_EMB_DIM { spec } else { at_dim(spec, embedding_dim) };
            let spec = ModelSpec {
                pooling,
                ..match extra {
                    Extra::No => spec,
                    Extra::Pairs => with_pairs(spec),
                    Extra::Mmoe => with_mmoe(spec),
                }
            };
            let mut m = Model::new(spec, vocab).unwrap();
            if extra == Extra::Pairs {
                set_pair_weights(&mut m);
            }
            let (_, _, tg) = m.backward(&batch, &common);
            let what = format!("{kind:?} {pooling:?} dim {embedding_dim} admission {admission} {extra:?}");
            let (checked, shared_rows) = check_embedding_grads(&mut m, &batch, &common, admission, &what);
            assert!(checked >= 60, "{checked}");
            assert_eq!(shared_rows, if admission { m.tables.len() * FIELDS.len() } else { 0 });
            check_tower_grads(&mut m, &batch, &common, &tg, &what);
        }
    }

    /// Central-difference step: small enough that a step rarely crosses a ReLU kink (at 1e-2
    /// one of the dim-5 cases did, its difference then converging to the analytic gradient
    /// as the step shrank), large enough for the f32 forward pass.
    const EPS: f32 = 1e-3;

    /// Central differences of the loss against the gradient of every touched embedding row of
    /// `m`, at its first, middle and last element: (elements checked, shared rows touched).
    fn check_embedding_grads(
        m: &mut Model,
        batch: &Batch,
        common: &CommonTable,
        admission: bool,
        what: &str,
    ) -> (usize, usize) {
        let dim = m.spec.embedding_dim;
        let held = m.all_logits(batch, common);
        let (mut checked, mut shared_rows) = (0, 0);
        for t in 0..m.tables.len() {
            for row in 1..m.spec.table_rows() as u32 {
                let Some(g) = m.embedding_grad(t, row).map(|g| g.to_vec()) else { continue };
                assert!(!admission || row >= 40 || row % 2 == 0, "odd id {row} has a gradient of its own");
                assert_eq!(g.len(), dim);
                shared_rows += (row >= 40) as usize;
                for k in [0, (dim - 1) / 2, dim - 1] {
                    let w0 = m.tables[t].weights(row)[k];
                    m.tables[t].weights_mut(row)[k] = w0 + EPS;
                    let lp = m.loss_held(batch, common, &held);
                    m.tables[t].weights_mut(row)[k] = w0 - EPS;
                    let lm = m.loss_held(batch, common, &held);
                    m.tables[t].weights_mut(row)[k] = w0;
                    close((lp - lm) / (2.0 * EPS as f64), g[k] as f64, &format!("{what} table {t} row {row}[{k}]"));
                    checked += 1;
                }
            }
        }
        (checked, shared_rows)
    }

    /// The same for a few tower weights: the last layer and the first layer of each tower (the
    /// auxiliary tower's too).
    fn check_tower_grads(m: &mut Model, batch: &Batch, common: &CommonTable, tg: &towers::TowerGrads, what: &str) {
        let p0 = m.towers.params();
        let held = m.all_logits(batch, common);
        let has_aux = m.towers.spec().aux_towers > 0;
        let (main, aux): (Vec<(usize, usize)>, Vec<(usize, usize)>) = match m.towers.spec().mixture_tensor() {
            // towers [16 → 8 → 1]; then the experts' W [128 × input], b, the gates' W [T·8 × input], b
            // (the third gate's rows start at 16 × input)
            Some(i) => (
                vec![(0, 100), (3, 0), (4, 3), (6, 5), (i, 1000), (i, 1183), (i + 1, 5), (i + 2, 50), (i + 3, 9)],
                vec![(8, 7), (11, 0), (i + 2, 16 * input_width(m.spec.embedding_dim) + 4), (i + 3, 17)],
            ),
            None => (
                vec![(4, 3), (5, 0), (0, 100), (10, 7), (11, 0), (6, 2000)],
                // the auxiliary tower's (its tensors follow the CVR tower's)
                vec![(16, 5), (17, 0), (12, 300)],
            ),
        };
        let aux = has_aux.then_some(aux);
        // AITM's transfer: W_i, b_i, W_q, W_k, W_v
        let transfer =
            m.towers.spec().transfer_tensor().map(|j| [(j, 5), (j + 1, 3), (j + 2, 7), (j + 3, 11), (j + 4, 13)]);
        // every tower's pair weights (after all the layers): two pairs of fields
        let pairs = (0..3).filter_map(|t| m.towers.spec().pair_tensor(t));
        let pairs: Vec<_> = pairs.flat_map(|i| [(i, 1), (i, 13 * FIELDS.len() + 20)]).collect();
        let picks = main.into_iter().chain(aux.into_iter().flatten()).chain(transfer.into_iter().flatten());
        for (tensor, idx) in picks.chain(pairs) {
            let mut p = p0.clone();
            p[tensor][idx] += EPS;
            m.towers.set_params(&p).unwrap();
            let lp = m.loss_held(batch, common, &held);
            p[tensor][idx] -= 2.0 * EPS;
            m.towers.set_params(&p).unwrap();
            let lm = m.loss_held(batch, common, &held);
            m.towers.set_params(&p0).unwrap();
            let ana = tg.tensors()[tensor][idx] as f64;
            close((lp - lm) / (2.0 * EPS as f64), ana, &format!("{what} tower tensor {tensor}[{idx}]"));
        }
    }

    /// `spec` on the gemm towers with field interactions.
    fn with_pairs(spec: ModelSpec) -> ModelSpec {
        let mut spec = at_dim(spec, DEFAULT_EMB_DIM);
        spec.towers.interactions = towers::Interactions::FieldWeighted;
        spec
    }

    /// `spec` on the gemm towers over a mixture of experts (PaddleRec escm2's shape).
    fn with_mmoe(spec: ModelSpec) -> ModelSpec {
        let mut spec = at_dim(spec.clone(), spec.embedding_dim);
        spec.towers.mmoe = Some(towers::Mmoe::default());
        spec
    }

    /// Pair weights of every tower away from 0 (they start at 0), upper triangle only.
    fn set_pair_weights(m: &mut Model) {
        let mut p = m.towers.params();
        let f = FIELDS.len();
        for t in 0..3 {
            if let Some(i) = m.towers.spec().pair_tensor(t) {
                for (k, r) in p[i].iter_mut().enumerate() {
                    *r = if k % f > k / f { 0.3 * ((k * 7 + t) % 11) as f32 / 11.0 - 0.1 } else { 0.0 };
                }
            }
        }
        m.towers.set_params(&p).unwrap();
    }

    /// Twenty steps of the model `spec`, `vocab` on `batch` inside a pool of `threads`
    /// threads: the tables and tower parameters afterwards.
    fn train_in_pool(
        (spec, vocab): &(ModelSpec, Vocab),
        batch: &Batch,
        common: &CommonTable,
        threads: usize,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut m = Model::new(spec.clone(), vocab.clone()).unwrap();
            for _ in 0..20 {
                m.train_step(batch, common);
            }
            (m.tables.iter().map(|t| t.raw().to_vec()).collect(), m.towers.params())
        })
    }

    /// The gradient partitions (one per thread) and the parallel pooling change nothing: the
    /// same model after 20 steps with 1, 2 and 3 threads, bit for bit (with and without id
    /// admission); and a batch whose user side the loader gathered trains exactly like one
    /// joined through the common table.
    #[test]
    fn threads_and_gathered_users_give_identical_models() {
        let (batch, common) = data();
        let mut gathered = batch.clone();
        gathered.gather_users(&common).unwrap();
        assert!(gathered.users.as_ref().is_some_and(|u| u.local == [0, 1, 1, 0]));
        let models = [
            (spec(ModelKind::Esmm), Vocab::off()),
            (spec(ModelKind::EsmmNs), Vocab::off()),
            (spec(ModelKind::Escm2Ips), Vocab::off()),
            (spec(ModelKind::Escm2Dr), Vocab::off()),
            (spec(ModelKind::Dcmt), Vocab::off()),
            even_ids(),
            even_ids_shrunk(),
            (at_dim(spec(ModelKind::Esmm), 16), Vocab::off()),
            (at_dim(even_ids().0, 5), even_ids().1),
            (with_pairs(spec(ModelKind::Escm2Dr)), Vocab::off()),
            (with_mmoe(spec(ModelKind::Escm2Dr)), Vocab::off()),
            (with_mmoe(even_ids_shrunk().0), even_ids_shrunk().1),
            (spec(ModelKind::Aitm), Vocab::off()),
            (with_mmoe(spec(ModelKind::Aitm)), Vocab::off()),
        ];
        for model in &models {
            let kind = model.0.kind;
            let one = train_in_pool(model, &batch, &common, 1);
            let fresh = Model::new(model.0.clone(), model.1.clone()).unwrap();
            assert!(one.0[0] != fresh.tables[0].raw(), "{kind:?}: the steps moved the table");
            for threads in [2, 3] {
                assert!(train_in_pool(model, &batch, &common, threads) == one, "{kind:?}: {threads} threads");
            }
            assert!(train_in_pool(model, &gathered, &common, 2) == one, "{kind:?}: gathered user side");
        }
        let mut bad = batch.clone();
        bad.common_row[2] = 2;
        let err = bad.gather_users(&common).unwrap_err().to_string();
        assert!(err.contains("common_row 2") && err.contains("2 rows"), "{err}");
    }

    /// Labels are separate columns, never features: flipping them leaves the logits unchanged.
    #[test]
    fn labels_never_reach_the_inputs() {
        let (mut batch, common) = data();
        let m = Model::new(spec(ModelKind::Esmm), Vocab::off()).unwrap();
        let before = m.logits(&batch, &common);
        batch.click.iter_mut().for_each(|c| *c ^= 1);
        batch.buy.iter_mut().for_each(|b| *b ^= 1);
        assert_eq!(m.logits(&batch, &common), before);
        for f in crate::schema::samples_schema().fields() {
            let feature = f.name().starts_with("f_") || f.name().starts_with("w_");
            assert!(!(feature && (f.name().contains("click") || f.name().contains("buy"))));
        }
    }

    /// Validation's running sum of the frozen members (`FrozenSum`) scores a growing ensemble
    /// exactly as scoring every member again does: the same loss and probabilities, bit for bit,
    /// for kinds with and without an auxiliary tower.
    #[test]
    fn a_kept_frozen_sum_scores_the_ensemble_bit_for_bit() {
        let (batch, common) = data();
        for kind in [ModelKind::Esmm, ModelKind::Escm2Dr, ModelKind::Aitm] {
            let mut m = Model::new(spec(kind), Vocab::off()).unwrap();
            let mut frozen = FrozenSum::default();
            for round in 0..4u64 {
                for _ in 0..3 {
                    m.train_step(&batch, &common);
                }
                let (full, kept) = (m.evaluate(&batch, &common), m.evaluate_with(&batch, &common, &mut frozen));
                assert_eq!(full.0.value().to_bits(), kept.0.value().to_bits(), "{kind:?} round {round}: loss");
                assert_eq!((full.1, full.2), (kept.1, kept.2), "{kind:?} round {round}: probabilities");
                m.keep_snapshot().unwrap();
                m.reset_embeddings(round);
            }
            assert_eq!(m.snapshots.len(), 4);
        }
    }

    /// A snapshot ensemble: the kept member is frozen (training moves only the model's own
    /// tables and towers), the logits are the members' mean, summed in order; a checkpoint
    /// keeps every member bit for bit, and one cut inside a member's data is an error.
    #[test]
    fn snapshots_are_frozen_members_whose_logits_are_averaged() {
        let (batch, common) = data();
        for (spec, vocab) in [
            (spec(ModelKind::Esmm), Vocab::off()),
            (spec(ModelKind::EsmmNs), Vocab::off()),
            even_ids_shrunk(),
            (with_mmoe(spec(ModelKind::Escm2Ips)), Vocab::off()),
            (spec(ModelKind::Aitm), Vocab::off()),
        ] {
            let mut m = Model::new(spec, vocab).unwrap();
            for _ in 0..5 {
                m.train_step(&batch, &common);
            }
            // the towers' own logits are averaged (AITM's pCVR is derived from the averages)
            let towers = |m: &Model| m.all_logits(&batch, &common).into_iter().take(2).collect::<Vec<_>>();
            let first = towers(&m);
            m.keep_snapshot().unwrap();
            assert_eq!(towers(&m), first, "a copy of the model averages to itself");
            m.reset_embeddings(99);
            for _ in 0..5 {
                m.train_step(&batch, &common);
            }
            let kept = std::mem::take(&mut m.snapshots);
            let own = towers(&m);
            m.snapshots = kept;
            let mean = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x + y) / 2.0).collect::<Vec<f32>>();
            assert_eq!(towers(&m), [mean(&first[0], &own[0]), mean(&first[1], &own[1])]);
            assert_ne!(own, first);
            let both = m.logits(&batch, &common);

            let path = std::env::temp_dir().join(format!("esmm-snapshot-{}-{:?}.bin", std::process::id(), m.spec.kind));
            checkpoint::save(&path, &m, &0u32, "h", &[]).unwrap();
            let (back, _) = checkpoint::load::<u32>(&path).unwrap();
            assert_eq!(back.snapshots.len(), 1);
            assert_eq!(back.logits(&batch, &common), both);
            // model.bin keeps the tables' weights only: the same logits, without Adam's moments
            let weights = path.with_extension("weights");
            checkpoint::save_model(&weights, &m, &0u32, "h", &[]).unwrap();
            let (light, _) = checkpoint::load::<u32>(&weights).unwrap();
            assert_eq!(light.logits(&batch, &common), both);
            assert_eq!(light.tables[0].raw().len(), m.spec.table_rows() * m.spec.embedding_dim);
            let saved = std::fs::metadata(&path).unwrap().len() - std::fs::metadata(&weights).unwrap().len();
            assert_eq!(saved as usize, (m.tables[0].raw().len() - light.tables[0].raw().len()) * 4 * m.tables.len());
            std::fs::remove_file(&weights).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let member = m.snapshots[0].tables[0].raw().len() * 4;
            assert_eq!(member, m.spec.table_rows() * m.spec.embedding_dim * 4, "weights only");
            for cut in [bytes.len() - 1, bytes.len() - member / 2] {
                std::fs::write(&path, &bytes[..cut]).unwrap();
                let e = format!("{:#}", checkpoint::load::<u32>(&path).err().unwrap());
                assert!(e.contains("truncated"), "{e}");
            }
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_step_lowers_the_loss_and_padding_never_moves() {
        let (batch, common) = data();
        let mut m = Model::new(spec(ModelKind::Esmm), Vocab::off()).unwrap();
        let before = m.loss(&batch, &common);
        for _ in 0..20 {
            m.train_step(&batch, &common);
        }
        assert!(m.loss(&batch, &common) < before);
        assert!(m.tables[0].weights(0).iter().all(|&w| w == 0.0));
    }
}
