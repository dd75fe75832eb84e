//! `[init]` applied to a network: the parameters in scope (the head, all, or paths matching a
//! regex) re-drawn with PyTorch's fans, walking the module with each parameter's path;
//! BatchNorm in scope reset, everything else kept as loaded.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use regex::Regex;
use rekindle_model::{PathMapper, ResNet, map_with_paths};

use crate::catalog::init::{BiasInit, InitScheme, InitScope, InitSection};

/// Re-initialises the parameters in scope, walking the module with their paths.
struct Reinit<'a> {
    config: &'a InitSection,
    select: Arc<dyn Fn(&str) -> bool + 'a>,
    rng: StdRng,
    /// fan_in of the last weight seen, for its layer's bias.
    last_fan_in: usize,
    touched: usize,
}

impl PathMapper for Reinit<'_> {
    fn map<const D: usize>(
        &mut self,
        path: &[String],
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        let name = path.last().cloned().unwrap_or_default();
        let path = path.join(".");
        let shape: [usize; D] = param.shape().dims();
        // PyTorch's fans: Linear [out, in] (Burn stores [in, out]); Conv2d [out, in, kh, kw].
        let (fan_in, fan_out) = match D {
            2 => (shape[0], shape[1]),
            4 => {
                let k = shape[2] * shape[3];
                (shape[1] * k, shape[0] * k)
            }
            _ => (1, 1),
        };
        if name == "weight" && D >= 2 {
            self.last_fan_in = fan_in;
        }
        if !(self.select)(&path) {
            return param;
        }
        self.touched += 1;
        let c = self.config;
        let rng = &mut self.rng;
        let last_fan_in = self.last_fan_in;
        param.map(|t| {
            let device = t.device();
            let tracked = t.is_require_grad();
            let fresh: Tensor<D> = match name.as_str() {
                "weight" if D == 2 && c.scheme == InitScheme::Orthogonal => {
                    // Orthogonal over PyTorch's [out, in], then into Burn's [in, out].
                    let pt = c.draw([shape[1], shape[0]], fan_in, fan_out, rng, &device);
                    pt.transpose().reshape(shape)
                }
                "weight" if D >= 2 => c.draw(shape, fan_in, fan_out, rng, &device),
                "bias" => match c.bias {
                    BiasInit::Zeros => Tensor::zeros(shape, &device),
                    BiasInit::Default => {
                        let bound = 1.0 / (last_fan_in.max(1) as f64).sqrt();
                        Initializer::Uniform {
                            min: -bound,
                            max: bound,
                        }
                        .init::<D, _>(shape, &device)
                        .val()
                    }
                },
                "gamma" | "running_var" => Tensor::ones(shape, &device),
                "beta" | "running_mean" => Tensor::zeros(shape, &device),
                _ => t.clone(),
            };
            if tracked {
                fresh.detach().require_grad()
            } else {
                fresh
            }
        })
    }
}

/// Applies `config` to `net`, seeded by `seed`; returns the network and how many parameter
/// tensors were re-initialised. Everything out of scope keeps its (pretrained) values.
pub fn apply(net: ResNet, config: &InitSection, seed: u64) -> Result<(ResNet, usize), String> {
    config.validate()?;
    let select: Arc<dyn Fn(&str) -> bool> = match config.scope {
        InitScope::Head => Arc::new(|p: &str| p.starts_with("head.")),
        InitScope::All => Arc::new(|_: &str| true),
        InitScope::Matching => {
            let re = Regex::new(&config.pattern).map_err(|e| e.to_string())?;
            Arc::new(move |p: &str| re.is_match(p))
        }
    };
    if let Some(device) = net.devices().first() {
        device.seed(seed);
    }
    let mut mapper = Reinit {
        config,
        select,
        rng: StdRng::seed_from_u64(seed),
        last_fan_in: 1,
        touched: 0,
    };
    let net = map_with_paths(net, &mut mapper);
    if mapper.touched == 0 {
        return Err(format!(
            "init.pattern `{}` matches no parameter (paths look like layer4.1.Basic.conv2.weight, \
             bn1.gamma, head.fc.bias)",
            config.pattern
        ));
    }
    Ok((net, mapper.touched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::init::tests::values;
    use burn::tensor::Device;
    use rekindle_model::{Arch, HeadConfig, ResNetConfig};

    #[test]
    fn scopes_touch_only_what_they_name_and_reset_batchnorm() {
        let device = Device::flex();
        let net = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3)).init(&device);
        let snapshot = |n: &ResNet| -> Vec<(String, Vec<f64>)> {
            struct Snap(Vec<(String, Vec<f64>)>);
            impl rekindle_model::PathVisitor for Snap {
                fn visit<const D: usize>(&mut self, path: &[String], p: &Param<Tensor<D>>) {
                    self.0.push((path.join("."), values(p.val())));
                }
            }
            let mut s = Snap(Vec::new());
            rekindle_model::visit_with_paths(n, &mut s);
            s.0
        };
        let before = snapshot(&net);
        let zeros = |scope, pattern: &str| InitSection {
            scheme: InitScheme::Zeros,
            bias: BiasInit::Zeros,
            scope,
            pattern: pattern.into(),
            ..Default::default()
        };
        let changed = |after: &[(String, Vec<f64>)]| -> Vec<String> {
            before
                .iter()
                .zip(after)
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, _)| a.0.clone())
                .collect()
        };
        let (head, n) = apply(net.clone(), &zeros(InitScope::Head, ""), 1).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            changed(&snapshot(&head)),
            ["head.fc.weight", "head.fc.bias"]
        );
        let (l4, _) = apply(net.clone(), &zeros(InitScope::Matching, r"^layer4\.1\."), 1).unwrap();
        let c = changed(&snapshot(&l4));
        assert!(
            !c.is_empty() && c.iter().all(|p| p.starts_with("layer4.1.")),
            "{c:?}"
        );
        // BatchNorm in scope is reset to gamma 1, beta 0 (fresh BN already is: unchanged).
        assert!(c.iter().all(|p| p.ends_with("weight")), "{c:?}");
        let err = apply(net.clone(), &zeros(InitScope::Matching, "^nothing$"), 1).unwrap_err();
        assert!(err.contains("matches no parameter"), "{err}");
        let err = zeros(InitScope::Matching, "(").validate().unwrap_err();
        assert!(err.contains("not a regex"), "{err}");
    }
}
