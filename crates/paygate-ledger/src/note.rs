//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, as golang.org/x/mod/sumdb/note
//! writes them: a text ending in a newline, a blank line, then lines
//! `— <key name> <base64(4-byte key id ‖ signature)>`. The key id is the first four bytes of
//! SHA-256(key name ‖ `\n` ‖ 0x01 ‖ public key).
//!
//! Keys travel as the same strings as Go's: a verifier key `name+hex(id)+base64(0x01 ‖ pk)`
//! and a signer key `PRIVATE+KEY+name+hex(id)+base64(0x01 ‖ seed)`.

use std::fmt;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The signature type byte of Ed25519.
pub const ALG_ED25519: u8 = 0x01;
/// Largest note accepted (a checkpoint is a few hundred bytes).
pub const NOTE_BYTES_MAX: usize = 64 * 1024;
/// Most signature lines read (the spec asks for at least 16).
pub const SIGNATURES_MAX: usize = 32;
/// Longest key name.
pub const KEY_NAME_BYTES_MAX: usize = 256;

/// Why a key, a note or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key")]
    MalformedKey,
    #[error("unknown signature algorithm {0}")]
    UnknownAlgorithm(u8),
    #[error("the key id does not match the key")]
    KeyIdMismatch,
    #[error("invalid key name")]
    BadKeyName,
    #[error("the key was refused by the Ed25519 implementation")]
    KeyRejected,
    #[error("no randomness for a new key")]
    Random,
    #[error("malformed note")]
    Malformed,
    #[error("the note is longer than {NOTE_BYTES_MAX} bytes")]
    TooLong,
    #[error("more than {SIGNATURES_MAX} signatures")]
    TooManySignatures,
    #[error("invalid signature for key {name}+{key_id:08x}")]
    InvalidSignature { name: String, key_id: u32 },
    #[error("no signature from a known key")]
    Unverified,
}

impl NoteError {
    pub const fn code(&self) -> &'static str {
        match self {
            NoteError::MalformedKey => "malformed_key",
            NoteError::UnknownAlgorithm(_) => "unknown_algorithm",
            NoteError::KeyIdMismatch => "key_id_mismatch",
            NoteError::BadKeyName => "bad_key_name",
            NoteError::KeyRejected => "key_rejected",
            NoteError::Random => "random",
            NoteError::Malformed => "malformed_note",
            NoteError::TooLong => "note_too_long",
            NoteError::TooManySignatures => "too_many_signatures",
            NoteError::InvalidSignature { .. } => "invalid_signature",
            NoteError::Unverified => "unverified_note",
        }
    }
}

/// Non-empty, no Unicode space, no `+`, bounded.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= KEY_NAME_BYTES_MAX
        && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The C2SP key id: SHA-256(name ‖ 0x0A ‖ alg ‖ public key)[:4], big-endian.
pub fn key_id(name: &str, alg: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([alg]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn parse_key_id(hex8: &str) -> Result<u32, NoteError> {
    if hex8.len() != 8 || !hex8.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey);
    }
    u32::from_str_radix(hex8, 16).map_err(|_| NoteError::MalformedKey)
}

/// Decodes `base64(alg ‖ 32 bytes)`.
fn parse_key_material(b64: &str) -> Result<[u8; 32], NoteError> {
    let raw = STANDARD.decode(b64).map_err(|_| NoteError::MalformedKey)?;
    let (alg, key) = raw.split_first().ok_or(NoteError::MalformedKey)?;
    if *alg != ALG_ED25519 {
        return Err(NoteError::UnknownAlgorithm(*alg));
    }
    key.try_into().map_err(|_| NoteError::MalformedKey)
}

/// Verifies one key's signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl NoteVerifier {
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<NoteVerifier, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, &public_key),
            public_key,
        })
    }

    /// Reads `name+hex(id)+base64(0x01 ‖ pk)`.
    pub fn from_vkey(vkey: &str) -> Result<NoteVerifier, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey);
        };
        if !is_valid_key_name(name) {
            return Err(NoteError::MalformedKey);
        }
        let id = parse_key_id(id)?;
        let public_key = parse_key_material(key)?;
        if key_id(name, ALG_ED25519, &public_key) != id {
            return Err(NoteError::KeyIdMismatch);
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id: id,
            public_key,
        })
    }

    pub fn to_vkey(&self) -> String {
        let mut material = vec![ALG_ED25519];
        material.extend_from_slice(&self.public_key);
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(material)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(msg, sig)
            .is_ok()
    }
}

