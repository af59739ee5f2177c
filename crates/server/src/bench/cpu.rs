//! CPU time from /proc, per party of a benchmark (the machine, PostgreSQL, our service, the
//! simulator, the driver), so a run reports what each message cost and not only how fast it went.
//! Context switches are counted beside it: at everyday rates most of what is left is paid per
//! wake-up (a statement, a commit's flush, a request), and what one costs differs between
//! machines — on a 2-core guest under nested virtualization a round trip between processes on
//! two CPUs took 72-145 µs, against 8 µs on one — so CPU per message compares across machines
//! only with the switches in view.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// Which processes are whose.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// The service and simulator are other processes (not this one).
    pub external: bool,
    /// The service's pid; without it (external mode) processes named `switchboard*`.
    pub server_pid: Option<u32>,
    /// The database's postmaster, when it runs here: only its cluster counts (tests may be
    /// running others). Without it, every `postgres` process.
    pub postmaster: Option<u32>,
}

impl Scope {
    /// The postmaster of the cluster serving `pool`, if that is a process on this machine: the
    /// parent of our own backend.
    pub async fn find_postmaster(pool: &sqlx::PgPool) -> anyhow::Result<Option<u32>> {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool).await?;
        let postgres = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == "postgres")
        };
        let Ok(backend) = u32::try_from(backend) else { return Ok(None) };
        let parent = read_stat(&format!("/proc/{backend}/stat")).ok().map(|stat| stat.ppid);
        Ok(parent.filter(|&parent| postgres(backend) && postgres(parent)))
    }
}

/// Cumulative CPU jiffies at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    cores: usize,
    machine: u64,
    steal: u64,
    postgres: u64,
    service: u64,
    sim: u64,
    driver: u64,
    /// `ctxt` of /proc/stat.
    machine_switches: u64,
    /// Each thread's switches so far, by thread id, with whose it is. Kept per thread because
    /// threads come and go in a window (other tests' backends on a shared cluster, a pool's idle
    /// connection closing): a sum would drop by what a leaving thread takes along.
    threads: HashMap<u32, (Party, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Postgres,
    Service,
    Sim,
    Driver,
}

/// Context switches (voluntary and not) per message and party; `machine` is every process's,
/// the kernel's threads included.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Switches {
    pub machine: f64,
    pub postgres: f64,
    /// In process: this whole process (service, simulator and driver).
    pub service: f64,
    pub sim: Option<f64>,
    pub driver: Option<f64>,
}

/// CPU per message over a window, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub window_seconds: f64,
    pub cores: usize,
    /// Busy jiffies over everything the window's cores could have run.
    pub machine_busy: f64,
    /// Everything the machine ran, steal left out.
    pub machine_ms_per_message: f64,
    /// Time the hypervisor gave to others while this machine's processes wanted to run: not
    /// spent on them, but on a busy host it comes and goes between runs.
    pub steal_ms_per_message: f64,
    pub postgres_ms_per_message: f64,
    /// In process: this whole process (service, simulator and driver).
    pub service_ms_per_message: f64,
    pub sim_ms_per_message: Option<f64>,
    pub driver_ms_per_message: Option<f64>,
    /// Of the threads alive at the window's end (one that exits in it takes its count along;
    /// the benchmark's pools keep theirs).
    pub switches_per_message: Switches,
}

