//! The optimiser of a run: Burn's SGD, Adam, AdamW, RMSprop and AdaGrad, configured with
//! `torch.optim`'s defaults and meaning (Burn's own defaults differ: SGD dampening 0.1, eps
//! 1e-5, RMSprop momentum 0.9, AdamW decay 1e-4), plus what Burn lacks: no weight decay for
//! biases and normalisation parameters, and clipping by the global gradient norm (in
//! `trainee.rs`; Burn clips each tensor's norm separately, `clip_grad_norm_` clips all
//! together).

use crate::config::check::{End, in_range, non_negative, positive};
use burn::grad_clipping::GradientClipping;
use burn::module::ParamGroup;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdaGradConfig, AdamState, AdaptiveMomentumState, ModuleOptimizer, Optimizer, RmsPropConfig,
    SgdConfig,
};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// torch.optim.SGD: momentum, dampening, nesterov; L2 weight decay.
    Sgd,
    /// torch.optim.Adam: betas, eps, amsgrad; L2 weight decay.
    Adam,
    /// torch.optim.AdamW: decoupled weight decay (default 0.01).
    Adamw,
    /// torch.optim.RMSprop: alpha, eps, momentum, centered; L2 weight decay.
    Rmsprop,
    /// torch.optim.Adagrad: lr_decay, eps (1e-10); L2 weight decay.
    Adagrad,
}

impl OptimizerKind {
    /// Every name a config may use.
    pub const NAMES: &str = "sgd, adam, adamw, rmsprop, adagrad";
}

/// `[optim]`: what a field left out means is torch.optim's default for `name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    /// The optimiser.
    pub name: OptimizerKind,
    /// sgd, rmsprop: momentum factor (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// sgd: dampening of the momentum (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// sgd: Nesterov momentum (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// adam, adamw: (beta1, beta2) (default [0.9, 0.999]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// adam, adamw, rmsprop, adagrad: denominator term (default 1e-8; adagrad 1e-10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// adam, adamw: the AMSGrad variant (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amsgrad: Option<bool>,
    /// rmsprop: smoothing of the squared gradient (default 0.99).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// rmsprop: normalise by the gradient's variance instead (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub centered: Option<bool>,
    /// adagrad: learning-rate decay per step (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_decay: Option<f64>,
    /// Weight decay: L2 added to the gradient, decoupled for adamw (default 0; adamw 0.01).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// No weight decay for biases and BatchNorm's gamma and beta (timm's `filter_bias_and_bn`).
    pub no_decay_bias_norm: bool,
    /// Scale all gradients together so their global L2 norm is at most this
    /// (`torch.nn.utils.clip_grad_norm_`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// Clamp every gradient element to [-v, v] (`clip_grad_value_`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad_value: Option<f64>,
    /// Clamp convolution and linear weights to [min, max] after every step (weight clipping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_clip: Option<[f64; 2]>,
}

impl OptimSection {
    /// This section for optimiser `name`: unchanged if it already names it, else `name` with
    /// torch.optim's defaults, keeping only what means the same for every optimiser (bias/norm
    /// decay exclusion and clipping). How `--optimizer` and a search switch optimisers without
    /// carrying, say, SGD's momentum over to AdamW.
    pub fn switched_to(&self, name: OptimizerKind) -> Self {
        if name == self.name {
            return self.clone();
        }
        Self {
            name,
            no_decay_bias_norm: self.no_decay_bias_norm,
            clip_grad_norm: self.clip_grad_norm,
            clip_grad_value: self.clip_grad_value,
            weight_clip: self.weight_clip,
            ..Default::default()
        }
    }
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            name: OptimizerKind::Sgd,
            momentum: None,
            dampening: None,
            nesterov: None,
            betas: None,
            eps: None,
            amsgrad: None,
            alpha: None,
            centered: None,
            lr_decay: None,
            weight_decay: None,
            no_decay_bias_norm: false,
            clip_grad_norm: None,
            clip_grad_value: None,
            weight_clip: None,
        }
    }
}

/// Parameters that `no_decay_bias_norm` exempts: biases and BatchNorm's affine parameters
/// (Burn names them `gamma` and `beta`).
pub const NO_DECAY_PATTERN: &str = r"(^|\.)(bias|gamma|beta)$";

