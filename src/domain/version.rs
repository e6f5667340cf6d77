//! Release versions: semantic versions with an optional leading `v`.

use std::fmt;
use std::str::FromStr;

/// A release version. Ordered by semver precedence; displayed without the `v`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(semver::Version);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a version: write MAJOR.MINOR.PATCH, e.g. 1.4.2 (a leading v is fine, as in v1.4.2)")]
pub struct VersionError {
    pub input: String,
}

impl Version {
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Version(semver::Version::new(major, minor, patch))
    }

    /// Whether this version moves forward from `other` by semver precedence, which ignores build
    /// metadata: `1.4.2+b2` is not newer than `1.4.2+b1` or `1.4.2`. (`Ord` orders build
    /// metadata too, only to keep sorting total and consistent with equality.)
    pub fn is_newer_than(&self, other: &Version) -> bool {
        self.0.cmp_precedence(&other.0) == std::cmp::Ordering::Greater
    }

    /// (major, minor) of the version: what a release-type judgement looks at.
    pub fn major_minor(&self) -> (u64, u64) {
        (self.0.major, self.0.minor)
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        let bare = trimmed
            .strip_prefix('v')
            .or_else(|| trimmed.strip_prefix('V'))
            .unwrap_or(trimmed);
        semver::Version::parse(bare)
            .map(Version)
            .map_err(|_| VersionError {
                input: input.to_string(),
            })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a person asked for: one exact version, or `latest` (resolved by the pipeline rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    Exact(Version),
    Latest,
}

impl FromStr for VersionSpec {
    type Err = VersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.eq_ignore_ascii_case("latest") {
            Ok(VersionSpec::Latest)
        } else {
            input.parse().map(VersionSpec::Exact)
        }
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Exact(version) => version.fmt(f),
            VersionSpec::Latest => f.write_str("latest"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_metadata_does_not_make_a_version_newer() {
        let v = |s: &str| s.parse::<Version>().expect("version");
        assert!(!v("1.4.2+b1").is_newer_than(&v("1.4.2")));
        assert!(!v("1.4.2+b2").is_newer_than(&v("1.4.2+b1")));
        assert!(!v("1.4.2").is_newer_than(&v("1.4.2+b1")));
        assert!(v("1.4.3").is_newer_than(&v("1.4.2+b9")));
        assert!(v("1.4.2").is_newer_than(&v("1.4.2-rc.1+b1")));
    }

    #[test]
    fn accepts_semver_with_or_without_v() {
        for (input, shown) in [
            ("1.4.2", "1.4.2"),
            ("v1.4.2", "1.4.2"),
            ("V2.0.0-rc.1", "2.0.0-rc.1"),
            ("1.0.0+build.5", "1.0.0+build.5"),
        ] {
            assert_eq!(
                input.parse::<Version>().unwrap().to_string(),
                shown,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_semver_with_a_hint() {
        for input in ["1.4", "1", "", "v", "1.4.x", "latest", "1.4.2.1", "vv1.0.0"] {
            let err = input.parse::<Version>().unwrap_err();
            assert!(
                err.to_string().contains("MAJOR.MINOR.PATCH"),
                "{input}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("`{input}`")),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn orders_by_semver_precedence() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2.0.0") > v("2.0.0-rc.1"));
        assert!(v("v1.4.2") == v("1.4.2"));
    }

    #[test]
    fn latest_is_a_spec_not_a_version() {
        assert_eq!("latest".parse::<VersionSpec>(), Ok(VersionSpec::Latest));
        assert_eq!("LATEST".parse::<VersionSpec>(), Ok(VersionSpec::Latest));
        assert_eq!(
            "v1.2.3".parse::<VersionSpec>(),
            Ok(VersionSpec::Exact(Version::new(1, 2, 3)))
        );
    }
}