impl Sample {
    pub fn take(scope: Scope) -> anyhow::Result<Self> {
        let proc_stat = std::fs::read_to_string("/proc/stat")?;
        let (cores, machine, steal) = machine_busy(&proc_stat)?;
        let own = std::process::id();
        let mut postgres = Vec::new();
        let (mut service, mut sim) = (0, 0);
        let mut threads = HashMap::new();
        let mut count = |party: Party, pid: u32| {
            threads.extend(switches_of(pid).into_iter().map(|(tid, switches)| (tid, (party, switches))));
        };
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            // Processes come and go while we look: one that is gone counts as nothing.
            let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
            let comm = comm.trim_end();
            let interesting = comm == "postgres"
                || (scope.external && comm == "cpaas-sim")
                || (scope.external && scope.server_pid.is_none() && pid != own && comm.starts_with("switchboard"));
            if !interesting {
                continue;
            }
            let Some(stat) = std::fs::read_to_string(entry.path().join("stat")).ok().and_then(|s| ProcStat::parse(&s))
            else {
                continue;
            };
            match comm {
                "postgres" => postgres.push((pid, stat)),
                "cpaas-sim" => {
                    sim += stat.own();
                    count(Party::Sim, pid);
                }
                _ => {
                    service += stat.own();
                    count(Party::Service, pid);
                }
            }
        }
        if let Some(pid) = scope.server_pid {
            service = read_stat(&format!("/proc/{pid}/stat"))?.own();
            count(Party::Service, pid);
        }
        let own_time = read_stat("/proc/self/stat")?.own();
        let (service, driver) = if scope.external { (service, own_time) } else { (own_time, 0) };
        count(if scope.external { Party::Driver } else { Party::Service }, own);
        if let Some(postmaster) = scope.postmaster {
            postgres.retain(|(pid, stat)| *pid == postmaster || stat.ppid == postmaster);
        }
        for (pid, _) in &postgres {
            count(Party::Postgres, *pid);
        }
        Ok(Self {
            at: Instant::now(),
            cores,
            machine,
            steal,
            postgres: postgres_total(&postgres),
            service,
            sim,
            driver,
            machine_switches: machine_switches(&proc_stat),
            threads,
        })
    }

    /// From `self` (the start) to `end`, per message.
    pub fn report(&self, end: &Sample, messages: usize, scope: Scope) -> CpuReport {
        let seconds = end.at.duration_since(self.at).as_secs_f64().max(f64::EPSILON);
        let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 * 1000.0 / clock_ticks() / messages.max(1) as f64;
        let busy = end.machine.saturating_sub(self.machine) as f64 / clock_ticks();
        CpuReport {
            window_seconds: seconds,
            cores: end.cores,
            machine_busy: busy / (seconds * end.cores.max(1) as f64),
            machine_ms_per_message: ms(self.machine, end.machine),
            steal_ms_per_message: ms(self.steal, end.steal),
            postgres_ms_per_message: ms(self.postgres, end.postgres),
            service_ms_per_message: ms(self.service, end.service),
            sim_ms_per_message: scope.external.then(|| ms(self.sim, end.sim)),
            driver_ms_per_message: scope.external.then(|| ms(self.driver, end.driver)),
            switches_per_message: self.switches_until(end, messages, scope),
        }
    }

    /// Per message, from `self` to `end`: a thread alive at both ends adds what it switched in
    /// between, one born in the window all of its switches, one that left in it nothing (it took
    /// its count along).
    fn switches_until(&self, end: &Sample, messages: usize, scope: Scope) -> Switches {
        // In `Party`'s order.
        let mut sums = [0u64; 4];
        for (tid, (party, switches)) in &end.threads {
            let before = self.threads.get(tid).filter(|(was, _)| was == party).map_or(0, |(_, before)| *before);
            sums[*party as usize] += switches.saturating_sub(before);
        }
        let per = |switches: u64| switches as f64 / messages.max(1) as f64;
        let [postgres, service, sim, driver] = sums.map(per);
        Switches {
            machine: per(end.machine_switches.saturating_sub(self.machine_switches)),
            postgres,
            service,
            sim: scope.external.then_some(sim),
            driver: scope.external.then_some(driver),
        }
    }
}

/// The context switches of each of `pid`'s threads alive now, by thread id; a process gone has
/// none.
fn switches_of(pid: u32) -> Vec<(u32, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            Some((tid, thread_switches(&status)))
        })
        .collect()
}

/// `voluntary_ctxt_switches` plus `nonvoluntary_ctxt_switches` of a `/proc/<pid>/task/<tid>/status`.
fn thread_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            matches!(name, "voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches")
                .then(|| value.trim().parse::<u64>().ok())?
        })
        .sum()
}

/// The `ctxt` line of `/proc/stat`: every context switch since boot, on all CPUs.
fn machine_switches(stat: &str) -> u64 {
    stat.lines().find_map(|line| line.strip_prefix("ctxt ")?.trim().parse().ok()).unwrap_or(0)
}

/// Backends that exit during the window take their time with them, but it reappears in their
/// postmaster's children's time (cutime + cstime) once reaped; a postmaster is a `postgres`
/// process whose parent is not one.
fn postgres_total(processes: &[(u32, ProcStat)]) -> u64 {
    let pids: std::collections::HashSet<u32> = processes.iter().map(|(pid, _)| *pid).collect();
    processes.iter().map(|(_, stat)| stat.own() + if pids.contains(&stat.ppid) { 0 } else { stat.children() }).sum()
}

fn read_stat(path: &str) -> anyhow::Result<ProcStat> {
    let text = std::fs::read_to_string(path)?;
    ProcStat::parse(&text).ok_or_else(|| anyhow::anyhow!("cannot parse {path}: {text}"))
}

/// The fields of `/proc/<pid>/stat` we need, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

