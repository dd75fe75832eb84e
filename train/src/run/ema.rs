//! An exponential moving average of the weights, as timm's `ModelEmaV3`: after every optimiser
//! step each float parameter and BatchNorm running statistic moves towards the trained
//! network's, `ema.lerp_(w, 1 - decay)`, with timm's decay warm-up. The average lives inside the
//! trained module, so Burn's checkpoints hold it and a resumed run continues it exactly; it is
//! validated beside the raw weights every epoch (a `valid-ema` row in the epoch log), its best
//! epoch's checkpoint is kept, and the export takes it when it beats the raw weights.
//! Written here because Burn has no weight averaging for a whole module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::module::{Module, Param, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;
use rekindle_model::{PathMapper, PathVisitor, ResNet, map_with_paths, visit_with_paths};
use serde::{Deserialize, Serialize};

use crate::config::check::{
    End::{Closed, Open},
    in_range,
};
use crate::report::log::EpochRow;

/// The split name of the average's validation rows in the epoch log.
pub const SPLIT: &str = "valid-ema";

/// `[ema]`: timm's `ModelEmaV3` arguments; off while `decay` is 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EmaSection {
    /// `decay`: the weight the average keeps each step (timm's default 0.9999); 0: no average.
    pub decay: f64,
    /// `min_decay`: the warm-up's floor.
    pub min_decay: f64,
    /// `update_after_step`: steps that only copy the weights before averaging starts.
    pub update_after_step: usize,
    /// `use_warmup`: decay `1 - (1 + k / warmup_gamma)^-warmup_power` at averaging step k,
    /// capped by `decay`.
    pub warmup: bool,
    /// `warmup_gamma`.
    pub warmup_gamma: f64,
    /// `warmup_power`.
    pub warmup_power: f64,
}

impl Default for EmaSection {
    fn default() -> Self {
        Self {
            decay: 0.0,
            min_decay: 0.0,
            update_after_step: 0,
            warmup: false,
            warmup_gamma: 1.0,
            warmup_power: 2.0 / 3.0,
        }
    }
}

impl EmaSection {
    /// Whether the run keeps an average.
    pub fn active(&self) -> bool {
        self.decay > 0.0
    }

    /// Rejects a decay outside [0, 1) and warm-up constants that are not positive.
    pub fn validate(&self) -> Result<(), String> {
        in_range("ema.decay", self.decay, Closed(0.0), Open(1.0))?;
        in_range("ema.min_decay", self.min_decay, Closed(0.0), Open(1.0))?;
        in_range(
            "ema.warmup_gamma",
            self.warmup_gamma,
            Open(0.0),
            Open(f64::INFINITY),
        )?;
        in_range(
            "ema.warmup_power",
            self.warmup_power,
            Open(0.0),
            Open(f64::INFINITY),
        )
    }

    /// timm's `get_decay(step)` for the `step`-th optimiser step of the run (1-based, as timm's
    /// `num_updates`): 0 (a copy) up to `update_after_step + 1`, then `decay` or the warm-up's.
    pub fn decay_at(&self, step: usize) -> f64 {
        let k = step.saturating_sub(self.update_after_step + 1);
        if k == 0 {
            return 0.0;
        }
        if !self.warmup {
            return self.decay;
        }
        let d = 1.0 - (1.0 + k as f64 / self.warmup_gamma).powf(-self.warmup_power);
        d.min(self.decay).max(self.min_decay)
    }
}

/// An independent copy of `net` to average into: its own parameter ids (so the optimiser never
/// takes it for the network it trains), its own running statistics, nothing tracked.
pub fn fresh_copy(net: &ResNet) -> ResNet {
    let device = net.conv1.weight.val().device();
    let copy = net
        .config()
        .init(&device)
        .load_record(net.clone().into_record());
    map_with_paths(copy, &mut Untracked)
}

/// Gives every parameter a new id and drops its gradient tracking.
struct Untracked;

impl PathMapper for Untracked {
    fn map<const D: usize>(&mut self, _: &[String], param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        Param::initialized(ParamId::new(), param.val().detach())
    }
}

/// `ema` moved towards `net` by one step: `e + (1 - decay) * (w - e)` for every float parameter
/// and running statistic, as `torch.lerp` (timm's `_foreach_lerp_`) computes it.
pub fn update(ema: ResNet, net: &ResNet, decay: f64) -> ResNet {
    // The step's new BatchNorm statistics wait, per thread, for the next forward; `valid` folds
    // them in, so that the average moves towards this step's statistics, as timm's does.
    let _ = net.valid();
    let mut weights = Weights::default();
    visit_with_paths(net, &mut weights);
    map_with_paths(
        ema,
        &mut Lerp {
            weights: weights.0,
            weight: 1.0 - decay,
        },
    )
}

