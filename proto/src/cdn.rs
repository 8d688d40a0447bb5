//! Content addressing for the CDN: a file is cut into fixed-size chunks, a **manifest** lists
//! its size, optional content type and every chunk's BLAKE3 hash, and the **content id** is the
//! BLAKE3 hash of the encoded manifest. A manifest is checked against its id, and each chunk
//! against the manifest on its own, so a relay that serves a wrong byte is caught at the chunk.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use bech32::{Bech32m, Hrp};
use serde::{Deserialize, Serialize};

/// Bytes per chunk (the last one may be shorter).
pub const CHUNK_SIZE: u32 = 1 << 20;
/// Most chunks a manifest may list (64 GiB at [`CHUNK_SIZE`]).
pub const MAX_CHUNKS: usize = 1 << 16;
/// Longest content type a manifest may carry.
pub const MAX_CONTENT_TYPE: usize = 127;
/// Largest encoded manifest.
pub const MAX_MANIFEST: usize = MAX_CHUNKS * 33 + 256;
/// Bech32m prefix of content ids.
const CID_PREFIX: &str = "cid";

/// What was wrong with a content id, manifest or chunk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CdnError {
    /// Not a content id (bad bech32m, checksum, prefix or length).
    #[error("not a content id: {0:?} (expected cid1…)")]
    BadCid(String),
    /// The manifest could not be decoded or breaks a rule.
    #[error("bad manifest: {0}")]
    BadManifest(&'static str),
    /// The manifest's hash is not the content id asked for.
    #[error("the manifest does not match the content id")]
    WrongManifest,
    /// A chunk's hash or length is not the one the manifest lists.
    #[error("chunk {0} does not match the manifest")]
    WrongChunk(u32),
    /// A chunk index past the end of the file.
    #[error("chunk {0} is past the end of the file")]
    NoSuchChunk(u32),
}

/// A content id: the BLAKE3 hash of a manifest, shown as `cid1…` (bech32m).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cid(pub [u8; 32]);

impl Cid {
    /// The hash as lowercase hex (file names, ETags).
    pub fn hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hrp = Hrp::parse_unchecked(CID_PREFIX);
        match bech32::encode::<Bech32m>(hrp, &self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Cid {
    type Err = CdnError;

    fn from_str(s: &str) -> Result<Self, CdnError> {
        let bad = || CdnError::BadCid(s.chars().take(80).collect());
        let (hrp, data) = bech32::decode(s).map_err(|_| bad())?;
        if hrp.as_str() != CID_PREFIX {
            return Err(bad());
        }
        Ok(Self(data.try_into().map_err(|_| bad())?))
    }
}

/// The description of a published file; its hash is the file's [`Cid`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// File length in bytes.
    pub size: u64,
    /// Bytes per chunk (the last chunk holds the rest).
    pub chunk_size: u32,
    /// MIME type the publisher gave (printable ASCII), served as `Content-Type`.
    pub content_type: Option<String>,
    /// BLAKE3 hash of each chunk, in order.
    pub chunks: Vec<[u8; 32]>,
}

impl Manifest {
    /// The canonical encoding (what the content id hashes).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks a manifest received from elsewhere.
    pub fn decode(bytes: &[u8]) -> Result<Self, CdnError> {
        if bytes.len() > MAX_MANIFEST {
            return Err(CdnError::BadManifest("too large"));
        }
        let m: Self =
            postcard::from_bytes(bytes).map_err(|_| CdnError::BadManifest("undecodable"))?;
        m.check()?;
        if m.encode() != bytes {
            return Err(CdnError::BadManifest("not in canonical form"));
        }
        Ok(m)
    }

    /// Decodes a manifest and checks that it is the one `cid` names.
    pub fn decode_for(cid: &Cid, bytes: &[u8]) -> Result<Self, CdnError> {
        if blake3::hash(bytes).as_bytes() != &cid.0 {
            return Err(CdnError::WrongManifest);
        }
        Self::decode(bytes)
    }

    /// Checks the manifest's own rules: chunk size, chunk count for the size, content type.
    pub fn check(&self) -> Result<(), CdnError> {
        if self.chunk_size == 0 || self.chunk_size > 16 * CHUNK_SIZE {
            return Err(CdnError::BadManifest("chunk size out of range"));
        }
        if self.chunks.len() > MAX_CHUNKS {
            return Err(CdnError::BadManifest("too many chunks"));
        }
        if self.chunks.len() as u64 != self.size.div_ceil(u64::from(self.chunk_size)) {
            return Err(CdnError::BadManifest("chunk count does not fit the size"));
        }
        if let Some(t) = &self.content_type
            && (t.is_empty()
                || t.len() > MAX_CONTENT_TYPE
                || !t.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            return Err(CdnError::BadManifest("content type is not printable ASCII"));
        }
        Ok(())
    }

    /// The content id: BLAKE3 of the encoding.
    pub fn cid(&self) -> Cid {
        Cid(*blake3::hash(&self.encode()).as_bytes())
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.chunks.len() as u32
    }

    /// The byte range of chunk `index` within the file.
    pub fn chunk_range(&self, index: u32) -> Result<Range<u64>, CdnError> {
        if index as usize >= self.chunks.len() {
            return Err(CdnError::NoSuchChunk(index));
        }
        let start = u64::from(index) * u64::from(self.chunk_size);
        Ok(start..(start + u64::from(self.chunk_size)).min(self.size))
    }