impl ProcStat {
    /// `comm` (field 2) is in parentheses and may itself contain spaces and parentheses, so the
    /// fields are counted from after the last `)`: field 3 (state) is the first there.
    fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field n of proc(5) is fields[n - 3].
        let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
        let ticks = |n: usize| field(n).map(|v| v.max(0) as u64);
        Some(Self {
            ppid: u32::try_from(field(4)?).ok()?,
            utime: ticks(14)?,
            stime: ticks(15)?,
            cutime: ticks(16)?,
            cstime: ticks(17)?,
        })
    }

    fn own(&self) -> u64 {
        self.utime + self.stime
    }

    fn children(&self) -> u64 {
        self.cutime + self.cstime
    }
}

/// The number of CPUs, their busy jiffies (user, nice, system, irq, softirq; guest time is
/// already inside user) and their stolen jiffies, from `/proc/stat`.
fn machine_busy(stat: &str) -> anyhow::Result<(usize, u64, u64)> {
    let total =
        stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow::anyhow!("no cpu line in /proc/stat"))?;
    let values: Vec<u64> = total.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let busy = [0, 1, 2, 5, 6].iter().map(|&i| values.get(i).copied().unwrap_or(0)).sum();
    let steal = values.get(7).copied().unwrap_or(0);
    let cores =
        stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    Ok((cores.max(1), busy, steal))
}

/// `sysconf(_SC_CLK_TCK)`: the unit of every figure in /proc.
fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a constant of the C library; it has no preconditions.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_last_parenthesis() {
        let line = "4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 1200 0 3 0 \
                    250 75 9 4 20 0 12 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stat = ProcStat::parse(line).expect("a stat line");
        assert_eq!(stat, ProcStat { ppid: 17, utime: 250, stime: 75, cutime: 9, cstime: 4 });
        assert_eq!(stat.own(), 325);
        assert_eq!(ProcStat::parse("4242 (truncated"), None);
    }

    #[test]
    fn the_machine_counts_busy_jiffies_of_all_cores() {
        let stat =
            "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\ncpu1 50 3 25 500 10 2 1 1 0 0\nintr 1\n";
        assert_eq!(machine_busy(stat).expect("parsed"), (2, 160, 1));
    }

    #[test]
    fn switches_are_read_from_status_and_stat() {
        let status = "Name:\tpostgres\nvoluntary_ctxt_switches:\t1200\nnonvoluntary_ctxt_switches:\t34\n";
        assert_eq!(thread_switches(status), 1234);
        assert_eq!(thread_switches("Name:\tgone\n"), 0);
        assert_eq!(machine_switches("cpu  1 2 3\nintr 5 1\nctxt 987654\nbtime 1\n"), 987_654);
    }

    #[test]
    fn switches_are_counted_per_thread_so_a_leaving_one_takes_only_its_own() {
        let sample = |machine_switches, threads: &[(u32, Party, u64)]| Sample {
            at: Instant::now(),
            cores: 2,
            machine: 0,
            steal: 0,
            postgres: 0,
            service: 0,
            sim: 0,
            driver: 0,
            machine_switches,
            threads: threads.iter().map(|&(tid, party, switches)| (tid, (party, switches))).collect(),
        };
        let start = sample(
            100,
            &[(1, Party::Postgres, 1000), (2, Party::Postgres, 10), (3, Party::Service, 20), (4, Party::Sim, 5)],
        );
        // Backend 1 left (with more switches than the rest together), backend 5 was born.
        let end = sample(
            300,
            &[(2, Party::Postgres, 50), (5, Party::Postgres, 8), (3, Party::Service, 60), (4, Party::Sim, 25)],
        );
        let external = Scope { external: true, server_pid: None, postmaster: None };
        let per = start.switches_until(&end, 20, external);
        assert_eq!((per.machine, per.postgres, per.service), (10.0, 2.4, 2.0));
        assert_eq!((per.sim, per.driver), (Some(1.0), Some(0.0)));
        let in_process = start.switches_until(&end, 20, Scope { external: false, ..external });
        assert_eq!((in_process.sim, in_process.driver), (None, None));
    }

    #[test]
    fn our_own_threads_are_counted() {
        // This test's process has run and slept, so its threads have switched at least once.
        let ours = switches_of(std::process::id());
        assert!(ours.iter().any(|&(tid, _)| tid == std::process::id()), "{ours:?}");
        assert!(ours.iter().map(|(_, switches)| switches).sum::<u64>() > 0, "{ours:?}");
        assert_eq!(switches_of(u32::MAX), []);
    }

    #[test]
    fn exited_backends_count_through_their_postmaster() {
        let stat = |ppid, utime, cutime| ProcStat { ppid, utime, stime: 0, cutime, cstime: 0 };
        // The postmaster (parent 1) has reaped backends worth 40; one backend (its child) is alive.
        let processes = [(10, stat(1, 5, 40)), (11, stat(10, 7, 99))];
        assert_eq!(postgres_total(&processes), 5 + 40 + 7);
    }
}
