//! A private PostgreSQL cluster per scenario, on a TCP port of 127.0.0.1, that the fault injector
//! stops and starts with `pg_ctl` (fast shutdown, or immediate — a crash). Found and run like
//! `scripts/lib/pg.sh`: the newest `/usr/lib/postgresql/*/bin` (or `PG_BIN_DIR`, or PATH), and
//! as root every PostgreSQL program runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};

use crate::procs;

#[derive(Debug)]
pub struct Cluster {
    /// `pg_ctl`, prefixed with `runuser -u postgres --` when we are root.
    pg_ctl: Vec<String>,
    dir: PathBuf,
    data: PathBuf,
    pub port: u16,
}

/// Where `initdb`, `pg_ctl` and `postgres` are.
pub fn find_bin() -> anyhow::Result<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from).filter(|d| usable(d)) {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| usable(d))
    {
        return Ok(dir);
    }
    // The newest version first, compared numerically (10 after 9).
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| usable(dir))
        .collect();
    found.sort();
    match found.pop() {
        Some((_, dir)) => Ok(dir),
        None => {
            bail!("PostgreSQL server binaries not found: apt-get install postgresql (Debian/Ubuntu), or set PG_BIN_DIR")
        }
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The program, as the cluster's owner.
fn as_owner(program: PathBuf) -> Vec<String> {
    let program = program.display().to_string();
    if is_root() { vec!["runuser".into(), "-u".into(), "postgres".into(), "--".into(), program] } else { vec![program] }
}

async fn run(argv: &[String], log: &Path) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let (program, args) = argv.split_first().context("empty command")?;
    // Output to a file, never a pipe: the postmaster pg_ctl starts could inherit a pipe and keep
    // it open, and waiting for its end would then never finish.
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .status()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{} failed ({status}):\n{}", args.last().map_or(program.as_str(), String::as_str), tail.join("\n"));
    }
    Ok(())
}

impl Cluster {
    /// `initdb` into `dir/data`, configured for 127.0.0.1:`port`; not started yet.
    pub async fn create(dir: &Path, port: u16, fsync: bool) -> anyhow::Result<Self> {
        let bin = find_bin()?;
        std::fs::create_dir_all(dir)?;
        if is_root() {
            let user = nix::unistd::User::from_name("postgres")?
                .context("running as root, but there is no `postgres` user to run PostgreSQL as")?;
            nix::unistd::chown(dir, Some(user.uid), Some(user.gid))?;
        }
        let data = dir.join("data");
        let mut initdb = as_owner(bin.join("initdb"));
        initdb.extend(["-D".into(), data.display().to_string()]);
        initdb.extend(["--auth=trust", "--username=postgres", "-E", "UTF8", "--no-locale"].map(String::from));
        run(&initdb, &dir.join("initdb.log")).await?;
        // fsync=off only matters if the machine itself crashes: a crashed *postgres* (our
        // `-m immediate`) loses nothing, since the WAL it wrote is in the kernel's page cache.
        // synchronous_commit stays on, so an acknowledged commit is in the WAL.
        let settings = format!(
            "\n# chaos\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{socket}'\n\
             max_connections = 200\nfsync = {fsync}\nlog_min_messages = warning\n",
            socket = dir.display(),
            fsync = if fsync { "on" } else { "off" },
        );
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf"))?.write_all(settings.as_bytes())?;
        let pg_ctl = as_owner(bin.join("pg_ctl"));
        procs::register_cluster(pg_ctl.clone(), data.clone());
        Ok(Self { pg_ctl, dir: dir.to_owned(), data, port })
    }

    fn pg_ctl(&self, args: &[&str]) -> Vec<String> {
        let mut argv = self.pg_ctl.clone();
        argv.extend(["-D".into(), self.data.display().to_string()]);
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    pub async fn start(&self) -> anyhow::Result<()> {
        let log = self.dir.join("postgres.log").display().to_string();
        run(&self.pg_ctl(&["-l", &log, "-w", "-t", "60", "start"]), &self.dir.join("pg_ctl.log")).await
    }

    /// `mode`: `fast` (clients disconnected, a clean shutdown) or `immediate` (a crash: recovery
    /// from the WAL at the next start).
    pub async fn stop(&self, mode: &str) -> anyhow::Result<()> {
        run(&self.pg_ctl(&["-m", mode, "-w", "-t", "60", "stop"]), &self.dir.join("pg_ctl.log")).await
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The database the service uses (the cluster must be running).
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        // The name is ours (a constant), not input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
        admin.close().await?;
        Ok(())
    }

    /// Stops the cluster for good (fast, then immediate if that fails).
    pub async fn shut_down(&self) {
        if self.stop("fast").await.is_err() {
            let _ = self.stop("immediate").await;
        }
        procs::unregister_cluster(&self.data);
    }
}
