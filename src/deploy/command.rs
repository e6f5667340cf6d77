//! The `command` backend (SPEC §5): runs the team's deploy program as its own process group,
//! streams its output as progress and kills the whole group on timeout, cancel or drop.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{process, Backend, DeployCall, DeployOutcome, DeployRequest, Reporter};
use crate::domain::duration::format_duration;

/// How many trailing output lines a failure reason quotes.
const LAST_LINES: usize = 10;
/// Longer lines are cut: a progress line is for people, not a log archive.
const MAX_LINE_CHARS: usize = 1_000;
/// Bytes kept per line while reading; a UTF-8 char is at most 4 bytes, so this always covers
/// `MAX_LINE_CHARS` and bounds memory when a program writes megabytes without a newline.
const MAX_LINE_BYTES: usize = 4 * MAX_LINE_CHARS + 4;
/// How long to wait for the pipes to close once the leader has exited: a backgrounded
/// grandchild may hold them open forever.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Lines buffered between the pipe readers and the forwarding loop.
const LINE_BUFFER: usize = 256;

/// Variables a script inherits from the bot's environment; everything else (the bot's tokens,
/// signing secret, database URL, whatever `bot.toml` reads with `${VAR}`) stays behind. A
/// script that needs more says so with the backend's `env` table.
const INHERITED: [&str; 8] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];
/// Locale categories (`LC_ALL`, `LC_TIME`, …) are inherited too.
const INHERITED_PREFIX: &str = "LC_";

/// Runs `run` (argv, no shell) in `working_dir`, with a cleared environment: the [`INHERITED`]
/// variables, the configured `env`, then the promotion described in `SHIPMATE_*` variables.
#[derive(Debug, Clone)]
pub struct CommandBackend {
    pub run: Vec<String>,
    pub timeout: Duration,
    pub working_dir: PathBuf,
    /// The backend's `env` table (values already substituted from `${VAR}`).
    pub env: BTreeMap<String, String>,
    /// The allowlisted part of the bot's environment, taken once at start.
    inherited: Vec<(OsString, OsString)>,
}

impl CommandBackend {
    pub fn new(
        run: Vec<String>,
        timeout: Duration,
        working_dir: PathBuf,
        env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            run,
            timeout,
            working_dir,
            env,
            inherited: inherited_environment(std::env::vars_os()),
        }
    }

    /// The directory the program runs in; an empty path (config file named without a
    /// directory) means the current one, which `chdir("")` would refuse.
    fn dir(&self) -> &Path {
        if self.working_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.working_dir
        }
    }

    /// `./deploy/deploy.sh` means relative to the working directory; std leaves relative
    /// program paths combined with `current_dir` unspecified, so resolve them ourselves.
    /// Bare names (`make`) are still looked up on `PATH`.
    fn program_path(&self, program: &str) -> PathBuf {
        let path = Path::new(program);
        if program.contains('/') && path.is_relative() {
            self.dir().join(path)
        } else {
            path.to_path_buf()
        }
    }

    fn command(&self, program: &str, args: &[String], request: &DeployRequest) -> Command {
        let mut command = Command::new(self.program_path(program));
        command
            .args(args)
            .current_dir(self.dir())
            .env_clear()
            .envs(self.inherited.iter().map(|(name, value)| (name, value)))
            .envs(&self.env)
            .envs(environment(request))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own group, so one killpg reaches grandchildren too.
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    fn timed_out(&self, transcript: &Transcript) -> DeployOutcome {
        let head = format!(
            "timed out after {} (process group killed)",
            format_duration(self.timeout)
        );
        failed(transcript.with_last_lines(head))
    }
}

/// How a run of the program ended: the deploy outcome, and the program's exit status when it
/// ended by itself (none when it could not start, timed out or was cancelled). A verification
/// check reads its exit code from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub outcome: DeployOutcome,
    pub status: Option<ExitStatus>,
}

impl Ended {
    fn without_status(outcome: DeployOutcome) -> Self {
        Self {
            outcome,
            status: None,
        }
    }
}

