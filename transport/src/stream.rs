//! Streaming bodies: a sequence of frames on one half of a QUIC stream, paced by
//! QUIC flow control (a sender waits while the receiver does not read).

use std::sync::Arc;

use crate::error::{codes, TransportError};
use crate::frame::{check_outgoing, read_item, write_frame, Frame};

/// The sending half of a streaming call. Frames arrive in order; [`Self::finish`]
/// ends the body. Dropped without finishing, the stream is reset, so the receiver
/// sees an error and never mistakes a cut-off body for a complete one.
pub struct BodySender {
    // Shared with the transport, which ends a handler's answer (or appends its
    // error) once the handler returns, even if the handler moved its sender away.
    half: Arc<tokio::sync::Mutex<SendHalf>>,
    max_frame: usize,
}

pub(crate) struct SendHalf {
    stream: quinn::SendStream,
    ended: bool,
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.stream.reset(codes::CANCELLED.into());
        }
    }
}

impl SendHalf {
    pub(crate) async fn write(&mut self, frame: &Frame) -> Result<(), TransportError> {
        if self.ended {
            return Err(TransportError::Protocol("the body is already finished".into()));
        }
        write_frame(&mut self.stream, &[], frame).await
    }

    pub(crate) fn finish(&mut self) -> Result<(), TransportError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        self.stream.finish().map_err(|e| TransportError::Protocol(e.to_string()))
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }
}

impl BodySender {
    pub(crate) fn new(stream: quinn::SendStream, max_frame: usize) -> Self {
        BodySender {
            half: Arc::new(tokio::sync::Mutex::new(SendHalf { stream, ended: false })),
            max_frame,
        }
    }

    pub(crate) fn shared_half(&self) -> Arc<tokio::sync::Mutex<SendHalf>> {
        self.half.clone()
    }

    /// Sends one frame, waiting while the receiver's window is full.
    pub async fn send(&mut self, frame: Frame) -> Result<(), TransportError> {
        check_outgoing(&frame, self.max_frame)?;
        self.half.lock().await.write(&frame).await
    }

    /// Ends the body: the receiver's `recv` returns `None` after the last frame.
    pub async fn finish(self) -> Result<(), TransportError> {
        self.half.lock().await.finish()
    }
}

/// The receiving half of a streaming call: frames until the sender finishes.
pub struct BodyReceiver {
    stream: quinn::RecvStream,
    max_frame: usize,
    ended: bool,
}

impl BodyReceiver {
    pub(crate) fn new(stream: quinn::RecvStream, max_frame: usize) -> Self {
        BodyReceiver { stream, max_frame, ended: false }
    }

    /// The next frame; `None` once the sender finished. An error (an error frame
    /// from the peer's handler, a reset, a malformed or oversize frame) ends the body.
    pub async fn recv(&mut self) -> Option<Result<Frame, TransportError>> {
        if self.ended {
            return None;
        }
        match read_item(&mut self.stream, self.max_frame).await {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(e) => {
                self.ended = true;
                // Tell the sender why we stopped reading, so it does not wait on a full window.
                let code = match e {
                    TransportError::FrameTooLarge { .. } => Some(codes::FRAME_TOO_LARGE),
                    TransportError::Protocol(_) => Some(codes::BAD_REQUEST),
                    _ => None,
                };
                if let Some(code) = code {
                    let _ = self.stream.stop(code.into());
                }
                Some(Err(e))
            }
        }
    }
}
