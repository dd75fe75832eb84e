//! No code: this crate's manifest unifies the backend matrix's features (see its Cargo.toml).
