//! Host-side framing: cutting a received byte stream into frames, and prefixing sent ones.

use hotswap::net::{Framing, NetError};

/// What the front of a receive buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// A complete frame: skip `skip` header bytes, then `len` bytes of frame.
    Frame { skip: usize, len: usize },
    /// Not a complete frame yet.
    Need,
    /// The frame announced (or the line so far) is longer than the maximum.
    TooLarge(usize),
}

fn header_len(f: Framing) -> usize {
    match f {
        Framing::Len1 => 1,
        Framing::Len2 => 2,
        Framing::Len4 => 4,
        Framing::Raw | Framing::Line => 0,
    }
}

/// The first frame of `b` under framing `f` with maximum frame size `max`.
pub(crate) fn next(f: Framing, max: usize, b: &[u8]) -> Next {
    match f {
        Framing::Raw if b.is_empty() => Next::Need,
        Framing::Raw => Next::Frame {
            skip: 0,
            len: b.len().min(max),
        },
        Framing::Line => {
            let window = &b[..b.len().min(max)];
            match window.iter().position(|&c| c == b'\n') {
                Some(i) => Next::Frame {
                    skip: 0,
                    len: i + 1,
                },
                None if b.len() >= max => Next::TooLarge(b.len()),
                None => Next::Need,
            }
        }
        Framing::Len1 | Framing::Len2 | Framing::Len4 => {
            let k = header_len(f);
            if b.len() < k {
                return Next::Need;
            }
            let n = b[..k].iter().fold(0usize, |n, &c| (n << 8) | c as usize);
            if n > max {
                Next::TooLarge(n)
            } else if b.len() < k + n {
                Next::Need
            } else {
                Next::Frame { skip: k, len: n }
            }
        }
    }
}

/// What is wrong with the bytes left in the buffer when the stream ended, if anything:
/// a partial frame or a line without its newline.
pub(crate) fn leftover_error(f: Framing, left: usize) -> Option<String> {
    if left == 0 {
        return None;
    }
    Some(match f {
        Framing::Raw => return None,
        Framing::Line => {
            format!("malformed line: the connection closed after {left} bytes without a newline")
        }
        _ => format!("the connection closed inside a frame ({left} bytes of an incomplete frame)"),
    })
}

/// `data` as one frame on the wire: the length prefix (if any), then the data.
pub(crate) fn encode(f: Framing, max: usize, data: &[u8]) -> Result<Vec<u8>, NetError> {
    let limit = match f {
        Framing::Len1 => max.min(0xff),
        Framing::Len2 => max.min(0xffff),
        Framing::Len4 => max.min(u32::MAX as usize),
        Framing::Raw | Framing::Line => max,
    };
    if data.len() > limit {
        return Err(NetError::FrameTooLarge {
            len: data.len(),
            max: limit,
        });
    }
    let k = header_len(f);
    let mut v = Vec::with_capacity(k + data.len());
    let n = (data.len() as u64).to_be_bytes();
    v.extend_from_slice(&n[8 - k..]);
    v.extend_from_slice(data);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixes_round_trip_and_enforce_limits() {
        for f in [Framing::Len1, Framing::Len2, Framing::Len4] {
            let w = encode(f, 100, b"hello").unwrap();
            let Next::Frame { skip, len } = next(f, 100, &w) else {
                panic!("{f:?}: a whole frame")
            };
            assert_eq!(&w[skip..skip + len], b"hello");
            assert_eq!(next(f, 100, &w[..w.len() - 1]), Next::Need);
            assert_eq!(next(f, 3, &w), Next::TooLarge(5));
            assert!(encode(f, 3, b"hello").is_err());
        }
        assert!(encode(Framing::Len1, 1000, &[0; 256]).is_err());
    }

    #[test]
    fn lines_keep_the_newline_and_have_a_maximum() {
        assert_eq!(
            next(Framing::Line, 10, b"ab\ncd"),
            Next::Frame { skip: 0, len: 3 }
        );
        assert_eq!(next(Framing::Line, 10, b"abcd"), Next::Need);
        assert_eq!(next(Framing::Line, 4, b"abcdef"), Next::TooLarge(6));
        assert!(leftover_error(Framing::Line, 2)
            .unwrap()
            .contains("malformed line"));
        assert_eq!(leftover_error(Framing::Raw, 2), None);
    }
}