impl CommandBackend {
    /// Runs the program for `request` until it ends or `cancel` fires, reporting its lines and
    /// its process group; also gives the exit status.
    pub async fn execute(
        &self,
        request: DeployRequest,
        report: Reporter,
        cancel: CancellationToken,
    ) -> Ended {
        if cancel.is_cancelled() {
            return Ended::without_status(DeployOutcome::Cancelled);
        }
        let Some((program, args)) = self.run.split_first() else {
            return Ended::without_status(failed("no command configured to run".to_string()));
        };
        let mut child = match process::spawn(self.command(program, args, &request)).await {
            Ok(child) => child,
            Err(err) => {
                let dir = self.dir().display();
                let reason = format!("could not start `{program}` in {dir}: {err}");
                return Ended::without_status(failed(reason));
            }
        };
        // Declared after `child` so it drops first: the group dies before tokio reaps the leader.
        let Some(mut group) = child.id().and_then(ProcessGroup::new) else {
            let reason = format!("`{program}` exited before it could be supervised");
            return Ended::without_status(failed(reason));
        };
        tracing::info!(
            promotion_id = request.promotion_id,
            program = %program,
            pgid = group.pgid.as_raw(),
            "deploy command started"
        );
        if let Some(record) = child.id().and_then(process::describe) {
            report.group(record).await;
        }
        let mut readers = JoinSet::new();
        let mut lines = spawn_readers(&mut child, &mut readers);
        let mut transcript = Transcript::new(report);

        let ended = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                group.kill();
                Ended::without_status(DeployOutcome::Cancelled)
            }
            () = tokio::time::sleep(self.timeout) => {
                group.kill();
                transcript.sweep(&mut lines);
                Ended::without_status(self.timed_out(&transcript))
            }
            ended = supervise(&mut child, &mut lines, &mut transcript, &mut group) => {
                Ended {
                    status: ended.as_ref().ok().copied(),
                    outcome: outcome_of(ended, &transcript),
                }
            }
        };
        tracing::info!(
            promotion_id = request.promotion_id,
            outcome = ?ended.outcome,
            "deploy command ended"
        );
        ended
    }
}

#[async_trait]
impl Backend for CommandBackend {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn deploy(&self, call: DeployCall) -> DeployOutcome {
        // A script never outlives the bot: detaching stops it as an abort does.
        let stop = CancellationToken::new();
        let execute = self.execute(call.request.clone(), call.report.clone(), stop.clone());
        tokio::pin!(execute);
        tokio::select! {
            ended = &mut execute => return ended.outcome,
            () = call.stopped() => stop.cancel(),
        }
        execute.await.outcome
    }

    async fn check(&self, _service: &str, _environment: &str) -> Result<String, String> {
        let Some(program) = self.run.first() else {
            return Err("no command configured to run".to_string());
        };
        let path = if program.contains('/') {
            let path = Path::new(program);
            if path.is_absolute() {
                path.to_path_buf()
            } else {
                self.dir().join(path)
            }
        } else {
            return Ok(format!(
                "runs `{program}` from PATH in {}",
                self.dir().display()
            ));
        };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                Ok(format!("{} is executable", path.display()))
            }
            Ok(_) => Err(format!(
                "{} is not an executable file; chmod +x it",
                path.display()
            )),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// The allowlisted variables among `vars` (the bot's environment).
fn inherited_environment(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(name, _)| {
            name.to_str()
                .is_some_and(|name| INHERITED.contains(&name) || name.starts_with(INHERITED_PREFIX))
        })
        .collect()
}

