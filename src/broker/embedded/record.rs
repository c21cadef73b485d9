//! The on-disk record format of the embedded log and its reader.
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 of everything after this field (offset, timestamp, payload)
//! u64 LE  offset
//! i64 LE  timestamp, ms since the Unix epoch
//! [u8]    payload (the CloudEvent JSON)
//! ```
//!
//! A record whose length runs past the end of the file, or whose checksum or
//! offset does not match, is never served: recovery truncates the log there.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

pub const HEADER_BYTES: usize = 24;
/// Larger lengths are treated as corruption, not allocated.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// How much a reader fetches with one `pread`: little at first (most reads
/// follow the tail and want a few records), doubling while it keeps going.
const FIRST_CHUNK_BYTES: usize = 16 * 1024;
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Appends one encoded record to `buf`.
pub fn encode(buf: &mut Vec<u8>, offset: u64, timestamp_ms: i64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&offset.to_le_bytes());
    hasher.update(&timestamp_ms.to_le_bytes());
    hasher.update(payload);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(payload);
}

pub fn encoded_len(payload_len: usize) -> u64 {
    (HEADER_BYTES + payload_len) as u64
}

/// A record decoded from a buffer; `payload` shares the buffer.
#[derive(Debug)]
pub struct Decoded {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub payload: Bytes,
}

/// What lies at a position of a buffer.
pub enum Next {
    Record(Decoded, usize),
    /// The buffer ends inside a record that needs this many bytes in all.
    Incomplete(usize),
    /// The bytes there are not a valid record.
    Invalid(&'static str),
}

/// Decodes the record starting at `buf[0]`.
pub fn decode(buf: &Bytes) -> Next {
    if buf.len() < HEADER_BYTES {
        return Next::Incomplete(HEADER_BYTES);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Next::Invalid("record length out of range");
    }
    let total = HEADER_BYTES + len;
    if buf.len() < total {
        return Next::Incomplete(total);
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if crc32fast::hash(&buf[8..total]) != crc {
        return Next::Invalid("checksum mismatch");
    }
    let offset = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let timestamp_ms = i64::from_le_bytes(buf[16..24].try_into().unwrap());
    Next::Record(
        Decoded {
            offset,
            timestamp_ms,
            payload: buf.slice(HEADER_BYTES..total),
        },
        total,
    )
}

/// Reads records of a file between byte positions, a chunk at a time.
pub struct Reader {
    file: Arc<File>,
    pos: u64,
    end: u64,
    buf: Bytes,
    chunk: usize,
}

impl Reader {
    pub fn new(file: Arc<File>, pos: u64, end: u64) -> Self {
        Self {
            file,
            pos,
            end,
            buf: Bytes::new(),
            chunk: FIRST_CHUNK_BYTES,
        }
    }

    /// The file position of the next record.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next record, `Ok(None)` at the end, or `Err` with the reason when
    /// the bytes at `position()` are not a valid record.
    pub fn next_record(&mut self) -> io::Result<Result<Option<Decoded>, &'static str>> {
        loop {
            if self.pos >= self.end {
                return Ok(Ok(None));
            }
            match decode(&self.buf) {
                Next::Record(record, used) => {
                    self.buf = self.buf.slice(used..);
                    self.pos += used as u64;
                    return Ok(Ok(Some(record)));
                }
                Next::Invalid(reason) => return Ok(Err(reason)),
                Next::Incomplete(needed) => {
                    let available = self.end - self.pos;
                    if (needed as u64) > available {
                        return Ok(Err("record runs past the end of the file"));
                    }
                    let want = available.min(needed.max(self.chunk) as u64) as usize;
                    self.chunk = (self.chunk * 2).min(READ_CHUNK_BYTES);
                    let mut chunk = BytesMut::zeroed(want);
                    self.file.read_exact_at(&mut chunk, self.pos)?;
                    self.buf = chunk.freeze();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(offset in any::<u64>(), ts in any::<i64>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = Vec::new();
            encode(&mut buf, offset, ts, &payload);
            prop_assert_eq!(buf.len() as u64, encoded_len(payload.len()));
            match decode(&Bytes::from(buf)) {
                Next::Record(record, used) => {
                    prop_assert_eq!(record.offset, offset);
                    prop_assert_eq!(record.timestamp_ms, ts);
                    prop_assert_eq!(&record.payload[..], &payload[..]);
                    prop_assert_eq!(used as u64, encoded_len(payload.len()));
                }
                _ => prop_assert!(false, "did not decode"),
            }
        }

        #[test]
        fn any_flipped_byte_is_caught(payload in proptest::collection::vec(any::<u8>(), 1..64), index in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut buf = Vec::new();
            encode(&mut buf, 7, 9, &payload);
            let i = index.index(buf.len());
            buf[i] ^= 1 << bit;
            // A flipped length may make the record look incomplete instead.
            prop_assert!(!matches!(decode(&Bytes::from(buf)), Next::Record(..)));
        }
    }
}