impl OptimSection {
    /// The weight decay in effect.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay.unwrap_or(match self.name {
            OptimizerKind::Adamw => 1e-2,
            _ => 0.0,
        })
    }

    fn eps(&self) -> f64 {
        self.eps.unwrap_or(match self.name {
            OptimizerKind::Adagrad => 1e-10,
            _ => 1e-8,
        })
    }

    /// Rejects settings that are impossible or that do not apply to `name`.
    pub fn validate(&self) -> Result<(), String> {
        use OptimizerKind::*;
        let name = format!("{:?}", self.name).to_lowercase();
        let applies: [(&str, bool, &[OptimizerKind]); 9] = [
            ("momentum", self.momentum.is_some(), &[Sgd, Rmsprop]),
            ("dampening", self.dampening.is_some(), &[Sgd]),
            ("nesterov", self.nesterov.is_some(), &[Sgd]),
            ("betas", self.betas.is_some(), &[Adam, Adamw]),
            ("eps", self.eps.is_some(), &[Adam, Adamw, Rmsprop, Adagrad]),
            ("amsgrad", self.amsgrad.is_some(), &[Adam, Adamw]),
            ("alpha", self.alpha.is_some(), &[Rmsprop]),
            ("centered", self.centered.is_some(), &[Rmsprop]),
            ("lr_decay", self.lr_decay.is_some(), &[Adagrad]),
        ];
        for (field, set, kinds) in applies {
            if set && !kinds.contains(&self.name) {
                let names: Vec<String> = kinds
                    .iter()
                    .map(|k| format!("{k:?}").to_lowercase())
                    .collect();
                return Err(format!(
                    "optim.{field} does not apply to {name}; it is an option of {}",
                    names.join(", ")
                ));
            }
        }
        let fraction = |field: &str, v: Option<f64>, hi: End| {
            v.map_or(Ok(()), |x| in_range(field, x, End::Closed(0.0), hi))
        };
        fraction("optim.momentum", self.momentum, End::Open(1.0))?;
        fraction("optim.dampening", self.dampening, End::Closed(1.0))?;
        fraction("optim.alpha", self.alpha, End::Open(1.0))?;
        if let Some([b1, b2]) = self.betas {
            fraction("optim.betas[0]", Some(b1), End::Open(1.0))?;
            fraction("optim.betas[1]", Some(b2), End::Open(1.0))?;
        }
        if self.nesterov == Some(true)
            && (self.momentum.unwrap_or(0.0) <= 0.0 || self.dampening.unwrap_or(0.0) != 0.0)
        {
            return Err("optim.nesterov needs momentum > 0 and dampening 0 (as in \
                        torch.optim.SGD)"
                .into());
        }
        let optional = |check: fn(&str, f64) -> Result<(), String>, field, v: Option<f64>| {
            v.map_or(Ok(()), |x| check(field, x))
        };
        optional(non_negative, "optim.weight_decay", self.weight_decay)?;
        optional(non_negative, "optim.lr_decay", self.lr_decay)?;
        optional(positive, "optim.eps", self.eps)?;
        optional(positive, "optim.clip_grad_norm", self.clip_grad_norm)?;
        optional(positive, "optim.clip_grad_value", self.clip_grad_value)?;
        if let Some([lo, hi]) = self.weight_clip
            && !(lo.is_finite() && hi.is_finite() && lo < hi)
        {
            return Err(format!(
                "optim.weight_clip must be [min, max] with min < max, got [{lo}, {hi}]"
            ));
        }
        Ok(())
    }

    /// The run's optimiser: one Burn optimiser, plus a decay-free copy for biases and norms
    /// when `no_decay_bias_norm` is set (Burn's parameter groups). Value clipping is Burn's
    /// (element-wise, the same as PyTorch's); norm clipping happens in the train step.
    pub fn optimizer(&self) -> ModuleOptimizer {
        let eps = self.eps() as f32;
        let [b1, b2] = self.betas.unwrap_or([0.9, 0.999]);
        let l2 = |wd: f64| (wd > 0.0).then_some(WeightDecayConfig { penalty: wd as f32 });
        let amsgrad = self.amsgrad.unwrap_or(false);
        match self.name {
            OptimizerKind::Sgd => {
                let momentum = self.momentum.unwrap_or(0.0);
                self.assemble(|wd| {
                    SgdConfig::new()
                        .with_momentum((momentum > 0.0).then(|| MomentumConfig {
                            momentum,
                            dampening: self.dampening.unwrap_or(0.0),
                            nesterov: self.nesterov.unwrap_or(false),
                        }))
                        .with_weight_decay(l2(wd))
                        .build()
                })
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => self.assemble(|wd| Adam {
                betas: [b1, b2],
                eps: self.eps(),
                weight_decay: wd,
                decoupled: self.name == OptimizerKind::Adamw,
                amsgrad,
            }),
            OptimizerKind::Rmsprop => self.assemble(|wd| {
                RmsPropConfig::new()
                    .with_alpha(self.alpha.unwrap_or(0.99) as f32)
                    .with_momentum(self.momentum.unwrap_or(0.0) as f32)
                    .with_epsilon(eps)
                    .with_centered(self.centered.unwrap_or(false))
                    .with_weight_decay(l2(wd))
                    .build()
            }),
            OptimizerKind::Adagrad => self.assemble(|wd| {
                AdaGradConfig::new()
                    .with_lr_decay(self.lr_decay.unwrap_or(0.0))
                    .with_epsilon(eps)
                    .with_weight_decay(l2(wd))
                    .build()
            }),
        }
    }

    /// `make(weight_decay)` for every parameter, and `make(0)` for the no-decay group.
    fn assemble<O: Optimizer + 'static>(&self, make: impl Fn(f64) -> O) -> ModuleOptimizer {
        let clip = self
            .clip_grad_value
            .map(|v| GradientClipping::Value(v as f32));
        let mut optim = ModuleOptimizer::from(make(self.weight_decay()));
        if let Some(c) = clip.clone() {
            optim = optim.with_grad_clipping(c);
        }
        if self.no_decay_bias_norm && self.weight_decay() > 0.0 {
            let group = ParamGroup::from_regex(NO_DECAY_PATTERN)
                .expect("NO_DECAY_PATTERN is a valid regex");
            optim = optim.with_group(group, make(0.0), clip);
        }
        optim
    }
}

