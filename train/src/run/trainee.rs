//! The network as Burn's learner sees it: a ResNet with a cross-entropy training step, and the
//! rules around each optimiser step that Burn's optimisers do not have: clipping by the global
//! gradient norm, pruning on schedule with pruned weights held at zero, weight clipping.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::{Bool, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use rekindle_model::{PathMapper, PathVisitor, ResNet, map_with_paths, visit_with_paths};

use crate::catalog::loss::{Loss, Targets};
use crate::catalog::prune::{self, PruneScope};
use crate::data::loader::Batch;
use crate::durable::fault;
use crate::run::ema::{self, EmaWatch};

/// What happens around every optimiser step, shared by the clones Burn makes of the model.
#[derive(Default)]
pub struct StepRules {
    /// Batches whose gradients are summed per step; the loss is divided by it so the step
    /// sees the mean over the effective batch, as one large batch would.
    pub accumulation: usize,
    /// `clip_grad_norm_`: all gradients scaled together to this global L2 norm at most.
    pub clip_grad_norm: Option<f64>,
    /// Convolution and linear weights clamped to [min, max] after each step.
    pub weight_clip: Option<(f64, f64)>,
    /// Optimiser step (counted over the whole run) -> sparsity to prune to before it.
    pub prune_at: HashMap<usize, f64>,
    /// Global or per-layer pruning.
    pub prune_scope: Option<PruneScope>,
    /// Optimiser steps taken in the whole run (set from the checkpoint on resume).
    pub step: AtomicUsize,
    /// Zero masks of the prunable weights, made at the first step of a launch and after each
    /// pruning (between them only pruned weights are zero, so the masks do not change).
    pub masks: Mutex<Option<ZeroMasks>>,
    /// The training loss (validation reports plain cross-entropy, comparable across recipes).
    pub loss: Loss,
    /// The weight average's settings and validation, when the run keeps one.
    pub ema: Option<Arc<EmaWatch>>,
}

/// Per prunable weight, flattened: true where the weight is pruned.
pub type ZeroMasks = HashMap<ParamId, Tensor<1, Bool>>;

impl fmt::Debug for StepRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepRules")
            .field("accumulation", &self.accumulation)
            .field("clip_grad_norm", &self.clip_grad_norm)
            .field("weight_clip", &self.weight_clip)
            .field("prune_scope", &self.prune_scope)
            .field("loss", &self.loss)
            .finish()
    }
}

/// A ResNet being fine-tuned. A wrapper because Burn's step traits and the model live in
/// other crates.
#[derive(Module, Debug)]
pub struct Trainee {
    /// The network; parameter paths start with `net.`.
    pub net: ResNet,
    /// The exponential moving average of `net`'s weights, when the run keeps one.
    pub ema: Option<ResNet>,
    /// The step rules (not parameters).
    #[module(skip)]
    pub rules: Arc<StepRules>,
}

impl Trainee {
    /// A network trained with plain optimiser steps.
    pub fn new(net: ResNet) -> Self {
        Self {
            net,
            ema: None,
            rules: Arc::new(StepRules {
                accumulation: 1,
                ..Default::default()
            }),
        }
    }

    /// Logits, the run's training loss (on the mixed targets when the batch is mixed) and
    /// targets for one batch.
    pub fn forward_training(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.net.forward(batch.images);
        let targets = match batch.mixed {
            Some(p) => Targets::Soft(p),
            None => Targets::Hard(batch.targets.clone()),
        };
        let loss = self.rules.loss.forward(logits.clone(), &targets);
        ClassificationOutput::new(loss, logits, batch.targets)
    }

    /// Logits, plain cross-entropy and targets for one batch.
    pub fn forward_classification(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.net.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }

    /// Pruning due at this step, then the zero masks of the prunable weights (pruned weights
    /// are exactly zero), or none when the run does not prune.
    fn before_step(self) -> (Self, Option<ZeroMasks>) {
        let step = self.rules.step.fetch_add(1, Ordering::SeqCst);
        fault::point("step", Some(step + 1));
        let Some(scope) = self.rules.prune_scope else {
            return (self, None);
        };
        let mut this = self;
        let pruned = match this.rules.prune_at.get(&step) {
            Some(&s) => {
                this.net = prune::prune(this.net, s, scope);
                true
            }
            None => false,
        };
        // A poisoned lock only means another step panicked; the masks are still whole.
        let mut cached = this.rules.masks.lock().unwrap_or_else(|e| e.into_inner());
        if pruned || cached.is_none() {
            let mut masks = Masks::default();
            visit_with_paths(&this, &mut masks);
            *cached = Some(masks.found);
        }
        let masks = cached.clone();
        drop(cached);
        (this, masks)
    }

    /// A network trained with plain optimiser steps and, when `ema`, a weight average starting
    /// from its weights.
    pub fn with_average(net: ResNet, ema: bool) -> Self {
        let ema = ema.then(|| ema::fresh_copy(&net));
        Self {
            ema,
            ..Self::new(net)
        }
    }

