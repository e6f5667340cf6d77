//! The `command` check's probe: runs the script through the `command` deploy backend, so it gets
//! exactly the deploy script's `SHIPMATE_*` variables, the same cleared environment (the bot's
//! secrets stay behind), its own process group, the timeout and cancellation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{cancelled, shorten};
use crate::deploy::command::{CommandBackend, Ended};
use crate::deploy::{DeployOutcome, DeployRequest, Report, Reporter};
use crate::domain::verification::Reading;

/// How much of the script's last line, or of a failure to run it, a reading keeps.
const LINE_CHARS: usize = 300;
/// Output lines buffered between the script and the line keeper.
const LINE_BUFFER: usize = 64;

/// A check script, placeholders already substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub run: Vec<String>,
    pub timeout: Duration,
    /// The config file's directory, where deploy scripts run too.
    pub working_dir: PathBuf,
    /// The environment's backend `env` table.
    pub env: BTreeMap<String, String>,
}

impl Script {
    /// Runs the script once for `request`: its exit code and last output line; `Unreachable`
    /// when it could not run to an exit of its own (not started, timed out, cancelled).
    pub async fn run(self, request: DeployRequest, cancel: CancellationToken) -> Reading {
        let backend = CommandBackend::new(self.run, self.timeout, self.working_dir, self.env);
        // A check script is not recorded for killing after a crash: its leader still dies with
        // the bot (parent-death signal) and it is short-lived.
        let (report, mut reports) = Reporter::channel(LINE_BUFFER);
        let promotion_id = request.promotion_id;
        let last_line = async move {
            let mut last = None;
            while let Some(report) = reports.recv().await {
                let Report::Line(line) = report else { continue };
                tracing::debug!(promotion_id, %line, "check script output");
                if !line.trim().is_empty() {
                    last = Some(line);
                }
            }
            last
        };
        // The backend drops `progress` when it returns, which ends `last_line`.
        let (ended, last) = tokio::join!(backend.execute(request, report, cancel), last_line);
        reading_of(ended, last)
    }
}