/// Adam and AdamW as `torch.optim` computes them. Burn's own compute the bias corrections
/// `1 - beta^t` in f32, where `1 - 0.999^t` loses ~1e-5 of its value to rounding in the first
/// steps; PyTorch computes them in f64. Same algorithm and the same state (Burn's
/// `AdamState`, so checkpoints keep their layout), with f64 scalars.
#[derive(Clone, Debug)]
pub struct Adam {
    /// (beta1, beta2).
    pub betas: [f64; 2],
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// AdamW: decay the weights directly instead of adding an L2 term to the gradient.
    pub decoupled: bool,
    /// Divide by the running maximum of the second moment.
    pub amsgrad: bool,
}

impl Optimizer for Adam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        mut tensor: Tensor<D>,
        mut grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let [b1, b2] = self.betas;
        if self.weight_decay > 0.0 {
            if self.decoupled {
                tensor = tensor.mul_scalar(1.0 - lr * self.weight_decay);
            } else {
                grad = grad + tensor.clone().mul_scalar(self.weight_decay);
            }
        }
        let square = grad.clone().square().mul_scalar(1.0 - b2);
        let grad = grad.mul_scalar(1.0 - b1);
        let s = match state {
            Some(AdamState { momentum: mut s }) => {
                s.moment_1 = s.moment_1.mul_scalar(b1) + grad;
                s.moment_2 = s.moment_2.mul_scalar(b2) + square;
                if self.amsgrad {
                    let max = s.max_moment_2.take().unwrap_or_else(|| s.moment_2.clone());
                    s.max_moment_2 = Some(max.max_pair(s.moment_2.clone()));
                }
                s.time += 1;
                s
            }
            None => {
                let mut s = AdaptiveMomentumState::new(1, grad, square);
                if self.amsgrad {
                    s.max_moment_2 = Some(s.moment_2.clone());
                }
                s
            }
        };
        let t = s.time as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let v = s.max_moment_2.as_ref().unwrap_or(&s.moment_2).clone();
        let denom = v.sqrt().div_scalar(bc2.sqrt()).add_scalar(self.eps);
        let update = s.moment_1.clone().div(denom).mul_scalar(lr / bc1);
        (tensor - update, Some(AdamState::new(s)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_of_another_optimiser_are_refused_by_name() {
        let c = OptimSection {
            name: OptimizerKind::Adam,
            momentum: Some(0.9),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("optim.momentum") && e.contains("adam") && e.contains("sgd"),
            "{e}"
        );
        for (c, word) in [
            (
                OptimSection {
                    momentum: Some(1.0),
                    ..Default::default()
                },
                "optim.momentum",
            ),
            (
                OptimSection {
                    nesterov: Some(true),
                    ..Default::default()
                },
                "nesterov",
            ),
            (
                OptimSection {
                    name: OptimizerKind::Adamw,
                    betas: Some([0.9, 1.0]),
                    ..Default::default()
                },
                "betas[1]",
            ),
            (
                OptimSection {
                    weight_clip: Some([0.5, -0.5]),
                    ..Default::default()
                },
                "weight_clip",
            ),
            (
                OptimSection {
                    clip_grad_norm: Some(0.0),
                    ..Default::default()
                },
                "clip_grad_norm",
            ),
        ] {
            let e = c.validate().unwrap_err();
            assert!(e.contains(word), "{word}: {e}");
        }
    }

    #[test]
    fn pytorch_defaults_where_burn_differs() {
        let adamw = OptimSection {
            name: OptimizerKind::Adamw,
            ..Default::default()
        };
        assert_eq!(adamw.weight_decay(), 0.01);
        assert_eq!(adamw.eps(), 1e-8);
        let adagrad = OptimSection {
            name: OptimizerKind::Adagrad,
            ..Default::default()
        };
        assert_eq!(adagrad.eps(), 1e-10);
        assert_eq!(OptimSection::default().weight_decay(), 0.0);
    }
}
