//! One connection: the startup handshake (the password is a Sluice key, database = the
//! workspace), then a `datafusion-postgres` session built for that key and workspace,
//! to which every query is handed.
//!
//! How the key is checked depends on the user name. SCRAM cannot find a key by its
//! password (the client never sends it), so a user name that is a key's prefix (the 10
//! characters after `sk_`, as `sluice keys ls` shows them; `sk_<prefix>` works too)
//! whose key has a SCRAM verifier gets SCRAM-SHA-256. Any other user name gets a
//! clear-text password request, the key being found by its own prefix: keys made before
//! verifiers were stored, the admin key set at start, and clients that do not know the
//! prefix.

use crate::rows::{EncodeRows, PortalFormat};
use crate::table::FeedSchema;
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, METADATA_DATABASE,
    METADATA_USER, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sluice_core::keys::ScramVerifier;
use sluice_gateway::{Gateway, Principal};
use sluice_store::KeyRecord;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

type Statement = (String, Option<(sqlparser::ast::Statement, LogicalPlan)>);

/// What all connections share.
pub struct Shared {
    pub(crate) gw: Gateway,
    connections: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
    params: DefaultServerParameterProvider,
    /// TLS is offered: plain connections are refused unless they come from loopback.
    tls: bool,
}

impl Shared {
    pub fn new(gw: Gateway, tls: bool) -> Self {
        let mut params = DefaultServerParameterProvider::default();
        // What clients parse to pick their dialect: PostgreSQL 15 (the version the
        // catalog shapes are compared with), marked as Sluice.
        params.server_version = SERVER_VERSION.into();
        params.is_superuser = false;
        params.default_transaction_read_only = true;
        Shared {
            gw,
            connections: Arc::new(ConnectionManager::new()),
            pids: RandomPidSecretKeyGenerator::default(),
            params,
            tls,
        }
    }
}

/// The session of one connection, set once its startup succeeds.
type Slot = Arc<OnceLock<Session>>;

/// A connection's `datafusion-postgres` service and its DataFusion session, which
/// `COPY` plans on directly (`copy/`).
struct Session {
    service: Arc<DfSessionService>,
    ctx: Arc<SessionContext>,
}

/// The handlers of one connection.
pub struct Handlers {
    shared: Arc<Shared>,
    queries: Arc<Queries>,
}

impl Handlers {
    pub fn new(shared: Arc<Shared>) -> Self {
        let slot = Slot::default();
        Handlers {
            queries: Arc::new(Queries {
                parser: Arc::new(ConnParser { slot: slot.clone() }),
                slot,
                format: Arc::default(),
            }),
            shared,
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup {
            shared: self.shared.clone(),
            slot: self.queries.slot.clone(),
            format: self.queries.format.clone(),
            auth: Mutex::new(Auth::Cleartext),
        })
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.shared.connections.clone()))
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        let db = client
            .metadata()
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_default();
        tracing::info!(database = %db, "postgres error sent: {error}");
    }
}

fn fatal(code: &str, message: String, hint: Option<&str>) -> PgWireError {
    let mut e = ErrorInfo::new("FATAL".into(), code.into(), message);
    e.hint = hint.map(str::to_string);
    PgWireError::UserError(Box::new(e))
}

/// Where the login of a connection is.
enum Auth {
    /// A clear-text password is (or will be) asked for.
    Cleartext,
    /// SCRAM offered for this key, waiting for the client-first-message.
    ScramOffered(Box<KeyRecord>, ScramVerifier),
    /// The server-first-message was sent, waiting for the client-final-message.
    ScramChallenged(Box<KeyRecord>, Box<crate::scram::Exchange>),
    Done,
}

struct Startup {
    shared: Arc<Shared>,
    slot: Slot,
    format: Arc<PortalFormat>,
    auth: Mutex<Auth>,
}

