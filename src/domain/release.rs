//! A release: a version of a service that exists and may be promoted.

use chrono::{DateTime, Utc};

use super::manifest::Manifest;
use super::version::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: i64,
    pub service: String,
    pub version: Version,
    pub commit: Option<String>,
    pub notes: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub manifest: Manifest,
}
