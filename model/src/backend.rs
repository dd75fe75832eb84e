//! Run-time choice among the backends compiled into this binary (cargo features). The names,
//! aliases and needs of each backend live in `rekindle-backends`; this file makes their devices.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::Error;

/// `--backend`'s help text, naming every backend and alias (from the one list).
pub use rekindle_backends::HELP;

/// A compute backend; each is a cargo feature of the same name. Variants are in the order of
/// `rekindle_backends::ALL` (a test checks it).
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
        self.spec().name
    }

    /// Its entry in the one list of backends: aliases, summary, what it needs installed.
    pub fn spec(self) -> &'static rekindle_backends::Spec {
        &rekindle_backends::ALL[self as usize]
    }

    /// The backend a command uses when none is named: flex where it is compiled in, else the
    /// first one compiled in (a build with `--features ndarray` alone runs on ndarray).
    pub fn default_compiled() -> Backend {
        Backend::compiled()
            .first()
            .copied()
            .unwrap_or(Backend::Flex)
    }

    /// Parses a `--backend` value (a name or alias, any case): a clap `value_parser`.
    pub fn parse_arg(s: &str) -> Result<Backend, String> {
        s.parse().map_err(|e: Error| e.to_string())
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
        if !self.spec().multi_device && index > 0 {
            return Err(Error::InvalidConfig(format!(
                "backend `{self}` has a single device, index {index} does not exist"
            )));
        }
        if self == Backend::Tch {
            return tch_device(index);
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
            Backend::Tch => Device::libtorch_cuda(index),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Device::cuda(index),
            #[allow(unreachable_patterns)]
            _ => unreachable!("device_at checked that `{self}` is compiled"),
        }
    }
}

/// LibTorch's device: GPU `index` when an NVIDIA driver is loaded and LibTorch has CUDA, else
/// (index 0 only) the CPU. Without a driver CUDA is not tried at all, so a CPU machine sees no
/// failed probe; with one, a CPU-only LibTorch falls back to the CPU and says so.
fn tch_device(index: usize) -> Result<Device, Error> {
    let driver = std::path::Path::new("/proc/driver/nvidia/version").exists();
    if driver {
        let gpu = Backend::Tch.make_device(index);
        match probe(Backend::Tch, index, &gpu) {
            Ok(()) => return Ok(gpu),
            Err(e) if index > 0 => return Err(e),
            Err(e) => eprintln!("warning: {e}; tch runs on the CPU"),
        }
    } else if index > 0 {
        return Err(Error::DeviceUnavailable {
            name: "tch",
            index,
            reason: "no NVIDIA driver is loaded, and the CPU is LibTorch's only other device"
                .into(),
        });
    }
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    return Ok(Device::libtorch());
    #[cfg(not(feature = "tch"))]
    unreachable!("device_at checked that tch is compiled")
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
            Backend::Tch => "an NVIDIA GPU with its driver, and LibTorch built with CUDA",
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
        let unknown = || Error::UnknownBackend {
            name: s.to_string(),
            valid: rekindle_backends::valid(),
        };
        let spec = rekindle_backends::parse(s).map_err(|_| unknown())?;
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == spec.name)
            .ok_or_else(unknown)
    }
}

impl Default for Backend {
    fn default() -> Self {
        Backend::default_compiled()
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
        assert!(err.contains("opencl"), "{err}");
        for b in Backend::ALL {
            assert!(err.contains(b.name()), "{err}");
        }
        assert_eq!("LibTorch".parse::<Backend>().unwrap(), Backend::Tch);
        assert_eq!("VULKAN".parse::<Backend>().unwrap(), Backend::Wgpu);
        assert_eq!("lavapipe".parse::<Backend>().unwrap(), Backend::Wgpu);
    }

    #[test]
    fn variants_follow_the_one_list() {
        assert_eq!(Backend::ALL.len(), rekindle_backends::ALL.len());
        for (b, spec) in Backend::ALL.into_iter().zip(&rekindle_backends::ALL) {
            assert_eq!(b.spec(), spec);
            assert_eq!(b.name(), spec.name);
        }
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