/// The key prefix a user name names, if it is shaped like one.
fn user_prefix(user: &str) -> Option<&str> {
    let p = user.strip_prefix("sk_").unwrap_or(user);
    (p.len() == 10
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    .then_some(p)
}

fn wrong_scram_key(prefix: &str) -> PgWireError {
    fatal(
        "28P01",
        format!(
            "password authentication failed for user \"{prefix}\": the password is not the Sluice API key with prefix {prefix}"
        ),
        Some(
            "with SCRAM the user name is the key's prefix (the 10 characters after sk_) and the password the whole key",
        ),
    )
}

impl Startup {
    /// The key whose SCRAM verifier this user name selects, if any.
    async fn scram_key(&self, user: &str) -> PgWireResult<Option<(KeyRecord, ScramVerifier)>> {
        let Some(prefix) = user_prefix(user) else {
            return Ok(None);
        };
        let key = self
            .shared
            .gw
            .store()
            .key_by_prefix(prefix)
            .await
            .map_err(|e| fatal("XX000", e.message, None))?;
        Ok(key.and_then(|k| {
            let v = ScramVerifier::parse(k.scram.as_deref()?)?;
            Some((k, v))
        }))
    }

    /// Check the workspace, and build the connection's session for the key.
    async fn open(
        &self,
        principal: &Principal,
        ws: &str,
        request_id: &str,
        format: &Arc<PortalFormat>,
    ) -> PgWireResult<Session> {
        let gw = &self.shared.gw;
        let unknown = || {
            fatal(
                "3D000",
                format!("database \"{ws}\" does not exist"),
                Some("the database is the workspace: use one this key may read"),
            )
        };
        principal.authorize(ws, false).map_err(|_| unknown())?;
        let internal = |e: sluice_core::Error| fatal("XX000", e.message, None);
        if gw.store().workspace(ws).await.map_err(internal)?.is_none() {
            return Err(unknown());
        }
        // The store's feeds and, with runtime = kubernetes, the cluster's Ready ones it does
        // not have (GitOps): each a table.
        let feeds: Vec<String> = gw.live_feed_names(ws).await.map_err(internal)?;
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(ws, "public")
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let df = |e: datafusion::error::DataFusionError| fatal("XX000", e.to_string(), None);
        let catalog = ctx
            .catalog(ws)
            .ok_or_else(|| fatal("XX000", format!("no catalog {ws}"), None))?;
        let feeds = Arc::new(FeedSchema::new(gw.clone(), ws, feeds, request_id));
        catalog
            .register_schema("public", feeds.clone())
            .map_err(df)?;
        ctx.register_udtf(
            crate::keys::FUNCTION,
            Arc::new(crate::keys::PrimaryKeysFunction { feeds }),
        );
        crate::catalog::setup(&ctx, ws).map_err(df)?;
        ctx.register_udf(version_udf());
        ctx.register_udf(to_regtype_udf());
        // Feeds have no sequences, identities or collations: SQLAlchemy's column
        // reflection asks for them in branches that are never taken here.
        for (name, ret) in [
            ("pg_get_serial_sequence", DataType::Utf8),
            ("json_build_object", DataType::Utf8),
            ("pg_collation_is_visible", DataType::Boolean),
        ] {
            ctx.register_udf(null_udf(name, ret));
        }
        ctx.add_analyzer_rule(Arc::new(crate::like::LikeEscape));
        use datafusion_postgres::hooks::{
            cursor::CursorStatementHook, set_show::SetShowHook,
            transactions::TransactionStatementHook,
        };
        // datafusion-postgres' own hooks after ours, and last the one that runs queries
        // (`rows.rs`).
        let hooks: Vec<Arc<dyn datafusion_postgres::QueryHook>> = vec![
            Arc::new(crate::hooks::ReadOnlyStatements),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
            Arc::new(EncodeRows {
                format: format.clone(),
            }),
        ];
        let ctx = Arc::new(ctx);
        Ok(Session {
            service: Arc::new(DfSessionService::new_with_hooks(ctx.clone(), hooks)),
            ctx,
        })
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if self.shared.tls
                    && !client.is_secure()
                    && !client.socket_addr().ip().to_canonical().is_loopback()
                {
                    return Err(fatal(
                        "28000",
                        "this server accepts plain connections from its own machine only: connect with TLS (sslmode=require)".into(),
                        Some("the password is an API key, sent in clear text: it travels inside TLS"),
                    ));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let request = match self.scram_key(&user).await? {
                    Some((key, verifier)) => {
                        *self.auth.lock().expect("auth state") =
                            Auth::ScramOffered(Box::new(key), verifier);
                        Authentication::SASL(vec![crate::scram::MECHANISM.into()])
                    }
                    None => Authentication::CleartextPassword,
                };
                client
                    .send(PgWireBackendMessage::Authentication(request))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let state =
                    std::mem::replace(&mut *self.auth.lock().expect("auth state"), Auth::Done);
                let principal = match state {
                    Auth::Done => {
                        return Err(fatal("08P01", "unexpected password message".into(), None));
                    }
                    Auth::Cleartext => {
                        let pwd = pwd.into_password()?;
                        self.shared
                            .gw
                            .principal_for_key(&pwd.password)
                            .await
                            .map_err(|e| {
                                fatal(
                                    "28P01",
                                    "password authentication failed: the password must be a valid Sluice API key"
                                        .into(),
                                    Some(&e.message),
                                )
                            })?
                    }
                    Auth::ScramOffered(key, verifier) => {
                        let first = pwd.into_sasl_initial_response()?;
                        if first.auth_method != crate::scram::MECHANISM {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(first.auth_method));
                        }
                        let data = first.data.unwrap_or_default();
                        let (exchange, server_first) =
                            crate::scram::Exchange::start(verifier, &data)
                                .map_err(scram_error(&key))?;
                        *self.auth.lock().expect("auth state") =
                            Auth::ScramChallenged(key, Box::new(exchange));
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into_bytes().into()),
                            ))
                            .await?;
                        return Ok(());
                    }
                    Auth::ScramChallenged(key, exchange) => {
                        let last = pwd.into_sasl_response()?;
                        let server_final =
                            exchange.finish(&last.data).map_err(scram_error(&key))?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(server_final.into_bytes().into()),
                            ))
                            .await?;
                        let store = self.shared.gw.store().clone();
                        let prefix = key.prefix.clone();
                        tokio::spawn(async move {
                            let _ = store.touch_key(&prefix).await;
                        });
                        Arc::new(Principal {
                            name: key.name,
                            prefix: key.prefix,
                            role: key.role,
                            workspace: key.workspace,
                        })
                    }
                };
                let meta = client.metadata();
                // libpq sends the user name as the database when none is given.
                let ws = meta
                    .get(METADATA_DATABASE)
                    .or_else(|| meta.get(METADATA_USER))
                    .cloned()
                    .unwrap_or_default();
                let (pid, secret_key) = self.shared.pids.generate(client);
                let rid = format!("pg-{pid}");
                let session = self.open(&principal, &ws, &rid, &self.format).await?;
                let _ = self.slot.set(session);
                client.set_pid_and_secret_key(pid, secret_key.clone());
                let (handle, guard) = self.shared.connections.register(pid, secret_key);
                client.session_extensions().insert(handle);
                client.session_extensions().insert(guard);
                tracing::info!(workspace = %ws, addr = %client.socket_addr(), tls = client.is_secure(), key = %principal.prefix, "postgres connection");
                finish_authentication(client, &self.shared.params).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn scram_error(key: &KeyRecord) -> impl Fn(crate::scram::Failure) -> PgWireError + '_ {
    move |f| match f {
        crate::scram::Failure::WrongProof => wrong_scram_key(&key.prefix),
        crate::scram::Failure::Malformed(m) => fatal("08P01", m, None),
    }
}

