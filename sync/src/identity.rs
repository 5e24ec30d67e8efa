//! This device's identity: an Ed25519 secret key kept in `<data dir>/secret.key`
//! (mode 0600). Its public half, as 64 hex digits, is the device's node id — the
//! id peers know it by (and the iroh endpoint id, which is the same key).
//!
//! The key is written once, atomically (temp file, fsync, rename), and never
//! rewritten: a damaged key file is an error, not a reason to make a new identity,
//! because a new identity would silently unpair the device from everyone.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

const KEY_FILE: &str = "secret.key";
const KEY_LEN: usize = 32;

pub struct Identity {
    secret: [u8; KEY_LEN],
}

impl Identity {
    /// Reads the data dir's key, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Identity> {
        match Identity::load(dir)? {
            Some(identity) => Ok(identity),
            None => {
                let mut secret = [0u8; KEY_LEN];
                getrandom::fill(&mut secret)
                    .map_err(|e| Error::Invalid(format!("no randomness for a device key: {e}")))?;
                write_new_key(dir, &dir.join(KEY_FILE), &secret)?;
                Ok(Identity { secret })
            }
        }
    }

    /// Reads the data dir's key, if it has one.
    pub fn load(dir: &Path) -> Result<Option<Identity>> {
        let path = dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let secret: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                    Error::Invalid(format!(
                        "the device key {} is damaged ({} bytes, expected {KEY_LEN}); \
                         restore it from a backup — a new key would unpair this device",
                        path.display(),
                        bytes.len()
                    ))
                })?;
                Ok(Some(Identity { secret }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// The device's node id: its public key as 64 lowercase hex digits.
    pub fn node_id(&self) -> String {
        let public = ed25519_dalek::SigningKey::from_bytes(&self.secret).verifying_key();
        public
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The secret key's bytes, for the transport (an iroh `SecretKey`).
    pub fn secret_bytes(&self) -> [u8; KEY_LEN] {
        self.secret
    }
}

fn write_new_key(dir: &Path, path: &Path, secret: &[u8; KEY_LEN]) -> Result<()> {
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let io = |what: &str, e| Error::io(format!("cannot {what} {}", tmp.display()), e);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| io("create", e))?;
    file.write_all(secret).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("write", e))?;
    fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    // Make the rename itself durable.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_stable_and_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap().node_id();
        assert_eq!(first.len(), 64);
        assert_eq!(
            Identity::load_or_create(dir.path()).unwrap().node_id(),
            first
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let err = Identity::load_or_create(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("damaged"), "{err}");
        assert_eq!(fs::read(dir.path().join(KEY_FILE)).unwrap(), b"short");
    }
}
