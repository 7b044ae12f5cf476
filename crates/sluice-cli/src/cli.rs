//! The command line of the client, as clap types. This is the only place that reads the
//! environment (through clap's `env = "SLUICE_..."` attributes); everything below receives
//! plain values. `ClientCommand` is flattened by the `sluice` binary next to its server
//! subcommands, so these appear at top level: `sluice login`, `sluice feeds`, ...

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

// The analyst's and admin's commands. Embed with `#[command(flatten)]` in the binary's
// `Subcommand` enum and hand the value to `crate::run`. Plain comments, not doc comments,
// on this enum and the shared `Args` structs: clap would turn a doc comment into the
// `about` text of whatever command flattens them.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Check an API key against a Sluice server and save it for the other commands.
    #[command(after_help = "Example:\n  sluice login http://127.0.0.1:8080 --key sk_live_...")]
    Login(LoginArgs),
    /// Write NAME.py, a ready-to-run example feed (no server needed).
    #[command(
        after_help = "Example:\n  sluice init top_products && sluice run top_products.py -p region=APAC"
    )]
    Init(InitArgs),
    /// Run a feed file on the server without deploying it, and show the first rows.
    #[command(after_help = "Example:\n  sluice run top_products.py -p region=EU -p limit=5")]
    Run(RunArgs),
    /// Deploy a feed file: every @sluice.feed in it becomes a new live revision.
    #[command(after_help = "Example:\n  sluice deploy top_products.py -w demo")]
    Deploy(DeployArgs),
    /// List the feeds of a workspace.
    #[command(after_help = "Example:\n  sluice feeds -w demo")]
    Feeds(FeedsArgs),
    /// List the revisions of a feed, newest first.
    #[command(after_help = "Example:\n  sluice revisions top_products")]
    Revisions(FeedArgs),
    /// Make an earlier revision of a feed live again.
    #[command(after_help = "Example:\n  sluice rollback top_products 2")]
    Rollback(RollbackArgs),
    /// Delete a feed and all its revisions.
    #[command(after_help = "Example:\n  sluice delete top_products --yes")]
    Delete(DeleteArgs),
    /// Call a deployed feed and stream its rows to stdout or a file.
    #[command(
        after_help = "Example:\n  sluice call top_products -p region=EU --format csv -o top.csv"
    )]
    Call(CallArgs),
    /// Show a feed's recent invocations; -f keeps following new ones.
    #[command(after_help = "Example:\n  sluice logs top_products -f")]
    Logs(LogsArgs),
    /// Manage API keys: create, ls, revoke.
    #[command(after_help = "Example:\n  sluice keys create tableau --role viewer -w demo")]
    Keys(KeysArgs),
    /// Connection files and snippets for BI tools: Excel, Power BI, Tableau, Qlik, Power Query, pandas, curl.
    #[command(
        after_help = "Examples:\n  sluice connect sales_by_region --tool excel        # writes demo-sales_by_region.odc\n  sluice connect sales_by_region --tool pandas -p region=US\n  sluice connect sales_by_region --tool qlik --link  # a secret link, no credentials\n  sluice connect --tool powerbi                      # the whole workspace\n  sluice connect sales_by_region                     # what is on offer"
    )]
    Connect(ConnectArgs),
    /// Manage secret feed links (a URL that reads one feed without credentials): create, ls, revoke.
    #[command(
        after_help = "Example:\n  sluice links create sales_by_region --name \"finance sheet\""
    )]
    Links(LinksArgs),
    /// Manage data sources: add, ls (adding needs an admin key).
    #[command(
        after_help = "Example:\n  sluice sources add crm --kind postgres --url postgres://crm.internal/crm --grant demo"
    )]
    Sources(SourcesArgs),
    /// Show who the current key is: name, role, workspace.
    #[command(after_help = "Example:\n  sluice whoami --output json")]
    Whoami(WhoamiArgs),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputMode {
    /// Aligned tables and sentences for people.
    #[default]
    Table,
    /// Machine-readable JSON (the server's documents, unchanged).
    Json,
}

// Where the saved login lives and how to print. Shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The config file written by `sluice login` [default: ~/.config/sluice/config.toml].
    #[arg(long, env = "SLUICE_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Used only to compute the default config path; read from $HOME.
    #[arg(long = "home-dir", env = "HOME", hide = true, global = true)]
    pub home: Option<PathBuf>,
    /// Print tables for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = OutputMode::Table, global = true)]
    pub output: OutputMode,
}

