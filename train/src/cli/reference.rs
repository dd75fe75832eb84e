//! `rekindle-train reference`: every config key with its type, default and meaning, made from
//! the config's types (the page `docs/config.md` is this command's output).

use anyhow::Result;
use clap::Args;

use crate::config::reference::{json_schema, markdown};

/// `reference`'s options.
#[derive(Args)]
pub struct ReferenceArgs {
    /// A JSON Schema instead of Markdown, for editors that check TOML against one.
    #[arg(long)]
    json_schema: bool,
}

/// Prints the reference.
pub fn reference(a: ReferenceArgs) -> Result<()> {
    if a.json_schema {
        println!("{}", serde_json::to_string_pretty(&json_schema())?);
    } else {
        print!("{}", markdown());
    }
    Ok(())
}
