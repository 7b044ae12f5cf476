//! The client commands, one module per area. Each takes its parsed clap args, builds a
//! [`Ctx`] (server, key, workspace, output mode) and goes through [`crate::http::Client`].
//! Decisions worth testing (which URL/key wins, which workspace is the default, how a
//! request body is shaped) are pure functions here or next to their command.

mod admin;
mod connect;
mod deploy;
mod feeds;
mod init;
mod login;
mod run;

use crate::cli::{
    AuthArgs, ClientCommand, CommonArgs, ConnArgs, KeysCommand, LinksCommand, OutputMode,
    SourcesCommand,
};
use crate::config::{self, Config};
use crate::http::{Client, ClientError};
use crate::output::Style;
use anyhow::Result;
use serde_json::Value;
use std::io::IsTerminal;

pub async fn dispatch(cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Login(a) => login::login(a).await,
        ClientCommand::Whoami(a) => login::whoami(Ctx::new(&a.conn)?).await,
        ClientCommand::Init(a) => init::init(a),
        ClientCommand::Run(a) => {
            let ctx = Ctx::new(&a.conn)?;
            run::run(ctx, a).await
        }
        ClientCommand::Deploy(a) => {
            let ctx = Ctx::new(&a.conn)?;
            deploy::deploy(ctx, a).await
        }
        ClientCommand::Feeds(a) => feeds::list(Ctx::new(&a.conn)?).await,
        ClientCommand::Revisions(a) => feeds::revisions(Ctx::new(&a.conn)?, &a.feed).await,
        ClientCommand::Rollback(a) => {
            feeds::rollback(Ctx::new(&a.conn)?, &a.feed, a.revision).await
        }
        ClientCommand::Delete(a) => feeds::delete(Ctx::new(&a.conn)?, &a.feed, a.yes).await,
        ClientCommand::Call(a) => {
            let ctx = Ctx::new(&a.conn)?;
            feeds::call(ctx, a).await
        }
        ClientCommand::Logs(a) => feeds::logs(Ctx::new(&a.conn)?, &a.feed, a.follow, a.lines).await,
        ClientCommand::Keys(k) => match k.cmd {
            KeysCommand::Create(a) => {
                let ctx = Ctx::new(&a.conn)?;
                admin::key_create(ctx, &a.name, a.role.into()).await
            }
            KeysCommand::Ls(a) => admin::keys_list(Ctx::new(&a.conn)?).await,
            KeysCommand::Revoke(a) => admin::key_revoke(Ctx::new(&a.conn)?, &a.prefix).await,
        },
        ClientCommand::Connect(a) => {
            let ctx = Ctx::new(&a.conn)?;
            connect::connect(ctx, a).await
        }
        ClientCommand::Links(l) => match l.cmd {
            LinksCommand::Create(a) => {
                let ctx = Ctx::new(&a.conn)?;
                connect::link_create(ctx, &a.feed, a.name.as_deref()).await
            }
            LinksCommand::Ls(a) => {
                let ctx = Ctx::new(&a.conn)?;
                connect::links_list(ctx, a.feed.as_deref()).await
            }
            LinksCommand::Revoke(a) => connect::link_revoke(Ctx::new(&a.conn)?, &a.id).await,
        },
        ClientCommand::Sources(s) => match s.cmd {
            SourcesCommand::Add(a) => {
                let ctx = Ctx::from_parts(a.server.as_deref(), &a.auth)?;
                admin::source_add(ctx, a).await
            }
            SourcesCommand::Ls(a) => admin::sources_list(Ctx::new(&a.conn)?).await,
        },
    }
}

/// What every server command needs, resolved once from flags, env and the saved login.
pub(crate) struct Ctx {
    pub client: Client,
    workspace: Option<String>,
    pub output: OutputMode,
    pub style: Style,
    /// Whether stderr is a terminal: decides spinner vs plain progress lines.
    pub tty: bool,
}

impl Ctx {
    fn new(conn: &ConnArgs) -> Result<Ctx> {
        Ctx::from_parts(conn.url.as_deref(), &conn.auth)
    }

    fn from_parts(url: Option<&str>, auth: &AuthArgs) -> Result<Ctx> {
        let saved = saved_login(&auth.common, url.is_some() && auth.key.is_some())?;
        let (url, key) = resolve_credentials(url, auth.key.as_deref(), saved)?;
        Ok(Ctx {
            client: Client::new(&url, &key)?,
            workspace: auth.workspace.clone().filter(|w| !w.is_empty()),
            output: auth.common.output,
            style: Style::detect(),
            tty: std::io::stderr().is_terminal(),
        })
    }

