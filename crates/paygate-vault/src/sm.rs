//! The Chinese national primitives the vault is built on: SM3 (GB/T 32905), HMAC-SM3 and
//! SM4-GCM (GB/T 32907 in GCM mode), all RustCrypto.

use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut as _, KeyInit as _};
use hmac::Mac as _;
use rand::RngCore as _;
use sm3::Digest as _;

use crate::VaultError;

pub(crate) type Sm4Gcm = aes_gcm::AesGcm<sm4::Sm4, U12>;
type HmacSm3 = hmac::Hmac<sm3::Sm3>;

/// SM4's key and block size.
pub const SM4_KEY_LEN: usize = 16;
/// The GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// The GCM tag length.
pub const TAG_LEN: usize = 16;

pub fn sm3(data: &[u8]) -> [u8; 32] {
    sm3::Sm3::digest(data).into()
}

/// HMAC-SM3 over the parts, each prefixed by its length so `("ab","c")` ≠ `("a","bc")`.
pub fn hmac_sm3(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts any key length; the error arm cannot happen.
    let Ok(mut mac) = HmacSm3::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn sm4_gcm(key: &[u8]) -> Result<Sm4Gcm, VaultError> {
    Sm4Gcm::new_from_slice(key)
        .map_err(|_| VaultError::Key(format!("SM4 key of {} bytes", key.len())))
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// `nonce || ciphertext || tag` under a fresh random nonce.
pub(crate) fn seal(cipher: &Sm4Gcm, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_inout_detached(&nonce.into(), aad, buf.as_mut_slice().into())
        .map_err(|_| VaultError::Crypto("SM4-GCM encryption failed".into()))?;
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The inverse of [`seal`]; a wrong key, AAD or an edited byte fails the tag check.
pub(crate) fn open(cipher: &Sm4Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(VaultError::Crypto("sealed value too short".into()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| VaultError::Crypto("bad nonce".into()))?;
    let tag: [u8; TAG_LEN] = tag
        .try_into()
        .map_err(|_| VaultError::Crypto("bad tag".into()))?;
    let mut buf = ct.to_vec();
    cipher
        .decrypt_inout_detached(&nonce.into(), aad, buf.as_mut_slice().into(), &tag.into())
        .map_err(|_| {
            VaultError::Crypto("SM4-GCM tag mismatch (wrong key or edited ciphertext)".into())
        })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm4::cipher::BlockCipherEncrypt as _;

    // Vectors from reference/ledger-recon-risk.md §4 (GB/T 32907, GB/T 32905).
    #[test]
    fn sm4_matches_the_standard_vectors() {
        let key = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        let cipher = sm4::Sm4::new_from_slice(&key).unwrap();
        let mut block = sm4::cipher::Array::try_from(key.as_slice()).unwrap();
        cipher.encrypt_block(&mut block);
        assert_eq!(hex::encode(block), "681edf34d206965e86b3e94f536e4246");
        for _ in 1..1_000_000 {
            cipher.encrypt_block(&mut block);
        }
        assert_eq!(hex::encode(block), "595298c7c6fd271f0402f804c33d3f66");
    }

    #[test]
    fn sm3_matches_the_standard_vectors() {
        assert_eq!(
            hex::encode(sm3(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            hex::encode(sm3("abcd".repeat(16).as_bytes())),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    #[test]
    fn sm4_gcm_round_trips_and_refuses_edits_and_other_aad() {
        let cipher = sm4_gcm(&[7u8; 16]).unwrap();
        let sealed = seal(
            &cipher,
            b"orders.request_json",
            b"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        )
        .unwrap();
        assert_eq!(
            open(&cipher, b"orders.request_json", &sealed).unwrap(),
            b"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
        );
        assert!(open(&cipher, b"notifications.plaintext", &sealed).is_err());
        let mut edited = sealed.clone();
        edited[NONCE_LEN] ^= 1;
        assert!(open(&cipher, b"orders.request_json", &edited).is_err());
        assert!(open(&cipher, b"x", &sealed[..10]).is_err());
        // A fresh nonce each time: the same openid never seals to the same bytes.
        assert_ne!(
            sealed,
            seal(
                &cipher,
                b"orders.request_json",
                b"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
            )
            .unwrap()
        );
    }

    #[test]
    fn hmac_sm3_separates_parts() {
        assert_ne!(
            hmac_sm3(b"k", &[b"ab", b"c"]),
            hmac_sm3(b"k", &[b"a", b"bc"])
        );
        assert_ne!(hmac_sm3(b"k", &[b"abc"]), hmac_sm3(b"l", &[b"abc"]));
    }
}