fn reading_of(ended: Ended, last: Option<String>) -> Reading {
    let last_line = last
        .map(|line| shorten(&line, LINE_CHARS))
        .unwrap_or_default();
    match (ended.outcome, ended.status) {
        (DeployOutcome::Cancelled, _) => cancelled(),
        (_, Some(status)) => Reading::Exit {
            // None when a signal ended it.
            code: status.code(),
            last_line,
        },
        (DeployOutcome::Succeeded, None) => Reading::Exit {
            code: Some(0),
            last_line,
        },
        (DeployOutcome::Failed { reason }, None) => {
            // The reason's first line: what happened, and the first of the last output lines.
            let first = reason.lines().next().unwrap_or_default();
            Reading::Unreachable(shorten(first, LINE_CHARS))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollout::{Phase, Step};
    use crate::domain::verification::{judge, CheckKind, CheckSpec, Verdict};
    use crate::verify::{LiveProber, ProbeTarget, Prober};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::Instant;
    use tempfile::TempDir;

    /// Generous bound for anything that should end well before it.
    const LIMIT: Duration = Duration::from_secs(20);

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn target() -> ProbeTarget {
        ProbeTarget {
            request: DeployRequest {
                promotion_id: 42,
                attempt: 1,
                digest: None,
                service: "api".to_string(),
                version: "1.4.2".to_string(),
                environment: "production".to_string(),
                previous_version: Some("1.4.1".to_string()),
                requested_by: "slack:U1".to_string(),
                rollback: false,
                commit: None,
                step: Step {
                    number: 2,
                    of: 3,
                    weight: 50,
                    phase: Phase::Deploy,
                },
            },
        }
    }

    fn check(run: &[&str], timeout: Duration) -> CheckSpec {
        let kind = CheckKind::Command {
            run: run.iter().map(|arg| arg.to_string()).collect(),
            timeout,
        };
        CheckSpec {
            name: CheckSpec::default_name(&kind, 3),
            kind,
            duration: Duration::from_secs(60),
            every: Duration::from_secs(10),
        }
    }

    fn prober(dir: &Path) -> LiveProber {
        let env = BTreeMap::from([("SMOKE_TARGET".to_string(), "eu-1".to_string())]);
        LiveProber::new(dir.to_path_buf(), reqwest::Client::new()).with_command_env(
            "api",
            "production",
            env,
        )
    }

    async fn probe(dir: &Path, check: &CheckSpec) -> Reading {
        let (prober, target) = (prober(dir), target());
        let run = prober.probe(check, &target, CancellationToken::new());
        tokio::time::timeout(LIMIT, run).await.expect("probe hung")
    }

    #[tokio::test]
    async fn exit_zero_passes() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "smoke.sh", "echo checking\necho all good\n");
        let check = check(&["./smoke.sh"], LIMIT);

        let reading = probe(dir.path(), &check).await;

        assert_eq!(
            reading,
            Reading::Exit {
                code: Some(0),
                last_line: "all good".to_string()
            }
        );
        assert_eq!(judge(&check.kind, &reading), Verdict::Pass);
    }

    #[tokio::test]
    async fn a_failing_script_gives_its_code_and_last_line() {
        let dir = TempDir::new().unwrap();
        script(
            dir.path(),
            "smoke.sh",
            "echo 'logging in'\necho 'login page down' >&2\necho\nexit 3",
        );
        let check = check(&["./smoke.sh"], LIMIT);

        let reading = probe(dir.path(), &check).await;

        assert_eq!(
            reading,
            Reading::Exit {
                code: Some(3),
                last_line: "login page down".to_string()
            }
        );
        assert_eq!(
            judge(&check.kind, &reading),
            Verdict::Fail("exited with code 3: login page down".to_string())
        );
    }

    /// The script sees the deploy script's variables, the environment's `env` table, and its
    /// argv with placeholders substituted.
    #[tokio::test]
    async fn the_script_gets_the_promotion_and_substituted_arguments() {
        let dir = TempDir::new().unwrap();
        script(
            dir.path(),
            "smoke.sh",
            r#"echo "$SHIPMATE_VERSION $SHIPMATE_STEP/$SHIPMATE_STEPS $SHIPMATE_WEIGHT% $SHIPMATE_PREVIOUS_VERSION $SMOKE_TARGET $1 $2""#,
        );
        let check = check(
            &["./smoke.sh", "{service}@{version}", "{code=~\"5..\"}"],
            LIMIT,
        );

        let reading = probe(dir.path(), &check).await;

        assert_eq!(
            reading,
            Reading::Exit {
                code: Some(0),
                last_line: r#"1.4.2 2/3 50% 1.4.1 eu-1 api@1.4.2 {code=~"5.."}"#.to_string()
            }
        );
    }

    #[tokio::test]
    async fn a_signal_death_has_no_code() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "smoke.sh", "echo dying\nkill -KILL $$");

        let reading = probe(dir.path(), &check(&["./smoke.sh"], LIMIT)).await;

        assert_eq!(
            reading,
            Reading::Exit {
                code: None,
                last_line: "dying".to_string()
            }
        );
    }

    #[tokio::test]
    async fn a_script_past_its_timeout_is_killed_and_fails() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "smoke.sh", "echo started\nsleep 30");
        let check = check(&["./smoke.sh"], Duration::from_secs(1));

        let reading = probe(dir.path(), &check).await;

        assert_eq!(
            reading,
            Reading::Unreachable("timed out after 1s (process group killed): started".to_string())
        );
        assert!(matches!(judge(&check.kind, &reading), Verdict::Fail(_)));
    }

    #[tokio::test]
    async fn a_missing_script_fails_naming_it() {
        let dir = TempDir::new().unwrap();

        let reading = probe(dir.path(), &check(&["./missing.sh"], LIMIT)).await;

        assert!(
            matches!(&reading, Reading::Unreachable(why) if why.starts_with("could not start `./missing.sh`")),
            "{reading:?}"
        );
    }

    #[tokio::test]
    async fn cancel_stops_the_script_promptly() {
        let dir = TempDir::new().unwrap();
        script(dir.path(), "smoke.sh", "touch started\nsleep 30");
        let check = check(&["./smoke.sh"], LIMIT);
        let cancel = CancellationToken::new();
        let (prober, target) = (prober(dir.path()), target());

        let run = prober.probe(&check, &target, cancel.clone());
        let trigger = async {
            let deadline = Instant::now() + LIMIT;
            while !dir.path().join("started").exists() {
                assert!(Instant::now() < deadline, "the script never started");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
            Instant::now()
        };
        let (reading, cancelled_at) =
            tokio::time::timeout(LIMIT, async { tokio::join!(run, trigger) })
                .await
                .expect("cancel was not honoured");

        assert_eq!(reading, Reading::Unreachable("cancelled".to_string()));
        assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    }
}
