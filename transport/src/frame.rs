//! The wire format between nodes.
//!
//! Goals: one request per bidirectional QUIC stream, so requests never block each
//! other (no head-of-line blocking) and hundreds can be in flight on one
//! connection; opaque frames, so the daemon owns its message sets and their
//! encoding; an explicit maximum frame size checked before anything is
//! allocated; streaming bodies as a sequence of frames under QUIC flow control;
//! stable codes for errors; a versioned ALPN ([`crate::tls::ALPN`]) so
//! incompatible nodes refuse each other at the handshake.
//!
//! Non-goals: compatibility across ALPN versions, message schemas (the kinds are
//! the daemon's), fragmentation of one frame (a large transfer is many frames).
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! frame       = length:u32  kind:u16  body          length = 2 + body length
//! error frame = frame with kind 0xFFFF, body = code:u16  message (UTF-8)
//! stream      = open:u8  request-frame  [body frames...]    (caller → handler)
//! answer      = frame | error frame                          (call: exactly one)
//!             | [body frames...] [error frame]               (streaming call)
//! ```
//!
//! `open` is [`OPEN_CALL`] (one request, one answer) or [`OPEN_STREAM`] (the
//! request, then body frames both ways until each side finishes its half). Kind
//! 0xFFFF ([`ERROR_KIND`]) is reserved for error frames; an error frame ends the
//! answer. A stream that ends inside a frame, or a frame over the receiver's
//! limit, ends that stream with an error; the connection and its other streams
//! carry on. The golden tests at the bottom pin the bytes.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{RemoteError, TransportError};

/// Bytes before a frame's body: length and kind.
pub const HEADER_LEN: usize = 6;
/// Kind reserved for error frames; frames of the daemon never use it.
pub const ERROR_KIND: u16 = 0xFFFF;
/// First byte of a stream: a request/response call.
pub const OPEN_CALL: u8 = 1;
/// First byte of a stream: a streaming call (bodies both ways).
pub const OPEN_STREAM: u8 = 2;
/// Default largest frame body accepted (see `EndpointConfig::max_frame`).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// One message: a kind chosen by the daemon, and its encoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u16,
    pub body: Bytes,
}

impl Frame {
    pub fn new(kind: u16, body: impl Into<Bytes>) -> Self {
        Frame { kind, body: body.into() }
    }

    /// Length and kind, to be followed by the body.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&((self.body.len() + 2) as u32).to_be_bytes());
        h[4..].copy_from_slice(&self.kind.to_be_bytes());
        h
    }

    /// The whole frame as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes the frame at the start of `bytes`: the frame and how many bytes it took.
    pub fn decode(bytes: &[u8], max_frame: usize) -> Result<(Frame, usize), TransportError> {
        if bytes.len() < 4 {
            return Err(TransportError::Protocol("truncated frame header".into()));
        }
        let body_len = body_len(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]), max_frame)?;
        let end = 4 + 2 + body_len;
        if bytes.len() < end {
            return Err(TransportError::Protocol(format!("truncated frame: {} of {end} bytes", bytes.len())));
        }
        let kind = u16::from_be_bytes([bytes[4], bytes[5]]);
        Ok((
            Frame {
                kind,
                body: Bytes::copy_from_slice(&bytes[6..end]),
            },
            end,
        ))
    }

    /// Whether this is an error frame.
    pub fn is_error(&self) -> bool {
        self.kind == ERROR_KIND
    }
}

/// Checks the length field (which counts the kind too) and returns the body length.
fn body_len(length: u32, max_frame: usize) -> Result<usize, TransportError> {
    let length = length as usize;
    if length < 2 {
        return Err(TransportError::Protocol(format!("frame length {length} is shorter than its kind")));
    }
    if length - 2 > max_frame {
        return Err(TransportError::FrameTooLarge {
            size: length - 2,
            limit: max_frame,
        });
    }
    Ok(length - 2)
}

impl RemoteError {
    /// The error frame that carries this refusal.
    pub fn to_frame(&self) -> Frame {
        let mut body = Vec::with_capacity(2 + self.message.len());
        body.extend_from_slice(&self.code.to_be_bytes());
        body.extend_from_slice(self.message.as_bytes());
        Frame {
            kind: ERROR_KIND,
            body: body.into(),
        }
    }

