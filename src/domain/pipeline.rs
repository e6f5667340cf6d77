//! Pipeline rules: which environment comes next, what must have succeeded before, which versions
//! may move forward, what `latest` and a rollback resolve to.

use super::version::Version;

/// A service's environments in promotion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline<'a> {
    pub service: &'a str,
    pub environments: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineRefusal {
    #[error("{service} has no environment `{environment}`; its pipeline is {pipeline}")]
    UnknownEnvironment {
        service: String,
        environment: String,
        pipeline: String,
    },
    #[error("{service} {version} can't go to {target} yet: it has not succeeded in {missing}. Promote it there first: /release promote {service} {version} to {missing}")]
    SkipsEnvironment {
        service: String,
        version: Version,
        target: String,
        missing: String,
    },
    #[error("{service} {version} has already succeeded in every environment ({pipeline}); nothing to promote")]
    AlreadyEverywhere {
        service: String,
        version: Version,
        pipeline: String,
    },
    #[error("{environment} already runs {service} {current}; a promotion must move to a newer version than that. To go back, use /release rollback {service} {environment}")]
    NotNewer {
        service: String,
        environment: String,
        current: Version,
    },
    #[error("nothing newer to promote to {environment}: {detail}")]
    NothingNewer { environment: String, detail: String },
    #[error("{service} has never been deployed to {environment}; there is nothing to roll back")]
    NeverDeployed {
        service: String,
        environment: String,
    },
    #[error("{service} has no earlier version in {environment} to roll back to")]
    NoEarlierVersion {
        service: String,
        environment: String,
    },
    #[error(
        "{environment} already runs {service} {version}; pick another version to roll back to"
    )]
    RollbackToCurrent {
        service: String,
        environment: String,
        version: Version,
    },
    #[error("{service} {version} never ran in {environment}, so it can't be rolled back to; versions it ran: {known}")]
    RollbackToUnknown {
        service: String,
        environment: String,
        version: Version,
        known: String,
    },
}

impl<'a> Pipeline<'a> {
    pub fn new(service: &'a str, environments: &'a [String]) -> Self {
        Pipeline {
            service,
            environments,
        }
    }

    fn describe(&self) -> String {
        self.environments.join(" → ")
    }

    pub fn position(&self, environment: &str) -> Result<usize, PipelineRefusal> {
        self.environments
            .iter()
            .position(|e| e == environment)
            .ok_or_else(|| PipelineRefusal::UnknownEnvironment {
                service: self.service.to_string(),
                environment: environment.to_string(),
                pipeline: self.describe(),
            })
    }

    /// The environment before `environment`, if any.
    pub fn previous(&self, environment: &str) -> Result<Option<&'a str>, PipelineRefusal> {
        let index = self.position(environment)?;
        Ok(index
            .checked_sub(1)
            .and_then(|i| self.environments.get(i))
            .map(String::as_str))
    }

    /// Where `version` may be promoted. `succeeded_in` says whether it currently stands succeeded in
    /// an environment. With `to`, that environment must be the next one; without, the first
    /// environment it has not reached.
    pub fn target(
        &self,
        version: &Version,
        to: Option<&str>,
        succeeded_in: impl Fn(&str) -> bool,
    ) -> Result<&'a str, PipelineRefusal> {
        let target = match to {
            Some(environment) => {
                let index = self.position(environment)?;
                &self.environments[index]
            }
            None => self
                .environments
                .iter()
                .find(|e| !succeeded_in(e))
                .ok_or_else(|| PipelineRefusal::AlreadyEverywhere {
                    service: self.service.to_string(),
                    version: version.clone(),
                    pipeline: self.describe(),
                })?,
        };
        if let Some(missing) = self.previous(target)?.filter(|prev| !succeeded_in(prev)) {
            return Err(PipelineRefusal::SkipsEnvironment {
                service: self.service.to_string(),
                version: version.clone(),
                target: target.clone(),
                missing: missing.to_string(),
            });
        }
        Ok(target)
    }
}

