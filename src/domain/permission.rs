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
    /// Pause, resume, advance or abort a running rollout (SPEC §5.2): the deployer who
    /// requested it, the environment's approvers (`approvers` is their role), admins.
    SteerRollout {
        requested_by: &'a Identity,
        approvers: Option<&'a str>,
    },
    /// Tick a checklist item (SPEC §10): the same people as steer a rollout.
    TickChecklist {
        requested_by: &'a Identity,
        approvers: Option<&'a str>,
    },
}

/// The role an action needs, and what to do instead; its text is the refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("you need the `{DEPLOYERS}` role to {what}; ask an admin to add {who} to [roles].{DEPLOYERS} in bot.toml")]
    NotDeployer { what: &'static str, who: Identity },
    #[error("only `{ADMINS}` may {what}")]
    NotAdmin { what: &'static str },
    #[error(
        "only the deployer who requested it, {approvers}or `{ADMINS}` may {what}; ask one of them"
    )]
    NotOwnerOrApprover {
        approvers: String,
        what: &'static str,
    },
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
        Action::SteerRollout { .. } | Action::TickChecklist { .. } => {
            Needs::Admin("steer a rollout")
        }
    }
}

/// Whether `actor` may steer a rollout requested by `requested_by`.
fn may_steer(
    roles: &Roles,
    actor: &Actor,
    requested_by: &Identity,
    approvers: Option<&str>,
) -> bool {
    let own = *requested_by == actor.identity && roles.may_deploy(actor);
    let approver = approvers.is_some_and(|role| roles.holds(actor, role));
    own || approver || roles.holds(actor, ADMINS)
}

/// Whether `actor` may do `action`, given the configured roles. Admins hold deployers' rights.
pub fn authorize(roles: &Roles, actor: &Actor, action: Action<'_>) -> Result<(), Denied> {
    let owner_or_approver = match action {
        Action::SteerRollout {
            requested_by,
            approvers,
        } => Some((
            requested_by,
            approvers,
            "pause, resume, advance or abort a rollout",
        )),
        Action::TickChecklist {
            requested_by,
            approvers,
        } => Some((requested_by, approvers, "tick its checklist")),
        _ => None,
    };
    if let Some((requested_by, approvers, what)) = owner_or_approver {
        return if may_steer(roles, actor, requested_by, approvers) {
            Ok(())
        } else {
            Err(Denied::NotOwnerOrApprover {
                approvers: approvers
                    .map(|role| format!("the environment's approvers (`{role}`) "))
                    .unwrap_or_default(),
                what,
            })
        };
    }
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
    fn a_rollout_is_steered_by_its_deploying_requester_the_approvers_and_admins() {
        let mut members = BTreeMap::from([
            (
                DEPLOYERS.to_string(),
                vec!["slack:UDEPLOY".to_string(), "slack:UOTHERDEP".to_string()],
            ),
            (ADMINS.to_string(), vec!["slack:UADMIN".to_string()]),
        ]);
        members.insert("leads".to_string(), vec!["slack:ULEAD".to_string()]);
        let roles = Roles::new(members);
        let requester = Identity::new("slack", "UDEPLOY");
        let steer = Action::SteerRollout {
            requested_by: &requester,
            approvers: Some("leads"),
        };
        for (who, allowed) in [
            ("UDEPLOY", true),
            ("ULEAD", true),
            ("UADMIN", true),
            ("UOTHERDEP", false),
            ("USTRANGER", false),
        ] {
            assert_eq!(
                authorize(&roles, &actor(who), steer).is_ok(),
                allowed,
                "{who}"
            );
        }
        let refusal = authorize(&roles, &actor("USTRANGER"), steer)
            .unwrap_err()
            .to_string();
        assert!(refusal.contains("approvers (`leads`)"), "{refusal}");
        // A requester who lost the deployers role may no longer steer.
        let stranger = Identity::new("slack", "USTRANGER");
        let own = Action::SteerRollout {
            requested_by: &stranger,
            approvers: None,
        };
        assert!(authorize(&roles, &actor("USTRANGER"), own).is_err());
    }

    #[test]
    fn granted_roles_count_like_listed_members() {
        let ci = Actor::new(Identity::new("api", "ci")).with_roles([DEPLOYERS.to_string()]);
        assert!(authorize(&roles(), &ci, Action::Rollback).is_ok());
        assert!(authorize(&roles(), &ci, Action::Freeze).is_err());
    }
}