/// Signs notes with one Ed25519 key. `Debug` never shows the seed.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    seed: [u8; 32],
    key_pair: Ed25519KeyPair,
    public_key: [u8; 32],
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NoteSigner({}+{:08x}, seed: ***)",
            self.name, self.key_id
        )
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        let key_pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| NoteError::KeyRejected)?;
        let public_key: [u8; 32] = key_pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| NoteError::KeyRejected)?;
        Ok(NoteSigner {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, &public_key),
            seed,
            key_pair,
            public_key,
        })
    }

    /// A new random key.
    pub fn generate(name: &str) -> Result<NoteSigner, NoteError> {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).map_err(|_| NoteError::Random)?;
        NoteSigner::from_seed(name, seed)
    }

    /// Reads `PRIVATE+KEY+name+hex(id)+base64(0x01 ‖ seed)`.
    pub fn from_skey(skey: &str) -> Result<NoteSigner, NoteError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey)?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey);
        };
        if !is_valid_key_name(name) {
            return Err(NoteError::MalformedKey);
        }
        let id = parse_key_id(id)?;
        let seed = parse_key_material(key)?;
        let signer = NoteSigner::from_seed(name, seed)?;
        if signer.key_id != id {
            return Err(NoteError::KeyIdMismatch);
        }
        Ok(signer)
    }

    /// The signer key string: a secret, keep it like one.
    pub fn to_skey(&self) -> String {
        let mut material = vec![ALG_ED25519];
        material.extend_from_slice(&self.seed);
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(material)
        )
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: self.public_key,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature line for `text` (ends in a newline).
    pub fn signature_line(&self, text: &str) -> String {
        let sig = self.key_pair.sign(text.as_bytes());
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(sig.as_ref());
        format!("— {} {}\n", self.name, STANDARD.encode(raw))
    }

    /// The signed note: `text`, a blank line, this key's signature line. `text` must be
    /// non-empty, end in a newline and hold no control character but newlines.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        Ok(format!("{text}\n{}", self.signature_line(text)))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > NOTE_BYTES_MAX {
        return Err(NoteError::TooLong);
    }
    if !text.ends_with('\n') || text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed);
    }
    Ok(())
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub base64: String,
}

/// An opened note: its text and which signatures verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub verified: Vec<NoteSignature>,
    /// Signatures of keys not among the verifiers (ignored, as the spec requires).
    pub unverified: Vec<NoteSignature>,
}

/// Opens a signed note: at least one signature of a known key must verify, and any known
/// key's signature that does not verify rejects the note.
pub fn open(msg: &[u8], verifiers: &[NoteVerifier]) -> Result<Note, NoteError> {
    if msg.len() > NOTE_BYTES_MAX {
        return Err(NoteError::TooLong);
    }
    let msg = std::str::from_utf8(msg).map_err(|_| NoteError::Malformed)?;
    if msg.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed);
    }
    let split = msg.rfind("\n\n").ok_or(NoteError::Malformed)?;
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::Malformed);
    }
    let mut note = Note {
        text: text.to_owned(),
        verified: Vec::new(),
        unverified: Vec::new(),
    };
    for (count, line) in sigs[..sigs.len() - 1].split('\n').enumerate() {
        if count >= SIGNATURES_MAX {
            return Err(NoteError::TooManySignatures);
        }
        let rest = line.strip_prefix("— ").ok_or(NoteError::Malformed)?;
        let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed)?;
        let raw = STANDARD.decode(b64).map_err(|_| NoteError::Malformed)?;
        if !is_valid_key_name(name) || raw.len() < 5 {
            return Err(NoteError::Malformed);
        }
        let key_id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let sig = NoteSignature {
            name: name.to_owned(),
            key_id,
            base64: b64.to_owned(),
        };
        match verifiers
            .iter()
            .find(|v| v.name == name && v.key_id == key_id)
        {
            None => {
                if !note.unverified.contains(&sig) {
                    note.unverified.push(sig);
                }
            }
            Some(_)
                if note
                    .verified
                    .iter()
                    .any(|s| s.name == name && s.key_id == key_id) => {}
            Some(v) => {
                if !v.verify(text.as_bytes(), &raw[4..]) {
                    return Err(NoteError::InvalidSignature {
                        name: name.to_owned(),
                        key_id,
                    });
                }
                note.verified.push(sig);
            }
        }
    }
    if note.verified.is_empty() {
        return Err(NoteError::Unverified);
    }
    Ok(note)
}