    /// Decodes the body of an error frame.
    pub fn decode_body(body: &[u8]) -> Result<RemoteError, TransportError> {
        if body.len() < 2 {
            return Err(TransportError::Protocol(format!("error frame of {} bytes has no code", body.len())));
        }
        let code = u16::from_be_bytes([body[0], body[1]]);
        let message = std::str::from_utf8(&body[2..]).map_err(|e| TransportError::Protocol(format!("error message is not UTF-8: {e}")))?;
        Ok(RemoteError {
            code,
            message: message.to_string(),
        })
    }
}

/// Reads the next frame of an answer or body: `None` when the stream ended cleanly
/// between frames, an error frame becomes [`TransportError::Remote`].
pub async fn read_item<R: AsyncRead + Unpin>(r: &mut R, max_frame: usize) -> Result<Option<Frame>, TransportError> {
    let Some(frame) = read_frame(r, max_frame).await? else { return Ok(None) };
    if frame.is_error() {
        return Err(RemoteError::decode_body(&frame.body)?.into());
    }
    Ok(Some(frame))
}

/// Reads one frame, refusing bodies over `max_frame` before allocating them;
/// `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max_frame: usize) -> Result<Option<Frame>, TransportError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await.map_err(read_error)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(TransportError::Protocol(format!("stream ended inside a frame header ({got} bytes)")));
        }
        got += n;
    }
    let len = body_len(u32::from_be_bytes([header[0], header[1], header[2], header[3]]), max_frame)?;
    let kind = u16::from_be_bytes([header[4], header[5]]);
    // Read straight into spare capacity: no zeroing, and the buffer becomes the
    // frame's `Bytes` without another copy.
    let mut body = BytesMut::with_capacity(len);
    while body.len() < len {
        let want = len - body.len();
        let mut rest = (&mut body).limit(want);
        if r.read_buf(&mut rest).await.map_err(read_error)? == 0 {
            return Err(TransportError::Protocol(format!("stream ended inside a frame ({} of {len} body bytes)", body.len())));
        }
    }
    Ok(Some(Frame { kind, body: body.freeze() }))
}

/// Reads the byte that opens a stream.
pub(crate) async fn read_open<R: AsyncRead + Unpin>(r: &mut R) -> Result<u8, TransportError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).await.map_err(read_error)?;
    match b[0] {
        OPEN_CALL | OPEN_STREAM => Ok(b[0]),
        other => Err(TransportError::Protocol(format!("unknown stream type {other}"))),
    }
}

/// Turns a read failure into what happened: the peer reset the stream, the
/// connection went away, or the stream ended early.
pub(crate) fn read_error(e: std::io::Error) -> TransportError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return TransportError::Protocol("stream ended inside a frame".into());
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<quinn::ReadError>()) {
        Some(quinn::ReadError::Reset(code)) => TransportError::StreamClosed { code: code.into_inner() },
        Some(quinn::ReadError::ConnectionLost(c)) => crate::error::connection_lost(c),
        _ => TransportError::Io(e),
    }
}

/// Turns a write failure into what happened.
pub(crate) fn write_error(e: quinn::WriteError) -> TransportError {
    match e {
        quinn::WriteError::Stopped(code) => TransportError::StreamClosed { code: code.into_inner() },
        quinn::WriteError::ConnectionLost(c) => crate::error::connection_lost(&c),
        other => TransportError::Protocol(other.to_string()),
    }
}

/// Writes one frame without copying its body.
pub(crate) async fn write_frame(send: &mut quinn::SendStream, prefix: &[u8], frame: &Frame) -> Result<(), TransportError> {
    let mut head = Vec::with_capacity(prefix.len() + HEADER_LEN);
    head.extend_from_slice(prefix);
    head.extend_from_slice(&frame.header());
    send.write_all_chunks(&mut [Bytes::from(head), frame.body.clone()]).await.map_err(write_error)
}

