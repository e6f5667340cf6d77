//! A release's changes read from its service's repository (`git = { path, tag }`, SPEC §10) with
//! the `git` CLI: the commit subjects between the previous version's tag and the new one's.
//! Whatever git cannot answer (no such tag, no repository) becomes a note for the card, never a
//! failed release.

use std::process::Stdio;
use std::time::Duration;

use crate::config::GitSource;
use crate::domain::version::Version;

/// The most changes kept on one release: the card shows ten, the web page all of these.
pub const MOST_CHANGES: usize = 500;

/// A local repository answers in milliseconds; one on a hung network mount must not hold a
/// release up.
const GIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do when git cannot answer.
const REMEDY: &str = "check the service's `git` in bot.toml and that the bot may read the repository, or send the changes with the release (`changes` in POST /api/v1/releases)";

/// What git said about a release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadChanges {
    /// Commit subjects, newest first, merges left out.
    pub changes: Vec<String>,
    /// Why there are none to show, when git could not say.
    pub note: Option<String>,
}

impl ReadChanges {
    fn note(text: String) -> Self {
        ReadChanges {
            changes: Vec::new(),
            note: Some(text),
        }
    }
}

/// The changes of `version`: from `previous`'s tag when that exists, else from the nearest
/// older release tag, else from the start of history.
pub async fn read_changes(
    source: &GitSource,
    previous: Option<&Version>,
    version: &Version,
) -> ReadChanges {
    let place = source.path.display();
    let tag = source.tag_of(version);
    match tag_exists(source, &tag).await {
        Ok(true) => {}
        Ok(false) => {
            return ReadChanges::note(format!(
                "no tag `{tag}` in {place}: push the tag, or send the changes with the release (`changes` in POST /api/v1/releases)"
            ))
        }
        Err(problem) => {
            return ReadChanges::note(format!("git could not read {place}: {problem}; {REMEDY}"))
        }
    }
    let since = match previous.map(|p| source.tag_of(p)) {
        Some(previous) if tag_exists(source, &previous).await == Ok(true) => Some(previous),
        _ => nearest_older_tag(source, &tag).await,
    };
    let range = match &since {
        Some(since) => format!("refs/tags/{since}..refs/tags/{tag}"),
        None => format!("refs/tags/{tag}"),
    };
    let limit = format!("--max-count={MOST_CHANGES}");
    match git(
        source,
        &[
            "log",
            "--no-merges",
            "--format=%s%x1f%b%x1e",
            &limit,
            &range,
            "--",
        ],
    )
    .await
    {
        Ok(out) => ReadChanges {
            changes: parse_log(&out),
            note: None,
        },
        Err(problem) => ReadChanges::note(format!(
            "git log {range} failed in {place}: {problem}; {REMEDY}"
        )),
    }
}

async fn tag_exists(source: &GitSource, tag: &str) -> Result<bool, String> {
    let object = format!("refs/tags/{tag}^{{commit}}");
    match run(source, &["rev-parse", "--verify", "--quiet", &object]).await? {
        (true, _, _) => Ok(true),
        // `--quiet`: a missing ref exits 1 and says nothing; anything said is a real problem.
        (false, _, stderr) if stderr.trim().is_empty() => Ok(false),
        (false, _, stderr) => Err(first_line(&stderr)),
    }
}

/// The closest tag of the same naming before `tag`, for a first release the bot knows of.
async fn nearest_older_tag(source: &GitSource, tag: &str) -> Option<String> {
    let parent = format!("refs/tags/{tag}^");
    let glob = source.tag_glob();
    git(
        source,
        &[
            "describe",
            "--tags",
            "--abbrev=0",
            "--match",
            &glob,
            &parent,
        ],
    )
    .await
    .ok()
    .map(|out| out.trim().to_string())
    .filter(|name| !name.is_empty())
}

async fn git(source: &GitSource, args: &[&str]) -> Result<String, String> {
    match run(source, args).await? {
        (true, stdout, _) => Ok(stdout),
        (false, _, stderr) => Err(first_line(&stderr)),
    }
}

/// Runs git in the repository: (succeeded, stdout, stderr).
async fn run(source: &GitSource, args: &[&str]) -> Result<(bool, String, String), String> {
    let mut command = tokio::process::Command::new("git");
    command
        .arg("-C")
        .arg(&source.path)
        // The repository may belong to another user (a mounted volume); the bot only reads it.
        .args(["-c", "safe.directory=*"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(GIT_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("git took longer than {} s", GIT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("could not run git: {e}"))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if line.is_empty() {
        "git failed without saying why".to_string()
    } else {
        line.trim().chars().take(300).collect()
    }
}

/// `subject \x1f body \x1e` records: the subjects, a `BREAKING CHANGE:` footer of the body
/// kept after the subject so the change is grouped as breaking.
fn parse_log(out: &str) -> Vec<String> {
    out.split('\x1e')
        .filter_map(|record| {
            let (subject, body) = record.split_once('\x1f').unwrap_or((record, ""));
            let subject = subject.trim();
            if subject.is_empty() {
                return None;
            }
            let footer = body.lines().map(str::trim).find(|line| {
                line.starts_with("BREAKING CHANGE:") || line.starts_with("BREAKING-CHANGE:")
            });
            Some(match footer {
                Some(footer) => format!("{subject} ({footer})"),
                None => subject.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_records_become_subjects_with_breaking_footers_kept() {
        let out = "feat: search\x1f\x1e\nfix: login\x1fLonger text.\n\nBREAKING CHANGE: tokens expire\n\x1e\n";
        assert_eq!(
            parse_log(out),
            vec![
                "feat: search".to_string(),
                "fix: login (BREAKING CHANGE: tokens expire)".to_string()
            ]
        );
        assert!(parse_log("").is_empty());
    }
}
