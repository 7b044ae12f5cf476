//! The sluice client commands: login, init, run, deploy, call, feeds, keys, sources, logs,
//! connect (connection files for BI tools) and links (secret feed links).
//!
//! This crate is a client of the control API (`docs/api.md`) and of the feed endpoints;
//! it never links the server crates and must never touch the store or the runtime.
//! Layout: [`cli`] is the clap surface (the only place the environment is read, through
//! `env = "SLUICE_..."`), `http` the one HTTP client (base URL, key, problem+json),
//! `commands` one module per area, `output` the tables, `progress` the spinner,
//! `config` the saved login.
//!
//! The `sluice` binary embeds [`ClientCommand`] with `#[command(flatten)]`, calls [`run`],
//! and on error hands the error to [`report_error`] for the message and exit code.
#![forbid(unsafe_code)]

pub mod cli;
mod commands;
mod config;
mod http;
mod output;
mod progress;

pub use cli::ClientCommand;

use http::ClientError;

/// Runs one client command to completion.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    commands::dispatch(cmd).await
}

/// The exit code for an error from [`run`]: 2 for usage mistakes (as clap does), 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Usage(_)) => 2,
        _ => 1,
    }
}

/// The text to print for an error from [`run`]: server problems as `error[code]: detail`
/// (plus file:line and traceback), everything else as `error: ...` with its causes.
pub fn render_error(err: &anyhow::Error) -> String {
    match err.downcast_ref::<ClientError>() {
        Some(e @ ClientError::Api(_)) if err.chain().count() == 1 => e.to_string(),
        _ => format!("error: {err:#}"),
    }
}

/// Prints the error to stderr and returns the process exit code, for `main`.
pub fn report_error(err: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("{}", render_error(err));
    std::process::ExitCode::from(exit_code(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_with_codes_and_exit_codes() {
        let api: anyhow::Error = http::classify(
            "http://h",
            404,
            r#"{"code":"feed_not_found","detail":"feed 'x' does not exist"}"#,
            None,
        )
        .into();
        assert_eq!(
            render_error(&api),
            "error[feed_not_found]: feed 'x' does not exist"
        );
        assert_eq!(exit_code(&api), 1);

        let usage: anyhow::Error = ClientError::Usage("pass --yes".into()).into();
        assert_eq!(render_error(&usage), "error: pass --yes");
        assert_eq!(exit_code(&usage), 2);

        let io = anyhow::anyhow!("disk full").context("cannot write out.csv");
        assert_eq!(render_error(&io), "error: cannot write out.csv: disk full");
        assert_eq!(exit_code(&io), 1);
    }

    #[tokio::test]
    async fn run_reports_an_unreachable_server() {
        use clap::Parser;
        #[derive(Parser)]
        struct Top {
            #[command(subcommand)]
            cmd: ClientCommand,
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        // --config points nowhere real so a developer's own login cannot interfere.
        let top = Top::try_parse_from([
            "sluice",
            "feeds",
            "--url",
            &url,
            "--key",
            "k",
            "--config",
            "/nonexistent/c.toml",
        ])
        .unwrap();
        let fut = run(top.cmd);
        // The binary may spawn the command on a multi-threaded runtime.
        fn assert_send<T: Send>(t: T) -> T {
            t
        }
        let err = assert_send(fut).await.unwrap_err();
        assert_eq!(
            render_error(&err),
            format!(
                "error: cannot reach Sluice at {url}: connection refused. Is `sluice up` running?"
            )
        );
        assert_eq!(exit_code(&err), 1);
    }
}
