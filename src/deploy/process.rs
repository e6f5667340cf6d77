//! Deploy scripts that die with the bot (SPEC §5 `command`: "a script never outlives the bot
//! process that started it").
//!
//! Two parts. First, every script's group leader gets a parent-death signal (SIGKILL): when the
//! bot dies, even by SIGKILL, the kernel kills the leader. The signal fires when the *thread*
//! that forked exits, and tokio's blocking threads come and go, so all scripts are forked by one
//! dedicated thread that lives as long as the process. Second, the leader's children (a
//! backgrounded `sleep`, a `kubectl` the script started) are not covered by that signal, so the
//! worker records each group (host, pgid, the leader's start time) with its job in the database,
//! and the next start on this host kills recorded groups that are still alive.

use std::io;
use std::sync::mpsc as std_mpsc;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A script's process group as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalGroup {
    /// This machine and boot ([`host_identity`]): pids mean nothing elsewhere.
    pub host: String,
    pub pgid: i32,
    /// The leader's start time (clock ticks since boot, /proc/<pid>/stat field 22), telling our
    /// leader from a later process that reuses its pid.
    pub started: i64,
}

/// `hostname/boot id`: a recorded pid is only meaningful on the same machine in the same boot.
pub fn host_identity() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        format!(
            "{}/{}",
            host_name(),
            kernel_value("/proc/sys/kernel/random/boot_id")
        )
    })
    .clone()
}

/// This machine's host name, as people know it.
pub fn host_name() -> String {
    kernel_value("/proc/sys/kernel/hostname")
}

fn kernel_value(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// (process group, start time) of a live, non-zombie process; `None` when there is none.
fn stat(pid: i32) -> Option<(i32, i64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); pgrp is field 5, starttime field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    let pgrp = fields.get(2)?.parse().ok()?;
    let started = fields.get(19)?.parse().ok()?;
    Some((pgrp, started))
}

/// The group record of a freshly started leader.
pub fn describe(leader: u32) -> Option<LocalGroup> {
    let pid = i32::try_from(leader).ok()?;
    let (pgrp, started) = stat(pid)?;
    (pgrp == pid).then(|| LocalGroup {
        host: host_identity(),
        pgid: pid,
        started,
    })
}

/// Whether the recorded group still has a member. Its leader alive with the recorded start time
/// settles it; a different process under the leader's pid means the group is gone (a pid is not
/// handed out while a group of that id exists). With the leader gone (killed by the
/// parent-death signal), members still in the group, all started after the leader, keep it.
pub fn is_alive(group: &LocalGroup) -> bool {
    // 0 and 1 are no script's group (and killpg(0) would mean our own).
    if group.host != host_identity() || group.pgid <= 1 {
        return false;
    }
    if let Some((_, started)) = stat(group.pgid) {
        return started == group.started;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .any(|(pgrp, started)| pgrp == group.pgid && started >= group.started)
}

/// SIGKILL to a recorded group of this host that is still alive; whether one was killed.
pub fn kill_if_alive(group: &LocalGroup) -> bool {
    if !is_alive(group) {
        return false;
    }
    match killpg(Pid::from_raw(group.pgid), Signal::SIGKILL) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(err) => {
            tracing::warn!(pgid = group.pgid, %err, "could not kill a recorded deploy process group");
            false
        }
    }
}

type Spawn = (
    Command,
    tokio::runtime::Handle,
    oneshot::Sender<io::Result<Child>>,
);

/// Spawns `command` from the spawner thread, with SIGKILL as the leader's parent-death signal.
pub async fn spawn(mut command: Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid), allocating nothing (an OS error code is stored inline).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The bot may have died between fork and prctl: then nobody would send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ECHILD));
            }
            Ok(())
        });
    }
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| io::Error::other("deploy scripts are started from the tokio runtime"))?;
    let (reply, answer) = oneshot::channel();
    spawner().send((command, runtime, reply)).map_err(|_| {
        io::Error::other("the deploy spawner thread is gone; restart shipmate (see its log)")
    })?;
    answer
        .await
        .map_err(|_| io::Error::other("the deploy spawner thread dropped the request"))?
}

/// The one long-lived thread that forks every script. It enters the caller's runtime for each
/// spawn so that runtime reaps the child.
fn spawner() -> &'static std_mpsc::Sender<Spawn> {
    static SPAWNER: OnceLock<std_mpsc::Sender<Spawn>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (sender, requests) = std_mpsc::channel::<Spawn>();
        let started = std::thread::Builder::new()
            .name("shipmate-spawner".to_string())
            .spawn(move || {
                for (mut command, runtime, reply) in requests {
                    let _entered = runtime.enter();
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(err) = started {
            tracing::error!(%err, "could not start the deploy spawner thread");
        }
        sender
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_described_and_alive() {
        let me = std::process::id();
        let (pgrp, started) = stat(i32::try_from(me).unwrap()).expect("own stat");
        assert!(started > 0);
        // Our group's leader may be gone (then its members keep the group alive).
        let leader_started = stat(pgrp).map_or(0, |(_, started)| started);
        let group = LocalGroup {
            host: host_identity(),
            pgid: pgrp,
            started: leader_started,
        };
        assert!(is_alive(&group), "a group with a live member is alive");
        let elsewhere = LocalGroup {
            host: "other-host/boot".to_string(),
            ..group.clone()
        };
        assert!(
            !is_alive(&elsewhere),
            "another host's group is not ours to judge"
        );
        let reused = LocalGroup {
            pgid: i32::try_from(me).unwrap(),
            started: started + 1,
            host: host_identity(),
        };
        assert!(
            !is_alive(&reused),
            "a pid with another start time is not our leader"
        );
    }
}
