//! Who may do what (SPEC §2, §4 `[roles]`): deployers create, promote, cancel others' promotions,
//! retry and roll back; admins may do all of that, plus `--force` and freezes. Anyone may cancel
//! their own request. Votes are the approval policy's (`approval`), not this table's.

use super::identity::{Actor, Identity, Roles, ADMINS, DEPLOYERS};

/// Something an actor wants to do that needs a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    CreateRelease,
    Promote,
    /// Skip windows and freezes (`--force`).
    Force,
    /// Cancel the promotion `requested_by` asked for.
    Cancel {
        requested_by: &'a Identity,
    },
    Retry,
    /// Keep the original `--force` when retrying a forced promotion.
    KeepForceOnRetry,
    Rollback,
    Freeze,
    Unfreeze,
}

/// The role an action needs, and what to do instead; its text is the refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("you need the `{DEPLOYERS}` role to {what}; ask an admin to add {who} to [roles].{DEPLOYERS} in bot.toml")]
    NotDeployer { what: &'static str, who: Identity },
    #[error("only `{ADMINS}` may {what}")]
    NotAdmin { what: &'static str },
}

enum Needs {
    Nothing,
    Deployer(&'static str),
    Admin(&'static str),
}

fn needs(action: Action<'_>, actor: &Actor) -> Needs {
    match action {
        Action::CreateRelease => Needs::Deployer("create releases"),
        Action::Promote => Needs::Deployer("promote"),
        Action::Force => Needs::Admin("use --force; promote without it, or ask an admin"),
        Action::Cancel { requested_by } if *requested_by == actor.identity => Needs::Nothing,
        Action::Cancel { .. } => Needs::Deployer("cancel someone else's promotion"),
        Action::Retry => Needs::Deployer("retry"),
        Action::KeepForceOnRetry => Needs::Admin("keep an override when retrying"),
        Action::Rollback => Needs::Deployer("roll back"),
        Action::Freeze => Needs::Admin("freeze environments; ask one of them"),
        Action::Unfreeze => Needs::Admin("lift freezes; ask one of them"),
    }
}

/// Whether `actor` may do `action`, given the configured roles. Admins hold deployers' rights.
pub fn authorize(roles: &Roles, actor: &Actor, action: Action<'_>) -> Result<(), Denied> {
    match needs(action, actor) {
        Needs::Nothing => Ok(()),
        Needs::Deployer(_) if roles.may_deploy(actor) => Ok(()),
        Needs::Deployer(what) => Err(Denied::NotDeployer {
            what,
            who: actor.identity.clone(),
        }),
        Needs::Admin(_) if roles.holds(actor, ADMINS) => Ok(()),
        Needs::Admin(what) => Err(Denied::NotAdmin { what }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn roles() -> Roles {
        Roles::new(BTreeMap::from([
            (DEPLOYERS.to_string(), vec!["slack:UDEPLOY".to_string()]),
            (ADMINS.to_string(), vec!["slack:UADMIN".to_string()]),
        ]))
    }

    fn actor(id: &str) -> Actor {
        Actor::new(Identity::new("slack", id))
    }

    #[test]
    fn who_may_do_what() {
        let someone = Identity::new("slack", "USOMEONE");
        let stranger = Identity::new("slack", "USTRANGER");
        let other = Identity::new("slack", "UOTHER");
        // (action, stranger, deployer, admin); the stranger is the requester of "own" cancels.
        let table: &[(Action<'_>, bool, bool, bool)] = &[
            (Action::CreateRelease, false, true, true),
            (Action::Promote, false, true, true),
            (Action::Force, false, false, true),
            (
                Action::Cancel {
                    requested_by: &stranger,
                },
                true,
                true,
                true,
            ),
            (
                Action::Cancel {
                    requested_by: &other,
                },
                false,
                true,
                true,
            ),
            (Action::Retry, false, true, true),
            (Action::KeepForceOnRetry, false, false, true),
            (Action::Rollback, false, true, true),
            (Action::Freeze, false, false, true),
            (Action::Unfreeze, false, false, true),
        ];
        let roles = roles();
        for (action, by_stranger, by_deployer, by_admin) in table {
            let allowed = |id: &str| authorize(&roles, &actor(id), *action).is_ok();
            assert_eq!(allowed("USTRANGER"), *by_stranger, "stranger: {action:?}");
            assert_eq!(allowed("UDEPLOY"), *by_deployer, "deployer: {action:?}");
            assert_eq!(allowed("UADMIN"), *by_admin, "admin: {action:?}");
        }
        assert!(authorize(&roles, &Actor::new(someone), Action::Promote).is_err());
    }

    #[test]
    fn refusals_say_which_role_and_what_to_do() {
        let roles = roles();
        let stranger = actor("USTRANGER");
        assert_eq!(
            authorize(&roles, &stranger, Action::Promote).unwrap_err().to_string(),
            "you need the `deployers` role to promote; ask an admin to add slack:USTRANGER to [roles].deployers in bot.toml"
        );
        assert_eq!(
            authorize(&roles, &actor("UDEPLOY"), Action::Force)
                .unwrap_err()
                .to_string(),
            "only `admins` may use --force; promote without it, or ask an admin"
        );
        assert_eq!(
            authorize(&roles, &stranger, Action::Freeze)
                .unwrap_err()
                .to_string(),
            "only `admins` may freeze environments; ask one of them"
        );
    }

    #[test]
    fn granted_roles_count_like_listed_members() {
        let ci = Actor::new(Identity::new("api", "ci")).with_roles([DEPLOYERS.to_string()]);
        assert!(authorize(&roles(), &ci, Action::Rollback).is_ok());
        assert!(authorize(&roles(), &ci, Action::Freeze).is_err());
    }
}
