//! One Python worker process: started per docs/worker-protocol.md with a cleared
//! environment, connected over its own Unix socket, its own stdout/stderr (interpreter
//! crashes, C-extension noise: not the feed's prints, which come in END/ERROR frames) kept
//! in a bounded ring buffer for diagnostics. The child is `kill_on_drop`: dropping a
//! `Worker` is always a hard stop, so no code path can leak a process.

use crate::protocol::{self, Frame, Hello, Kind, LoadError, ReadError};
use sluice_core::{Code, Error};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};

/// How much of the process's own output is kept per worker.
const OUTPUT_CAP: usize = 16 * 1024;

/// Everything needed to start workers for one module.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub python: PathBuf,
    pub sdk_dir: PathBuf,
    pub module_path: PathBuf,
    /// The user's name for the module, shown in errors instead of `module_path`.
    pub filename: String,
    pub run_dir: PathBuf,
    pub home: PathBuf,
    pub memory_mb: u64,
    pub start_timeout: Duration,
}

pub(crate) enum StartError {
    /// The module itself is broken (syntax error, missing import, bad decorator).
    Load(LoadError),
    Other(Error),
}

pub(crate) struct Worker {
    child: Child,
    reader: BufReader<OwnedReadHalf>,
    /// Shared with the pool, which may queue the next CALL while a call is running.
    writer: Arc<OwnedWriteHalf>,
    output: Arc<Mutex<String>>,
    pub hello: Hello,
}

