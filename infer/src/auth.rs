//! Bearer-token authentication: every route but `/healthz` wants `Authorization: Bearer TOKEN`.
//! The token is compared in constant time (SHA-256 digests, so neither its bytes nor its length
//! leak through timing) and never printed: its `Debug` is redacted.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable a token may come from.
pub const ENV: &str = "REKINDLE_TOKEN";

/// A server's token options on its command line (the service's and the dashboard's).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TokenArgs {
    /// Bearer token every request must carry (`Authorization: Bearer TOKEN`; the service's
    /// health probes excepted). Visible in `ps`: prefer --token-file or the REKINDLE_TOKEN
    /// variable.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the bearer token (a trailing newline is ignored).
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// Serve a non-loopback address without a token: anyone who reaches it may use it.
    #[arg(long)]
    pub insecure_no_token: bool,
}

impl TokenArgs {
    /// The token from --token, --token-file or REKINDLE_TOKEN, if one is set; serving `addr`
    /// beyond this machine without one is refused (`what`: what anyone reaching it could use).
    pub fn token_for(
        &self,
        addr: std::net::SocketAddr,
        what: &str,
    ) -> Result<Option<Token>, String> {
        let token = Token::resolve(self.token.as_deref(), self.token_file.as_deref())
            .map_err(|e| e.to_string())?;
        check_exposure(addr, token.is_some(), self.insecure_no_token, what)?;
        Ok(token)
    }
}

/// Refuses to serve `addr` beyond this machine without a token (unless `insecure`): `what`
/// names what anyone who reaches it could use.
pub fn check_exposure(
    addr: std::net::SocketAddr,
    token: bool,
    insecure: bool,
    what: &str,
) -> Result<(), String> {
    if token || addr.ip().is_loopback() || insecure {
        return Ok(());
    }
    Err(format!(
        "refusing to serve {addr} without a token: any machine that reaches it could use {what}. \
         Set one with --token-file FILE, {ENV} or --token, listen on 127.0.0.1, or pass \
         --insecure-no-token to serve it open"
    ))
}

/// A secret the clients must present.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why no token could be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// An empty token (from the flag, the file or the environment variable named).
    #[error("the token from {0} is empty")]
    Empty(String),
    /// A token with characters a header value cannot carry.
    #[error("the token from {0} has whitespace or control characters; use printable ASCII")]
    NotPrintable(String),
    /// The environment variable's value is not UTF-8.
    #[error("the {0} environment variable is not valid UTF-8")]
    NotUnicode(String),
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Token {
    /// A token from `secret`, which came from `origin` (named in errors, never the secret).
    pub fn new(secret: &str, origin: &str) -> Result<Self, TokenError> {
        if secret.is_empty() {
            return Err(TokenError::Empty(origin.into()));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable(origin.into()));
        }
        Ok(Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// The token in the file at `path`, without its trailing newline.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
            path: name.clone(),
            source,
        })?;
        Self::new(text.trim_end_matches(['\r', '\n']), &format!("file {name}"))
    }

    /// The token from a `--token` value, a `--token-file` or the `REKINDLE_TOKEN` environment
    /// variable, in that order; `None` if none is set.
    pub fn resolve(flag: Option<&str>, file: Option<&Path>) -> Result<Option<Self>, TokenError> {
        if let Some(t) = flag {
            return Self::new(t, "--token").map(Some);
        }
        if let Some(path) = file {
            return Self::from_file(path).map(Some);
        }
        match std::env::var(ENV) {
            Ok(t) => Self::new(&t, &format!("the {ENV} environment variable")).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(TokenError::NotUnicode(ENV.into())),
        }
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&digest).into()
    }

    /// Whether an `Authorization` header value carries this token (`Bearer` in any case).
    pub fn admits(&self, authorization: Option<&[u8]>) -> Check {
        let Some(value) = authorization else {
            return Check::Missing;
        };
        match value.split_at_checked(7) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                if self.matches(rest.trim_ascii()) {
                    Check::Ok
                } else {
                    Check::Wrong
                }
            }
            _ => Check::Missing,
        }
    }
}

/// The outcome of checking a request's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The right token.
    Ok,
    /// No bearer token at all.
    Missing,
    /// A bearer token that is not the one.
    Wrong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_admitted() {
        let t = Token::new("s3cret-Token", "test").unwrap();
        assert_eq!(t.admits(Some(b"Bearer s3cret-Token")), Check::Ok);
        assert_eq!(t.admits(Some(b"bearer s3cret-Token ")), Check::Ok);
        assert_eq!(t.admits(Some(b"Bearer s3cret-token")), Check::Wrong);
        assert_eq!(t.admits(Some(b"Bearer s3cret-Token2")), Check::Wrong);
        assert_eq!(t.admits(Some(b"Bearer ")), Check::Wrong);
        assert_eq!(t.admits(Some(b"Basic czNjcmV0")), Check::Missing);
        assert_eq!(t.admits(Some(b"s3cret-Token")), Check::Missing);
        assert_eq!(t.admits(None), Check::Missing);
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(matches!(Token::new("", "x"), Err(TokenError::Empty(_))));
        assert!(matches!(
            Token::new("a b", "x"),
            Err(TokenError::NotPrintable(_))
        ));
    }
}
