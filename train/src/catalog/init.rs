//! Initialisation strategies for the new head, the whole network or parameters matching a
//! regex, with `torch.nn.init`'s formulas (fans counted as PyTorch counts them, whatever Burn's
//! layout). Burn's `Initializer` draws the values; truncated normal, which Burn lacks, is drawn
//! here.

use crate::config::check::positive;
use burn::nn::Initializer;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use rand::rngs::StdRng;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// How weights are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InitScheme {
    /// PyTorch's own default for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Pytorch,
    /// All zeros.
    Zeros,
    /// All `value`.
    Constant,
    /// U(a, b) (defaults 0, 1).
    Uniform,
    /// N(mean, std) (defaults 0, 1).
    Normal,
    /// N(mean, std) redrawn outside [a, b] (defaults -2, 2; `trunc_normal_`).
    TruncNormal,
    /// Glorot: U(-g sqrt(6 / (fan_in + fan_out)), ..).
    XavierUniform,
    /// Glorot: N(0, g sqrt(2 / (fan_in + fan_out))).
    XavierNormal,
    /// He: U(-g sqrt(3 / fan), ..), g from `nonlinearity`.
    KaimingUniform,
    /// He: N(0, g / sqrt(fan)).
    KaimingNormal,
    /// A (semi-)orthogonal matrix times `gain`.
    Orthogonal,
}

impl InitScheme {
    /// Every name a config may use.
    pub const NAMES: &str = "pytorch, zeros, constant, uniform, normal, trunc-normal, \
                             xavier-uniform, xavier-normal, kaiming-uniform, kaiming-normal, \
                             orthogonal";
}

/// Which parameters are (re-)initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InitScope {
    /// The new classifier head only; the pretrained backbone stays as loaded.
    Head,
    /// Every layer: training from scratch with this scheme.
    All,
    /// Parameters whose path (e.g. `layer4.1.Basic.conv2.weight`) matches `pattern`.
    Matching,
}

/// The bias policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BiasInit {
    /// Biases start at zero.
    Zeros,
    /// The layer's default (PyTorch: U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    Default,
}

/// Which fan Kaiming uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FanMode {
    /// Preserves the forward pass's variance.
    FanIn,
    /// Preserves the backward pass's variance.
    FanOut,
}

/// The activation after the layer, for `torch.nn.init.calculate_gain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Nonlinearity {
    /// Gain 1.
    Linear,
    /// Gain 1.
    Sigmoid,
    /// Gain 5/3.
    Tanh,
    /// Gain sqrt(2).
    Relu,
    /// Gain sqrt(2 / (1 + negative_slope^2)).
    LeakyRelu,
    /// Gain 3/4.
    Selu,
}

/// `[init]`: how the parameters in `scope` start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct InitSection {
    /// The scheme for convolution and linear weights.
    pub scheme: InitScheme,
    /// Which parameters.
    pub scope: InitScope,
    /// The regex for `scope = "matching"`.
    pub pattern: String,
    /// Biases of re-initialised layers.
    pub bias: BiasInit,
    /// constant: the value.
    pub value: f64,
    /// uniform, trunc-normal: lower bound (defaults 0 and -2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    /// uniform, trunc-normal: upper bound (defaults 1 and 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    /// normal, trunc-normal: mean.
    pub mean: f64,
    /// normal, trunc-normal: standard deviation.
    pub std: f64,
    /// xavier, orthogonal: the gain (default 1; kaiming takes it from `nonlinearity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain: Option<f64>,
    /// kaiming: fan-in or fan-out.
    pub mode: FanMode,
    /// kaiming: the activation that follows.
    pub nonlinearity: Nonlinearity,
    /// kaiming with leaky-relu: the negative slope.
    pub negative_slope: f64,
}

impl Default for InitSection {
    fn default() -> Self {
        Self {
            scheme: InitScheme::Pytorch,
            scope: InitScope::Head,
            pattern: String::new(),
            bias: BiasInit::Default,
            value: 0.0,
            a: None,
            b: None,
            mean: 0.0,
            std: 1.0,
            gain: None,
            mode: FanMode::FanIn,
            nonlinearity: Nonlinearity::Relu,
            negative_slope: 0.01,
        }
    }
}

impl InitSection {
    /// `torch.nn.init.calculate_gain` for `nonlinearity`.
    pub fn kaiming_gain(&self) -> f64 {
        match self.nonlinearity {
            Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
            Nonlinearity::Tanh => 5.0 / 3.0,
            Nonlinearity::Relu => 2f64.sqrt(),
            Nonlinearity::LeakyRelu => (2.0 / (1.0 + self.negative_slope.powi(2))).sqrt(),
            Nonlinearity::Selu => 0.75,
        }
    }

    /// The bounds of uniform / trunc-normal.
    pub fn bounds(&self) -> (f64, f64) {
        match self.scheme {
            InitScheme::TruncNormal => (self.a.unwrap_or(-2.0), self.b.unwrap_or(2.0)),
            _ => (self.a.unwrap_or(0.0), self.b.unwrap_or(1.0)),
        }
    }

