//! Encryption of credentials at rest (AES-256-GCM). The key comes from an environment variable
//! or, failing that, a key file kept beside the database with mode 0600.

use std::path::Path;

use aes_gcm::aead::{Aead, Generate, Key, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{anyhow, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::config::Settings;

/// Seals and opens secrets. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher([REDACTED])")
    }
}

const PREFIX: &str = "v1:";

impl Cipher {
    /// The key named by the settings: `secrets.key_env`, else `secrets.key_file` (created).
    pub fn from_settings(s: &Settings) -> Result<Cipher> {
        // A bad key is a configuration error (exit 2), and its value is never shown.
        if let Ok(k) = std::env::var(&s.secrets.key_env) {
            return Self::from_base64(&k).map_err(|e| {
                crate::input_error!("environment variable {}: {e}", s.secrets.key_env)
            });
        }
        let path = s.resolve(&s.secrets.key_file);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Self::from_base64(text.trim())
                .map_err(|e| crate::input_error!("{}: {e}", path.display()));
        }
        Self::from_key_file(&path)
    }

    pub fn from_key_file(path: &Path) -> Result<Cipher> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Self::from_base64(text.trim()).with_context(|| path.display().to_string());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key = Key::<Aes256Gcm>::generate();
        let text = B64.encode(key.as_slice());
        // Written whole under a temporary name, then linked into place: processes starting
        // at once each make a key, one link wins, and the others read the winner's whole
        // file (never a half-written one, never an error).
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        write_private(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Self::from_base64(text.trim()).with_context(|| path.display().to_string())
            }
            Err(e) => Err(anyhow::anyhow!("cannot write {}: {e}", path.display())),
        }
    }

    /// A 32-byte key, base64-encoded.
    pub fn from_base64(key: &str) -> Result<Cipher> {
        let bytes = B64
            .decode(key.trim())
            .map_err(|_| anyhow!("the secret key is not valid base64"))?;
        let key = Key::<Aes256Gcm>::try_from(bytes.as_slice())
            .map_err(|_| anyhow!("the secret key must be 32 bytes"))?;
        Ok(Cipher {
            aead: Aes256Gcm::new(&key),
        })
    }

    pub fn seal(&self, plain: &str) -> Result<String> {
        let nonce = Nonce::generate();
        let ct = self
            .aead
            .encrypt(&nonce, plain.as_bytes())
            .map_err(|_| anyhow!("encryption failed"))?;
        let mut buf = nonce.to_vec();
        buf.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{}", B64.encode(buf)))
    }

    pub fn open(&self, sealed: &str) -> Result<String> {
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or_else(|| anyhow!("stored secret has an unknown format"))?;
        let buf = B64
            .decode(body)
            .map_err(|_| anyhow!("stored secret is corrupt"))?;
        if buf.len() < 12 {
            return Err(anyhow!("stored secret is corrupt"));
        }
        let (nonce, ct) = buf.split_at(12);
        let nonce = Nonce::try_from(nonce).map_err(|_| anyhow!("stored secret is corrupt"))?;
        let plain = self
            .aead
            .decrypt(&nonce, ct)
            .map_err(|_| anyhow!("stored secret cannot be decrypted with this key"))?;
        String::from_utf8(plain).map_err(|_| anyhow!("stored secret is not text"))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let a = Cipher::from_base64(&B64.encode([7u8; 32])).unwrap();
        let b = Cipher::from_base64(&B64.encode([8u8; 32])).unwrap();
        let sealed = a.seal("refresh-token-123").unwrap();
        assert!(!sealed.contains("refresh-token-123"));
        assert_eq!(a.open(&sealed).unwrap(), "refresh-token-123");
        assert!(b.open(&sealed).is_err());
    }
}