/// A promotion must move forward: the version must be greater than what runs now.
pub fn check_newer(
    service: &str,
    environment: &str,
    current: Option<&Version>,
    candidate: &Version,
) -> Result<(), PipelineRefusal> {
    match current {
        Some(current) if !candidate.is_newer_than(current) => Err(PipelineRefusal::NotNewer {
            service: service.to_string(),
            environment: environment.to_string(),
            current: current.clone(),
        }),
        _ => Ok(()),
    }
}

/// `latest` for the first environment: the newest release created, if newer than what runs.
/// `created` is ordered oldest first.
pub fn latest_created(
    service: &str,
    environment: &str,
    created: &[Version],
    current: Option<&Version>,
) -> Result<Version, PipelineRefusal> {
    let newest = created.last().ok_or_else(|| PipelineRefusal::NothingNewer {
        environment: environment.to_string(),
        detail: format!("{service} has no releases yet; create one with /release create {service} <version>"),
    })?;
    match current {
        Some(current) if !newest.is_newer_than(current) => Err(PipelineRefusal::NothingNewer {
            environment: environment.to_string(),
            detail: format!("it already runs {service} {current}, the newest release"),
        }),
        _ => Ok(newest.clone()),
    }
}

/// `latest` for a later environment: the newest version that succeeded in the previous
/// environment and is newer than what the target runs.
pub fn latest_succeeded(
    service: &str,
    environment: &str,
    previous_environment: &str,
    succeeded_before: &[Version],
    current: Option<&Version>,
) -> Result<Version, PipelineRefusal> {
    succeeded_before
        .iter()
        .filter(|v| current.is_none_or(|current| v.is_newer_than(current)))
        .max()
        .cloned()
        .ok_or_else(|| PipelineRefusal::NothingNewer {
            environment: environment.to_string(),
            detail: match current {
                Some(current) => format!(
                    "it runs {service} {current} and {previous_environment} has nothing newer that succeeded"
                ),
                None => format!("no version of {service} has succeeded in {previous_environment} yet"),
            },
        })
}

/// The version a rollback goes to. `ran_before` lists the versions that succeeded in the
/// environment before the current one, most recent first.
pub fn rollback_target(
    service: &str,
    environment: &str,
    current: Option<&Version>,
    ran_before: &[Version],
    to: Option<&Version>,
) -> Result<Version, PipelineRefusal> {
    let current = current.ok_or_else(|| PipelineRefusal::NeverDeployed {
        service: service.to_string(),
        environment: environment.to_string(),
    })?;
    match to {
        Some(to) if to == current => Err(PipelineRefusal::RollbackToCurrent {
            service: service.to_string(),
            environment: environment.to_string(),
            version: to.clone(),
        }),
        Some(to) if ran_before.contains(to) => Ok(to.clone()),
        Some(to) => Err(PipelineRefusal::RollbackToUnknown {
            service: service.to_string(),
            environment: environment.to_string(),
            version: to.clone(),
            known: known_versions(ran_before),
        }),
        None => ran_before
            .iter()
            .find(|v| *v != current)
            .cloned()
            .ok_or_else(|| PipelineRefusal::NoEarlierVersion {
                service: service.to_string(),
                environment: environment.to_string(),
            }),
    }
}

