//! The one list of rekindle's compute backends: each one's name (which is also its cargo feature
//! in every crate), the aliases users type, what it runs on, and what it needs installed.
//!
//! The model crate turns a [`Spec`] into a Burn device; xtask turns one into cargo features and
//! install steps; every CLI's `--backend` parses through [`parse`]. Nothing here depends on Burn,
//! so xtask can read it without compiling Burn.

use std::fmt;

/// Something a backend needs on the machine, beyond the Rust build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Debian packages (installed with apt-get when missing).
    Debian(&'static [&'static str]),
    /// LibTorch, laid out from the pinned torch wheel (`LIBTORCH`).
    LibTorch,
    /// A download from outside the package registries at build time: cannot build offline.
    Network(&'static str),
}

/// One backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The canonical name: the `--backend` value, the config's `run.backend`, the cargo feature.
    pub name: &'static str,
    /// Other names accepted for it, compared ignoring case.
    pub aliases: &'static [&'static str],
    /// One line for help texts and the README's backends table.
    pub summary: &'static str,
    /// How the model crate makes its device (Burn 0.22's `Device` constructor).
    pub device: &'static str,
    /// Whether it has devices beyond index 0 (GPUs).
    pub multi_device: bool,
    /// What it needs installed, beyond the Rust build.
    pub needs: &'static [Need],
}

impl Spec {
    /// Whether it builds from the package registries alone (`cuda` does not: see [`Need::Network`]).
    pub fn builds_offline(&self) -> bool {
        !self.needs.iter().any(|n| matches!(n, Need::Network(_)))
    }