/// Refuses frames this side must not send: too large, or of the reserved kind.
pub(crate) fn check_outgoing(frame: &Frame, max_frame: usize) -> Result<(), TransportError> {
    if frame.kind == ERROR_KIND {
        return Err(TransportError::Protocol("kind 0xFFFF is reserved for error frames".into()));
    }
    if frame.body.len() > max_frame {
        return Err(TransportError::FrameTooLarge {
            size: frame.body.len(),
            limit: max_frame,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes_of_a_frame_and_an_error_frame() {
        let frame = Frame::new(0x0102, &b"hi"[..]);
        assert_eq!(frame.encode(), b"\x00\x00\x00\x04\x01\x02hi".to_vec());
        let err = RemoteError::new(codes::FORBIDDEN, "no").to_frame();
        assert_eq!(err.encode(), b"\x00\x00\x00\x06\xff\xff\x00\x04no".to_vec());
        // A call stream as the caller writes it: open byte, then the request frame.
        let mut call = vec![OPEN_CALL];
        call.extend_from_slice(&Frame::new(7, Bytes::new()).encode());
        assert_eq!(call, b"\x01\x00\x00\x00\x02\x00\x07".to_vec());
        assert_eq!((OPEN_CALL, OPEN_STREAM, ERROR_KIND), (1, 2, 0xFFFF));
        assert_eq!(
            (
                codes::BAD_REQUEST,
                codes::UNSUPPORTED,
                codes::INTERNAL,
                codes::FORBIDDEN,
                codes::NOT_FOUND,
                codes::FRAME_TOO_LARGE,
                codes::UNAVAILABLE
            ),
            (1, 2, 3, 4, 5, 6, 7)
        );
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused_before_reading_it() {
        let frame = Frame::new(9, vec![1u8; 100]);
        let bytes = frame.encode();
        assert_eq!(read_frame(&mut &bytes[..], 100).await.unwrap(), Some(frame.clone()));
        assert_eq!(Frame::decode(&bytes, 100).unwrap(), (frame, 106));
        assert!(matches!(read_frame(&mut &bytes[..], 99).await, Err(TransportError::FrameTooLarge { size: 100, limit: 99 })));
        let huge = [0xff, 0xff, 0xff, 0xff, 0, 1];
        assert!(matches!(read_frame(&mut &huge[..], DEFAULT_MAX_FRAME).await, Err(TransportError::FrameTooLarge { .. })));
        assert_eq!(read_frame(&mut &b""[..], 10).await.unwrap(), None);
        let err = RemoteError::new(codes::NOT_FOUND, "gone").to_frame().encode();
        assert!(matches!(read_item(&mut &err[..], 10).await, Err(TransportError::Remote { code: codes::NOT_FOUND, ref message }) if message == "gone"));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_frame_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..64) {
            let _ = Frame::decode(&bytes, max);
            let _ = RemoteError::decode_body(&bytes);
            let rt = runtime();
            rt.block_on(async {
                let _ = read_frame(&mut &bytes[..], max).await;
                let _ = read_open(&mut &bytes[..]).await;
                // The body reader: frame after frame until the end or an error.
                let mut r = &bytes[..];
                let mut frames = 0;
                while let Ok(Some(_)) = read_item(&mut r, max).await {
                    frames += 1;
                    assert!(frames <= bytes.len() / HEADER_LEN);
                }
            });
        }

        #[test]
        fn a_frame_cut_short_is_an_error_not_a_frame(kind in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..64), cut in 1usize..70) {
            let bytes = Frame::new(kind, body).encode();
            let cut = cut.min(bytes.len());
            let truncated = &bytes[..bytes.len() - cut];
            prop_assert!(Frame::decode(truncated, 1024).is_err());
            let rt = runtime();
            let result = rt.block_on(read_frame(&mut &truncated[..], 1024));
            let refused = if truncated.is_empty() { matches!(result, Ok(None)) } else { result.is_err() };
            prop_assert!(refused);
        }

        #[test]
        fn error_frames_round_trip(code in any::<u16>(), message in ".{0,40}") {
            let e = RemoteError::new(code, message);
            let frame = e.to_frame();
            prop_assert_eq!(RemoteError::decode_body(&frame.body).unwrap(), e);
        }
    }
}
