//! Progress for long work, on stderr so stdout stays clean for data. On a terminal: one
//! line redrawn with a spinner and elapsed seconds. Otherwise (CI logs, pipes): each new
//! message as a plain line, once, so logs stay readable.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

pub struct Progress {
    tty: bool,
    state: Arc<Mutex<State>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

struct State {
    message: String,
    started: Instant,
    frame: usize,
    /// Set on stop so a tick racing with `abort` cannot redraw after the erase.
    stopped: bool,
}

impl Progress {
    /// Starts showing `message`. `tty` says whether stderr is a terminal.
    pub fn start(tty: bool, message: &str) -> Progress {
        let state = Arc::new(Mutex::new(State {
            message: message.to_string(),
            started: Instant::now(),
            frame: 0,
            stopped: false,
        }));
        let ticker = if tty {
            let st = state.clone();
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let mut s = st.lock().expect("progress lock");
                    s.frame = (s.frame + 1) % FRAMES.len();
                    draw(&s);
                }
            }))
        } else {
            eprintln!("{message}");
            None
        };
        Progress { tty, state, ticker }
    }

    pub fn set_message(&self, message: &str) {
        let mut s = self.state.lock().expect("progress lock");
        if s.message == message {
            return;
        }
        s.message = message.to_string();
        if self.tty {
            draw(&s);
        } else {
            eprintln!("{message}");
        }
    }

    /// Prints a line above the spinner (on a TTY) or as-is (otherwise).
    pub fn println(&self, line: &str) {
        let s = self.state.lock().expect("progress lock");
        if self.tty {
            eprint!("\r\x1b[2K{line}\n");
            draw(&s);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.state.lock().expect("progress lock").started.elapsed()
    }

    /// Stops and erases the spinner line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
            if let Ok(mut s) = self.state.lock() {
                s.stopped = true;
            }
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

impl Drop for Progress {
    /// An error path must not leave a spinner line behind the error message.
    fn drop(&mut self) {
        self.stop();
    }
}

fn draw(s: &State) {
    if s.stopped {
        return;
    }
    eprint!(
        "\r\x1b[2K{} {} ({}s)",
        FRAMES[s.frame],
        s.message,
        s.started.elapsed().as_secs()
    );
    let _ = std::io::stderr().flush();
}