/// Every float parameter and running statistic, flattened, by path.
#[derive(Default)]
struct Weights(HashMap<String, Tensor<1>>);

impl PathVisitor for Weights {
    fn visit<const D: usize>(&mut self, path: &[String], param: &Param<Tensor<D>>) {
        let n = param.shape().num_elements();
        self.0
            .insert(path.join("."), param.val().detach().reshape([n]));
    }
}

/// Interpolates towards the trained weights.
struct Lerp {
    weights: HashMap<String, Tensor<1>>,
    weight: f64,
}

impl PathMapper for Lerp {
    fn map<const D: usize>(
        &mut self,
        path: &[String],
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        // Both networks come from one config, so every path is in both.
        let Some(w) = self.weights.remove(&path.join(".")) else {
            return param;
        };
        let weight = self.weight;
        param.map(|e| {
            // With several devices each worker holds its own clone: meet on the average's.
            let w = w.reshape(e.shape()).to_device(&e.device());
            // torch.lerp's two forms: from the far end when weight >= 0.5, so that a weight of
            // 1 (timm's first step, a copy) gives w exactly.
            let out = if weight >= 0.5 {
                w.clone() - (w - e).mul_scalar(1.0 - weight)
            } else {
                e.clone() + (w - e).mul_scalar(weight)
            };
            out.detach()
        })
    }
}

/// The average's validation of one epoch, summed over batches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Sum of the per-image cross-entropies.
    pub loss: f64,
    /// Images whose label is the arg-max (Burn's `AccuracyMetric`); a NaN logit is a miss.
    pub top1: usize,
    /// Images whose label is among the `k` highest logits.
    pub topk: usize,
    /// Images seen.
    pub images: usize,
}

impl Tally {
    /// Adds a batch: the average's `logits` for images labelled `targets`, top-`k`.
    pub fn add(&mut self, logits: Tensor<2>, targets: Tensor<1, Int>, k: usize) {
        let [n, c] = logits.dims();
        let targets = targets.reshape([n, 1]);
        let hits = logits.clone().argmax(1).equal(targets.clone());
        let own = logits.clone().gather(1, targets.clone());
        // NaN compares below nothing: its rank would be 0, a hit, unless counted out.
        let nan = own.clone().is_nan();
        // Classes scoring above the label's: 0 for a top-1 hit, under k for a top-k hit.
        let above = logits
            .clone()
            .greater(own.repeat_dim(1, c))
            .int()
            .sum_dim(1);
        let loss = -log_softmax(logits, 1)
            .gather(1, targets)
            .sum()
            .into_scalar::<f32>();
        let host = |t: Tensor<2, Int>| -> Vec<i64> {
            t.into_data()
                .convert::<i64>()
                .try_into_vec()
                .unwrap_or_default()
        };
        let rank = host(above.mask_fill(nan.clone(), c as i64));
        let top1 = host(hits.bool_and(nan.bool_not()).int());
        self.loss += f64::from(loss);
        self.top1 += top1.iter().filter(|&&h| h == 1).count();
        self.topk += rank.iter().filter(|&&r| (r as usize) < k).count();
        self.images += n;
    }

    /// The epoch-log row of the tally for `epoch`.
    pub fn row(&self, epoch: usize, seconds: f64) -> EpochRow {
        let n = self.images.max(1) as f64;
        EpochRow {
            epoch,
            split: SPLIT.into(),
            loss: self.loss / n,
            accuracy: 100.0 * self.top1 as f64 / n,
            top5: 100.0 * self.topk as f64 / n,
            lr: f64::NAN,
            images_per_sec: self.images as f64 / seconds.max(1e-9),
            seconds,
        }
    }
}

/// The average's settings and validation results, shared by the model's clones (which tally),
/// the renderer (which logs each epoch's row) and the checkpointing (which keeps the best).
#[derive(Debug, Default)]
pub struct EmaWatch {
    /// The `[ema]` section.
    pub section: EmaSection,
    /// The validation in progress.
    tally: Mutex<Tally>,
    /// Validation accuracy of the average per epoch, earlier launches included.
    history: Mutex<Vec<(usize, f64)>>,
}

