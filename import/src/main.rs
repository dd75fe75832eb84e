//! `rekindle-import`: the command behind `cargo xtask import` and `cargo xtask export`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rekindle_import::{
    ExportFormat, ImportOptions, OnnxOptions, export_onnx, export_safetensors, import,
};
use rekindle_model::{Arch, Backend, load_model, save_model};

#[derive(Parser)]
#[command(
    name = "rekindle-import",
    about = "Pretrained ResNet weights into rekindle, and back out"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    // Conversion only moves tensors around, so any backend compiled in will do.
    #[arg(long, global = true, help = rekindle_model::backend::HELP, default_value_t = Backend::default_compiled(), value_parser = Backend::parse_arg)]
    backend: Backend,
}

#[derive(Subcommand)]
enum Cmd {
    /// A PyTorch (.pth/.pt), safetensors or ONNX file -> a rekindle model file.
    Import {
        /// The weights file (an ONNX graph's external data is read from beside it).
        src: PathBuf,
        /// The rekindle model file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Expected architecture (read from the file when not given).
        #[arg(long)]
        arch: Option<String>,
        /// Classes of the head (read from the file when not given).
        #[arg(long)]
        num_classes: Option<usize>,
        /// A text file with one class name per line, in logit order.
        #[arg(long)]
        class_names: Option<PathBuf>,
        /// Load what fits and start the rest fresh, listing what was skipped.
        #[arg(long)]
        allow_partial: bool,
    },
    /// A rekindle model file -> safetensors in torchvision's layout and names, or ONNX.
    Export {
        /// The rekindle model file.
        model: PathBuf,
        /// The file to write: .safetensors or .onnx.
        #[arg(short, long)]
        output: PathBuf,
        /// The format, when the extension does not say it.
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
        /// ONNX: keep the BatchNormalization nodes (default: folded into the convolutions).
        #[arg(long)]
        no_fold: bool,
        /// ONNX: add a `probabilities` output, the softmax of the logits.
        #[arg(long)]
        softmax: bool,
        /// ONNX: write the weights to OUTPUT.data beside the graph even below 2 GB (above, they
        /// always go there).
        #[arg(long)]
        external_data: bool,
    },
}

fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading class names from {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.backend.device()?;
    match cli.command {
        Cmd::Import {
            src,
            output,
            arch,
            num_classes,
            class_names,
            allow_partial,
        } => {
            let start = Instant::now();
            let options = ImportOptions {
                arch: arch.map(|a| a.parse::<Arch>()).transpose()?,
                num_classes,
                class_names: class_names.as_deref().map(read_class_names).transpose()?,
                allow_partial,
            };
            let imported =
                import(&src, &options, &device).map_err(|e| match (&e, &class_names) {
                    // The library cannot know where the names came from; the CLI can.
                    (rekindle_import::Error::Usage(m), Some(file)) if m.contains("class names") => {
                        anyhow::anyhow!("{}: {m}", file.display())
                    }
                    _ => e.into(),
                })?;
            save_model(&output, &imported.model, &imported.metadata)?;
            print!("{}", imported.report);
            println!(
                "wrote:        {} ({:.2} s)",
                output.display(),
                start.elapsed().as_secs_f64()
            );
        }
        Cmd::Export {
            model,
            output,
            format,
            no_fold,
            softmax,
            external_data,
        } => {
            let format = match format {
                Some(f) => f,
                None => ExportFormat::from_path(&output)?,
            };
            let onnx_only = [
                ("--no-fold", no_fold),
                ("--softmax", softmax),
                ("--external-data", external_data),
            ];
            if let (ExportFormat::Safetensors, Some((flag, _))) =
                (format, onnx_only.iter().find(|(_, on)| *on))
            {
                anyhow::bail!(
                    "{flag} applies to ONNX exports; safetensors holds the weights as trained"
                );
            }
            let (model_, metadata) = load_model(&model, &device)?;
            match format {
                ExportFormat::Safetensors => {
                    let n = export_safetensors(&model_, &output)?;
                    println!(
                        "wrote {} ({} tensors): load it with torchvision.models.{}(num_classes={}) and load_state_dict(strict=True)",
                        output.display(),
                        n,
                        metadata.arch(),
                        metadata.head().num_classes
                    );
                }
                ExportFormat::Onnx => {
                    let options = OnnxOptions {
                        fold_batchnorm: !no_fold,
                        softmax,
                        external_data,
                    };
                    let e = export_onnx(&model_, &metadata, &output, &options)?;
                    println!(
                        "wrote {} (opset {}, {} nodes, {} weights, {:.1} MB{}, BatchNorm {}): input `input` [batch, 3, {c}, {c}], output `logits`{}",
                        output.display(),
                        rekindle_import::export::onnx::OPSET,
                        e.nodes,
                        e.initializers,
                        e.weight_bytes as f64 / 1e6,
                        e.external
                            .as_ref()
                            .map(|p| format!(" in {}", p.display()))
                            .unwrap_or_default(),
                        if options.fold_batchnorm {
                            "folded"
                        } else {
                            "kept"
                        },
                        if softmax { " and `probabilities`" } else { "" },
                        c = metadata.preprocess.crop,
                    );
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
