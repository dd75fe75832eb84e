//! The `rekindle-train` command line: one file per subcommand, each its arguments and what it
//! does with them; `main.rs` only parses and dispatches.

mod demo;
mod eval;
mod lr_find;
mod parse;
mod prune;
mod reference;
mod run;
mod schedule;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use demo::DemoArgs;
pub use eval::EvalArgs;
pub use lr_find::LrFindArgs;
pub use prune::PruneArgs;
pub use reference::ReferenceArgs;
pub use run::RunArgs;
pub use schedule::ScheduleArgs;

/// The command line: one subcommand.
#[derive(Parser)]
#[command(
    name = "rekindle-train",
    about = "Fine-tune a pretrained ResNet on Burn"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// What `rekindle-train` can do.
#[derive(Subcommand)]
pub enum Cmd {
    /// One training run from a config file and overrides.
    Run(Box<RunArgs>),
    /// Transfer learning on Fashion-MNIST: pretrained vs from scratch, same budget.
    Demo(DemoArgs),
    /// Print and plot a config's learning rate per optimiser step and parameter group,
    /// without training.
    Schedule(ScheduleArgs),
    /// Learning-rate range test (fastai's lr_find): a short exponential sweep, a PNG and a
    /// suggested rate, to centre a search range or set train.lr.
    LrFind(LrFindArgs),
    /// Magnitude-prune a saved model to a target sparsity (one-shot), with a report per layer.
    Prune(PruneArgs),
    /// Evaluation report of a model file on labelled images: top-1/top-5, per-class
    /// precision, recall and F1, confusion matrix, calibration, the most confident mistakes.
    Eval(EvalArgs),
    /// The config's reference, made from its types: Markdown (docs/config.md) or a JSON Schema.
    Reference(ReferenceArgs),
}

impl Cmd {
    /// Does what the subcommand says; an error is for `main` to print.
    pub fn dispatch(self) -> Result<()> {
        match self {
            Cmd::Run(a) => run::run(*a),
            Cmd::Demo(a) => demo::demo(a),
            Cmd::Schedule(a) => schedule::schedule(a),
            Cmd::Prune(a) => prune::prune_model(a),
            Cmd::LrFind(a) => lr_find::lr_find(a),
            Cmd::Eval(a) => eval::eval(a),
            Cmd::Reference(a) => reference::reference(a),
        }
    }
}
