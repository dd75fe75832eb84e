//! Run-time choice among the backends compiled into this binary (cargo features).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A compute backend; each is a cargo feature of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (the default).
    Flex,
    /// The ndarray CPU backend (deprecated upstream, slow; kept for comparison).
    Ndarray,
    /// wgpu: Vulkan/Metal/DX12 GPUs, or the CPU through Mesa's lavapipe.
    Wgpu,
    /// LibTorch (CPU here; CUDA when LibTorch has it).
    Tch,
    /// CUDA through CubeCL.
    Cuda,
}

impl Backend {
    /// Every backend, in the order we document them.
    pub const ALL: [Backend; 5] = [
        Backend::Flex,
        Backend::Ndarray,
        Backend::Wgpu,
        Backend::Tch,
        Backend::Cuda,
    ];

    /// The name used on the command line, in configs, and as the cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Tch => "tch",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with this backend's feature.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Ndarray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Tch => cfg!(feature = "tch"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends this binary was built with.
    pub fn compiled() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|b| b.is_compiled())
            .collect()
    }

    /// This backend's first device (the first GPU, or the CPU), never `Device::default()`.
    pub fn device(self) -> Result<Device, Error> {
        self.device_at(0)
    }

    /// This backend's device number `index` (GPU index; CPU backends have only index 0).
    pub fn device_at(self, index: usize) -> Result<Device, Error> {
        if !self.is_compiled() {
            return Err(Error::BackendNotCompiled {
                name: self.name(),
                compiled: names(&Backend::compiled()),
            });
        }
        let cpu_only = matches!(self, Backend::Flex | Backend::Ndarray | Backend::Tch);
        if cpu_only && index > 0 {
            return Err(Error::InvalidConfig(format!(
                "backend `{self}` has a single device, index {index} does not exist"
            )));
        }
        let device = self.make_device(index);
        if matches!(self, Backend::Wgpu | Backend::Cuda) {
            probe(self, index, &device)?;
        }
        Ok(device)
    }

    #[allow(deprecated, unreachable_code, unused_variables)]
    fn make_device(self, index: usize) -> Device {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            Backend::Ndarray => Device::ndarray(),
            // DefaultDevice prefers a discrete GPU and falls back to whatever adapter exists
            // (lavapipe on a CPU-only machine); CUBECL_WGPU_DEFAULT_DEVICE overrides it.
            #[cfg(feature = "wgpu")]
            Backend::Wgpu if index == 0 => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index)),
            #[cfg(feature = "tch")]
            Backend::Tch => Device::libtorch(),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Device::cuda(index),
            #[allow(unreachable_patterns)]
            _ => unreachable!("device_at checked that `{self}` is compiled"),
        }
    }
}

/// Runs one tiny operation so that a GPU backend without a usable adapter or driver is an
/// error here rather than a panic deep inside the first real operation.
fn probe(backend: Backend, index: usize, device: &Device) -> Result<(), Error> {
    let device = device.clone();
    // The device handle is only read here; nothing observes it half-updated after a panic.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        burn::tensor::Tensor::<1>::ones([1], &device).into_data()
    }));
    result.map(|_| ()).map_err(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        let hint = match backend {
            Backend::Wgpu => "a GPU driver with Vulkan/Metal/DX12, or Mesa's lavapipe on a CPU (Debian: mesa-vulkan-drivers libvulkan1)",
            _ => "an NVIDIA GPU with its driver and the CUDA runtime",
        };
        Error::DeviceUnavailable {
            name: backend.name(),
            index,
            reason: format!("{reason}; it needs {hint}"),
        }
    })
}

/// Comma-separated backend names.
pub fn names(backends: &[Backend]) -> String {
    let v: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let alias = match lower.as_str() {
            "libtorch" | "torch" => "tch",
            "vulkan" | "lavapipe" => "wgpu",
            other => other,
        };
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == alias)
            .ok_or_else(|| Error::UnknownBackend {
                name: s.to_string(),
                valid: names(&Backend::ALL),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_valid_ones() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        let err = "opencl".parse::<Backend>().unwrap_err().to_string();
        assert!(
            err.contains("opencl") && err.contains("flex, ndarray, wgpu, tch, cuda"),
            "{err}"
        );
    }

    #[test]
    fn a_backend_not_compiled_names_its_feature() {
        let missing = Backend::ALL.into_iter().find(|b| !b.is_compiled());
        // The full test build compiles every backend but cuda, so cuda is the usual witness.
        let Some(b) = missing else { return };
        let err = b.device().unwrap_err().to_string();
        assert!(err.contains(&format!("cargo feature `{b}`")), "{err}");
        assert!(err.contains("--backend"), "{err}");
    }

    #[test]
    fn cpu_backends_have_one_device() {
        if Backend::Flex.is_compiled() {
            assert!(Backend::Flex.device_at(0).is_ok());
            assert!(Backend::Flex.device_at(1).is_err());
        }
    }
}