/// Query handling, handed to the connection's `datafusion-postgres` session.
pub struct Queries {
    slot: Slot,
    parser: Arc<ConnParser>,
    /// The executing portal's result formats, for the hook that encodes rows.
    format: Arc<PortalFormat>,
}

fn session(slot: &Slot) -> PgWireResult<&Session> {
    slot.get().ok_or_else(|| {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".into(),
            "08P01".into(),
            "query before authentication".into(),
        )))
    })
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let s = session(&self.slot)?;
        if let Some(copy) = crate::copy::statement(query) {
            let tag = crate::copy::copy_out(&s.ctx, client, copy?).await?;
            return Ok(vec![Response::Execution(tag)]);
        }
        let service = s.service.clone();
        let rewritten = crate::rewrite::rewrite(query);
        let query = rewritten.as_deref().unwrap_or(query);
        let named = crate::colnames::name_columns(query);
        let query = named.as_deref().unwrap_or(query);
        <DfSessionService as SimpleQueryHandler>::do_query(&service, client, query).await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Statement;
    type QueryParser = ConnParser;

    fn query_parser(&self) -> Arc<ConnParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let s = session(&self.slot)?;
        // A COPY was parsed without a plan (`ConnParser`).
        if let (sql, None) = &portal.statement.statement
            && let Some(copy) = crate::copy::statement(sql)
        {
            let tag = crate::copy::copy_out(&s.ctx, client, copy?).await?;
            return Ok(Response::Execution(tag));
        }
        let service = s.service.clone();
        self.format.set(portal.result_column_format.clone());
        <DfSessionService as ExtendedQueryHandler>::do_query(&service, client, portal, max_rows)
            .await
    }
}

