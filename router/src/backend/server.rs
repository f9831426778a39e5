//! One server connection: opening it (TCP, TLS, authentication), running the
//! router's own housekeeping queries on it, and keeping the session settings
//! a client expects in force on it.

use std::io;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clock::{self, Tick};
use crate::config::ServerTls;
use crate::net::{self, Stream, Tcp};
use crate::protocol::backend::{self as be, AuthRequest, ErrorFields};
use crate::protocol::frame;
use crate::protocol::frontend as fe;
use crate::protocol::{md5, scram, sqlstate};
use crate::rt;

use super::params::StartupParams;
use super::pool::ConnectOptions;
use super::statements::ServerStatements;

/// Where a pool's connections go and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub tls: ServerTls,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not connect to server {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("timeout opening a connection to server {0}")]
    ConnectTimeout(String),
    #[error("server {0} does not support TLS, and server_tls requires it")]
    TlsRefused(String),
    #[error("TLS handshake with server {addr} failed: {source}")]
    Tls { addr: String, source: io::Error },
    #[error("server login failed: {}", .0.message)]
    Login(ErrorFields),
    #[error("server asked for an authentication method the router does not support ({0})")]
    UnsupportedAuth(i32),
    #[error("server asked for a password, but none is configured for user \"{0}\"")]
    NoPassword(String),
    #[error("server authentication failed: {0}")]
    Scram(#[from] scram::ScramError),
    #[error("server error: {}", .0.message)]
    Query(ErrorFields),
    #[error("protocol error from server: {0}")]
    Protocol(String),
    #[error("server connection lost: {0}")]
    Io(#[from] io::Error),
}

impl ServerError {
    /// SQLSTATE a client sees when this stops its query.
    pub fn code(&self) -> &str {
        match self {
            ServerError::Login(f) | ServerError::Query(f) if !f.code.is_empty() => &f.code,
            ServerError::Io(_) => sqlstate::CONNECTION_FAILURE,
            ServerError::Protocol(_) => sqlstate::PROTOCOL_VIOLATION,
            _ => sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        }
    }
}

impl From<frame::FrameError> for ServerError {
    fn from(e: frame::FrameError) -> Self {
        ServerError::Protocol(e.to_string())
    }
}

/// An open, authenticated server connection. Boxed: it changes hands on
/// every transaction (pool, session, pool), and moving a pointer is cheaper
/// than moving the few hundred bytes of its state each time.
pub type Server = Box<Conn<Stream>>;

/// A server connection's socket and what it knows about itself. Generic
/// over the socket so the same state can sit around a registered stream
/// (`Server`) or a bare one travelling between workers (`Detached`).
pub struct Conn<S> {
    pub stream: S,
    /// Bytes read from the server and not yet consumed.
    pub buf: BytesMut,
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus values reported at startup (and updated by SETs the
    /// router made), for the pool's cache of what clients are told.
    pub params: Vec<(String, String)>,
    /// Id of the client startup parameters in force (0: the connection's own).
    pub applied: StartupParams,
    pub created: Tick,
    pub last_used: Tick,
    /// Set when the connection must not be reused (I/O error, protocol
    /// desync, FATAL from the server).
    pub broken: bool,
    /// Transaction status from the last ReadyForQuery: I, T or E.
    pub status: u8,
    /// The server's address, for cancel requests; looked up once at connect
    /// (not a getpeername per transaction).
    pub addr: Option<std::net::SocketAddr>,
    /// Router-named prepared statements this connection has (transaction mode).
    pub statements: ServerStatements,
}

impl Conn<Stream> {
    /// Opens a connection: resolves the host now (Kubernetes service names
    /// move), TCP, optional TLS, startup and authentication, until ReadyForQuery.
    pub async fn connect(
        target: &ServerTarget,
        password: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Server, ServerError> {
        let addr = format!("{}:{}", target.host, target.port);
        match rt::time::timeout(options.timeout, Self::connect_inner(target, &addr, password, options)).await {
            Ok(result) => result,
            Err(_) => Err(ServerError::ConnectTimeout(addr)),
        }
    }

    async fn connect_inner(
        target: &ServerTarget,
        addr: &str,
        password: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Server, ServerError> {
        let tcp = Tcp::connect(&target.host, target.port)
            .await
            .map_err(|source| ServerError::Connect { addr: addr.to_string(), source })?;
        net::tune(&tcp, options.keepalive);
        let peer = tcp.peer_addr().ok();
        let mut stream = match target.tls {
            ServerTls::Disable => Stream::Plain(tcp),
            ServerTls::VerifyFull => {
                negotiate_tls(tcp, target.tls, options.verify_full.clone(), &target.host, addr).await?
            }
            mode => negotiate_tls(tcp, mode, super::tls::unverified(), &target.host, addr).await?,
        };
        let mut out = BytesMut::with_capacity(256);
        fe::startup_message(
            &mut out,
            &[("user", &target.user), ("database", &target.database), ("application_name", options.application_name)],
        );
        stream.write_all(&out).await?;
        let mut server = Box::new(Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            pid: 0,
            secret: 0,
            params: Vec::new(),
            applied: StartupParams::default(),
            created: Tick::now(),
            last_used: Tick::now(),
            broken: false,
            status: b'I',
            addr: peer,
            statements: ServerStatements::default(),
        });
        server.authenticate(&target.user, password).await?;
        Ok(server)
    }

    async fn authenticate(&mut self, user: &str, password: Option<&str>) -> Result<(), ServerError> {
        let mut scram_client: Option<scram::ScramClient> = None;
        let mut out = BytesMut::with_capacity(256);
        loop {
            let (tag, body) = self.read_message().await?;
            out.clear();
            match tag {
                b'R' => {
                    let req = be::parse_auth_request(&body)
                        .ok_or_else(|| ServerError::Protocol("malformed authentication request".into()))?;
                    let need = || password.ok_or_else(|| ServerError::NoPassword(user.to_string()));
                    match req {
                        AuthRequest::Ok => {}
                        AuthRequest::Cleartext => fe::password_message(&mut out, need()?.as_bytes()),
                        AuthRequest::Md5(salt) => {
                            fe::password_message(&mut out, md5::client_response(user, need()?, salt).as_bytes())
                        }
                        AuthRequest::Sasl(mechs) => {
                            if !mechs.contains(&"SCRAM-SHA-256") {
                                return Err(ServerError::UnsupportedAuth(10));
                            }
                            let client = scram::ScramClient::new(need()?);
                            fe::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.client_first());
                            scram_client = Some(client);
                        }
                        AuthRequest::SaslContinue(data) => {
                            let client = scram_client
                                .as_mut()
                                .ok_or_else(|| ServerError::Protocol("SASL continue without SASL start".into()))?;
                            let reply = client.handle_server_first(data)?;
                            fe::sasl_response(&mut out, &reply);
                        }
                        AuthRequest::SaslFinal(data) => {
                            let client = scram_client
                                .as_ref()
                                .ok_or_else(|| ServerError::Protocol("SASL final without SASL start".into()))?;
                            client.verify_server_final(data)?;
                        }
                        AuthRequest::Other(code) => return Err(ServerError::UnsupportedAuth(code)),
                    }
                    if !out.is_empty() {
                        self.stream.write_all(&out).await?;
                    }
                }
                b'S' => {
                    if let Some((k, v)) = be::parse_parameter_status(&body) {
                        self.set_param(k, v);
                    }
                }
                b'K' => {
                    let (pid, secret) = be::parse_backend_key_data(&body)
                        .ok_or_else(|| ServerError::Protocol("malformed BackendKeyData".into()))?;
                    self.pid = pid;
                    self.secret = secret;
                }
                b'Z' => {
                    self.status = body.first().copied().unwrap_or(b'I');
                    return Ok(());
                }
                b'E' => return Err(ServerError::Login(be::parse_error_fields(&body))),
                b'N' | b'v' => {}
                other => {
                    return Err(ServerError::Protocol(format!(
                        "unexpected message \"{}\" during login",
                        other.escape_ascii()
                    )))
                }
            }
        }
    }

    fn set_param(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.params.push((name.to_string(), value.to_string())),
        }
    }

    /// Reads one whole message into an owned body. Only for login and the
    /// router's own queries, never on the forwarding path.
    async fn read_message(&mut self) -> Result<(u8, BytesMut), ServerError> {
        loop {
            if let Some(total) = frame::check(&self.buf)? {
                let mut msg = self.buf.split_to(total);
                let tag = msg[0];
                msg.advance(frame::HEADER_LEN);
                return Ok((tag, msg));
            }
            self.buf.reserve(8192);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
        }
    }

    /// Runs a simple query for the router's own purposes and discards its
    /// output. Returns the first error the server reported, if any; the
    /// connection stays usable after an ordinary error.
    pub async fn execute(&mut self, sql: &str) -> Result<(), ServerError> {
        self.run(sql, None).await
    }

    /// Like `execute`, returning the rows as text (None for NULL).
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut rows = Vec::new();
        self.run(sql, Some(&mut rows)).await?;
        Ok(rows)
    }

    async fn run(&mut self, sql: &str, rows: Option<&mut Vec<Vec<Option<String>>>>) -> Result<(), ServerError> {
        let result = self.execute_inner(sql, rows).await;
        if matches!(result, Err(ServerError::Io(_) | ServerError::Protocol(_))) {
            self.broken = true;
        }
        result
    }

    async fn execute_inner(
        &mut self,
        sql: &str,
        mut rows: Option<&mut Vec<Vec<Option<String>>>>,
    ) -> Result<(), ServerError> {
        let mut out = BytesMut::with_capacity(sql.len() + 8);
        fe::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        let mut error = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'E' => {
                    let fields = be::parse_error_fields(&body);
                    if fields.is_fatal() {
                        self.broken = true;
                    }
                    error.get_or_insert(fields);
                }
                b'S' => {
                    if let Some((k, v)) = be::parse_parameter_status(&body) {
                        self.set_param(k, v);
                    }
                }
                b'D' => {
                    if let Some(rows) = rows.as_deref_mut() {
                        let row = be::parse_data_row(&body)
                            .ok_or_else(|| ServerError::Protocol("malformed DataRow".into()))?;
                        rows.push(row);
                    }
                }
                // COPY started by a housekeeping query cannot be driven: refuse it.
                b'G' | b'H' | b'W' => {
                    self.broken = true;
                    return Err(ServerError::Protocol("unexpected COPY in a router query".into()));
                }
                b'Z' => {
                    self.status = body.first().copied().unwrap_or(b'I');
                    return match error {
                        Some(f) => Err(ServerError::Query(f)),
                        None => Ok(()),
                    };
                }
                _ => {}
            }
        }
    }

    /// Makes the client's startup parameters the ones in force, with one
    /// round trip and only when they differ from what is applied now.
    pub async fn apply_params(&mut self, wanted: &StartupParams) -> Result<(), ServerError> {
        if self.applied.id() == wanted.id() {
            return Ok(());
        }
        let sql = self.applied.transition_sql(wanted);
        if !sql.is_empty() {
            self.execute(&sql).await?;
        }
        self.applied = wanted.clone();
        Ok(())
    }

    /// Whether an idle connection can be handed to a client as it is: used
    /// within `check_delay`, and nothing arrived from the server since (no
    /// bytes buffered, the socket not readable). Costs no system call: the
    /// event loop already knows whether the socket turned readable.
    /// `check_delay` is in nanoseconds (`crate::clock::nanos`).
    pub fn ready_without_check(&self, check_delay: u64, now: Tick) -> bool {
        if clock::reached(now, self.last_used, check_delay) || !self.buf.is_empty() {
            return false;
        }
        // Whether the event loop recorded readiness (data, or the peer
        // closing) since the last read found the socket empty: asked
        // without a system call and without disturbing a registered waker.
        !self.stream.tcp().has_input()
    }

    /// Whether the server sent anything, or closed, while the connection
    /// was idle (as far as already read): it needs a check before use.
    pub fn spoke_while_idle(&self) -> bool {
        self.broken || !self.buf.is_empty()
    }

    /// Best-effort Terminate before dropping, so the server logs a clean exit.
    pub fn terminate(&mut self) {
        if let Stream::Plain(tcp) = &self.stream {
            let _ = tcp.try_write(fe::TERMINATE);
        }
    }

    /// Takes a plain connection off this thread's event loop so another
    /// worker can adopt it. TLS connections cannot move (the caller closes
    /// them instead).
    pub fn detach(self) -> Detach {
        let (stream, conn) = self.swap_stream(());
        match stream {
            Stream::Plain(tcp) => match tcp.into_std() {
                Ok(socket) => Detach::Moved(Detached(conn.swap_stream(socket).1)),
                Err(_) => Detach::Lost,
            },
            stream => Detach::Pinned(Box::new(conn.swap_stream(stream).1)),
        }
    }

    /// The address cancel requests for this connection go to.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.addr
    }
}

