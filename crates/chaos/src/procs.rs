//! The processes under test (`cpaas-sim`, `switchboard serve`, `switchboard worker`): started
//! with their output in log files, killed on purpose by the fault injector, restarted by a small
//! supervisor when they die on their own (as systemd or Kubernetes would), and every exit noted.
//!
//! Each child runs in its own process group, so a Ctrl-C in the terminal reaches only `chaos`,
//! which then tears everything down in order. Every live group and every cluster is also in a
//! global registry that [`emergency_cleanup`] walks from the panic hook and the signal handler.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;

/// Process groups that may still be alive.
static LIVE_GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Clusters that may still be running: (pg_ctl invocation prefix, data directory).
static LIVE_CLUSTERS: Mutex<Vec<(Vec<String>, PathBuf)>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the cleanup.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn register_cluster(pg_ctl: Vec<String>, data: PathBuf) {
    lock(&LIVE_CLUSTERS).push((pg_ctl, data));
}

pub fn unregister_cluster(data: &Path) {
    lock(&LIVE_CLUSTERS).retain(|(_, d)| d != data);
}

/// Kills every child's process group and crashes every cluster, synchronously: for the panic
/// hook and Ctrl-C, where nothing orderly can be relied on any more.
pub fn emergency_cleanup() {
    for group in std::mem::take(&mut *lock(&LIVE_GROUPS)) {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
    for (pg_ctl, data) in std::mem::take(&mut *lock(&LIVE_CLUSTERS)) {
        let Some((program, prefix)) = pg_ctl.split_first() else { continue };
        let _ = std::process::Command::new(program)
            .args(prefix)
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What to run; restarts run exactly the same command.
#[derive(Debug, Clone)]
pub struct Spec {
    pub role: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// One managed process and its history.
#[derive(Debug)]
pub struct Proc {
    spec: Spec,
    child: Option<tokio::process::Child>,
    /// Kept apart from `child`: tokio forgets the id once the exit has been observed.
    pid: Option<i32>,
    epoch: Instant,
    /// Down because we killed or stopped it: the supervisor leaves it alone.
    on_purpose: bool,
    restart_at: Option<Instant>,
    /// Consecutive unexpected exits, for the supervisor's backoff.
    crash_streak: u32,
    last_start: Instant,
    pub history: History,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    pub role: String,
    pub starts: u32,
    pub killed_by_chaos: u32,
    /// Exits nobody asked for, e.g. `+12.3s exit status: 1`.
    pub unexpected_exits: Vec<String>,
    /// How it ended when the scenario stopped it (SIGTERM, then SIGKILL after a grace period).
    pub final_exit: Option<String>,
}

pub type Shared = Arc<Mutex<Proc>>;

impl Proc {
    pub fn new(spec: Spec, epoch: Instant) -> Shared {
        let history = History { role: spec.role.clone(), ..History::default() };
        Arc::new(Mutex::new(Self {
            spec,
            child: None,
            pid: None,
            epoch,
            on_purpose: false,
            restart_at: None,
            crash_streak: 0,
            last_start: Instant::now(),
            history,
        }))
    }

    fn since(&self) -> String {
        format!("+{:.1}s", self.epoch.elapsed().as_secs_f64())
    }

    /// Starts the command, appending its output to its log after a marker line.
    pub fn start(&mut self) -> anyhow::Result<()> {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .with_context(|| format!("cannot open {}", self.spec.log.display()))?;
        writeln!(log, "==== chaos: start #{} of {} at {} ====", self.history.starts + 1, self.spec.role, self.since())?;
        let mut command = tokio::process::Command::new(&self.spec.program);
        command.args(&self.spec.args);
        // A clean configuration environment: only what the scenario sets reaches the service.
        for (key, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
            if key.starts_with("SWITCHBOARD") || key == "DATABASE_URL" || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("cannot start {}", self.spec.program.display()))?;
        self.pid = child.id().map(|pid| pid as i32);
        if let Some(pid) = self.pid {
            lock(&LIVE_GROUPS).insert(pid);
        }
        self.child = Some(child);
        self.on_purpose = false;
        self.restart_at = None;
        self.last_start = Instant::now();
        self.history.starts += 1;
        Ok(())
    }

    fn signal(&self, signal: Signal) {
        if let (Some(pid), true) = (self.pid, self.child.is_some()) {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// The exit status if the child has exited (and forgets the child), `None` while it runs.
    fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        if let Some(pid) = self.pid.take() {
            lock(&LIVE_GROUPS).remove(&pid);
        }
        self.child = None;
        Some(status)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// One supervisor round: notes an unexpected exit and restarts after a backoff (1 s,
    /// doubling to 8 s while it keeps dying within 10 s of starting).
    fn supervise(&mut self, restart: bool) {
        if self.on_purpose {
            return;
        }
        if self.child.is_some() {
            if let Some(status) = self.reap() {
                let note = format!("{} {status}", self.since());
                eprintln!("chaos: {} exited unexpectedly ({note}); see {}", self.spec.role, self.spec.log.display());
                self.history.unexpected_exits.push(note);
                self.crash_streak =
                    if self.last_start.elapsed() < Duration::from_secs(10) { self.crash_streak + 1 } else { 1 };
                let delay = Duration::from_secs(1 << self.crash_streak.saturating_sub(1).min(3));
                self.restart_at = restart.then(|| Instant::now() + delay);
            }
        } else if self.restart_at.is_some_and(|at| Instant::now() >= at)
            && let Err(error) = self.start()
        {
            eprintln!("chaos: cannot restart {}: {error:#}", self.spec.role);
            self.restart_at = Some(Instant::now() + Duration::from_secs(2));
        }
    }
}

/// Restarts processes that died on their own until the task is aborted.
pub async fn supervisor(procs: Vec<Shared>, restart: bool) {
    loop {
        for proc in &procs {
            lock(proc).supervise(restart);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (polling, without holding the lock across an await) until the child has exited.
async fn wait_exit(proc: &Shared, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        {
            let mut guard = lock(proc);
            guard.child.as_ref()?;
            if let Some(status) = guard.reap() {
                return Some(status);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL, as a crash or an OOM kill would; returns once the process is gone. The process stays
/// down until [`restart`].
pub async fn kill(proc: &Shared) {
    {
        let mut guard = lock(proc);
        guard.on_purpose = true;
        guard.history.killed_by_chaos += 1;
        guard.signal(Signal::SIGKILL);
    }
    wait_exit(proc, Duration::from_secs(10)).await;
}

pub fn restart(proc: &Shared) -> anyhow::Result<()> {
    let mut guard = lock(proc);
    if guard.running() {
        return Ok(());
    }
    guard.start()
}

/// SIGTERM, then SIGKILL after `grace`; records how it ended.
pub async fn stop(proc: &Shared, grace: Duration) {
    let running = {
        let mut guard = lock(proc);
        guard.on_purpose = true;
        guard.restart_at = None;
        guard.signal(Signal::SIGTERM);
        guard.running()
    };
    if !running {
        lock(proc).history.final_exit = Some("not running at the end".into());
        return;
    }
    let status = match wait_exit(proc, grace).await {
        Some(status) => format!("{status} after SIGTERM"),
        None => {
            lock(proc).signal(Signal::SIGKILL);
            match wait_exit(proc, Duration::from_secs(10)).await {
                Some(status) => format!("{status}: did not stop within {}s of SIGTERM", grace.as_secs()),
                None => "could not be stopped".into(),
            }
        }
    };
    lock(proc).history.final_exit = Some(status);
}

pub fn history(proc: &Shared) -> History {
    lock(proc).history.clone()
}
