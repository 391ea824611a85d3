//! PostgreSQL's binary COPY format, written straight into large buffers.
//!
//! Encoding on the generator thread and handing PostgreSQL megabyte chunks
//! keeps the load path to one `COPY ... FROM STDIN (FORMAT binary)` per
//! table: no per-row round trips, no text parsing on the server (uuid and
//! timestamptz arrive in their internal form).

use bytes::{BufMut as _, Bytes, BytesMut};
use uuid::Uuid;

/// `PGCOPY\n\377\r\n\0`, then flags and header extension length (both 0).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Unix milliseconds of PostgreSQL's epoch, 2000-01-01T00:00:00Z.
const PG_EPOCH_MS: i64 = 946_684_800_000;
/// A buffer is handed over once it holds this much.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Builds one table's COPY stream as a sequence of chunks.
pub struct CopyEncoder {
    buf: BytesMut,
    rows: u64,
    rows_in_buf: u64,
}

impl Default for CopyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyEncoder {
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 4096);
        buf.put_slice(HEADER);
        Self {
            buf,
            rows: 0,
            rows_in_buf: 0,
        }
    }

    /// Starts a row of `fields` columns.
    pub fn row(&mut self, fields: i16) {
        self.buf.put_i16(fields);
        self.rows += 1;
        self.rows_in_buf += 1;
    }

    pub fn uuid(&mut self, id: &Uuid) {
        self.buf.put_i32(16);
        self.buf.put_slice(id.as_bytes());
    }

    pub fn text(&mut self, s: &str) {
        self.buf.put_i32(len_i32(s.len()));
        self.buf.put_slice(s.as_bytes());
    }

    /// `jsonb`: a version byte, then the JSON text.
    pub fn jsonb(&mut self, json: &str) {
        self.buf.put_i32(len_i32(json.len() + 1));
        self.buf.put_u8(1);
        self.buf.put_slice(json.as_bytes());
    }

    pub fn int4(&mut self, v: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(v);
    }

    pub fn int8(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }

    /// `timestamptz` from Unix milliseconds: microseconds since 2000-01-01.
    pub fn timestamp_ms(&mut self, ms: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64((ms - PG_EPOCH_MS) * 1_000);
    }

    pub fn null(&mut self) {
        self.buf.put_i32(-1);
    }

    /// Rows started so far, in all chunks.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The buffered bytes and their row count once there is a chunk's worth.
    pub fn take_full(&mut self) -> Option<(Bytes, u64)> {
        (self.buf.len() >= CHUNK_BYTES).then(|| self.take())
    }

    /// Whatever is buffered, with its row count.
    pub fn take(&mut self) -> (Bytes, u64) {
        let rows = std::mem::take(&mut self.rows_in_buf);
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_BYTES + 4096);
        (chunk, rows)
    }

    /// The rest of the stream, trailer included.
    pub fn finish(mut self) -> (Bytes, u64) {
        self.buf.put_i16(-1);
        self.take()
    }
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).expect("a seeded value is far below 2 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_binary_copy_layout() {
        let mut enc = CopyEncoder::new();
        enc.row(3);
        enc.uuid(&Uuid::from_u128(1));
        enc.text("hi");
        enc.timestamp_ms(PG_EPOCH_MS + 1);
        let (bytes, rows) = enc.finish();
        assert_eq!(rows, 1);
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&3i16.to_be_bytes());
        expected.extend_from_slice(&16i32.to_be_bytes());
        expected.extend_from_slice(&1u128.to_be_bytes());
        expected.extend_from_slice(&2i32.to_be_bytes());
        expected.extend_from_slice(b"hi");
        expected.extend_from_slice(&8i32.to_be_bytes());
        expected.extend_from_slice(&1_000i64.to_be_bytes());
        expected.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn hands_over_full_chunks_only() {
        let mut enc = CopyEncoder::new();
        assert!(enc.take_full().is_none());
        let big = "x".repeat(1_000);
        while enc.take_full().is_none() {
            enc.row(1);
            enc.text(&big);
        }
        assert!(enc.take_full().is_none());
        let (rest, _) = enc.finish();
        assert_eq!(rest.len(), 2);
    }
}
