//! What a release is made of (SPEC §10): the artifact's digest, the changes since the previous
//! version grouped the way people read them, and how big a step the release is against what an
//! environment runs.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::version::Version;
use super::why::Blocker;

/// The parts of a release record beyond its commit and notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// When the release's commit was made: lead time runs from here when given.
    pub committed_at: Option<DateTime<Utc>>,
    /// The artifact: what was tested in one environment is what ships to the next.
    pub digest: Option<Digest>,
    /// Commit subjects since the previous version.
    pub changes: Vec<String>,
    /// Why the changes could not be read from git (a missing tag, no repository): said on the
    /// card instead of the changes.
    pub changes_note: Option<String>,
}

impl Manifest {
    pub fn is_empty(&self) -> bool {
        *self == Manifest::default()
    }

    /// What `update` would change in this manifest, or `None` when it adds nothing: a field
    /// given in `update` replaces this one's.
    pub fn updated_by(&self, update: &Manifest) -> Option<Manifest> {
        let merged = Manifest {
            committed_at: update.committed_at.or(self.committed_at),
            digest: update.digest.clone().or_else(|| self.digest.clone()),
            changes: if update.changes.is_empty() {
                self.changes.clone()
            } else {
                update.changes.clone()
            },
            // Given changes answer what git could not say.
            changes_note: if update.changes.is_empty() {
                self.changes_note.clone()
            } else {
                None
            },
        };
        (merged != *self).then_some(merged)
    }
}

/// An artifact digest: `sha256:` and 64 lower-case hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a digest: write sha256: and 64 hex characters, e.g. sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
pub struct BadDigest(pub String);