    /// The chunks that hold file bytes `range` (non-empty, within the file).
    pub fn chunks_for(&self, range: &Range<u64>) -> Range<u32> {
        let cs = u64::from(self.chunk_size);
        let first = (range.start / cs) as u32;
        let last = range.end.saturating_sub(1) / cs;
        first..(last as u32 + 1)
    }

    /// Checks chunk `index`'s bytes against the manifest (length and hash).
    pub fn verify_chunk(&self, index: u32, data: &[u8]) -> Result<(), CdnError> {
        let range = self.chunk_range(index)?;
        let hash = &self.chunks[index as usize];
        if data.len() as u64 != range.end - range.start || blake3::hash(data).as_bytes() != hash {
            return Err(CdnError::WrongChunk(index));
        }
        Ok(())
    }
}

/// Builds a manifest from a file's bytes, fed in any pieces.
pub struct ManifestBuilder {
    chunk_size: u32,
    content_type: Option<String>,
    size: u64,
    chunks: Vec<[u8; 32]>,
    current: blake3::Hasher,
    in_current: u32,
}

impl ManifestBuilder {
    /// A builder with the default chunk size.
    pub fn new(content_type: Option<String>) -> Self {
        Self {
            chunk_size: CHUNK_SIZE,
            content_type,
            size: 0,
            chunks: Vec::new(),
            current: blake3::Hasher::new(),
            in_current: 0,
        }
    }

    /// Adds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.chunk_size - self.in_current) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.current.update(now);
            self.in_current += now.len() as u32;
            self.size += now.len() as u64;
            if self.in_current == self.chunk_size {
                self.chunks.push(*self.current.finalize().as_bytes());
                self.current.reset();
                self.in_current = 0;
            }
            data = rest;
        }
    }

    /// The finished manifest (checked: too many chunks or a bad content type fail).
    pub fn finish(mut self) -> Result<Manifest, CdnError> {
        if self.in_current > 0 {
            self.chunks.push(*self.current.finalize().as_bytes());
        }
        let m = Manifest {
            size: self.size,
            chunk_size: self.chunk_size,
            content_type: self.content_type,
            chunks: self.chunks,
        };
        m.check()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn manifest_of(data: &[u8], chunk_size: u32) -> Manifest {
        let mut b = ManifestBuilder::new(Some("text/plain".into()));
        b.chunk_size = chunk_size;
        b.update(data);
        b.finish().unwrap()
    }

    #[test]
    fn cid_round_trips_and_rejects_typos() {
        let m = manifest_of(b"hello", 4);
        let cid = m.cid();
        let s = cid.to_string();
        assert!(s.starts_with("cid1"));
        assert_eq!(s.parse::<Cid>().unwrap(), cid);
        let mut typo = s.clone().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
        assert!(String::from_utf8(typo).unwrap().parse::<Cid>().is_err());
        assert!("relay1xyz".parse::<Cid>().is_err());
        assert!("../../etc/passwd".parse::<Cid>().is_err());
    }

    #[test]
    fn chunks_verify_alone_and_substitutes_fail() {
        let data: Vec<u8> = (0..10u8).collect();
        let m = manifest_of(&data, 4);
        assert_eq!(m.chunk_count(), 3);
        m.verify_chunk(0, &data[0..4]).unwrap();
        m.verify_chunk(2, &data[8..10]).unwrap();
        assert_eq!(m.verify_chunk(1, &data[0..4]), Err(CdnError::WrongChunk(1)));
        assert_eq!(m.verify_chunk(2, &data[8..9]), Err(CdnError::WrongChunk(2)));
        assert_eq!(m.verify_chunk(3, &[]), Err(CdnError::NoSuchChunk(3)));
    }

    #[test]
    fn manifests_are_checked_against_their_id_and_rules() {
        let m = manifest_of(b"0123456789", 4);
        let bytes = m.encode();
        assert_eq!(Manifest::decode_for(&m.cid(), &bytes).unwrap(), m);
        let other = manifest_of(b"x", 4);
        assert_eq!(
            Manifest::decode_for(&other.cid(), &bytes),
            Err(CdnError::WrongManifest)
        );
        let mut lying = m.clone();
        lying.size = 100;
        assert!(Manifest::decode(&lying.encode()).is_err());
        let mut bad_type = m.clone();
        bad_type.content_type = Some("text/html\r\nSet-Cookie: x".into());
        assert!(Manifest::decode(&bad_type.encode()).is_err());
        assert!(Manifest::decode(&[0xff; 8]).is_err());
    }

    proptest! {
        #[test]
        fn pieces_do_not_change_the_manifest(data in proptest::collection::vec(any::<u8>(), 0..300),
                                             cut in 0usize..300, chunk in 1u32..40) {
            let whole = manifest_of(&data, chunk);
            let mut b = ManifestBuilder::new(Some("text/plain".into()));
            b.chunk_size = chunk;
            let cut = cut.min(data.len());
            b.update(&data[..cut]);
            b.update(&data[cut..]);
            prop_assert_eq!(b.finish().unwrap(), whole.clone());
            for i in 0..whole.chunk_count() {
                let r = whole.chunk_range(i).unwrap();
                prop_assert!(whole.verify_chunk(i, &data[r.start as usize..r.end as usize]).is_ok());
            }
            if !data.is_empty() {
                let all = whole.chunks_for(&(0..data.len() as u64));
                prop_assert_eq!(all, 0..whole.chunk_count());
            }
        }
    }
}