impl EmaWatch {
    /// A watch for `section`, knowing the average's accuracies of the epochs already logged.
    pub fn new(section: EmaSection, logged: &[EpochRow]) -> Arc<Self> {
        let history = logged
            .iter()
            .filter(|r| r.split == SPLIT)
            .map(|r| (r.epoch, r.accuracy))
            .collect();
        Arc::new(Self {
            section,
            tally: Mutex::default(),
            history: Mutex::new(history),
        })
    }

    /// Adds a validation batch (see [`Tally::add`]).
    pub fn add(&self, logits: Tensor<2>, targets: Tensor<1, Int>, k: usize) {
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        t.add(logits, targets, k);
    }

    /// The finished validation's tally, leaving an empty one for the next.
    pub fn take(&self) -> Tally {
        std::mem::take(&mut *self.tally.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records the average's accuracy of `epoch`.
    pub fn record(&self, epoch: usize, accuracy: f64) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.retain(|(e, _)| *e != epoch);
        h.push((epoch, accuracy));
    }

    /// The epoch of the average's best validation accuracy so far (the first of ties).
    pub fn best(&self) -> Option<usize> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.iter()
            .fold(None, |best: Option<(usize, f64)>, &(e, a)| match best {
                Some((_, b)) if b >= a => best,
                _ => Some((e, a)),
            })
            .map(|(e, _)| e)
    }
}

/// Keeps the checkpoint of the average's best epoch, as Burn's `MetricCheckpointingStrategy`
/// keeps the raw weights' (composed with it, a checkpoint goes when neither needs it).
pub struct BestEma {
    /// The watch holding the accuracies.
    pub watch: Arc<EmaWatch>,
    /// The best epoch kept so far.
    pub current: Option<usize>,
}

impl CheckpointingStrategy for BestEma {
    fn checkpointing(&mut self, epoch: usize, _: &EventStoreClient) -> Vec<CheckpointingAction> {
        self.actions(epoch)
    }
}

