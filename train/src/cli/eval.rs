//! `rekindle-train eval`: a model file's evaluation report on labelled images.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rekindle_model::Backend;

use super::parse::parse_name;
use crate::eval::tta::Tta;
use crate::eval::{EvalOptions, report};

/// `eval`'s options.
#[derive(Args)]
pub struct EvalArgs {
    /// A rekindle model file (model.bpk).
    #[arg(long)]
    model: PathBuf,
    /// Labelled images: DATA/<class>/*.png|jpg, folders named as the model's classes, or a
    /// .csv/.jsonl manifest (path, label, optional split; every row is evaluated, whatever its
    /// split; paths relative to the manifest's folder).
    #[arg(long)]
    data: PathBuf,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Test-time augmentation: none, flip (and its mirror image) or five-crop.
    #[arg(long, value_enum, default_value = "none")]
    tta: Tta,
    /// Where the report's files go (default: eval/ beside the model file).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, help = rekindle_model::backend::HELP, value_parser = parse_name::<Backend>, default_value_t = Backend::default_compiled())]
    backend: Backend,
}

/// Evaluates, writes the report's files and prints the headline figures (and JSON).
pub fn eval(a: EvalArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| {
        let dir = a.model.parent().unwrap_or(std::path::Path::new("."));
        dir.join("eval")
    });
    let opts = EvalOptions {
        model: a.model,
        data: a.data,
        out,
        tta: a.tta,
        backend: a.backend,
    };
    let done = crate::eval::evaluate(&opts)?;
    let m = &done.metrics;
    eprintln!(
        "{} images: top-1 {:.2}%, top-5 {:.2}%, ECE {:.2}% (tta {:?})",
        m.images,
        100.0 * m.top1,
        100.0 * m.top5,
        100.0 * m.ece,
        opts.tta
    );
    for f in &done.files {
        eprintln!("  {}", f.display());
    }
    if a.json {
        println!("{}", report::to_json(m, opts.tta));
    }
    Ok(())
}