    /// The workspace to act on: `-w`/SLUICE_WORKSPACE, else the key's own (asked with whoami).
    pub async fn workspace(&self) -> Result<String> {
        if let Some(w) = &self.workspace {
            return Ok(w.clone());
        }
        let who = self.client.get_json("/api/v1/whoami").await?;
        Ok(default_workspace(&who))
    }

    pub fn json(&self) -> bool {
        self.output == OutputMode::Json
    }
}

/// The saved login, unless flags/env already give both URL and key (then a broken or
/// unreadable config file must not get in the way).
fn saved_login(common: &CommonArgs, fully_given: bool) -> Result<Option<Config>> {
    if fully_given {
        return Ok(None);
    }
    match config::resolve_path(common.config.as_deref(), common.home.as_deref()) {
        Ok(path) => config::read(&path),
        // No HOME and no --config: the flags are all there is.
        Err(_) => Ok(None),
    }
}

/// Flags and env win over the saved login, each independently.
pub(crate) fn resolve_credentials(
    url: Option<&str>,
    key: Option<&str>,
    saved: Option<Config>,
) -> Result<(String, String)> {
    let url = url
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .or_else(|| saved.as_ref().map(|c| c.url.clone()));
    let key = key
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .or_else(|| saved.map(|c| c.key));
    match (url, key) {
        (Some(u), Some(k)) => Ok((u, k)),
        (None, _) => Err(ClientError::Usage(
            "no Sluice server given: run `sluice login URL --key KEY` once, or pass --url (or set SLUICE_URL)".into(),
        )
        .into()),
        (Some(_), None) => Err(ClientError::Usage(
            "no API key given: run `sluice login URL --key KEY` once, or pass --key (or set SLUICE_KEY)".into(),
        )
        .into()),
    }
}

/// Editor and viewer keys belong to one workspace; admin keys have none, and act on the
/// `demo` workspace that `sluice up` creates unless told otherwise.
pub(crate) fn default_workspace(whoami: &Value) -> String {
    match (
        whoami.get("role").and_then(Value::as_str),
        whoami.get("workspace").and_then(Value::as_str),
    ) {
        (Some("editor" | "viewer"), Some(ws)) if !ws.is_empty() => ws.to_string(),
        _ => "demo".to_string(),
    }
}

/// Percent-encodes one URL path segment (names are usually plain identifiers, but a typo
/// with `/` or `?` must not turn into a different route).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Feed URLs may come back as paths; make them clickable.
pub(crate) fn absolute_url(base: &str, url: &str) -> String {
    if url.starts_with('/') {
        format!("{base}{url}")
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_override_saved_login_each_on_its_own() {
        let saved = || {
            Some(Config {
                url: "http://saved".into(),
                key: "saved-key".into(),
            })
        };
        assert_eq!(
            resolve_credentials(None, None, saved()).unwrap(),
            ("http://saved".into(), "saved-key".into())
        );
        assert_eq!(
            resolve_credentials(Some("http://flag"), None, saved()).unwrap(),
            ("http://flag".into(), "saved-key".into())
        );
        assert_eq!(
            resolve_credentials(None, Some("k2"), saved()).unwrap(),
            ("http://saved".into(), "k2".into())
        );
        let e = resolve_credentials(None, Some("k"), None).unwrap_err();
        assert!(e.to_string().contains("sluice login"), "{e}");
        assert!(matches!(
            e.downcast_ref::<ClientError>(),
            Some(ClientError::Usage(_))
        ));
        let e = resolve_credentials(Some("http://x"), None, None).unwrap_err();
        assert!(e.to_string().contains("SLUICE_KEY"), "{e}");
    }

    #[test]
    fn default_workspace_is_the_keys_own_or_demo() {
        assert_eq!(
            default_workspace(&json!({"role": "editor", "workspace": "sales"})),
            "sales"
        );
        assert_eq!(
            default_workspace(&json!({"role": "viewer", "workspace": "hr"})),
            "hr"
        );
        assert_eq!(
            default_workspace(&json!({"role": "admin", "workspace": null})),
            "demo"
        );
        assert_eq!(default_workspace(&json!({})), "demo");
    }

    #[test]
    fn path_segments_and_urls() {
        assert_eq!(seg("top_products"), "top_products");
        assert_eq!(seg("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(
            absolute_url("http://h:1", "/feeds/demo/x"),
            "http://h:1/feeds/demo/x"
        );
        assert_eq!(
            absolute_url("http://h:1", "https://other/x"),
            "https://other/x"
        );
    }
}