    /// Rejects impossible settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.scope == InitScope::Matching {
            if self.pattern.is_empty() {
                return Err(
                    "init.scope = \"matching\" needs init.pattern (a regex over \
                            parameter paths such as layer4.1.Basic.conv2.weight)"
                        .into(),
                );
            }
            Regex::new(&self.pattern)
                .map_err(|e| format!("init.pattern `{}` is not a regex: {e}", self.pattern))?;
        } else if !self.pattern.is_empty() {
            return Err("init.pattern is only used with scope = \"matching\"".into());
        }
        let (a, b) = self.bounds();
        if (self.a.is_some() || self.b.is_some())
            && !matches!(self.scheme, InitScheme::Uniform | InitScheme::TruncNormal)
        {
            return Err("init.a and init.b apply to uniform and trunc-normal only".into());
        }
        if !(a.is_finite() && b.is_finite() && a < b) {
            return Err(format!("init: need a < b, got a = {a}, b = {b}"));
        }
        positive("init.std", self.std)?;
        if self.scheme == InitScheme::TruncNormal && !(a <= self.mean && self.mean <= b) {
            return Err(format!(
                "init.mean {} is outside trunc-normal's [a, b] = [{a}, {b}]",
                self.mean
            ));
        }
        if let Some(g) = self.gain {
            positive("init.gain", g)?;
            if !matches!(
                self.scheme,
                InitScheme::XavierUniform | InitScheme::XavierNormal | InitScheme::Orthogonal
            ) {
                return Err(
                    "init.gain applies to xavier and orthogonal; kaiming takes its \
                            gain from init.nonlinearity"
                        .into(),
                );
            }
        }
        if !self.value.is_finite() || !self.mean.is_finite() {
            return Err("init.value and init.mean must be finite".into());
        }
        Ok(())
    }

    /// Whether this is what a fresh head already has (nothing to do).
    pub fn is_fresh_head_default(&self) -> bool {
        self.scheme == InitScheme::Pytorch
            && self.scope == InitScope::Head
            && self.bias == BiasInit::Default
    }

    /// Draws one weight of `shape` with fans (PyTorch's) `fan_in`, `fan_out`.
    pub(crate) fn draw<const D: usize>(
        &self,
        shape: [usize; D],
        fan_in: usize,
        fan_out: usize,
        rng: &mut StdRng,
        device: &burn::tensor::Device,
    ) -> Tensor<D> {
        let kaiming_fan_out = self.mode == FanMode::FanOut;
        let gain = self.gain.unwrap_or(1.0);
        let init = match self.scheme {
            InitScheme::Pytorch => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                Initializer::Uniform {
                    min: -bound,
                    max: bound,
                }
            }
            InitScheme::Zeros => Initializer::Zeros,
            InitScheme::Constant => Initializer::Constant { value: self.value },
            InitScheme::Uniform => {
                let (min, max) = self.bounds();
                Initializer::Uniform { min, max }
            }
            InitScheme::Normal => Initializer::Normal {
                mean: self.mean,
                std: self.std,
            },
            InitScheme::TruncNormal => {
                let (a, b) = self.bounds();
                let values = trunc_normal(shape.iter().product(), self.mean, self.std, a, b, rng);
                return Tensor::from_data(TensorData::new(values, shape), device);
            }
            InitScheme::XavierUniform => Initializer::XavierUniform { gain },
            InitScheme::XavierNormal => Initializer::XavierNormal { gain },
            InitScheme::KaimingUniform => Initializer::KaimingUniform {
                gain: self.kaiming_gain(),
                fan_out_only: kaiming_fan_out,
            },
            InitScheme::KaimingNormal => Initializer::KaimingNormal {
                gain: self.kaiming_gain(),
                fan_out_only: kaiming_fan_out,
            },
            InitScheme::Orthogonal => Initializer::Orthogonal { gain },
        };
        init.init_with::<D, _>(shape, Some(fan_in), Some(fan_out), device)
            .val()
    }
}

