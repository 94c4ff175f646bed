//! The download side of a bill: `hash_value` (SHA1 hex of the uncompressed bytes, BOM
//! included) and `tar_type=GZIP` bodies, with a bounded gunzip against zip bombs.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha1::{Digest, Sha1};

use super::BillError;

/// Lowercase hex SHA1 of `bytes`: the `hash_value` of a bill, computed on the uncompressed
/// file (clients compare case-insensitively).
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// Gzip of `bytes`, as served for `tar_type=GZIP`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::default(),
    );
    match encoder.write_all(bytes).and_then(|()| encoder.finish()) {
        Ok(out) => out,
        // Writing into a Vec cannot fail, but if the compressor ever did, a stored
        // (uncompressed) gzip is still a correct answer rather than a panic.
        Err(_) => gzip_stored(bytes),
    }
}

/// A valid gzip member whose deflate stream uses only stored blocks (RFC 1951 §3.2.4).
fn gzip_stored(bytes: &[u8]) -> Vec<u8> {
    const BLOCK_MAX: usize = u16::MAX as usize;
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / BLOCK_MAX * 5 + 32);
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = bytes.chunks(BLOCK_MAX).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16; // chunks() bounds it by u16::MAX
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    out
}

/// Decompresses a gzip body, refusing to produce more than `max_bytes` (a small body can
/// expand a thousandfold). Concatenated gzip members are decoded as one stream.
pub fn gunzip(bytes: &[u8], max_bytes: usize) -> Result<Vec<u8>, BillError> {
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(BillError::Gzip)?;
    if out.len() > max_bytes {
        return Err(BillError::TooLarge { max_bytes });
    }
    Ok(out)
}

/// Hashes everything read through it, so a bill can be parsed from a stream and its
/// `hash_value` checked without a second pass. Wrap it in a `BufReader` for the bill
/// readers, and take it back with their `into_inner` once they are done.
pub struct Sha1Reader<R> {
    inner: R,
    hasher: Sha1,
    bytes_read: u64,
}

impl<R: Read> Sha1Reader<R> {
    pub fn new(inner: R) -> Sha1Reader<R> {
        Sha1Reader {
            inner,
            hasher: Sha1::new(),
            bytes_read: 0,
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Lowercase hex SHA1 of the bytes read so far.
    pub fn hex_digest(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Sha1Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or_default();
        self.hasher.update(read);
        self.bytes_read += read.len() as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_of_known_vectors() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn stored_gzip_is_valid_for_empty_small_and_multi_block_inputs() {
        for len in [0usize, 1, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let packed = gzip_stored(&data);
            assert_eq!(gunzip(&packed, len).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn gunzip_refuses_output_beyond_the_bound() {
        let zeros = vec![0u8; 1 << 20];
        let packed = gzip(&zeros);
        assert!(packed.len() < 4096, "a megabyte of zeros packs small");
        assert!(matches!(
            gunzip(&packed, (1 << 20) - 1),
            Err(BillError::TooLarge { max_bytes }) if max_bytes == (1 << 20) - 1
        ));
        assert_eq!(gunzip(&packed, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn gunzip_rejects_garbage_and_truncation() {
        assert!(matches!(gunzip(b"not gzip", 100), Err(BillError::Gzip(_))));
        let packed = gzip(b"hello bill");
        assert!(matches!(
            gunzip(&packed[..packed.len() - 6], 100),
            Err(BillError::Gzip(_))
        ));
    }

    #[test]
    fn concatenated_members_decode_as_one_stream() {
        let mut two = gzip(b"abc");
        two.extend(gzip(b"def"));
        assert_eq!(gunzip(&two, 100).unwrap(), b"abcdef");
    }

    #[test]
    fn sha1_reader_hashes_what_passes_through() {
        let data = b"\xEF\xBB\xBFheader\r\n".repeat(1000);
        let mut r = Sha1Reader::new(&data[..]);
        let mut sink = Vec::new();
        std::io::copy(&mut r, &mut sink).unwrap();
        assert_eq!(sink, data);
        assert_eq!(r.bytes_read(), data.len() as u64);
        assert_eq!(r.hex_digest(), sha1_hex(&data));
    }
}