impl BestEma {
    /// Save at the best epoch, delete the one it replaces.
    fn actions(&mut self, epoch: usize) -> Vec<CheckpointingAction> {
        let Some(best) = self.watch.best() else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let Some(current) = self.current.filter(|&c| c != best) {
            actions.push(CheckpointingAction::Delete(current));
        }
        if best == epoch {
            actions.push(CheckpointingAction::Save);
        }
        self.current = Some(best);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use rekindle_model::{Arch, HeadConfig, ResNetConfig};

    #[test]
    fn decay_follows_timm_get_decay() {
        let s = EmaSection {
            decay: 0.999,
            ..Default::default()
        };
        // timm: step 1 copies, then the fixed decay.
        assert_eq!(
            (s.decay_at(0), s.decay_at(1), s.decay_at(2)),
            (0.0, 0.0, 0.999)
        );
        let w = EmaSection {
            warmup: true,
            update_after_step: 2,
            min_decay: 0.1,
            ..s.clone()
        };
        assert_eq!(w.decay_at(3), 0.0);
        // k = step - update_after_step - 1 = 1: 1 - 2^(-2/3), above the floor of 0.1.
        assert!((w.decay_at(4) - (1.0 - 2f64.powf(-2.0 / 3.0))).abs() < 1e-15);
        assert_eq!(w.decay_at(1_000_000_000), 0.999);
        let floor = EmaSection {
            min_decay: 0.5,
            ..w
        };
        assert_eq!(floor.decay_at(4), 0.5);
    }

    /// Every weight and running statistic of the average follows e <- e + (1 - d)(w - e) over
    /// several steps with changing weights and decays, computed here in f64.
    #[test]
    fn average_equals_the_recurrence() {
        let device = Device::flex();
        let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3));
        let mut net = config.init(&device);
        let mut ema = fresh_copy(&net);
        let mut want = Weights::default();
        visit_with_paths(&ema, &mut want);
        let mut want: HashMap<String, Vec<f64>> =
            want.0.into_iter().map(|(k, t)| (k, to_f64(t))).collect();
        for (step, decay) in [(1, 0.0), (2, 0.9), (3, 0.5), (4, 0.99)] {
            net = map_with_paths(net, &mut Shift(step as f32));
            let mut w = Weights::default();
            visit_with_paths(&net, &mut w);
            for (k, t) in w.0 {
                let e = want.get_mut(&k).expect("same paths");
                for (e, w) in e.iter_mut().zip(to_f64(t)) {
                    *e += (1.0 - decay) * (w - *e);
                }
            }
            ema = update(ema, &net, decay);
        }
        let mut got = Weights::default();
        visit_with_paths(&ema, &mut got);
        assert_eq!(got.0.len(), want.len());
        assert!(got.0.keys().any(|k| k.ends_with("running_var")));
        for (k, t) in got.0 {
            let worst = to_f64(t)
                .iter()
                .zip(&want[&k])
                .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
                .fold(0.0, f64::max);
            assert!(worst < 1e-6, "{k}: off by {worst}");
        }
    }

    #[test]
    fn the_copy_has_its_own_ids_and_running_statistics() {
        let device = Device::flex();
        let net = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(2)).init(&device);
        let ema = fresh_copy(&net);
        assert_ne!(net.conv1.weight.id, ema.conv1.weight.id);
        // Moving the copy's statistics must leave the network's alone (clones share them).
        let before = to_f64(net.bn1.running_var.value());
        let moved = map_with_paths(fresh_copy(&net), &mut Shift(1.0));
        let _ = update(ema, &moved, 0.0);
        assert_eq!(to_f64(net.bn1.running_var.value()), before);
    }

    #[test]
    fn tally_counts_top1_topk_and_cross_entropy() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![2.0f32, 1.0, 0.0, 0.0, 1.0, 2.0, 0.5, 0.0, 1.0], [3, 3]),
            &device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0, 0], [3]), &device);
        let mut t = Tally::default();
        t.add(logits, targets, 2);
        assert_eq!((t.top1, t.topk, t.images), (1, 2, 3));
        let ce = |l: [f64; 3], y: usize| l.iter().map(|v| v.exp()).sum::<f64>().ln() - l[y];
        let want = ce([2.0, 1.0, 0.0], 0) + ce([0.0, 1.0, 2.0], 0) + ce([0.5, 0.0, 1.0], 0);
        assert!((t.loss - want).abs() < 1e-5, "{} vs {want}", t.loss);
        let row = t.row(4, 1.0);
        assert_eq!((row.epoch, row.split.as_str()), (4, SPLIT));
        assert!((row.accuracy - 100.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn tally_counts_a_nan_logit_as_a_miss() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![f32::NAN, 1.0, 0.0, 3.0, 1.0, 2.0], [2, 3]),
            &device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0], [2]), &device);
        let mut t = Tally::default();
        t.add(logits, targets, 3);
        assert_eq!((t.top1, t.topk, t.images), (1, 1, 2));
    }

    /// A training step leaves its new statistics pending until the next forward: the average
    /// must take them now, as timm's takes the buffers right after the step.
    #[test]
    fn the_average_takes_this_steps_running_statistics() {
        let device = Device::flex().autodiff();
        let net = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(2)).init(&device);
        let ema = fresh_copy(&net);
        let x = Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device);
        let _ = net.forward(x);
        let ema = update(ema, &net, 0.0);
        let synced = net.valid();
        assert_eq!(
            to_f64(ema.bn1.running_mean.value()),
            to_f64(synced.bn1.running_mean.value())
        );
        assert_ne!(to_f64(ema.bn1.running_mean.value()), vec![0.0; 64]);
    }

    #[test]
    fn best_epoch_is_the_first_of_the_highest() {
        let logged = [EpochRow {
            epoch: 1,
            split: SPLIT.into(),
            accuracy: 50.0,
            ..Default::default()
        }];
        let w = EmaWatch::new(EmaSection::default(), &logged);
        w.record(2, 70.0);
        w.record(3, 70.0);
        assert_eq!(w.best(), Some(2));
        let mut keep = BestEma {
            watch: w.clone(),
            current: Some(1),
        };
        w.record(4, 80.0);
        assert_eq!(
            keep.actions(4),
            [CheckpointingAction::Delete(1), CheckpointingAction::Save]
        );
        assert_eq!(keep.actions(5), []);
    }

    /// Adds `s` to every weight and statistic, scaled by position, so steps differ.
    struct Shift(f32);

    impl PathMapper for Shift {
        fn map<const D: usize>(&mut self, _: &[String], p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let s = self.0;
            p.map(|t| {
                let noise = t.clone().cos().mul_scalar(0.01 * s);
                t + noise
            })
        }
    }

    fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        let v: Vec<f32> = t.into_data().try_into_vec().expect("f32");
        v.into_iter().map(f64::from).collect()
    }
}
