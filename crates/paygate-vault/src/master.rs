//! The master key (key-encryption key): it never encrypts data, only wraps the data keys
//! stored beside the data. [`MasterKey`] is the KMS interface; [`LocalMasterKey`] keeps the
//! key in a file or an environment variable (hex), SM4-GCM wrapping.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::VaultError;
use crate::sm::{self, SM4_KEY_LEN, Sm4Gcm};

/// A key-encryption service: a local key, or a KMS/HSM that wraps and unwraps data keys
/// without ever handing out the master key.
pub trait MasterKey: Send + Sync {
    /// Stable id of the master key, stored with every wrapped data key (so a wrong master key
    /// is named, not mistaken for corruption).
    fn id(&self) -> &str;
    /// Wraps a data key; `context` (the data key's id) is bound to the result.
    fn wrap(&self, data_key: &[u8], context: &str) -> Result<String, VaultError>;
    fn unwrap(&self, wrapped: &str, context: &str) -> Result<Vec<u8>, VaultError>;
}

/// A master key held in this process (from a file or the environment).
pub struct LocalMasterKey {
    id: String,
    cipher: Sm4Gcm,
}

impl std::fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalMasterKey({}, ***)", self.id)
    }
}

/// Where the master key comes from: `file:PATH`, `env:VAR`, or a plain path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    File(std::path::PathBuf),
    Env(String),
}

impl MasterKeySource {
    pub fn parse(s: &str) -> Self {
        if let Some(var) = s.strip_prefix("env:") {
            return Self::Env(var.to_string());
        }
        Self::File(s.strip_prefix("file:").unwrap_or(s).into())
    }
}

impl LocalMasterKey {
    /// From 16 raw bytes (SM4-128).
    pub fn from_bytes(key: &[u8]) -> Result<Self, VaultError> {
        if key.len() != SM4_KEY_LEN {
            return Err(VaultError::Key(format!(
                "master key: want {SM4_KEY_LEN} bytes (32 hex digits), got {}",
                key.len()
            )));
        }
        let digest = sm::sm3(&[b"paygate master key id\0".as_slice(), key].concat());
        Ok(Self {
            id: format!("mk_{}", hex::encode(&digest[..8])),
            cipher: sm::sm4_gcm(key)?,
        })
    }

    /// From 32 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, VaultError> {
        let bytes =
            hex::decode(text.trim()).map_err(|_| VaultError::Key("master key: not hex".into()))?;
        Self::from_bytes(&bytes)
    }

    /// Reads the key file, creating it (mode 0600, 16 random bytes) when it does not exist:
    /// the embedded default, like the operator token.
    pub fn load_or_create_file(path: &Path) -> Result<Self, VaultError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; SM4_KEY_LEN] = sm::random_bytes();
                write_private(path, &format!("{}\n", hex::encode(key)))?;
                // Re-read: a second process creating it at the same moment wins or loses whole.
                Self::from_hex(&std::fs::read_to_string(path).map_err(|e| io(path, e))?)
            }
            Err(e) => Err(io(path, e)),
        }
    }

    pub fn from_env(var: &str) -> Result<Self, VaultError> {
        let text = std::env::var(var)
            .map_err(|_| VaultError::Key(format!("master key: ${var} is not set")))?;
        Self::from_hex(&text)
    }

    /// The key named by `source`; a missing file is created.
    pub fn load(source: &MasterKeySource) -> Result<Arc<dyn MasterKey>, VaultError> {
        Ok(Arc::new(match source {
            MasterKeySource::File(path) => Self::load_or_create_file(path)?,
            MasterKeySource::Env(var) => Self::from_env(var)?,
        }))
    }
}

fn io(path: &Path, e: std::io::Error) -> VaultError {
    VaultError::Key(format!("master key file {}: {e}", path.display()))
}

fn write_private(path: &Path, text: &str) -> Result<(), VaultError> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut f) => f.write_all(text.as_bytes()).map_err(|e| io(path, e)),
        // Someone else created it first: theirs is the key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(path, e)),
    }
}

impl MasterKey for LocalMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, data_key: &[u8], context: &str) -> Result<String, VaultError> {
        let sealed = sm::seal(&self.cipher, &aad(context), data_key)?;
        Ok(BASE64.encode(sealed))
    }

    fn unwrap(&self, wrapped: &str, context: &str) -> Result<Vec<u8>, VaultError> {
        let sealed = BASE64
            .decode(wrapped)
            .map_err(|_| VaultError::Crypto(format!("wrapped key {context}: not base64")))?;
        sm::open(&self.cipher, &aad(context), &sealed).map_err(|_| {
            VaultError::Key(format!(
                "data key {context} does not unwrap with master key {}",
                self.id
            ))
        })
    }
}

fn aad(context: &str) -> Vec<u8> {
    [b"paygate vault key\0".as_slice(), context.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_unwraps_bound_to_the_key_id() {
        let master = LocalMasterKey::from_hex("00112233445566778899aabbccddeeff").unwrap();
        let wrapped = master.wrap(&[9u8; 16], "dk_1").unwrap();
        assert_eq!(master.unwrap(&wrapped, "dk_1").unwrap(), vec![9u8; 16]);
        assert!(master.unwrap(&wrapped, "dk_2").is_err());
        let other = LocalMasterKey::from_hex("ffeeddccbbaa99887766554433221100").unwrap();
        assert_ne!(master.id(), other.id());
        let err = other.unwrap(&wrapped, "dk_1").unwrap_err().to_string();
        assert!(err.contains(other.id()), "{err}");
    }

    #[test]
    fn bad_master_keys_are_refused_and_debug_hides_the_key() {
        assert!(LocalMasterKey::from_hex("0011").is_err());
        assert!(LocalMasterKey::from_hex("zz112233445566778899aabbccddeeff").is_err());
        let master = LocalMasterKey::from_hex("00112233445566778899aabbccddeeff").unwrap();
        let shown = format!("{master:?}");
        assert!(shown.contains("***") && !shown.contains("0011"), "{shown}");
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir =
            std::env::temp_dir().join(format!("pgv-{}", hex::encode(sm::random_bytes::<6>())));
        let path = dir.join("master.key");
        let a = LocalMasterKey::load_or_create_file(&path).unwrap();
        let b = LocalMasterKey::load_or_create_file(&path).unwrap();
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            MasterKeySource::parse("env:X"),
            MasterKeySource::Env("X".into())
        );
        assert_eq!(
            MasterKeySource::parse("file:/a"),
            MasterKeySource::File("/a".into())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
