//! The embedded PostgreSQL: a private cluster from the machine's server binaries.
//!
//! - First start runs `initdb` into the data directory; later starts reuse it.
//! - The server listens only on a Unix socket inside the (0700) data directory, so it needs no
//!   free TCP port and nobody else can reach it; connections use `trust` over that socket.
//! - Running as root, `initdb` and `postgres` run as the `postgres` user (they refuse root).
//! - A cluster already running for the data directory (another `switchboard` process) is used
//!   as it is and left running; one we started is ours to stop.
//! - Ours is a direct child in its own process group (Ctrl-C in the terminal reaches us, not it:
//!   we stop it after in-flight requests finish) with a parent-death signal, so even a killed
//!   `switchboard` leaves no `postgres` behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

pub const DATABASE_NAME: &str = "switchboard";
const SUPERUSER: &str = "postgres";
const PORT: u16 = 5432;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

pub const INSTALL_HINT: &str = "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`; \
     Fedora: `dnf install postgresql-server`; macOS: `brew install postgresql@16`), \
     set database.pg_bin_dir, or set DATABASE_URL to use an existing server";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, in /usr/lib/postgresql/*/bin or Homebrew: {INSTALL_HINT}"
    )]
    BinariesNotFound,
    #[error("database.pg_bin_dir {0} does not contain initdb and postgres: {INSTALL_HINT}")]
    BinDirIncomplete(PathBuf),
    #[error(
        "running as root, but there is no `postgres` user to run PostgreSQL as (it refuses to run as root): create one (`useradd --system postgres`) or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error("the data directory path {0} is too long for a Unix socket; choose a shorter database.data_dir")]
    PathTooLong(PathBuf),
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("initdb failed for {path}: {output}")]
    Initdb { path: PathBuf, output: String },
    #[error("could not start postgres ({path}): {source}{hint}")]
    Spawn { path: PathBuf, source: io::Error, hint: &'static str },
    #[error("postgres exited during start-up ({status}); its log {log} ends with:\n{tail}")]
    ExitedEarly { status: String, log: PathBuf, tail: String },
    #[error("postgres did not accept connections within {0:?}; see {1}")]
    StartTimeout(Duration, PathBuf),
    #[error("cannot create the `switchboard` database: {0}")]
    CreateDatabase(sqlx::Error),
}

/// Where `initdb` and `postgres` live.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    pub fn locate(configured: Option<&Path>) -> Result<Self, EmbeddedError> {
        if let Some(dir) = configured {
            return if has_server_binaries(dir) {
                Ok(Self { bin_dir: dir.to_owned() })
            } else {
                Err(EmbeddedError::BinDirIncomplete(dir.to_owned()))
            };
        }
        candidate_dirs()
            .into_iter()
            .find(|dir| has_server_binaries(dir))
            .map(|bin_dir| Self { bin_dir })
            .ok_or(EmbeddedError::BinariesNotFound)
    }

    fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }

    fn postgres(&self) -> PathBuf {
        self.bin_dir.join("postgres")
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// PATH first, then the newest Debian/Ubuntu versioned directory, then Homebrew's.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for pattern_root in ["/usr/lib/postgresql", "/opt/homebrew/opt", "/usr/local/opt"] {
        let mut versioned: Vec<PathBuf> = fs::read_dir(pattern_root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                pattern_root == "/usr/lib/postgresql" || name.starts_with("postgresql")
            })
            .collect();
        versioned.sort_by_key(|path| std::cmp::Reverse(version_of(path)));
        dirs.extend(versioned.into_iter().map(|path| path.join("bin")));
    }
    dirs
}

fn version_of(path: &Path) -> u32 {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.rsplit(['@', '-']).next().and_then(|v| v.split('.').next()?.parse().ok()).unwrap_or(0)
}

/// The Unix account PostgreSQL runs as: ourselves, or `postgres` when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
    switch: bool,
}

impl RunAs {
    fn detect() -> Result<Self, EmbeddedError> {
        if !Uid::effective().is_root() {
            return Ok(Self { uid: Uid::effective(), gid: Gid::effective(), switch: false });
        }
        let user = User::from_name(SUPERUSER).ok().flatten().ok_or(EmbeddedError::NoPostgresUser)?;
        Ok(Self { uid: user.uid, gid: user.gid, switch: true })
    }

    fn apply(&self, command: &mut Command) {
        if self.switch {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
    }
}

/// A running embedded cluster; stops it on [`EmbeddedPostgres::stop`] (or drop) if we started it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    owned: Option<OwnedServer>,
}

#[derive(Debug)]
struct OwnedServer {
    pid: Pid,
    exited: mpsc::Receiver<io::Result<ExitStatus>>,
}

impl EmbeddedPostgres {
    /// Initialises (first time), starts or joins the cluster in `data_dir`, and makes sure the
    /// `switchboard` database exists.
    pub async fn start(binaries: &PgBinaries, data_dir: &Path, timeout: Duration) -> Result<Self, EmbeddedError> {
        let data_dir = absolute(data_dir)?;
        let socket = data_dir.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(EmbeddedError::PathTooLong(data_dir));
        }
        let run_as = RunAs::detect()?;
        if !data_dir.join("PG_VERSION").is_file() {
            initdb(binaries, &data_dir, run_as)?;
        }
        let mut server = Self { data_dir, owned: None };
        if server.running_pid().is_some() {
            tracing::info!(data_dir = %server.data_dir.display(), "using the embedded PostgreSQL already running");
        } else {
            server.owned = Some(spawn_postgres(binaries, &server.data_dir, run_as)?);
            tracing::info!(data_dir = %server.data_dir.display(), "starting embedded PostgreSQL");
        }
        server.wait_until_ready(timeout).await?;
        server.ensure_database().await?;
        Ok(server)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether this process started the server (and so will stop it).
    pub fn is_owned(&self) -> bool {
        self.owned.is_some()
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.data_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
            .log_statements(tracing::log::LevelFilter::Trace)
    }

    /// A `postgres://` URL for tools such as psql.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={}", self.data_dir.display())
    }

    fn log_path(&self) -> PathBuf {
        log_path(&self.data_dir)
    }

    /// The postmaster's pid, from `postmaster.pid`, if that process is alive.
    fn running_pid(&self) -> Option<Pid> {
        let contents = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid = Pid::from_raw(contents.lines().next()?.trim().parse().ok()?);
        kill(pid, None).ok().map(|()| pid)
    }

    async fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + timeout;
        let options = self.connect_options("postgres");
        loop {
            if let Some(owned) = &self.owned
                && let Ok(status) = owned.exited.try_recv()
            {
                self.owned = None;
                return Err(EmbeddedError::ExitedEarly {
                    status: status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    log: self.log_path(),
                    tail: log_tail(&self.log_path()),
                });
            }
            if let Ok(connection) = options.connect().await {
                let _ = connection.close().await;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedError::StartTimeout(timeout, self.log_path()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ensure_database(&self) -> Result<(), EmbeddedError> {
        let mut connection = self.connect_options("postgres").connect().await.map_err(EmbeddedError::CreateDatabase)?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE_NAME)
            .fetch_one(&mut connection)
            .await
            .map_err(EmbeddedError::CreateDatabase)?;
        if !exists {
            let created = sqlx::query("CREATE DATABASE switchboard").execute(&mut connection).await;
            match created {
                Ok(_) => {}
                // Another process created it at the same moment.
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
                Err(error) => return Err(EmbeddedError::CreateDatabase(error)),
            }
        }
        let _ = connection.close().await;
        Ok(())
    }

    /// Stops the server if we started it: fast shutdown, then immediate, then kill.
    pub async fn stop(mut self) {
        if let Some(owned) = self.owned.take() {
            let data_dir = self.data_dir.clone();
            let _ = tokio::task::spawn_blocking(move || stop_owned(owned, &data_dir)).await;
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Some(owned) = self.owned.take() {
            stop_owned(owned, &self.data_dir);
        }
    }
}

fn stop_owned(owned: OwnedServer, data_dir: &Path) {
    for (signal, wait) in [
        (Signal::SIGINT, Duration::from_secs(30)),
        (Signal::SIGQUIT, Duration::from_secs(10)),
        (Signal::SIGKILL, Duration::from_secs(5)),
    ] {
        if kill(owned.pid, signal).is_err() {
            break;
        }
        if owned.exited.recv_timeout(wait).is_ok() {
            tracing::info!(data_dir = %data_dir.display(), "embedded PostgreSQL stopped");
            return;
        }
        tracing::warn!(?signal, "embedded PostgreSQL did not stop in time; escalating");
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map_err(|source| EmbeddedError::DataDir { path: path.to_owned(), source })?.join(path)
    };
    Ok(joined.components().collect())
}

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("log")
}

fn initdb(binaries: &PgBinaries, data_dir: &Path, run_as: RunAs) -> Result<(), EmbeddedError> {
    let data_dir_error = |source| EmbeddedError::DataDir { path: data_dir.to_owned(), source };
    if let Some(parent) = data_dir.parent() {
        fs::create_dir_all(parent).map_err(data_dir_error)?;
    }
    if !data_dir.exists() {
        fs::DirBuilder::new().mode(0o700).create(data_dir).map_err(data_dir_error)?;
    }
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(data_dir_error)?;
    if run_as.switch {
        nix::unistd::chown(data_dir, Some(run_as.uid), Some(run_as.gid))
            .map_err(|errno| data_dir_error(io::Error::from(errno)))?;
    }
    tracing::info!(data_dir = %data_dir.display(), "initialising embedded PostgreSQL cluster");
    let mut command = Command::new(binaries.initdb());
    command
        .arg("--pgdata")
        .arg(data_dir)
        .args(["--auth=trust", "--username", SUPERUSER, "--encoding=UTF8", "--no-locale"])
        .current_dir(data_dir)
        .stdin(Stdio::null());
    run_as.apply(&mut command);
    let output = command.output().map_err(|source| EmbeddedError::Spawn {
        path: binaries.initdb(),
        source,
        hint: unreachable_hint(run_as),
    })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        return Err(EmbeddedError::Initdb { path: data_dir.to_owned(), output: text });
    }
    Ok(())
}

fn unreachable_hint(run_as: RunAs) -> &'static str {
    if run_as.switch {
        " (the postgres user must be able to reach the data directory: choose a database.data_dir outside root-only directories)"
    } else {
        ""
    }
}

/// Spawns `postgres` from a dedicated thread that lives exactly as long as the child: the
/// parent-death signal fires when the spawning *thread* exits, so it must not be a pool thread.
fn spawn_postgres(binaries: &PgBinaries, data_dir: &Path, run_as: RunAs) -> Result<OwnedServer, EmbeddedError> {
    let log = open_log(data_dir, run_as)?;
    let mut command = Command::new(binaries.postgres());
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-c", "listen_addresses=", "-c"])
        .arg(format!("unix_socket_directories={}", data_dir.display()))
        .args(["-c", &format!("port={PORT}"), "-c", "unix_socket_permissions=0700"])
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|source| EmbeddedError::DataDir { path: data_dir.to_owned(), source })?)
        .stderr(log)
        .process_group(0);
    run_as.apply(&mut command);
    die_with_parent(&mut command);

    let (spawned_tx, spawned_rx) = mpsc::channel();
    let (exited_tx, exited_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-supervisor".into())
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = spawned_tx.send(Ok(child.id()));
                let _ = exited_tx.send(child.wait());
            }
            Err(error) => {
                let _ = spawned_tx.send(Err(error));
            }
        })
        .map_err(|source| EmbeddedError::Spawn { path: binaries.postgres(), source, hint: "" })?;
    let spawn_error =
        |source| EmbeddedError::Spawn { path: binaries.postgres(), source, hint: unreachable_hint(run_as) };
    let pid = spawned_rx
        .recv()
        .map_err(|_| spawn_error(io::Error::other("supervisor thread ended")))?
        .map_err(spawn_error)?;
    Ok(OwnedServer { pid: Pid::from_raw(pid as i32), exited: exited_rx })
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: runs in the forked child before exec and only makes one async-signal-safe
    // syscall (prctl). It comes after the uid switch, which would otherwise clear it.
    unsafe {
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(io::Error::from));
    }
}

fn open_log(data_dir: &Path, run_as: RunAs) -> Result<File, EmbeddedError> {
    let path = log_path(data_dir);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| EmbeddedError::DataDir { path: path.clone(), source })?;
    if run_as.switch {
        let _ = nix::unistd::chown(&path, Some(run_as.uid), Some(run_as.gid));
    }
    Ok(file)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