    /// Pruned weights back to zero, then weight clipping, then the average's step.
    fn after_step(self, masks: Option<ZeroMasks>) -> Self {
        self.constrain(masks).average()
    }

    /// The weight average moved towards the network, with timm's decay for this step.
    fn average(mut self) -> Self {
        if let (Some(ema), Some(watch)) = (self.ema.take(), &self.rules.ema) {
            // `before_step` counted this step: the count is timm's 1-based `num_updates`.
            let decay = watch
                .section
                .decay_at(self.rules.step.load(Ordering::SeqCst));
            self.ema = Some(ema::update(ema, &self.net, decay));
        }
        self
    }

    /// Pruned weights back to zero, then weight clipping.
    fn constrain(self, masks: Option<ZeroMasks>) -> Self {
        if masks.is_none() && self.rules.weight_clip.is_none() {
            return self;
        }
        let clip = self.rules.weight_clip;
        map_with_paths(
            self,
            &mut Constrain {
                masks: masks.unwrap_or_default(),
                clip,
            },
        )
    }
}

/// Zero masks of the prunable weights, flattened.
#[derive(Default)]
struct Masks {
    found: ZeroMasks,
}

impl PathVisitor for Masks {
    fn visit<const D: usize>(&mut self, path: &[String], param: &Param<Tensor<D>>) {
        if prune::prunable(path) {
            let n = param.shape().num_elements();
            self.found
                .insert(param.id, param.val().detach().equal_elem(0.0).reshape([n]));
        }
    }
}

/// Applies the masks and the weight clamp.
struct Constrain {
    masks: ZeroMasks,
    clip: Option<(f64, f64)>,
}

impl PathMapper for Constrain {
    fn map<const D: usize>(
        &mut self,
        path: &[String],
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        if !prune::prunable(path) {
            return param;
        }
        let mask = self.masks.remove(&param.id);
        let clip = self.clip;
        param.map(|t| {
            let tracked = t.is_require_grad();
            let mut out = t.detach();
            if let Some(m) = mask {
                let shape = out.shape();
                out = out.mask_fill(m.reshape(shape), 0.0);
            }
            if let Some((lo, hi)) = clip {
                out = out.clamp(lo, hi);
            }
            // A new leaf: the result of an op cannot be marked as tracked.
            if tracked {
                out.detach().require_grad()
            } else {
                out
            }
        })
    }
}

/// Sums the squares of every gradient (first pass), or scales every gradient (second pass).
struct GlobalNorm<'a> {
    grads: &'a mut GradientsParams,
    sum: Option<Tensor<1>>,
    scale: Option<f64>,
}

impl ModuleVisitor for GlobalNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match self.scale {
            None => {
                if let Some(g) = self.grads.get::<D>(param.id) {
                    let sq = g.square().sum();
                    self.sum = Some(match self.sum.take() {
                        Some(s) => s + sq,
                        None => sq,
                    });
                }
            }
            Some(c) => {
                if let Some(g) = self.grads.remove::<D>(param.id) {
                    self.grads.register(param.id, g.mul_scalar(c));
                }
            }
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_`: the total norm over all gradients, and every gradient
/// times `max_norm / (total + 1e-6)` when that is below 1. Returns the total norm.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut pass = GlobalNorm {
        grads,
        sum: None,
        scale: None,
    };
    module.visit(&mut pass);
    let Some(sum) = pass.sum.take() else {
        return 0.0;
    };
    let total = f64::from(sum.into_scalar::<f32>()).sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        pass.scale = Some(coef);
        module.visit(&mut pass);
    }
    total
}

impl TrainStep for Trainee {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_training(batch);
        let k = self.rules.accumulation.max(1);
        let grads = if k > 1 {
            item.loss.clone().div_scalar(k as f64).backward()
        } else {
            item.loss.backward()
        };
        TrainOutput::new(self, grads, item)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        mut grads: GradientsParams,
    ) -> Self {
        let (this, masks) = self.before_step();
        if let Some(max) = this.rules.clip_grad_norm {
            clip_grad_norm(&this, &mut grads, max);
        }
        optim.step(lr, this, grads).after_step(masks)
    }

    fn optimize_multi(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: MultiGradientsParams,
    ) -> Self {
        // Global-norm clipping across devices is refused by the config check.
        let (this, masks) = self.before_step();
        optim.step_multi(lr, this, grads).after_step(masks)
    }
}

impl InferenceStep for Trainee {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> ClassificationOutput {
        if let (Some(ema), Some(watch)) = (&self.ema, &self.rules.ema) {
            let logits = ema.forward(batch.images.clone());
            let k = logits.dims()[1].min(5);
            watch.add(logits, batch.targets.clone(), k);
        }
        self.forward_classification(batch)
    }
}

impl Trainee {
    /// One line for the run log: architecture, classes, learnable parameters.
    pub fn describe(&self) -> String {
        let c = self.net.config();
        format!(
            "{} with {} classes ({} learnable parameters)",
            c.arch,
            c.head.num_classes,
            self.net.num_learnable_params()
        )
    }
}
