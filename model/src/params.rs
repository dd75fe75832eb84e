//! Float parameters with their paths (`layer4.1.Basic.conv2.weight`, `bn1.running_var`).
//!
//! Burn's `ModuleVisitor` / `ModuleMapper` report entering and leaving submodules but hand
//! each parameter over without its name; every walk that decides by name (pruning, weight
//! clipping, re-initialisation, counting learnable parameters) would otherwise keep its own
//! path stack.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Reads float parameters, each with its path.
pub trait PathVisitor {
    /// One float parameter; `path` ends with its field name (`weight`, `gamma`, ..).
    fn visit<const D: usize>(&mut self, path: &[String], param: &Param<Tensor<D>>);
}

/// Replaces float parameters, each with its path.
pub trait PathMapper {
    /// One float parameter; returns it or its replacement (same id).
    fn map<const D: usize>(&mut self, path: &[String], param: Param<Tensor<D>>)
    -> Param<Tensor<D>>;
}

/// Walks `module`'s float parameters in declaration order, telling `visitor` their paths.
pub fn visit_with_paths<M: Module, V: PathVisitor>(module: &M, visitor: &mut V) {
    module.visit(&mut Paths {
        path: Vec::new(),
        inner: visitor,
    });
}

/// Rebuilds `module` through `mapper`, telling it each float parameter's path.
pub fn map_with_paths<M: Module, V: PathMapper>(module: M, mapper: &mut V) -> M {
    module.map(&mut Paths {
        path: Vec::new(),
        inner: mapper,
    })
}

/// Whether a path names a BatchNorm running statistic (a buffer, not learnable).
pub fn is_running_stat(path: &[String]) -> bool {
    matches!(
        path.last().map(String::as_str),
        Some("running_mean" | "running_var")
    )
}

/// The path stack shared by both walks.
struct Paths<'a, T> {
    path: Vec<String>,
    inner: &'a mut T,
}

impl<V: PathVisitor> ModuleVisitor for Paths<'_, V> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.inner.visit(&self.path, param);
    }
}

impl<V: PathMapper> ModuleMapper for Paths<'_, V> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.inner.map(&self.path, param)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, HeadConfig, ResNetConfig};
    use burn::tensor::Device;

    struct Names(Vec<String>);
    impl PathVisitor for Names {
        fn visit<const D: usize>(&mut self, path: &[String], _: &Param<Tensor<D>>) {
            self.0.push(path.join("."));
        }
    }

    #[test]
    fn paths_name_every_parameter_once_and_mapping_sees_the_same() {
        let device = Device::flex();
        let net = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3)).init(&device);
        let mut seen = Names(Vec::new());
        visit_with_paths(&net, &mut seen);
        let names = seen.0;
        for want in [
            "conv1.weight",
            "bn1.gamma",
            "bn1.running_var",
            "layer4.1.Basic.conv2.weight",
            "layer2.0.Basic.downsample.conv.weight",
            "head.fc.bias",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());

        struct Zero(Vec<String>);
        impl PathMapper for Zero {
            fn map<const D: usize>(
                &mut self,
                path: &[String],
                param: Param<Tensor<D>>,
            ) -> Param<Tensor<D>> {
                self.0.push(path.join("."));
                if path.join(".") == "head.fc.bias" {
                    param.map(|t| t.zeros_like())
                } else {
                    param
                }
            }
        }
        let mut zero = Zero(Vec::new());
        let net = map_with_paths(net, &mut zero);
        assert_eq!(zero.0, names);
        let bias: f32 = net.head.fc.bias.unwrap().val().abs().sum().into_scalar();
        assert_eq!(bias, 0.0);
    }
}
