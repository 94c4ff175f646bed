//! C2SP checkpoints (c2sp.org/tlog-checkpoint): a signed note whose text is
//!
//! ```text
//! <origin>
//! <tree size, decimal, no leading zeros>
//! <base64 root hash>
//! [extension lines]
//! ```
//!
//! each line ending in a newline. The origin names the log; the signing key's name should
//! be the origin too.

use crate::merkle::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};

/// Longest origin line.
pub const ORIGIN_BYTES_MAX: usize = 256;
/// Most extension lines (their use is discouraged; paygate writes none).
pub const EXTENSIONS_MAX: usize = 16;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("note: {0}")]
    Note(#[from] NoteError),
    #[error("the checkpoint text is malformed: {0}")]
    Malformed(&'static str),
    #[error("origin {found:?} is not the expected {expected:?}")]
    WrongOrigin { found: String, expected: String },
}

impl CheckpointError {
    pub const fn code(&self) -> &'static str {
        match self {
            CheckpointError::Note(e) => e.code(),
            CheckpointError::Malformed(_) => "malformed_checkpoint",
            CheckpointError::WrongOrigin { .. } => "wrong_origin",
        }
    }
}

/// A tree head: which log, how many leaves, which root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

fn valid_line(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c < ' ')
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash) -> Checkpoint {
        Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The note text, byte-exact.
    pub fn body(&self) -> Result<String, CheckpointError> {
        if !valid_line(&self.origin) || self.origin.len() > ORIGIN_BYTES_MAX {
            return Err(CheckpointError::Malformed("origin"));
        }
        if self.extensions.len() > EXTENSIONS_MAX || !self.extensions.iter().all(|e| valid_line(e))
        {
            return Err(CheckpointError::Malformed("extension line"));
        }
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        Ok(s)
    }

    /// Reads a note text (as [`Checkpoint::body`] writes it).
    pub fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
        let lines = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("no final newline"))?;
        let mut it = lines.split('\n');
        let origin = it
            .next()
            .filter(|o| valid_line(o) && o.len() <= ORIGIN_BYTES_MAX)
            .ok_or(CheckpointError::Malformed("origin"))?;
        let size_text = it.next().ok_or(CheckpointError::Malformed("tree size"))?;
        let canonical = size_text == "0"
            || (!size_text.starts_with('0')
                && !size_text.is_empty()
                && size_text.bytes().all(|b| b.is_ascii_digit()));
        let size = size_text
            .parse::<u64>()
            .ok()
            .filter(|_| canonical)
            .ok_or(CheckpointError::Malformed("tree size"))?;
        let root = it
            .next()
            .and_then(Hash::from_base64)
            .ok_or(CheckpointError::Malformed("root hash"))?;
        let extensions: Vec<String> = it.map(str::to_owned).collect();
        if extensions.len() > EXTENSIONS_MAX || !extensions.iter().all(|e| valid_line(e)) {
            return Err(CheckpointError::Malformed("extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// The signed checkpoint note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        Ok(signer.sign(&self.body()?)?)
    }
}

/// Opens checkpoints of one log: its origin and the key(s) trusted to sign them.
#[derive(Debug, Clone)]
pub struct CheckpointVerifier {
    pub origin: String,
    pub keys: Vec<NoteVerifier>,
}

impl CheckpointVerifier {
    pub fn new(origin: &str, key: NoteVerifier) -> CheckpointVerifier {
        CheckpointVerifier {
            origin: origin.to_owned(),
            keys: vec![key],
        }
    }

    /// Verifies the signature(s), then reads the text and checks the origin.
    pub fn open(&self, signed: &str) -> Result<Checkpoint, CheckpointError> {
        let opened = note::open(signed.as_bytes(), &self.keys)?;
        let cp = Checkpoint::parse_body(&opened.text)?;
        if cp.origin != self.origin {
            return Err(CheckpointError::WrongOrigin {
                found: cp.origin,
                expected: self.origin.clone(),
            });
        }
        Ok(cp)
    }
}
