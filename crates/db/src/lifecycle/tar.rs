//! The little of the tar format an export needs: regular files in one
//! directory, written and read in order (POSIX ustar headers, sizes below
//! 8 GiB each). Written by hand because the archive is streamed through
//! gzip in one pass both ways, and that is all of it.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// Writes one file's header; the caller then writes exactly `size` bytes and
/// [`pad`].
pub fn write_header(out: &mut impl Write, name: &str, size: u64, mtime: u64) -> io::Result<()> {
    if name.len() > 100 || name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar entry name {name:?} must be 1 to 100 bytes"),
        ));
    }
    if size >= 1 << 33 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar entry {name} is larger than 8 GiB"),
        ));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    out.write_all(&h)
}

/// The zero bytes that round an entry of `size` bytes up to a block.
pub fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (size % BLOCK as u64) as usize;
    if rest != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rest])?;
    }
    Ok(())
}

/// The two zero blocks that end an archive.
pub fn finish(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[0u8; BLOCK * 2])
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

/// An entry's header as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub size: u64,
}

/// Reads the next header: `None` at the end of the archive.
pub fn read_header(input: &mut impl Read) -> io::Result<Option<Header>> {
    let mut h = [0u8; BLOCK];
    match read_full(input, &mut h)? {
        0 => return Ok(None),
        BLOCK => {}
        _ => return Err(truncated()),
    }
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let stored = parse_octal(&h[148..156])?;
    let mut sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    sum -= h[148..156].iter().map(|&b| u64::from(b)).sum::<u64>();
    sum += 8 * u64::from(b' ');
    if sum != stored {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "tar header checksum mismatch",
        ));
    }
    if h[156] != b'0' && h[156] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "tar entry is not a regular file",
        ));
    }
    let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let name = std::str::from_utf8(&h[..end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "tar entry name is not UTF-8"))?
        .to_owned();
    let size = parse_octal(&h[124..136])?;
    Ok(Some(Header { name, size }))
}

/// Skips the padding after an entry of `size` bytes.
pub fn skip_pad(input: &mut impl Read, size: u64) -> io::Result<()> {
    let rest = (size % BLOCK as u64) as usize;
    if rest != 0 {
        let mut buf = [0u8; BLOCK];
        if read_full(input, &mut buf[..BLOCK - rest])? != BLOCK - rest {
            return Err(truncated());
        }
    }
    Ok(())
}

fn parse_octal(field: &[u8]) -> io::Result<u64> {
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad octal number in tar header"))
}

/// Reads until `buf` is full or the input ends; how many bytes it read.
pub fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the archive ends early (truncated)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_written_are_read_back() {
        let mut out = Vec::new();
        for (name, body) in [("a.ndjson", &b"{}\n"[..]), ("b", &[7u8; 1024][..])] {
            write_header(&mut out, name, body.len() as u64, 0).expect("header");
            out.extend_from_slice(body);
            pad(&mut out, body.len() as u64).expect("pad");
        }
        finish(&mut out).expect("finish");
        let mut input = &out[..];
        let first = read_header(&mut input).expect("read").expect("entry");
        assert_eq!(
            first,
            Header {
                name: "a.ndjson".into(),
                size: 3
            }
        );
        let mut body = vec![0; 3];
        read_full(&mut input, &mut body).expect("body");
        skip_pad(&mut input, 3).expect("pad");
        let second = read_header(&mut input).expect("read").expect("entry");
        assert_eq!(second.size, 1024);
        let mut body = vec![0; 1024];
        read_full(&mut input, &mut body).expect("body");
        assert_eq!(read_header(&mut input).expect("read"), None);
    }

    #[test]
    fn a_damaged_header_is_refused() {
        let mut out = Vec::new();
        write_header(&mut out, "a", 1, 0).expect("header");
        out[0] = b'b';
        assert!(read_header(&mut &out[..]).is_err());
    }
}