fn known_versions(versions: &[Version]) -> String {
    if versions.is_empty() {
        return "none".to_string();
    }
    let shown: Vec<String> = versions.iter().map(ToString::to_string).collect();
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn envs() -> Vec<String> {
        vec!["dev".into(), "staging".into(), "production".into()]
    }

    #[test]
    fn target_table() {
        let envs = envs();
        let pipeline = Pipeline::new("api", &envs);
        // (environments where 1.4.2 succeeded, `to`, expected target or message)
        type Case<'a> = (&'a [&'a str], Option<&'a str>, Result<&'a str, &'a str>);
        let cases: [Case; 8] = [
            (&[], None, Ok("dev")),
            (&["dev"], None, Ok("staging")),
            (&["dev", "staging"], None, Ok("production")),
            (&["dev"], Some("staging"), Ok("staging")),
            (&[], Some("dev"), Ok("dev")),
            (
                &["dev"],
                Some("production"),
                Err("api 1.4.2 can't go to production yet: it has not succeeded in staging. Promote it there first: /release promote api 1.4.2 to staging"),
            ),
            (
                &["dev", "staging", "production"],
                None,
                Err("api 1.4.2 has already succeeded in every environment (dev → staging → production); nothing to promote"),
            ),
            (
                &[],
                Some("prod"),
                Err("api has no environment `prod`; its pipeline is dev → staging → production"),
            ),
        ];
        for (succeeded, to, expected) in cases {
            let got = pipeline
                .target(&v("1.4.2"), to, |e| succeeded.contains(&e))
                .map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(String::from), "{succeeded:?} {to:?}");
        }
    }

    #[test]
    fn versions_must_move_forward() {
        assert!(check_newer("api", "production", None, &v("0.0.1")).is_ok());
        assert!(check_newer("api", "production", Some(&v("1.4.1")), &v("1.4.2")).is_ok());
        for candidate in ["1.4.2", "1.4.1", "1.4.2-rc.1", "1.4.2+build.7"] {
            let err =
                check_newer("api", "production", Some(&v("1.4.2")), &v(candidate)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "production already runs api 1.4.2; a promotion must move to a newer version than that. To go back, use /release rollback api production"
            );
        }
    }

    #[test]
    fn latest_in_the_first_environment_is_the_newest_release_created() {
        let created = [v("1.0.0"), v("1.2.0"), v("1.1.0")];
        assert_eq!(latest_created("api", "dev", &created, None), Ok(v("1.1.0")));
        assert_eq!(
            latest_created("api", "dev", &created, Some(&v("1.0.0"))),
            Ok(v("1.1.0"))
        );
        assert!(latest_created("api", "dev", &created, Some(&v("1.1.0")))
            .unwrap_err()
            .to_string()
            .contains("already runs api 1.1.0"));
        assert!(latest_created("api", "dev", &[], None)
            .unwrap_err()
            .to_string()
            .contains("/release create api <version>"));
    }

    #[test]
    fn latest_later_is_the_newest_that_succeeded_before() {
        let succeeded = [v("1.1.0"), v("1.3.0"), v("1.2.0")];
        assert_eq!(
            latest_succeeded("api", "staging", "dev", &succeeded, Some(&v("1.1.0"))),
            Ok(v("1.3.0"))
        );
        let err =
            latest_succeeded("api", "staging", "dev", &succeeded, Some(&v("1.3.0"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nothing newer to promote to staging: it runs api 1.3.0 and dev has nothing newer that succeeded"
        );
        let err = latest_succeeded("api", "staging", "dev", &[], None).unwrap_err();
        assert!(err
            .to_string()
            .contains("no version of api has succeeded in dev yet"));
    }

    #[test]
    fn rollback_table() {
        let before = [v("1.4.1"), v("1.4.0")];
        let cur = v("1.4.2");
        assert_eq!(
            rollback_target("api", "prod", Some(&cur), &before, None),
            Ok(v("1.4.1"))
        );
        assert_eq!(
            rollback_target("api", "prod", Some(&cur), &before, Some(&v("1.4.0"))),
            Ok(v("1.4.0"))
        );
        let messages = [
            rollback_target("api", "prod", None, &before, None),
            rollback_target("api", "prod", Some(&cur), &[], None),
            rollback_target("api", "prod", Some(&cur), &before, Some(&cur)),
            rollback_target("api", "prod", Some(&cur), &before, Some(&v("0.9.0"))),
        ]
        .map(|r| r.unwrap_err().to_string());
        assert_eq!(
            messages,
            [
                "api has never been deployed to prod; there is nothing to roll back",
                "api has no earlier version in prod to roll back to",
                "prod already runs api 1.4.2; pick another version to roll back to",
                "api 0.9.0 never ran in prod, so it can't be rolled back to; versions it ran: 1.4.1, 1.4.0",
            ]
        );
    }
}
