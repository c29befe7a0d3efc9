//! Passwords: salted argon2id hashes (PHC strings), made and checked on blocking threads, a few at a time.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

/// Hashes at once per process: each takes argon2's memory (19 MiB by default) and a core for tens
/// of milliseconds; more wait their turn, so that a flood of logins takes one core at most and
/// never exhausts memory.
const AT_ONCE: usize = 1;

fn gate() -> &'static Arc<Semaphore> {
    static GATE: OnceLock<Arc<Semaphore>> = OnceLock::new();
    GATE.get_or_init(|| Arc::new(Semaphore::new(AT_ONCE)))
}

/// A hash of nothing anyone can type: checked when a name is unknown, so that an unknown name
/// takes as long as a wrong password.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = salt();
        Argon2::default()
            .hash_password(b"\0 no password is this", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A fresh salt: 16 bytes from the OS's random source (a UUID v4 has 122 random bits).
fn salt() -> SaltString {
    SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).expect("16 bytes fit a salt")
}

/// Why hashing failed (only if the machine cannot run argon2 at all).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// A new salted argon2id hash of `password`.
pub async fn hash(password: String) -> Result<String, HashError> {
    let _permit = gate().clone().acquire_owned().await;
    tokio::task::spawn_blocking(move || {
        let salt = salt();
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

/// Whether `password` matches `stored` (a PHC string). With `stored` `None` (no such name) a
/// decoy is checked, so that the answer takes as long either way; it is then always `false`.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let _permit = gate().clone().acquire_owned().await;
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| decoy().to_string());
    let matched = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    known && matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_salted_and_verify() {
        let a = hash("correct horse".into()).await.unwrap();
        let b = hash("correct horse".into()).await.unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert!(!a.contains("correct horse"));
        assert!(verify("correct horse".into(), Some(a.clone())).await);
        assert!(!verify("wrong horse".into(), Some(a)).await);
        assert!(!verify("correct horse".into(), None).await);
        assert!(!verify("x".into(), Some("not a hash".into())).await);
    }
}
