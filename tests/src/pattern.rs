//! Large deterministic bodies for streaming tests.
//!
//! The byte at offset `i` of a pattern body depends only on `i % PERIOD`, with a prime
//! period so that a lost, repeated or shifted chunk shows up as a mismatch. A
//! [`PatternBody`] hands out slices of one shared block (no per-chunk copy, nothing held
//! beyond one block); a [`PatternCheck`] compares what arrives with what was sent, chunk
//! by chunk, whatever the chunk boundaries are.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// The pattern repeats every `PERIOD` bytes (a prime).
const PERIOD: usize = 8191;
/// Largest frame a [`PatternBody`] produces.
pub const CHUNK: usize = 64 * 1024;

/// `PERIOD + CHUNK` bytes of the pattern: any frame is a slice of it.
fn block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| {
        (0..PERIOD + CHUNK)
            .map(|i| byte_at((i % PERIOD) as u64))
            .collect::<Vec<u8>>()
            .into()
    })
}

fn byte_at(i: u64) -> u8 {
    // Truncation is the point: a spread of values over the period.
    ((i * 131 + i / 251) % 251) as u8
}

/// A body of `len` pattern bytes, produced in frames of at most [`CHUNK`] bytes.
#[derive(Debug)]
pub struct PatternBody {
    offset: u64,
    len: u64,
    exact: bool,
}

impl PatternBody {
    /// `len` bytes with an exact size hint (sent with `content-length`).
    pub fn new(len: u64) -> Self {
        Self {
            offset: 0,
            len,
            exact: true,
        }
    }

    /// `len` bytes without a size hint (sent chunked over HTTP/1.1).
    pub fn chunked(len: u64) -> Self {
        Self {
            offset: 0,
            len,
            exact: false,
        }
    }
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let left = this.len - this.offset;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = left.min(CHUNK as u64) as usize;
        let start = (this.offset % PERIOD as u64) as usize;
        this.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(block().slice(start..start + n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// Checks received bytes against the pattern, in whatever pieces they arrive.
#[derive(Clone, Copy, Debug)]
pub struct PatternCheck {
    offset: u64,
    first_mismatch: Option<u64>,
}

impl Default for PatternCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl PatternCheck {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self {
            offset: 0,
            first_mismatch: None,
        }
    }

    /// Takes the next received bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        let block = block();
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            let start = (self.offset % PERIOD as u64) as usize;
            if self.first_mismatch.is_none() && data[..n] != block[start..start + n] {
                let at = data[..n]
                    .iter()
                    .zip(&block[start..start + n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                self.first_mismatch = Some(self.offset + at as u64);
            }
            self.offset += n as u64;
            data = &data[n..];
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Whether every byte so far was the expected one.
    pub fn ok(&self) -> bool {
        self.first_mismatch.is_none()
    }

    /// Offset of the first unexpected byte, if any.
    pub fn first_mismatch(&self) -> Option<u64> {
        self.first_mismatch
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_body_checks_against_itself_and_a_changed_byte_is_found() {
        let mut body = PatternBody::new(300_001);
        let mut check = PatternCheck::new();
        let mut copy = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            copy.extend_from_slice(&data);
        }
        // Uneven pieces, as a socket delivers them.
        for piece in copy.chunks(7_777) {
            check.update(piece);
        }
        assert_eq!(check.len(), 300_001);
        assert!(check.ok());
        copy[123_456] ^= 1;
        let mut check = PatternCheck::new();
        check.update(&copy);
        assert_eq!(check.first_mismatch(), Some(123_456));
        // A lost piece (not a whole number of periods) is a mismatch, not just a shorter body.
        let mut check = PatternCheck::new();
        check.update(&copy[..100]);
        check.update(&copy[100 + 8191 * 2 + 5..]);
        assert!(!check.ok());
    }
}
