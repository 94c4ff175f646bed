//! A merchant credential kit: the directory a merchant (or a test, or the gateway's channel
//! configuration) needs to talk WeChat Pay v3 to a server. The simulator writes one per
//! sandbox account; the gateway writes one per merchant, in the same layout:
//!
//! ```text
//! DIR/merchant.json      {"mchid","appid","serial_no","apiv3_key","base_url",
//!                         "platform_public_key_id","platform_serial_no",
//!                         "sp_mchid"?,"sub_mchid"?,"sp_appid"?,"sub_appid"?}
//! DIR/apiclient_key.pem  merchant API private key (PKCS#8)
//! DIR/apiclient_cert.pem merchant API certificate
//! DIR/pub_key.pem        platform public key (public-key mode, id = platform_public_key_id)
//! DIR/platform_cert.pem  platform certificate (certificate mode, serial = platform_serial_no)
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const MERCHANT_JSON: &str = "merchant.json";
pub const APICLIENT_KEY_PEM: &str = "apiclient_key.pem";
pub const APICLIENT_CERT_PEM: &str = "apiclient_cert.pem";
pub const PUB_KEY_PEM: &str = "pub_key.pem";
pub const PLATFORM_CERT_PEM: &str = "platform_cert.pem";

/// `merchant.json`. In a partner (service-provider) kit `mchid == sp_mchid` and
/// `appid == sp_appid`: requests are signed as the service provider.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantJson {
    pub mchid: String,
    pub appid: String,
    pub serial_no: String,
    pub apiv3_key: String,
    pub base_url: String,
    pub platform_public_key_id: String,
    pub platform_serial_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
}

impl std::fmt::Debug for MerchantJson {
    // The APIv3 key is a secret: never let it reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantJson")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("serial_no", &self.serial_no)
            .field("apiv3_key", &"***")
            .field("base_url", &self.base_url)
            .field("sub_mchid", &self.sub_mchid)
            .finish_non_exhaustive()
    }
}

/// A whole kit in memory: `merchant.json` plus the four PEM files.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantKit {
    pub merchant: MerchantJson,
    pub apiclient_key_pem: String,
    pub apiclient_cert_pem: String,
    pub pub_key_pem: String,
    pub platform_cert_pem: String,
}

impl std::fmt::Debug for MerchantKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantKit")
            .field("merchant", &self.merchant)
            .field("apiclient_key_pem", &"***")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("kit file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("kit file {path} is not valid merchant.json: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

impl MerchantKit {
    /// Writes the kit into `dir` (created if missing). The private key file is made
    /// owner-readable only where the platform allows it.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), KitError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let json = serde_json::to_vec_pretty(&self.merchant).map_err(|source| KitError::Json {
            path: dir.join(MERCHANT_JSON).display().to_string(),
            source,
        })?;
        write(dir, MERCHANT_JSON, &json)?;
        write(dir, APICLIENT_KEY_PEM, self.apiclient_key_pem.as_bytes())?;
        restrict_permissions(&dir.join(APICLIENT_KEY_PEM));
        write(dir, APICLIENT_CERT_PEM, self.apiclient_cert_pem.as_bytes())?;
        write(dir, PUB_KEY_PEM, self.pub_key_pem.as_bytes())?;
        write(dir, PLATFORM_CERT_PEM, self.platform_cert_pem.as_bytes())?;
        Ok(())
    }

    /// Reads a kit written by [`MerchantKit::write_to_dir`] (or by hand in the same layout).
    pub fn read_from_dir(dir: &Path) -> Result<Self, KitError> {
        let json_path = dir.join(MERCHANT_JSON);
        let json = std::fs::read(&json_path).map_err(|e| io_err(&json_path, e))?;
        let merchant = serde_json::from_slice(&json).map_err(|source| KitError::Json {
            path: json_path.display().to_string(),
            source,
        })?;
        Ok(Self {
            merchant,
            apiclient_key_pem: read(dir, APICLIENT_KEY_PEM)?,
            apiclient_cert_pem: read(dir, APICLIENT_CERT_PEM)?,
            pub_key_pem: read(dir, PUB_KEY_PEM)?,
            platform_cert_pem: read(dir, PLATFORM_CERT_PEM)?,
        })
    }
}

fn io_err(path: &Path, source: std::io::Error) -> KitError {
    KitError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), KitError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| io_err(&path, e))
}

fn read(dir: &Path, name: &str) -> Result<String, KitError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // Best effort: a kit on a filesystem without modes still works.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MerchantKit {
        MerchantKit {
            merchant: MerchantJson {
                mchid: "1900000109".into(),
                appid: "wxd678efh567hg6787".into(),
                serial_no: "ABC".into(),
                apiv3_key: "k".repeat(32),
                base_url: "http://127.0.0.1:9090/".into(),
                platform_public_key_id: "PUB_KEY_ID_0119000001092026".into(),
                platform_serial_no: "DEF".into(),
                sp_mchid: None,
                sub_mchid: None,
                sp_appid: None,
                sub_appid: None,
            },
            apiclient_key_pem: "key".into(),
            apiclient_cert_pem: "cert".into(),
            pub_key_pem: "pub".into(),
            platform_cert_pem: "platform".into(),
        }
    }

    #[test]
    fn kit_round_trips_through_a_directory() {
        let dir = std::env::temp_dir().join(format!("kit-test-{}", std::process::id()));
        let kit = sample();
        kit.write_to_dir(&dir).unwrap();
        assert_eq!(MerchantKit::read_from_dir(&dir).unwrap(), kit);
        let json = std::fs::read_to_string(dir.join(MERCHANT_JSON)).unwrap();
        assert!(
            !json.contains("sub_mchid"),
            "direct kits carry no partner fields"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_never_prints_secrets() {
        let printed = format!("{:?}", sample());
        assert!(!printed.contains(&"k".repeat(32)));
        assert!(!printed.contains("key\""));
    }
}