/// The connection's parser (the session's, once there is one).
pub struct ConnParser {
    slot: Slot,
}

impl ConnParser {
    fn parser(&self) -> PgWireResult<Arc<Parser>> {
        Ok(session(&self.slot)?.service.query_parser())
    }
}

#[async_trait]
impl QueryParser for ConnParser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        // A COPY is checked here and planned when it runs: it has no result columns to
        // describe, and DataFusion must not plan it (see `copy/`).
        if let Some(copy) = crate::copy::statement(sql) {
            copy?;
            return Ok(Some((sql.to_string(), None)));
        }
        let rewritten = crate::rewrite::rewrite(sql);
        let sql = rewritten.as_deref().unwrap_or(sql);
        let named = crate::colnames::name_columns(sql);
        let sql = named.as_deref().unwrap_or(sql);
        self.parser()?.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, stmt: &Statement) -> PgWireResult<Vec<Type>> {
        self.parser()?.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.parser()?.get_result_schema(stmt, column_format)
    }
}

/// What clients read the server's version from (SQLAlchemy, pgjdbc, Npgsql parse
/// `PostgreSQL <major>.<minor>`): the PostgreSQL version whose catalog shapes we answer
/// with, and what we really are. DataFusion's own `version()` names DataFusion only.
pub const SERVER_VERSION: &str = "15.0 (Sluice)";

fn version_udf() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let text = format!(
        "PostgreSQL {SERVER_VERSION} on {}-linux, Sluice {} with DataFusion, 64-bit",
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION")
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(text.clone())),
            ))
        }),
    )
}

/// `to_regtype(name)`: the OID of a built-in type, NULL for others (psycopg's
/// `TypeInfo.fetch`, run by SQLAlchemy at connect for `hstore`, expects NULL for types
/// the server does not have).
fn to_regtype_udf() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, AsArray, Int32Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    const TYPES: &[(&str, i32)] = &[
        ("bool", 16),
        ("boolean", 16),
        ("bytea", 17),
        ("char", 18),
        ("name", 19),
        ("int8", 20),
        ("bigint", 20),
        ("int2", 21),
        ("smallint", 21),
        ("int4", 23),
        ("integer", 23),
        ("int", 23),
        ("text", 25),
        ("oid", 26),
        ("json", 114),
        ("float4", 700),
        ("real", 700),
        ("float8", 701),
        ("double precision", 701),
        ("varchar", 1043),
        ("character varying", 1043),
        ("date", 1082),
        ("time", 1083),
        ("timestamp", 1114),
        ("timestamp without time zone", 1114),
        ("timestamptz", 1184),
        ("timestamp with time zone", 1184),
        ("interval", 1186),
        ("numeric", 1700),
        ("uuid", 2950),
        ("jsonb", 3802),
    ];
    let lookup = |name: &str| {
        let n = name
            .trim()
            .trim_start_matches("pg_catalog.")
            .to_ascii_lowercase();
        TYPES.iter().find(|(t, _)| *t == n).map(|(_, oid)| *oid)
    };
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let oids: Int32Array = (0..names.len())
                .map(|i| {
                    (!names.is_null(i))
                        .then(|| lookup(names.value(i)))
                        .flatten()
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

/// A catalog function whose answer is always NULL here, whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullFn {
    name: String,
    signature: datafusion::logical_expr::Signature,
    ret: DataType,
}

impl datafusion::logical_expr::ScalarUDFImpl for NullFn {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.ret.clone())
    }
    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(
            datafusion::common::ScalarValue::try_from(&self.ret)?,
        ))
    }
}

fn null_udf(name: &str, ret: DataType) -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(NullFn {
        name: name.into(),
        signature: datafusion::logical_expr::Signature::variadic_any(
            datafusion::logical_expr::Volatility::Immutable,
        ),
        ret,
    })
}