// The key and workspace to use; they override what `sluice login` saved.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// API key [default: the key saved by `sluice login`].
    #[arg(long, env = "SLUICE_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// Workspace [default: the key's own workspace; "demo" for admin keys].
    #[arg(
        short = 'w',
        long,
        env = "SLUICE_WORKSPACE",
        global = true,
        value_name = "WS"
    )]
    pub workspace: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

// Server, key and workspace for commands that talk to Sluice.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Sluice server URL [default: the URL saved by `sluice login`].
    #[arg(long, env = "SLUICE_URL", global = true)]
    pub url: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8080 (http:// is assumed when no scheme is given).
    pub url: String,
    /// The API key printed by `sluice up` or created with `sluice keys create`.
    #[arg(long, env = "SLUICE_KEY", hide_env_values = true)]
    pub key: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Feed name (also the file name: NAME.py); lowercase letters, digits and '_'.
    pub name: String,
    /// What to start from: `top_products` (SQL on the demo warehouse) or `python` (rows
    /// built in Python). The web IDE's "New feed" offers the same templates.
    #[arg(long, default_value = "top_products")]
    pub template: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Formats `sluice run` can print the rows in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The feed module (.py) to run.
    pub file: PathBuf,
    /// A parameter as name=value; repeat for several (or for list[str] values).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Which feed of the file to run, when it defines several.
    #[arg(long)]
    pub feed: Option<String>,
    /// How to print the rows.
    #[arg(long, value_enum, default_value_t = RunFormat::Table)]
    pub format: RunFormat,
    /// Show at most this many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// The feed module (.py) to deploy.
    pub file: PathBuf,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FeedsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FeedArgs {
    /// Feed name.
    pub feed: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// Feed name.
    pub feed: String,
    /// Revision number to make live (see `sluice revisions FEED`).
    pub revision: i64,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Feed name.
    pub feed: String,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Formats a feed can be fetched in (the HTTP contract's `?format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallFormat {
    Json,
    Csv,
    Ndjson,
    Arrow,
}

impl CallFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CallFormat::Json => "json",
            CallFormat::Csv => "csv",
            CallFormat::Ndjson => "ndjson",
            CallFormat::Arrow => "arrow",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct CallArgs {
    /// Feed name.
    pub feed: String,
    /// A parameter as name=value; repeat for several (or for list[str] values).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Response format.
    #[arg(long, value_enum, default_value_t = CallFormat::Json)]
    pub format: CallFormat,
    /// Write the body to this file instead of stdout.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Feed name.
    pub feed: String,
    /// Keep the connection open and print new invocations as they happen.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many invocations to show.
    #[arg(short = 'n', long = "lines", default_value_t = 20)]
    pub lines: u64,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub cmd: KeysCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    #[command(after_help = "Example:\n  sluice keys create tableau --role viewer -w demo")]
    Create(KeyCreateArgs),
    /// List keys (admin: all; editor: the workspace's).
    #[command(after_help = "Example:\n  sluice keys ls")]
    Ls(ListArgs),
    /// Revoke a key by its prefix (see `sluice keys ls`).
    #[command(after_help = "Example:\n  sluice keys revoke sk_3f9a")]
    Revoke(KeyRevokeArgs),
}

/// Roles a key may be given (mirrors `sluice_core::Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Editor,
    Admin,
}

impl From<RoleArg> for sluice_core::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => sluice_core::Role::Viewer,
            RoleArg::Editor => sluice_core::Role::Editor,
            RoleArg::Admin => sluice_core::Role::Admin,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct KeyCreateArgs {
    /// A name that says who or what uses the key, e.g. "tableau-finance".
    pub name: String,
    /// What the key may do.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct KeyRevokeArgs {
    /// The key's prefix, as shown by `sluice keys ls`.
    pub prefix: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The BI tools `sluice connect` writes for (file extensions work too: odc, pbids, tds...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolArg {
    /// Excel: an .odc file (OData; Basic auth with the key as password).
    #[value(alias = "odc")]
    Excel,
    /// Power BI Desktop: a .pbids file (OData; Basic auth with the key as password).
    #[value(alias = "pbids")]
    Powerbi,
    /// Tableau: a .tds file (PostgreSQL connector; the key as password).
    #[value(alias = "tds")]
    Tableau,
    /// Qlik Sense: a load script (PostgreSQL connector, or a web file with --link).
    #[value(alias = "qvs")]
    Qlik,
    /// Power Query M for Power BI or Excel, refreshable in the Power BI Service.
    #[value(aliases = ["m", "pq"])]
    Powerquery,
    /// Python: pandas.read_csv with the key from $SLUICE_KEY.
    #[value(alias = "python")]
    Pandas,
    /// A curl command with the key from $SLUICE_KEY.
    Curl,
}

impl ToolArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolArg::Excel => "excel",
            ToolArg::Powerbi => "powerbi",
            ToolArg::Tableau => "tableau",
            ToolArg::Qlik => "qlik",
            ToolArg::Powerquery => "powerquery",
            ToolArg::Pandas => "pandas",
            ToolArg::Curl => "curl",
        }
    }

    /// Tools whose output is a file to open (written to disk), not text to paste.
    pub fn is_file(self) -> bool {
        matches!(self, ToolArg::Excel | ToolArg::Powerbi | ToolArg::Tableau)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Feed name; leave out for the whole workspace (every feed).
    pub feed: Option<String>,
    /// The tool to connect; leave out to list what is on offer.
    #[arg(short = 't', long, value_enum)]
    pub tool: Option<ToolArg>,
    /// A parameter value for the connection, as name=value (replaces the feed's default).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Create a secret feed link and embed it, for tools that cannot send credentials
    /// (needs an editor key; anyone with the output can read the feed until it is revoked).
    #[arg(long)]
    pub link: bool,
    /// Write to this file [default: the server's file name for files; stdout for snippets].
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LinksArgs {
    #[command(subcommand)]
    pub cmd: LinksCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum LinksCommand {
    /// Create a secret link to a feed; its URL is printed once.
    #[command(
        after_help = "Example:\n  sluice links create sales_by_region --name \"finance sheet\"\n  curl \"$(sluice links create sales_by_region)?format=csv&region=EU\""
    )]
    Create(LinkCreateArgs),
    /// List the active links of the workspace, or of one feed.
    #[command(after_help = "Example:\n  sluice links ls sales_by_region")]
    Ls(LinkListArgs),
    /// Revoke a link by its id (see `sluice links ls`); it stops working at once.
    #[command(after_help = "Example:\n  sluice links revoke k3v9x0a2bq")]
    Revoke(LinkRevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LinkCreateArgs {
    /// Feed name.
    pub feed: String,
    /// Who or what uses the link, e.g. "finance sheet".
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LinkListArgs {
    /// Only this feed's links.
    pub feed: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LinkRevokeArgs {
    /// The link's id, as shown by `sluice links ls`.
    pub id: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SourcesArgs {
    #[command(subcommand)]
    pub cmd: SourcesCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SourcesCommand {
    /// Register a data source (the server opens a connection to test it first).
    #[command(
        after_help = "Examples:\n  sluice sources add shop --kind sqlite --path /data/shop.db --grant demo\n  sluice sources add crm --kind postgres --url postgres://user:pw@db/crm --grant sales"
    )]
    Add(SourceAddArgs),
    /// List the data sources this key can see.
    #[command(after_help = "Example:\n  sluice sources ls")]
    Ls(ListArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    Sqlite,
    Postgres,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Sqlite => "sqlite",
            SourceKind::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("location").required(true).args(["path", "source_url"]))]
pub struct SourceAddArgs {
    /// Source name, used as `sluice.sql("NAME", ...)` in feeds.
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: SourceKind,
    /// Database file (sqlite), as seen by the server.
    #[arg(long)]
    pub path: Option<String>,
    /// Connection URL (postgres). Here `--url` names the source, so the Sluice server
    /// is given with `--server` or SLUICE_URL.
    #[arg(long = "url", id = "source_url", value_name = "URL")]
    pub source_url: Option<String>,
    /// Workspace allowed to use the source; repeat for several.
    #[arg(long = "grant", value_name = "WS")]
    pub grants: Vec<String>,
    /// Sluice server URL [default: the URL saved by `sluice login`].
    #[arg(long = "server", env = "SLUICE_URL")]
    pub server: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Parses `-p name=value`. Only the first `=` splits, so values may contain `=`.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "expected NAME=VALUE, e.g. -p region=EU (got '{s}')"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    /// Stands in for the binary: server subcommands next to the flattened client ones.
    /// Boxed because the client args are large next to a unit variant (clippy's
    /// large_enum_variant); clap implements `Subcommand` for `Box<T>`.
    #[derive(Debug, Parser)]
    #[command(name = "sluice")]
    struct Top {
        #[command(subcommand)]
        cmd: TopCommand,
    }

    #[derive(Debug, Subcommand)]
    enum TopCommand {
        /// Server stand-in.
        Up,
        #[command(flatten)]
        Client(Box<ClientCommand>),
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        let m = Top::command()
            .try_get_matches_from(std::iter::once("sluice").chain(args.iter().copied()))?;
        match Top::from_arg_matches(&m)?.cmd {
            TopCommand::Client(c) => Ok(*c),
            TopCommand::Up => panic!("parsed as up"),
        }
    }

    #[test]
    fn param_parsing_splits_on_first_equals() {
        assert_eq!(
            parse_param("region=EU").unwrap(),
            ("region".into(), "EU".into())
        );
        assert_eq!(parse_param("q=a=b").unwrap(), ("q".into(), "a=b".into()));
        assert_eq!(parse_param("empty=").unwrap(), ("empty".into(), "".into()));
        assert!(parse_param("noequals").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_param("=x").is_err());
    }

    #[test]
    fn command_tree_is_valid_when_flattened() {
        // clap's debug asserts catch duplicate flags (e.g. two `--url`) and bad groups.
        Top::command().debug_assert();
    }

    #[test]
    fn client_commands_are_top_level() {
        match parse(&[
            "run", "f.py", "-p", "a=1", "-p", "b=2", "--limit", "5", "--output", "json",
        ])
        .unwrap()
        {
            ClientCommand::Run(r) => {
                assert_eq!(
                    r.params,
                    vec![("a".into(), "1".into()), ("b".into(), "2".into())]
                );
                assert_eq!(r.limit, 5);
                assert_eq!(r.conn.auth.common.output, OutputMode::Json);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["keys", "create", "bi", "--role", "viewer", "-w", "sales"]).unwrap() {
            ClientCommand::Keys(KeysArgs {
                cmd: KeysCommand::Create(k),
            }) => {
                assert_eq!(k.role, RoleArg::Viewer);
                assert_eq!(k.conn.auth.workspace.as_deref(), Some("sales"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn connect_takes_tools_by_name_or_extension() {
        match parse(&[
            "connect",
            "sales",
            "--tool",
            "odc",
            "-p",
            "region=US",
            "--link",
        ])
        .unwrap()
        {
            ClientCommand::Connect(c) => {
                assert_eq!(c.feed.as_deref(), Some("sales"));
                assert_eq!(c.tool, Some(ToolArg::Excel));
                assert!(c.link && c.tool.unwrap().is_file());
                assert_eq!(c.params, vec![("region".into(), "US".into())]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["connect", "-t", "powerquery", "-w", "demo"]).unwrap() {
            ClientCommand::Connect(c) => {
                assert_eq!((c.feed, c.tool), (None, Some(ToolArg::Powerquery)));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["connect", "x", "--tool", "looker"]).is_err());
        match parse(&["links", "revoke", "abc", "--output", "json"]).unwrap() {
            ClientCommand::Links(LinksArgs {
                cmd: LinksCommand::Revoke(r),
            }) => assert_eq!(r.id, "abc"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sources_add_url_is_the_source_and_needs_a_location() {
        match parse(&[
            "sources",
            "add",
            "crm",
            "--kind",
            "postgres",
            "--url",
            "postgres://x/y",
            "--server",
            "http://s",
        ])
        .unwrap()
        {
            ClientCommand::Sources(SourcesArgs {
                cmd: SourcesCommand::Add(a),
            }) => {
                assert_eq!(a.source_url.as_deref(), Some("postgres://x/y"));
                assert_eq!(a.server.as_deref(), Some("http://s"));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["sources", "add", "crm", "--kind", "sqlite"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn every_command_has_an_about_and_an_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                if sub.get_name() == "help" || sub.get_name() == "up" {
                    continue;
                }
                assert!(sub.get_about().is_some(), "{p} has no description");
                if sub.has_subcommands() {
                    walk(sub, &p);
                } else {
                    let after = sub
                        .get_after_help()
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    assert!(after.contains("sluice "), "{p} has no example");
                }
            }
        }
        walk(&Top::command(), "sluice");
    }
}