/// `n` samples of N(mean, std) restricted to [a, b], by rejection (the acceptance rate is
/// high for the usual bounds of two standard deviations).
pub fn trunc_normal(n: usize, mean: f64, std: f64, a: f64, b: f64, rng: &mut StdRng) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // Box-Muller: two independent standard normals per pair of uniforms.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        for z in [
            r * (std::f64::consts::TAU * u2).cos(),
            r * (std::f64::consts::TAU * u2).sin(),
        ] {
            let x = mean + std * z;
            if (a..=b).contains(&x) && out.len() < n {
                out.push(x as f32);
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::Device;
    use rand::SeedableRng;

    /// A tensor's values, widened for statistics.
    pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    fn mean_std(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    }

    /// Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): enough for a 2% check.
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.3275911 * x.abs());
        let y = 1.0
            - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                + 0.254829592)
                * t
                * (-x * x).exp();
        y.copysign(x)
    }

    /// Each scheme's sample mean and std on a large conv layer (256 x 256 x 3 x 3, 590k
    /// weights) and a large linear layer, against torch.nn.init's formula.
    #[test]
    fn every_scheme_matches_its_formula_within_2_percent() {
        let device = Device::flex();
        let mut rng = StdRng::seed_from_u64(1);
        let (fi_c, fo_c) = (256 * 9, 512 * 9);
        let (fi_l, fo_l) = (1024, 768);
        let phi = |x: f64| (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = |x: f64| 0.5 * (1.0 + erf(x / 2f64.sqrt()));
        for (scheme, extra) in [
            (InitScheme::Pytorch, ""),
            (InitScheme::Uniform, "a"),
            (InitScheme::Normal, "n"),
            (InitScheme::TruncNormal, ""),
            (InitScheme::TruncNormal, "tight"),
            (InitScheme::XavierUniform, ""),
            (InitScheme::XavierNormal, "gain"),
            (InitScheme::KaimingUniform, ""),
            (InitScheme::KaimingNormal, "fan-out"),
            (InitScheme::KaimingNormal, "leaky"),
            (InitScheme::Constant, ""),
        ] {
            let mut c = InitSection {
                scheme,
                ..Default::default()
            };
            match extra {
                "a" => (c.a, c.b) = (Some(-0.3), Some(0.1)),
                "n" => (c.mean, c.std) = (0.5, 0.02),
                "tight" => (c.a, c.b, c.std) = (Some(-0.03), Some(0.01), 0.02),
                "gain" => c.gain = Some(1.7),
                "fan-out" => c.mode = FanMode::FanOut,
                "leaky" => c.nonlinearity = Nonlinearity::LeakyRelu,
                _ => {}
            }
            if scheme == InitScheme::Constant {
                c.value = 0.25;
            }
            c.validate().unwrap();
            for (shape, fi, fo) in [
                (vec![512, 256, 3, 3], fi_c, fo_c),
                (vec![fi_l, fo_l], fi_l, fo_l),
            ] {
                let v = if shape.len() == 4 {
                    values(c.draw([512, 256, 3, 3], fi, fo, &mut rng, &device))
                } else {
                    values(c.draw([fi_l, fo_l], fi, fo, &mut rng, &device))
                };
                let fan = if c.mode == FanMode::FanOut { fo } else { fi } as f64;
                let (want_mean, want_std) = match scheme {
                    InitScheme::Pytorch => (0.0, 1.0 / (fi as f64).sqrt() / 3f64.sqrt()),
                    InitScheme::Uniform => {
                        let (a, b) = c.bounds();
                        ((a + b) / 2.0, (b - a) / 12f64.sqrt())
                    }
                    InitScheme::Normal => (c.mean, c.std),
                    InitScheme::TruncNormal => {
                        let (a, b) = c.bounds();
                        let (al, be) = ((a - c.mean) / c.std, (b - c.mean) / c.std);
                        let z = cdf(be) - cdf(al);
                        let m = c.mean + c.std * (phi(al) - phi(be)) / z;
                        let var = c.std.powi(2)
                            * (1.0 + (al * phi(al) - be * phi(be)) / z
                                - ((phi(al) - phi(be)) / z).powi(2));
                        assert!(
                            v.iter().all(|x| *x >= a - 1e-7 && *x <= b + 1e-7),
                            "trunc-normal left [{a}, {b}]"
                        );
                        (m, var.sqrt())
                    }
                    InitScheme::XavierUniform | InitScheme::XavierNormal => {
                        (0.0, c.gain.unwrap_or(1.0) * (2.0 / (fi + fo) as f64).sqrt())
                    }
                    InitScheme::KaimingUniform | InitScheme::KaimingNormal => {
                        (0.0, c.kaiming_gain() / fan.sqrt())
                    }
                    InitScheme::Constant => (0.25, 0.0),
                    _ => unreachable!(),
                };
                let (m, s) = mean_std(&v);
                let tag = format!("{scheme:?} {extra} {shape:?}");
                if want_std == 0.0 {
                    assert!(v.iter().all(|x| (*x - want_mean).abs() < 1e-7), "{tag}");
                    continue;
                }
                assert!(
                    (s - want_std).abs() <= 0.02 * want_std,
                    "{tag}: std {s} vs {want_std}"
                );
                assert!(
                    (m - want_mean).abs() <= 0.02 * want_std.max(want_mean.abs()),
                    "{tag}: mean {m} vs {want_mean}"
                );
            }
        }
    }

    #[test]
    fn orthogonal_rows_are_orthonormal_times_gain() {
        let device = Device::flex();
        let mut rng = StdRng::seed_from_u64(2);
        let c = InitSection {
            scheme: InitScheme::Orthogonal,
            gain: Some(2.0),
            ..Default::default()
        };
        // A conv kernel [64, 16, 3, 3]: 64 rows of 144 -> W W^T = gain^2 I.
        let w: Tensor<4> = c.draw([64, 16, 3, 3], 144, 576, &mut rng, &device);
        let m = w.reshape([64, 144]);
        let gram = values(m.clone().matmul(m.transpose()));
        for i in 0..64 {
            for j in 0..64 {
                let want = if i == j { 4.0 } else { 0.0 };
                assert!((gram[i * 64 + j] - want).abs() < 1e-4, "({i},{j})");
            }
        }
    }
}