impl FromStr for Digest {
    type Err = BadDigest;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown: String = text.chars().take(80).collect();
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| BadDigest(shown.clone()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadDigest(shown));
        }
        Ok(Digest(format!("sha256:{}", hex.to_ascii_lowercase())))
    }
}

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:9f86d08…` for cards.
    pub fn short(&self) -> &str {
        self.0.get(..14).unwrap_or(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// "What was tested is what ships": promoting `version` into the environment after `previous`
/// needs the release's digest to be the one that succeeded in `previous` (`tested`: `None` when
/// it never succeeded there — the pipeline rules answer that — `Some(None)` when it succeeded
/// without a digest). A release without a digest is not held to it.
pub fn check_tested_digest(
    service: &str,
    version: &Version,
    previous: &str,
    digest: Option<&Digest>,
    tested: Option<Option<&str>>,
) -> Result<(), Blocker> {
    let (Some(digest), Some(tested)) = (digest, tested) else {
        return Ok(());
    };
    if tested == Some(digest.as_str()) {
        return Ok(());
    }
    Err(Blocker::Digest {
        service: service.to_string(),
        version: version.to_string(),
        previous_environment: previous.to_string(),
        digest: digest.as_str().to_string(),
        tested: tested.map(str::to_string),
    })
}

/// The release whose tag a new version's changes are read from: the newest of `versions` that
/// `version` is newer than.
pub fn previous_release<'a>(versions: &'a [Version], version: &Version) -> Option<&'a Version> {
    versions.iter().filter(|v| version.is_newer_than(v)).max()
}

/// How big a step a release is against what the environment runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReleaseType {
    /// Nothing runs there yet.
    First,
    Patch,
    Minor,
    Major,
    /// The same version, or an older one (a rollback or a re-deploy).
    NotNewer,
}

impl ReleaseType {
    /// Semver's reading: a major step changes the first number — below 1.0.0, the first
    /// non-zero one (0.3 → 0.4 may break, as semver allows anything before 1.0).
    pub fn between(running: Option<&Version>, next: &Version) -> Self {
        let Some(running) = running else {
            return ReleaseType::First;
        };
        if !next.is_newer_than(running) {
            return ReleaseType::NotNewer;
        }
        let (old_major, old_minor) = running.major_minor();
        let (new_major, new_minor) = next.major_minor();
        if new_major != old_major || (old_major == 0 && new_minor != old_minor) {
            ReleaseType::Major
        } else if new_minor != old_minor {
            ReleaseType::Minor
        } else {
            ReleaseType::Patch
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseType::First => "first release",
            ReleaseType::Patch => "patch",
            ReleaseType::Minor => "minor",
            ReleaseType::Major => "major",
            ReleaseType::NotNewer => "not newer",
        }
    }
}

impl fmt::Display for ReleaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a change goes on the card, in the order the card shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeGroup {
    Breaking,
    Features,
    Fixes,
    Other,
}

impl ChangeGroup {
    pub fn title(self) -> &'static str {
        match self {
            ChangeGroup::Breaking => "Breaking",
            ChangeGroup::Features => "Features",
            ChangeGroup::Fixes => "Fixes",
            ChangeGroup::Other => "Other",
        }
    }

    /// Conventional commits: `type(scope)!: subject` or a `BREAKING CHANGE:` footer is breaking;
    /// `feat` a feature; `fix` a fix; anything else other.
    pub fn of(change: &str) -> Self {
        if change.contains("BREAKING CHANGE:") || change.contains("BREAKING-CHANGE:") {
            return ChangeGroup::Breaking;
        }
        let Some((head, _)) = change.split_once(':') else {
            return ChangeGroup::Other;
        };
        let head = head.trim();
        if head.ends_with('!') {
            return ChangeGroup::Breaking;
        }
        let kind = head.split('(').next().unwrap_or_default();
        match kind.to_ascii_lowercase().as_str() {
            "feat" | "feature" => ChangeGroup::Features,
            "fix" => ChangeGroup::Fixes,
            _ => ChangeGroup::Other,
        }
    }
}

/// The changes as the card shows them: at most `shown` in all, breaking first, each group in
/// the order given, and how many were left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupedChanges {
    pub groups: Vec<(ChangeGroup, Vec<String>)>,
    pub more: usize,
}

pub fn group_changes(changes: &[String], shown: usize) -> GroupedChanges {
    let mut sorted: Vec<(ChangeGroup, &String)> = changes
        .iter()
        .map(|change| (ChangeGroup::of(change), change))
        .collect();
    // Stable: within a group, the given order stays.
    sorted.sort_by_key(|(group, _)| *group);
    let more = sorted.len().saturating_sub(shown);
    let mut groups: Vec<(ChangeGroup, Vec<String>)> = Vec::new();
    for (group, change) in sorted.into_iter().take(shown) {
        match groups.last_mut() {
            Some((last, items)) if *last == group => items.push(change.clone()),
            _ => groups.push((group, vec![change.clone()])),
        }
    }
    GroupedChanges { groups, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().expect("version")
    }

    #[test]
    fn an_update_replaces_the_fields_it_gives_and_nothing_else() {
        let digest = |c: char| {
            Some(
                format!("sha256:{}", c.to_string().repeat(64))
                    .parse()
                    .expect("digest"),
            )
        };
        let old = Manifest {
            committed_at: None,
            digest: digest('a'),
            changes: vec!["fix: one".to_string()],
            changes_note: None,
        };
        assert_eq!(old.updated_by(&Manifest::default()), None);
        assert_eq!(old.updated_by(&old), None);
        let new = old
            .updated_by(&Manifest {
                digest: digest('b'),
                ..Manifest::default()
            })
            .expect("a new digest is an update");
        assert_eq!(new.digest, digest('b'));
        assert_eq!(new.changes, old.changes);
    }

    #[test]
    fn digests_are_sha256_with_64_hex_characters() {
        let good = format!("sha256:{}", "A".repeat(64));
        let digest: Digest = good.parse().expect("valid");
        assert_eq!(digest.as_str(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(digest.short(), "sha256:aaaaaaa");
        for bad in [
            "",
            "sha256:",
            "sha1:abc",
            &"a".repeat(64),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha256:{}g", "a".repeat(63)),
            &format!("sha512:{}", "a".repeat(64)),
        ] {
            let error = bad.parse::<Digest>().expect_err(bad);
            assert!(error.to_string().contains("sha256:"), "{error}");
        }
    }

    #[test]
    fn the_next_environment_needs_the_digest_the_one_before_tested() {
        let digest = |c: char| -> Digest {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .expect("digest")
        };
        let (a, b) = (digest('a'), digest('b'));
        let version = v("1.4.2");
        let check = |digest: Option<&Digest>, tested: Option<Option<&str>>| {
            check_tested_digest("api", &version, "staging", digest, tested)
        };
        assert_eq!(check(None, Some(Some(a.as_str()))), Ok(()));
        assert_eq!(check(Some(&a), None), Ok(()));
        assert_eq!(check(Some(&a), Some(Some(a.as_str()))), Ok(()));
        let changed = check(Some(&b), Some(Some(a.as_str())))
            .expect_err("changed digest")
            .to_string();
        assert!(
            changed.contains("now sha256:bbbbbbb but staging tested sha256:aaaaaaa")
                && changed.contains("release the new artifact as a new version"),
            "{changed}"
        );
        let untested = check(Some(&a), Some(None))
            .expect_err("tested without a digest")
            .to_string();
        assert!(untested.contains("before it had a digest"), "{untested}");
    }

    #[test]
    fn the_previous_release_is_the_newest_older_one() {
        let versions = [v("1.0.0"), v("1.2.0"), v("2.0.0"), v("1.1.5")];
        assert_eq!(previous_release(&versions, &v("1.3.0")), Some(&v("1.2.0")));
        assert_eq!(previous_release(&versions, &v("1.1.9")), Some(&v("1.1.5")));
        assert_eq!(previous_release(&versions, &v("1.0.0")), None);
        assert_eq!(previous_release(&[], &v("1.0.0")), None);
    }

    #[test]
    fn release_types_follow_semver_against_what_runs() {
        let cases = [
            (None, "1.0.0", ReleaseType::First),
            (Some("1.4.2"), "1.4.3", ReleaseType::Patch),
            (Some("1.4.2"), "1.5.0", ReleaseType::Minor),
            (Some("1.4.2"), "2.0.0", ReleaseType::Major),
            (Some("0.3.1"), "0.4.0", ReleaseType::Major),
            (Some("0.3.1"), "0.3.2", ReleaseType::Patch),
            (Some("1.4.2"), "1.4.2", ReleaseType::NotNewer),
            (Some("1.4.2"), "1.3.9", ReleaseType::NotNewer),
            (Some("1.4.2"), "1.4.3-rc.1", ReleaseType::Patch),
        ];
        for (running, next, expected) in cases {
            let running = running.map(v);
            assert_eq!(
                ReleaseType::between(running.as_ref(), &v(next)),
                expected,
                "{running:?} → {next}"
            );
        }
    }

    #[test]
    fn conventional_commit_subjects_are_grouped() {
        let cases = [
            ("feat: search by tag", ChangeGroup::Features),
            ("feat(api): paging", ChangeGroup::Features),
            ("fix!: drop v1 API", ChangeGroup::Breaking),
            ("refactor(core)!: new store", ChangeGroup::Breaking),
            ("fix: login timeout", ChangeGroup::Fixes),
            ("chore: bump deps", ChangeGroup::Other),
            ("Merge branch 'main'", ChangeGroup::Other),
            (
                "feat: new auth\n\nBREAKING CHANGE: tokens expire",
                ChangeGroup::Breaking,
            ),
        ];
        for (change, group) in cases {
            assert_eq!(ChangeGroup::of(change), group, "{change}");
        }
    }

    #[test]
    fn the_card_shows_ten_changes_breaking_first_and_counts_the_rest() {
        let mut changes: Vec<String> = (1..=12).map(|n| format!("fix: bug {n}")).collect();
        changes.push("feat!: new API".to_string());
        changes.push("feat: search".to_string());
        let grouped = group_changes(&changes, 10);
        assert_eq!(grouped.more, 4);
        assert_eq!(
            grouped.groups[0],
            (ChangeGroup::Breaking, vec!["feat!: new API".to_string()])
        );
        assert_eq!(
            grouped.groups[1],
            (ChangeGroup::Features, vec!["feat: search".to_string()])
        );
        assert_eq!(grouped.groups[2].0, ChangeGroup::Fixes);
        assert_eq!(grouped.groups[2].1.len(), 8);
        assert_eq!(grouped.groups[2].1[0], "fix: bug 1");
    }
}