    /// The Debian packages it needs.
    pub fn debian_packages(&self) -> Vec<&'static str> {
        self.needs
            .iter()
            .flat_map(|n| match n {
                Need::Debian(p) => p.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Whether it needs LibTorch.
    pub fn needs_libtorch(&self) -> bool {
        self.needs.contains(&Need::LibTorch)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Every backend, in the order help texts and the README list them; the first is the default.
pub const ALL: [Spec; 5] = [
    Spec {
        name: "flex",
        aliases: &[],
        summary: "Burn's pure-Rust CPU backend with rekindle's own kernels (the default)",
        device: "Device::flex()",
        multi_device: false,
        needs: &[],
    },
    Spec {
        name: "ndarray",
        aliases: &[],
        summary: "the ndarray CPU backend (deprecated upstream, slow; for comparison)",
        device: "Device::ndarray()",
        multi_device: false,
        needs: &[],
    },
    Spec {
        name: "wgpu",
        aliases: &["vulkan", "lavapipe", "webgpu"],
        summary: "GPUs through Vulkan/Metal/DX12, or the CPU through Mesa's lavapipe",
        device: "Device::wgpu(DefaultDevice | DiscreteGpu(i))",
        multi_device: true,
        needs: &[Need::Debian(&["mesa-vulkan-drivers", "libvulkan1"])],
    },
    Spec {
        name: "tch",
        aliases: &["libtorch", "torch"],
        summary: "LibTorch: the CPU, or an NVIDIA GPU (cuda:N) when LibTorch has CUDA",
        device: "Device::libtorch() | Device::libtorch_cuda(i)",
        multi_device: true,
        needs: &[Need::LibTorch],
    },
    Spec {
        name: "cuda",
        aliases: &[],
        summary: "NVIDIA GPUs through CubeCL (its build downloads LLVM: not offline)",
        device: "Device::cuda(i)",
        multi_device: true,
        needs: &[Need::Network(
            "cubecl-cuda 0.11 builds cubecl-llvm, whose build script downloads a prebuilt LLVM",
        )],
    },
];

/// `--backend`'s help: the names and aliases, kept beside the table (a test checks it).
pub const HELP: &str = "Backend: flex (the default), ndarray, wgpu (or vulkan, lavapipe, webgpu), \
                        tch (or libtorch, torch), cuda; any case";

/// A name that is no backend's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    /// What was written.
    pub name: String,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.trim().is_empty() {
            write!(f, "no backend named; valid ones: {}", valid())
        } else {
            write!(
                f,
                "unknown backend `{}`; valid ones: {}",
                self.name,
                valid()
            )
        }
    }
}

impl std::error::Error for Unknown {}

/// The valid names with their aliases, for error messages: `flex (cpu), ndarray, ...`.
pub fn valid() -> String {
    ALL.iter()
        .map(|s| {
            if s.aliases.is_empty() {
                s.name.to_string()
            } else {
                format!("{} ({})", s.name, s.aliases.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The backend a name or alias means, ignoring case and surrounding space.
pub fn parse(name: &str) -> Result<&'static Spec, Unknown> {
    let n = name.trim();
    ALL.iter()
        .find(|s| {
            s.name.eq_ignore_ascii_case(n) || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(n))
        })
        .ok_or_else(|| Unknown {
            name: name.to_string(),
        })
}

/// A comma-separated list (`flex,wgpu`, `Vulkan, LibTorch`): each named once, in the order given.
pub fn parse_list(list: &str) -> Result<Vec<&'static Spec>, Unknown> {
    let mut out: Vec<&'static Spec> = Vec::new();
    for part in list.split(',') {
        let spec = parse(part)?;
        if !out.contains(&spec) {
            out.push(spec);
        }
    }
    Ok(out)
}

/// The default backend (flex).
pub fn default_spec() -> &'static Spec {
    &ALL[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse_in_any_case() {
        for s in &ALL {
            assert_eq!(parse(s.name).unwrap(), s);
            assert_eq!(parse(&s.name.to_uppercase()).unwrap(), s);
            for a in s.aliases {
                assert_eq!(parse(a).unwrap().name, s.name);
                assert_eq!(
                    parse(&format!(" {} ", a.to_uppercase())).unwrap().name,
                    s.name
                );
            }
        }
        assert_eq!(parse("LibTorch").unwrap().name, "tch");
        assert_eq!(parse("Vulkan").unwrap().name, "wgpu");
    }

    #[test]
    fn no_name_is_taken_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for s in &ALL {
            for n in std::iter::once(&s.name).chain(s.aliases) {
                assert!(
                    seen.insert(n.to_ascii_lowercase()),
                    "{n} names two backends"
                );
            }
        }
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let err = parse("opencl").unwrap_err().to_string();
        assert!(err.contains("unknown backend `opencl`"), "{err}");
        for s in &ALL {
            assert!(err.contains(s.name), "{err}");
        }
        assert!(
            parse("")
                .unwrap_err()
                .to_string()
                .starts_with("no backend named")
        );
        assert!(parse_list("flex,,wgpu").is_err());
    }

    #[test]
    fn lists_keep_order_and_drop_repeats() {
        let names: Vec<&str> = parse_list("wgpu, FLEX,vulkan,libtorch")
            .unwrap()
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["wgpu", "flex", "tch"]);
    }

    #[test]
    fn the_help_text_names_every_backend_and_alias() {
        for s in &ALL {
            assert!(HELP.contains(s.name), "{}", s.name);
            for a in s.aliases {
                assert!(HELP.contains(a), "{a}");
            }
        }
    }

    #[test]
    fn only_cuda_needs_the_network_and_only_tch_libtorch() {
        let offline: Vec<&str> = ALL
            .iter()
            .filter(|s| s.builds_offline())
            .map(|s| s.name)
            .collect();
        assert_eq!(offline, ["flex", "ndarray", "wgpu", "tch"]);
        assert!(parse("tch").unwrap().needs_libtorch());
        assert!(parse("flex").unwrap().debian_packages().is_empty());
        assert_eq!(
            parse("wgpu").unwrap().debian_packages(),
            ["mesa-vulkan-drivers", "libvulkan1"]
        );
    }
}
