//! The framed worker protocol (docs/worker-protocol.md): frame encoding and the JSON
//! payloads. Nothing here knows about processes or pools; a frame is read from any
//! `AsyncRead`, so the codec is tested on in-memory buffers.

use bytes::Bytes;
use serde::Deserialize;
use sluice_core::{Code, Error, FeedSignature};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame the doc allows (kind + payload). A longer length prefix means the stream
/// is corrupt, and we must not allocate whatever it claims.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    LoadError = 2,
    Call = 3,
    Sql = 4,
    Arrow = 5,
    Rows = 6,
    End = 7,
    Error = 8,
    Shutdown = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::LoadError,
            3 => Kind::Call,
            4 => Kind::Sql,
            5 => Kind::Arrow,
            6 => Kind::Rows,
            7 => Kind::End,
            8 => Kind::Error,
            9 => Kind::Shutdown,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Bytes,
}

impl Frame {
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::internal(format!(
                "the worker sent a malformed {:?} frame ({e}); this is a bug in the Sluice SDK, please report it",
                self.kind
            ))
        })
    }
}

/// Why reading a frame failed. `Closed` and `Io` mean the worker is gone (a crash, from the
/// caller's point of view); `Corrupt` means it is alive but speaking nonsense.
#[derive(Debug)]
pub enum ReadError {
    Closed,
    Io(std::io::Error),
    Corrupt(String),
}

pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, ReadError> {
    let n = match r.read_u32().await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    };
    // A little slack over the documented maximum: the kind byte counts in N.
    if n == 0 || n > MAX_FRAME + 1 {
        return Err(ReadError::Corrupt(format!(
            "frame length {n} is outside 1..=64 MiB"
        )));
    }
    let kind = r.read_u8().await.map_err(eof_is_closed)?;
    let kind = Kind::from_u8(kind)
        .ok_or_else(|| ReadError::Corrupt(format!("unknown frame kind {kind}")))?;
    let mut payload = vec![0u8; n as usize - 1];
    r.read_exact(&mut payload).await.map_err(eof_is_closed)?;
    Ok(Frame {
        kind,
        payload: Bytes::from(payload),
    })
}

/// The frame at the start of `buf` if it is there whole, with the bytes it takes; None
/// when more must be read first (or the length prefix is corrupt: a real read says so).
pub fn buffered_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let n = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    if n == 0 || n > MAX_FRAME + 1 {
        return None;
    }
    let end = 4 + n as usize;
    let kind = Kind::from_u8(*buf.get(4)?)?;
    let payload = Bytes::copy_from_slice(buf.get(5..end)?);
    Some((Frame { kind, payload }, end))
}

fn eof_is_closed(e: std::io::Error) -> ReadError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ReadError::Closed
    } else {
        ReadError::Io(e)
    }
}

/// A whole frame (length, kind, payload) in one buffer.
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(payload);
    buf
}

/// Write `frame` now, whole, or not at all: Ok(false) when the socket cannot take all of
/// it at once. Err when only part went out: the stream is then corrupt.
pub fn try_write_whole(
    w: &tokio::net::unix::OwnedWriteHalf,
    frame: &[u8],
) -> std::io::Result<bool> {
    match w.try_write(frame) {
        Ok(n) if n == frame.len() => Ok(true),
        Ok(n) => Err(std::io::Error::other(format!(
            "only {n} of {} bytes of a frame were written",
            frame.len()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub python: String,
    #[serde(default)]
    pub pyarrow: bool,
    #[serde(default)]
    pub feeds: Vec<FeedSignature>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoadError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub line: Option<u64>,
    #[serde(default)]
    pub traceback: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SqlFrame {
    pub source: String,
    pub query: String,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EndFrame {
    // `rows` is also sent; the runtime reports the rows it actually delivered instead.
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorFrame {
    #[serde(default)]
    pub code: String,
    #[serde(default, rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub traceback: String,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
}

impl ErrorFrame {
    /// The error a caller sees: the worker's code (unknown codes become `internal`),
    /// "<Type>: <message>" like Python prints it, the traceback for editors, and what the
    /// user code printed before it failed.
    pub fn into_error(self) -> Error {
        let code = Code::from_wire(&self.code).unwrap_or(Code::Internal);
        let message = match (self.ty.is_empty(), self.message.is_empty()) {
            (true, _) => self.message,
            (false, true) => self.ty,
            (false, false) => format!("{}: {}", self.ty, self.message),
        };
        let mut e = Error::new(code, message)
            .with("stdout", self.stdout)
            .with("stderr", self.stderr);
        if !self.traceback.is_empty() {
            e = e.with_traceback(self.traceback);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffered_frame_takes_only_whole_frames() {
        let mut buf = Vec::new();
        buf.extend(frame(Kind::Rows, b"{}"));
        buf.extend(frame(Kind::End, br#"{"rows":1}"#));
        let (f, used) = buffered_frame(&buf).unwrap();
        assert_eq!((f.kind, &f.payload[..], used), (Kind::Rows, &b"{}"[..], 7));
        let (f, used) = buffered_frame(&buf[7..]).unwrap();
        assert_eq!((f.kind, used), (Kind::End, 15));
        // Partial frames, an empty buffer and nonsense wait for a real read.
        for cut in 0..15 {
            assert!(buffered_frame(&buf[7..7 + cut]).is_none(), "cut at {cut}");
        }
        assert!(buffered_frame(&[0, 0, 0, 1, 99]).is_none());
        assert!(buffered_frame(&[0, 0, 0, 0, 7]).is_none());
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut buf = Vec::new();
        buf.extend(frame(Kind::Call, br#"{"id":"1"}"#));
        buf.extend(frame(Kind::Shutdown, b""));
        assert_eq!(&buf[..5], &[0, 0, 0, 11, 3]);
        let mut r = &buf[..];
        let f = read_frame(&mut r).await.unwrap();
        assert_eq!(f.kind, Kind::Call);
        assert_eq!(&f.payload[..], br#"{"id":"1"}"#);
        let f = read_frame(&mut r).await.unwrap();
        assert_eq!(f.kind, Kind::Shutdown);
        assert!(f.payload.is_empty());
        assert!(matches!(read_frame(&mut r).await, Err(ReadError::Closed)));
    }

    #[tokio::test]
    async fn truncated_and_corrupt_frames() {
        let mut r: &[u8] = &[0, 0, 0, 10, 7, b'{'];
        assert!(matches!(read_frame(&mut r).await, Err(ReadError::Closed)));
        let mut r: &[u8] = &[0xff, 0, 0, 0, 7];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(ReadError::Corrupt(_))
        ));
        let mut r: &[u8] = &[0, 0, 0, 1, 42];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(ReadError::Corrupt(_))
        ));
    }

    #[test]
    fn error_frame_becomes_a_coded_error() {
        let f = ErrorFrame {
            code: "feed_raised".into(),
            ty: "ZeroDivisionError".into(),
            message: "division by zero".into(),
            traceback: "Traceback (most recent call last): ...".into(),
            stdout: "hi\n".into(),
            stderr: String::new(),
        };
        let e = f.into_error();
        assert_eq!(e.code, Code::FeedRaised);
        assert_eq!(e.message, "ZeroDivisionError: division by zero");
        assert_eq!(e.extra["stdout"], "hi\n");
        assert!(e.traceback.unwrap().starts_with("Traceback"));
        let e = ErrorFrame {
            code: "weird".into(),
            ..serde_json::from_str("{}").unwrap()
        }
        .into_error();
        assert_eq!(e.code, Code::Internal);
    }
}
