//! SCRAM credentials (RFC 5802 §3): what is stored instead of a password, and the PLAIN check
//! against them.

use rand::RngCore;
use rsasl::mechanisms::scram::tools::{derive_keys, hash_password};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::storage::{ScramCredential, ScramHash};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password contains characters SASLprep forbids (RFC 4013)")]
    Prohibited,
}

/// SASLprep (RFC 4013), which SCRAM clients apply before hashing.
pub fn prepare_password(password: &str) -> Result<String, PasswordError> {
    let prepared = stringprep::saslprep(password).map_err(|_| PasswordError::Prohibited)?;
    if prepared.is_empty() {
        return Err(PasswordError::Empty);
    }
    Ok(prepared.into_owned())
}

/// Credentials for every SCRAM family, each with its own random salt. CPU-heavy: call it from
/// a blocking context.
pub fn credentials_for(
    password: &str,
    iterations: u32,
) -> Result<Vec<ScramCredential>, PasswordError> {
    let prepared = prepare_password(password)?;
    Ok(ScramHash::ALL
        .into_iter()
        .map(|hash| {
            let mut salt = vec![0u8; 16];
            rand::thread_rng().fill_bytes(&mut salt);
            derive(hash, prepared.as_bytes(), &salt, iterations)
        })
        .collect())
}

fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> ScramCredential {
    let (stored_key, server_key) = match hash {
        ScramHash::Sha1 => {
            let mut salted = Default::default();
            hash_password::<Sha1>(password, iterations, salt, &mut salted);
            let (client_key, server_key) = derive_keys::<Sha1>(salted.as_slice());
            (Sha1::digest(client_key).to_vec(), server_key.to_vec())
        }
        ScramHash::Sha256 => {
            let mut salted = Default::default();
            hash_password::<Sha256>(password, iterations, salt, &mut salted);
            let (client_key, server_key) = derive_keys::<Sha256>(salted.as_slice());
            (Sha256::digest(client_key).to_vec(), server_key.to_vec())
        }
    };
    ScramCredential {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key,
        server_key,
    }
}

/// Checks a PLAIN password against a stored credential, in constant time. CPU-heavy.
pub fn verify(password: &str, credential: &ScramCredential) -> bool {
    let Ok(prepared) = prepare_password(password) else {
        return false;
    };
    let candidate = derive(
        credential.hash,
        prepared.as_bytes(),
        &credential.salt,
        credential.iterations,
    );
    constant_time_eq(&candidate.stored_key, &credential.stored_key)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether every attribute of a SCRAM client message is at least `x=` (RFC 5802 §7): the GS2
/// header's authzid part of the first message aside, which may be empty. rsasl 2.3 slices
/// each attribute's first two bytes without checking its length, and panics on `a,b,…`.
pub fn attributes_well_formed(message: &[u8], first: bool) -> bool {
    let mut parts = message.split(|b| *b == b',');
    if first {
        // The channel-binding flag (rsasl checks it), then the authzid: empty or `a=…`.
        let _flag = parts.next();
        if parts.next().is_some_and(|authzid| authzid.len() == 1) {
            return false;
        }
    }
    parts.all(|attribute| attribute.len() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_attributes_are_checked_before_rsasl_sees_them() {
        assert!(attributes_well_formed(b"n,,n=user,r=abc", true));
        assert!(attributes_well_formed(
            b"p=tls-exporter,a=user,n=user,r=abc",
            true
        ));
        assert!(!attributes_well_formed(b"n,a,n=user,r=abc", true));
        assert!(!attributes_well_formed(b"n,,n,r=abc", true));
        assert!(attributes_well_formed(b"c=biws,r=abc,p=cHJvb2Y=", false));
        // The crash the fuzzer found: a one-byte attribute in the final message.
        assert!(!attributes_well_formed(b"c", false));
        assert!(!attributes_well_formed(b"c=biws,r=abc,,p=x", false));
    }

    #[test]
    fn plain_check_accepts_only_the_password() {
        let c = derive(ScramHash::Sha256, b"pencil", b"0123456789abcdef", 4096);
        assert_eq!(c.stored_key.len(), 32);
        assert_eq!(c.server_key.len(), 32);
        assert!(verify("pencil", &c));
        assert!(!verify("pencil2", &c));
        assert!(!verify("", &c));
    }

    #[test]
    fn each_family_gets_its_own_salt_and_no_password() {
        let creds = credentials_for("correct horse", 4096).unwrap();
        assert_eq!(creds.len(), 2);
        assert_ne!(creds[0].salt, creds[1].salt);
        assert_eq!(creds[0].stored_key.len(), 20);
        assert!(verify("correct horse", &creds[0]));
        assert!(verify("correct horse", &creds[1]));
        assert!(!format!("{:?}", creds[0]).contains("stored_key"));
    }

    #[test]
    fn empty_and_prohibited_passwords_are_refused() {
        assert!(matches!(
            credentials_for("", 4096),
            Err(PasswordError::Empty)
        ));
        assert!(matches!(
            credentials_for("a\u{0007}b", 4096),
            Err(PasswordError::Prohibited)
        ));
    }
}