/// What `Server::detach` made of a connection.
pub enum Detach {
    Moved(Detached),
    /// Cannot leave this thread (TLS).
    Pinned(Server),
    /// The socket could not be deregistered and is gone.
    Lost,
}

impl<S> Conn<S> {
    /// The same connection state around another socket, and the old socket.
    fn swap_stream<T>(self, stream: T) -> (S, Conn<T>) {
        let Conn {
            stream: old,
            buf,
            pid,
            secret,
            params,
            applied,
            created,
            last_used,
            broken,
            status,
            addr,
            statements,
        } = self;
        (old, Conn { stream, buf, pid, secret, params, applied, created, last_used, broken, status, addr, statements })
    }
}

/// A server connection between two workers: a plain socket not registered
/// with any event loop, plus everything the connection knows about itself.
pub struct Detached(Conn<std::net::TcpStream>);

impl Detached {
    /// Registers the socket with the calling worker's event loop. Bytes the
    /// server sent while the connection was in transit (a FATAL before it
    /// closed) are read into the buffer here, and a closed socket marks the
    /// connection broken: the new event loop learns of them only at its next
    /// poll, too late for a checkout in the same turn, and an idle
    /// connection that spoke must not reach a client unchecked.
    pub fn attach(self) -> io::Result<Server> {
        use std::io::Read;
        let (mut socket, mut conn) = self.0.swap_stream(());
        let mut chunk = [0u8; 256];
        loop {
            match socket.read(&mut chunk) {
                Ok(0) => {
                    conn.broken = true;
                    break;
                }
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    conn.broken = true;
                    break;
                }
            }
        }
        Ok(Box::new(conn.swap_stream(Stream::Plain(Tcp::from_std(socket)?)).1))
    }
}

async fn negotiate_tls(
    mut tcp: Tcp,
    mode: ServerTls,
    config: Arc<rustls::ClientConfig>,
    host: &str,
    addr: &str,
) -> Result<Stream, ServerError> {
    let mut out = BytesMut::with_capacity(8);
    fe::ssl_request(&mut out);
    tcp.write_all(&out).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = ServerName::try_from(host.to_string()).map_err(|e| ServerError::Tls {
                addr: addr.to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|source| ServerError::Tls { addr: addr.to_string(), source })?;
            Ok(Stream::Connected(Box::new(tls)))
        }
        b'N' if mode == ServerTls::Prefer => Ok(Stream::Plain(tcp)),
        b'N' => Err(ServerError::TlsRefused(addr.to_string())),
        other => Err(ServerError::Protocol(format!("unexpected answer \"{}\" to SSLRequest", other.escape_ascii()))),
    }
}