impl Worker {
    pub async fn start(l: &Launch) -> Result<Worker, StartError> {
        let began = Instant::now();
        let sock = l.run_dir.join(format!(
            "w{}-{}.sock",
            std::process::id(),
            crate::next_seq()
        ));
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).map_err(|e| {
            StartError::Other(Error::new(
                Code::RuntimeUnavailable,
                format!(
                    "could not listen on {} for a worker: {e}; Unix socket paths must be under ~100 bytes, so use a shorter data dir path",
                    sock.display()
                ),
            ))
        })?;
        // The socket file is only needed until the worker connects.
        let _cleanup = RemoveOnDrop(sock.clone());
        let python_bin = l
            .python
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut cmd = Command::new(&l.python);
        cmd.arg("-s")
            .args(["-m", "sluice._worker", "--connect"])
            .arg(&sock)
            .arg("--module")
            .arg(&l.module_path)
            .arg("--memory-mb")
            .arg(l.memory_mb.to_string())
            // User code must not see the server's environment (credentials, tokens): only
            // what the protocol doc lists.
            .env_clear()
            .env("PATH", format!("{python_bin}:/usr/local/bin:/usr/bin:/bin"))
            .env("HOME", &l.home)
            .env("LANG", "C.UTF-8")
            .env("PYTHONPATH", &l.sdk_dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            // Not the module's folder: `python -m` puts the working directory first on
            // sys.path, and a feed file named sluice.py there would shadow the SDK.
            .current_dir(&l.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            StartError::Other(Error::new(
                Code::RuntimeUnavailable,
                format!("could not start the Python interpreter {}: {e}; check the runtime's python setting", l.python.display()),
            ))
        })?;
        let output = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(capture(out, output.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(capture(err, output.clone()));
        }
        let limit = l.start_timeout;
        let accepted = tokio::select! {
            r = tokio::time::timeout(limit, listener.accept()) => r,
            status = child.wait() => {
                let status = status.map(describe_exit).unwrap_or_else(|e| e.to_string());
                // Give the capture tasks a moment to drain the pipes before reporting.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(StartError::Other(Error::new(
                    Code::RuntimeUnavailable,
                    format!("the Python worker exited before connecting ({status}): {}", tail_of(&output)),
                ).with("worker_output", tail_of(&output))));
            }
        };
        let stream = match accepted {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => {
                return Err(StartError::Other(Error::internal(format!(
                    "accepting the worker's connection: {e}"
                ))));
            }
            Err(_) => {
                return Err(StartError::Other(
                    Error::new(
                        Code::RuntimeUnavailable,
                        format!(
                            "the Python worker did not connect within {:?} (worker_start_timeout); its output: {}",
                            limit,
                            tail_of(&output)
                        ),
                    )
                    .with("worker_output", tail_of(&output)),
                ));
            }
        };
        let (r, writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(256 * 1024, r);
        // Importing the module (pandas, say) may take most of the start budget.
        let remaining = limit
            .saturating_sub(began.elapsed())
            .max(Duration::from_secs(1));
        let first = match tokio::time::timeout(remaining, protocol::read_frame(&mut reader)).await {
            Ok(Ok(f)) => f,
            Ok(Err(_)) => {
                let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await
                {
                    Ok(Ok(s)) => describe_exit(s),
                    _ => "still running".into(),
                };
                return Err(StartError::Other(
                    Error::new(
                        Code::RuntimeUnavailable,
                        format!(
                            "the Python worker closed its connection while loading the module ({status}): {}. If that mentions memory, raise the runtime's memory limit (now {} MB; importing pyarrow or pandas alone needs about 400 MB of address space)",
                            tail_of(&output),
                            l.memory_mb
                        ),
                    )
                    .with("worker_output", tail_of(&output)),
                ));
            }
            Err(_) => {
                return Err(StartError::Other(Error::new(
                    Code::RuntimeUnavailable,
                    format!(
                        "the module took longer than {limit:?} (worker_start_timeout) to import; move slow work out of import time or raise the limit"
                    ),
                )));
            }
        };
        match first.kind {
            Kind::Hello => {
                let hello: Hello = first.json().map_err(StartError::Other)?;
                tracing::debug!(
                    pid = hello.pid,
                    python = %hello.python,
                    pyarrow = hello.pyarrow,
                    ms = began.elapsed().as_secs_f64() * 1000.0,
                    module = %l.module_path.display(),
                    "worker started"
                );
                Ok(Worker {
                    child,
                    reader,
                    writer: Arc::new(writer),
                    output,
                    hello,
                })
            }
            Kind::LoadError => Err(StartError::Load(first.json().map_err(StartError::Other)?)),
            other => Err(StartError::Other(Error::internal(format!(
                "the worker sent {other:?} instead of HELLO; the SDK and the runtime disagree on the protocol"
            )))),
        }
    }

    pub async fn send(&mut self, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
        self.send_frame(&protocol::frame(kind, payload)).await
    }

    /// Write a whole frame (see [`protocol::frame`]).
    pub async fn send_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let mut rest = frame;
        while !rest.is_empty() {
            self.writer.writable().await?;
            match self.writer.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn writer(&self) -> Arc<OwnedWriteHalf> {
        self.writer.clone()
    }

    pub async fn recv(&mut self) -> Result<Frame, ReadError> {
        protocol::read_frame(&mut self.reader).await
    }

    /// The next frame without waiting, if it has already arrived whole and is of `kind`.
    /// A small result's ROWS and END leave the worker in one write, so the END is usually
    /// read along with the rows: taking it at once frees the worker before the response
    /// is even written.
    pub fn take_buffered(&mut self, kind: Kind) -> Option<Frame> {
        let (frame, used) = protocol::buffered_frame(self.reader.buffer())?;
        if frame.kind != kind {
            return None;
        }
        std::pin::Pin::new(&mut self.reader).consume(used);
        Some(frame)
    }

    /// How the process ended, waiting up to `wait` for it to do so.
    pub async fn exit_status(&mut self, wait: Duration) -> String {
        match tokio::time::timeout(wait, self.child.wait()).await {
            Ok(Ok(s)) => describe_exit(s),
            Ok(Err(e)) => format!("exit status unknown: {e}"),
            Err(_) => "its process was still running and was killed".into(),
        }
    }

    /// True if the process has already exited (e.g. killed by the OOM killer while idle).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    pub fn output_tail(&self) -> String {
        tail_of(&self.output)
    }

    /// SHUTDOWN, then up to `grace` for the process to exit by itself, then SIGKILL.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.send(Kind::Shutdown, b"").await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn capture(mut r: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut s = into.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 2 * OUTPUT_CAP {
                    let mut cut = s.len() - OUTPUT_CAP;
                    while !s.is_char_boundary(cut) {
                        cut += 1;
                    }
                    s.drain(..cut);
                }
            }
        }
    }
}

fn tail_of(output: &Mutex<String>) -> String {
    let s = output.lock().unwrap_or_else(|p| p.into_inner());
    let t = crate::env::tail(s.trim(), 2000);
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}

pub(crate) fn describe_exit(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = s.code() {
        return format!("exit code {code}");
    }
    match s.signal() {
        Some(sig) => {
            let name = match sig {
                6 => " (SIGABRT)",
                9 => " (SIGKILL, e.g. the out-of-memory killer)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("signal {sig}{name}")
        }
        None => "unknown exit status".into(),
    }
}