/// The `SHIPMATE_*` variables of SPEC §5; absent optional values are empty strings.
fn environment(request: &DeployRequest) -> [(&'static str, String); 13] {
    [
        ("SHIPMATE_SERVICE", request.service.clone()),
        ("SHIPMATE_VERSION", request.version.clone()),
        ("SHIPMATE_ENVIRONMENT", request.environment.clone()),
        (
            "SHIPMATE_PREVIOUS_VERSION",
            request.previous_version.clone().unwrap_or_default(),
        ),
        ("SHIPMATE_PROMOTION_ID", request.promotion_id.to_string()),
        ("SHIPMATE_REQUESTED_BY", request.requested_by.clone()),
        ("SHIPMATE_ROLLBACK", request.rollback.to_string()),
        (
            "SHIPMATE_COMMIT",
            request.commit.clone().unwrap_or_default(),
        ),
        (
            "SHIPMATE_DIGEST",
            request.digest.clone().unwrap_or_default(),
        ),
        ("SHIPMATE_STEP", request.step.number.to_string()),
        ("SHIPMATE_STEPS", request.step.of.to_string()),
        ("SHIPMATE_WEIGHT", request.step.weight.to_string()),
        ("SHIPMATE_PHASE", request.step.phase.as_str().to_string()),
    ]
}

fn failed(reason: String) -> DeployOutcome {
    DeployOutcome::Failed { reason }
}

/// Forwards output until the leader exits, then until both pipes close — bounded, because a
/// lingering grandchild may keep them open; it is killed with the group when the bound passes.
async fn supervise(
    child: &mut Child,
    lines: &mut mpsc::Receiver<String>,
    transcript: &mut Transcript,
    group: &mut ProcessGroup,
) -> io::Result<ExitStatus> {
    let status = loop {
        tokio::select! {
            Some(line) = lines.recv() => transcript.record(line).await,
            status = child.wait() => break status?,
        }
    };
    let drain = async {
        while let Some(line) = lines.recv().await {
            transcript.record(line).await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        tracing::warn!(
            pgid = group.pgid.as_raw(),
            "deploy command exited but its output stayed open; killing its process group"
        );
        group.kill();
        transcript.sweep(lines);
    }
    // Pipes closed: nothing of ours is left that could still be holding the group.
    group.disarm();
    Ok(status)
}

fn outcome_of(ended: io::Result<ExitStatus>, transcript: &Transcript) -> DeployOutcome {
    match ended {
        Ok(status) if status.success() => DeployOutcome::Succeeded,
        Ok(status) => failed(transcript.with_last_lines(describe_exit(status))),
        Err(err) => failed(format!("lost track of the deploy command: {err}")),
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(number)) => match Signal::try_from(number) {
            Ok(signal) => format!("killed by signal {number} ({})", signal.as_str()),
            Err(_) => format!("killed by signal {number}"),
        },
        (None, None) => format!("ended abnormally ({status})"),
    }
}

/// The child's process group. Kills it on drop while armed, so a dropped deploy future leaves
/// nothing running (`kill_on_drop` alone reaches only the leader).
struct ProcessGroup {
    pgid: Pid,
    armed: bool,
}

impl ProcessGroup {
    /// `process_group(0)` makes the leader's pid the group id.
    fn new(leader: u32) -> Option<Self> {
        let pgid = Pid::from_raw(i32::try_from(leader).ok()?);
        Some(Self { pgid, armed: true })
    }

    /// SIGKILL to every member, once. Stays armed while the pipes are open even after the leader
    /// was reaped: an open pipe means a member still exists, and while one exists the group id
    /// cannot be reused by an unrelated process.
    fn kill(&mut self) {
        if !std::mem::replace(&mut self.armed, false) {
            return;
        }
        match killpg(self.pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(pgid = self.pgid.as_raw(), %err, "could not kill deploy process group")
            }
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts one reader per pipe; both feed one channel so lines interleave as they arrive.
/// The channel closes once both pipes reach EOF.
fn spawn_readers(child: &mut Child, readers: &mut JoinSet<()>) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel(LINE_BUFFER);
    if let Some(stdout) = child.stdout.take() {
        readers.spawn(read_lines(stdout, sender.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.spawn(read_lines(stderr, sender.clone()));
    }
    receiver
}

/// Splits a pipe into lines, keeping at most `MAX_LINE_BYTES` of each.
async fn read_lines<R: AsyncRead + Unpin>(stream: R, lines: mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let (used, complete) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => {
                let newline = chunk.iter().position(|&byte| byte == b'\n');
                let used = newline.map_or(chunk.len(), |at| at + 1);
                let room = MAX_LINE_BYTES.saturating_sub(line.len());
                line.extend_from_slice(&chunk[..used.min(room)]);
                (used, newline.is_some())
            }
        };
        reader.consume(used);
        if complete {
            if lines.send(finish_line(&line)).await.is_err() {
                return;
            }
            line.clear();
        }
    }
    // A last line without a trailing newline still counts.
    if !line.is_empty() {
        let _ = lines.send(finish_line(&line)).await;
    }
}

/// Lossy UTF-8, line ending (`\n` or `\r\n`) removed, cut to `MAX_LINE_CHARS`.
fn finish_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Forwards lines as progress and remembers the last few for the failure reason.
struct Transcript {
    progress: Reporter,
    last: VecDeque<String>,
}

impl Transcript {
    fn new(progress: Reporter) -> Self {
        Self {
            progress,
            last: VecDeque::with_capacity(LAST_LINES),
        }
    }

    async fn record(&mut self, line: String) {
        self.remember(&line);
        // A listener that went away must not fail the deployment; keep draining the child.
        self.progress.line(line).await;
    }

    /// Takes what is already buffered without waiting: used once the group is killed.
    fn sweep(&mut self, lines: &mut mpsc::Receiver<String>) {
        while let Ok(line) = lines.try_recv() {
            self.remember(&line);
            self.progress.try_line(line);
        }
    }

    fn remember(&mut self, line: &str) {
        // Blank lines tell a person nothing on a card.
        if line.trim().is_empty() {
            return;
        }
        if self.last.len() == LAST_LINES {
            self.last.pop_front();
        }
        self.last.push_back(line.to_string());
    }

    /// `head: line\nline…`, or just `head` when there was no output.
    fn with_last_lines(&self, head: String) -> String {
        if self.last.is_empty() {
            return head;
        }
        let lines: Vec<&str> = self.last.iter().map(String::as_str).collect();
        format!("{head}: {}", lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::Report;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;
    use tempfile::TempDir;

    /// Generous bound for anything that should end well before it.
    const LIMIT: Duration = Duration::from_secs(20);

    fn script(dir: &Path, relative: &str, body: &str) -> PathBuf {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn backend(dir: &Path, run: &[&str], timeout: Duration) -> CommandBackend {
        let run = run.iter().map(|arg| arg.to_string()).collect();
        CommandBackend::new(run, timeout, dir.to_path_buf(), BTreeMap::new())
    }

    fn request() -> DeployRequest {
        DeployRequest {
            promotion_id: 42,
            service: "api".to_string(),
            version: "1.4.2".to_string(),
            environment: "staging".to_string(),
            previous_version: None,
            requested_by: "slack:U0LEAD1".to_string(),
            rollback: false,
            commit: Some("abc1234".to_string()),
            digest: None,
            attempt: 1,
            step: crate::domain::rollout::Step::FULL,
        }
    }

    /// A call of `request()` with `capacity` reports buffered, and its reports' receiving end.
    fn call(capacity: usize) -> (DeployCall, mpsc::Receiver<Report>) {
        let (report, reports) = Reporter::channel(capacity);
        let call = DeployCall::new(request(), report, chrono::DateTime::UNIX_EPOCH);
        (call, reports)
    }

    /// The next progress line (other reports skipped).
    async fn next_line(reports: &mut mpsc::Receiver<Report>) -> Option<String> {
        while let Some(report) = reports.recv().await {
            if let Report::Line(line) = report {
                return Some(line);
            }
        }
        None
    }

    /// Runs a deployment to its end and returns the outcome and every progress line.
    async fn deploy(backend: &CommandBackend) -> (DeployOutcome, Vec<String>) {
        let (call, mut reports) = call(1_000);
        let run = backend.deploy(call);
        let outcome = tokio::time::timeout(LIMIT, run).await.expect("deploy hung");
        let mut lines = Vec::new();
        while let Ok(report) = reports.try_recv() {
            if let Report::Line(line) = report {
                lines.push(line);
            }
        }
        (outcome, lines)
    }

    fn reason(outcome: DeployOutcome) -> String {
        match outcome {
            DeployOutcome::Failed { reason } => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// A script that leaves a `sleep 30` grandchild, records its pid, then says "started".
    const SPAWNS_GRANDCHILD: &str = "sleep 30 &\necho $! > sleep.pid\necho started\nwait";

    fn grandchild_pid(dir: &Path) -> i32 {
        let text = std::fs::read_to_string(dir.join("sleep.pid")).unwrap();
        text.trim().parse().unwrap()
    }

    /// Alive and not a zombie (a killed orphan lingers as one until init reaps it).
    fn is_running(pid: i32) -> bool {
        if nix::sys::signal::kill(Pid::from_raw(pid), None).is_err() {
            return false;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let zombie = stat.is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
        !zombie
    }

    async fn assert_gone(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_running(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} outlived the deploy"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn success_streams_lines_in_order_with_the_environment() {
        let dir = TempDir::new().unwrap();
        script(
            dir.path(),
            "deploy/deploy.sh",
            r#"echo "service=$SHIPMATE_SERVICE"
echo "version=$SHIPMATE_VERSION"
echo "environment=$SHIPMATE_ENVIRONMENT"
echo "previous=[$SHIPMATE_PREVIOUS_VERSION]"
echo "promotion=$SHIPMATE_PROMOTION_ID"
echo "requested_by=$SHIPMATE_REQUESTED_BY"
echo "rollback=$SHIPMATE_ROLLBACK"
echo "commit=$SHIPMATE_COMMIT"
echo "arg=$1"
if read -r line; then echo "stdin=open"; else echo "stdin=empty"; fi
printf 'crlf\r\n'
printf 'no newline'
echo "to stderr" >&2"#,
        );
        let backend = backend(dir.path(), &["./deploy/deploy.sh", "extra"], LIMIT);

        let (outcome, lines) = deploy(&backend).await;

        assert_eq!(outcome, DeployOutcome::Succeeded);
        let stdout: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|line| *line != "to stderr")
            .collect();
        assert_eq!(
            stdout,
            [
                "service=api",
                "version=1.4.2",
                "environment=staging",
                "previous=[]",
                "promotion=42",
                "requested_by=slack:U0LEAD1",
                "rollback=false",
                "commit=abc1234",
                "arg=extra",
                "stdin=empty",
                "crlf",
                "no newline",
            ]
        );
        assert!(lines.iter().any(|line| line == "to stderr"), "{lines:?}");
    }

    /// The bot's own secrets stay out of the script's environment; only the allowlist, the
    /// configured `env` table and the `SHIPMATE_*` variables reach it.
    #[tokio::test]
    async fn the_script_gets_a_cleared_environment_plus_its_env_table() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "env.sh", "env");
        let mut backend = backend(dir.path(), &["./env.sh"], LIMIT);
        backend.inherited = inherited_environment(
            [
                ("PATH", "/usr/bin:/bin"),
                ("LANG", "C.UTF-8"),
                ("LC_TIME", "en_GB.UTF-8"),
                ("SLACK_BOT_TOKEN", "xoxb-secret-token"),
                ("SHIPMATE_DATABASE_URL", "postgres://u:db-password@db/x"),
                ("DISCORD_TOKEN", "discord-secret"),
            ]
            .map(|(name, value)| (name.into(), value.into())),
        );
        backend.env = [
            ("REGISTRY", "ghcr.io/acme"),
            ("PATH", "/opt/deploy/bin:/usr/bin:/bin"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .into_iter()
        .collect();

        let (outcome, lines) = deploy(&backend).await;

        assert_eq!(outcome, DeployOutcome::Succeeded);
        let text = lines.join("\n");
        for secret in ["xoxb-secret-token", "db-password", "discord-secret"] {
            assert!(
                !text.contains(secret),
                "{secret} reached the script:\n{text}"
            );
        }
        for expected in [
            "REGISTRY=ghcr.io/acme",
            "PATH=/opt/deploy/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
            "LC_TIME=en_GB.UTF-8",
            "SHIPMATE_SERVICE=api",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} missing:\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn runs_in_the_configured_working_directory() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "where.sh", "pwd -P");
        let backend = backend(dir.path(), &["./where.sh"], LIMIT);

        let (outcome, lines) = deploy(&backend).await;

        assert_eq!(outcome, DeployOutcome::Succeeded);
        let expected = dir.path().canonicalize().unwrap();
        assert_eq!(lines, [expected.display().to_string()]);
    }

    #[tokio::test]
    async fn failure_reports_the_exit_code_and_the_last_lines() {
        let dir = TempDir::new().unwrap();
        script(
            dir.path(),
            "fail.sh",
            "i=1\nwhile [ $i -le 12 ]; do echo \"line $i\"; i=$((i+1)); done\necho\nexit 3",
        );
        let backend = backend(dir.path(), &["./fail.sh"], LIMIT);

        let (outcome, lines) = deploy(&backend).await;

        assert_eq!(lines.len(), 13);
        let last: Vec<String> = (3..=12).map(|i| format!("line {i}")).collect();
        assert_eq!(reason(outcome), format!("exit code 3: {}", last.join("\n")));
    }

    #[tokio::test]
    async fn execute_gives_the_exit_status_only_when_the_program_ended_by_itself() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "three.sh", "echo bad\nexit 3");
        script(dir.path(), "hang.sh", "sleep 30");
        let run = |backend: CommandBackend| async move {
            let (report, _reports) = Reporter::channel(16);
            let run = backend.execute(request(), report, CancellationToken::new());
            tokio::time::timeout(LIMIT, run)
                .await
                .expect("execute hung")
        };

        let ended = run(backend(dir.path(), &["./three.sh"], LIMIT)).await;
        assert_eq!(ended.status.and_then(|status| status.code()), Some(3));
        assert_eq!(reason(ended.outcome), "exit code 3: bad");

        let ended = run(backend(dir.path(), &["./hang.sh"], Duration::from_secs(1))).await;
        assert_eq!(ended.status, None);
        assert!(reason(ended.outcome).starts_with("timed out after 1s"));

        let ended = run(backend(dir.path(), &["./missing.sh"], LIMIT)).await;
        assert_eq!(ended.status, None);
    }

    #[tokio::test]
    async fn a_signal_death_is_named() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "die.sh", "echo dying\nkill -TERM $$");
        let backend = backend(dir.path(), &["./die.sh"], LIMIT);

        let (outcome, _) = deploy(&backend).await;

        assert_eq!(reason(outcome), "killed by signal 15 (SIGTERM): dying");
    }

    #[tokio::test]
    async fn a_missing_program_names_the_path_and_the_error() {
        let dir = TempDir::new().unwrap();
        let backend = backend(dir.path(), &["./deploy/missing.sh"], LIMIT);

        let (outcome, lines) = deploy(&backend).await;

        assert!(lines.is_empty());
        assert_eq!(
            reason(outcome),
            format!(
                "could not start `./deploy/missing.sh` in {}: No such file or directory (os error 2)",
                dir.path().display()
            )
        );
    }

    #[tokio::test]
    async fn a_program_that_is_not_executable_names_the_path_and_the_error() {
        let dir = TempDir::new().unwrap();
        let path = script(dir.path(), "plain.sh", "echo hi");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let backend = backend(dir.path(), &["./plain.sh"], LIMIT);

        let (outcome, _) = deploy(&backend).await;

        let reason = reason(outcome);
        assert!(
            reason.starts_with("could not start `./plain.sh` in ")
                && reason.contains("os error 13"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "hang.sh", SPAWNS_GRANDCHILD);
        let backend = backend(dir.path(), &["./hang.sh"], Duration::from_secs(2));

        let (outcome, lines) = deploy(&backend).await;

        assert_eq!(lines, ["started"]);
        assert_eq!(
            reason(outcome),
            "timed out after 2s (process group killed): started"
        );
        assert_gone(grandchild_pid(dir.path())).await;
    }

    #[tokio::test]
    async fn cancel_returns_promptly_and_kills_the_whole_process_group() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "hang.sh", SPAWNS_GRANDCHILD);
        let backend = backend(dir.path(), &["./hang.sh"], LIMIT);
        let (call, mut reports) = call(16);
        let cancel = call.abort.clone();

        let run = backend.deploy(call);
        let trigger = async {
            let first = next_line(&mut reports).await;
            cancel.cancel();
            (first, Instant::now())
        };
        let both = tokio::time::timeout(LIMIT, async { tokio::join!(run, trigger) });
        let (outcome, (first, cancelled_at)) = both.await.expect("cancel was not honoured");

        assert_eq!(first.as_deref(), Some("started"));
        assert_eq!(outcome, DeployOutcome::Cancelled);
        assert!(cancelled_at.elapsed() < Duration::from_secs(2));
        assert_gone(grandchild_pid(dir.path())).await;
    }

    #[tokio::test]
    async fn dropping_the_deploy_kills_the_whole_process_group() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "hang.sh", SPAWNS_GRANDCHILD);
        let backend = backend(dir.path(), &["./hang.sh"], LIMIT);
        let (call, mut reports) = call(16);

        let task = tokio::spawn(async move { backend.deploy(call).await });
        let first = tokio::time::timeout(LIMIT, next_line(&mut reports))
            .await
            .unwrap();
        assert_eq!(first.as_deref(), Some("started"));
        task.abort();
        assert!(task.await.is_err_and(|err| err.is_cancelled()));

        assert_gone(grandchild_pid(dir.path())).await;
    }

    #[tokio::test]
    async fn a_grandchild_holding_the_output_open_does_not_hang_the_deploy() {
        let dir = TempDir::new().unwrap();
        script(
            dir.path(),
            "leave.sh",
            "sleep 30 &\necho $! > sleep.pid\necho done",
        );
        let backend = backend(dir.path(), &["./leave.sh"], LIMIT);

        let (outcome, lines) = deploy(&backend).await;

        assert_eq!(outcome, DeployOutcome::Succeeded);
        assert_eq!(lines, ["done"]);
        assert_gone(grandchild_pid(dir.path())).await;
    }

    #[tokio::test]
    async fn a_vanished_progress_listener_does_not_fail_the_deploy() {
        let dir = TempDir::new().unwrap();
        script(
            dir.path(),
            "chatty.sh",
            "i=0\nwhile [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done\nexit 1",
        );
        let backend = backend(dir.path(), &["./chatty.sh"], LIMIT);
        let (call, reports) = call(1);
        drop(reports);

        let run = backend.deploy(call);
        let outcome = tokio::time::timeout(LIMIT, run).await.expect("deploy hung");

        assert!(reason(outcome).ends_with("line 498\nline 499"));
    }

    #[test]
    fn long_lines_are_cut_and_line_endings_removed() {
        assert_eq!(finish_line(b"plain\n"), "plain");
        assert_eq!(finish_line(b"windows\r\n"), "windows");
        assert_eq!(finish_line(b"bad \xff byte"), "bad \u{fffd} byte");
        let long = "é".repeat(MAX_LINE_CHARS + 5);
        let cut = finish_line(long.as_bytes());
        assert_eq!(cut.chars().count(), MAX_LINE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn relative_programs_resolve_against_the_working_directory() {
        let backend = backend(Path::new("/srv/app"), &[], LIMIT);
        assert_eq!(
            backend.program_path("./deploy/deploy.sh"),
            Path::new("/srv/app/./deploy/deploy.sh")
        );
        assert_eq!(backend.program_path("make"), Path::new("make"));
        assert_eq!(backend.program_path("/bin/true"), Path::new("/bin/true"));
    }
}
