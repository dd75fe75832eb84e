//! `rekindle-train prune`: one-shot magnitude pruning of a saved model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::parse::parse_scope;
use crate::catalog::prune::{self, PruneScope};

/// `prune`'s options.
#[derive(Args)]
pub struct PruneArgs {
    /// A rekindle model file (model.bpk).
    model: PathBuf,
    /// Fraction of convolution and linear weights set to zero, in [0, 1).
    #[arg(long)]
    sparsity: f64,
    /// global (smallest weights network-wide) or layer (the same fraction of every layer).
    #[arg(long, default_value = "global", value_parser = parse_scope)]
    scope: PruneScope,
    /// The pruned model file.
    #[arg(short, long)]
    output: PathBuf,
}

/// Prunes the model to the sparsity asked for, saves it and prints the report per layer.
pub fn prune_model(a: PruneArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.sparsity) {
        anyhow::bail!("--sparsity must be in [0, 1), got {}", a.sparsity);
    }
    let device = rekindle_model::Backend::default_compiled().device_at(0)?;
    let (net, meta) = rekindle_model::load_model(&a.model, &device)?;
    let net = prune::prune(net, a.sparsity, a.scope);
    rekindle_model::save_model(&a.output, &net, &meta)?;
    print!("{}", prune::report(&prune::sparsity(&net)));
    println!("pruned model: {}", a.output.display());
    Ok(())
}
