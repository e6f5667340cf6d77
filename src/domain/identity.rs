//! Who is acting, and which roles they hold.

use std::collections::BTreeMap;
use std::fmt;

/// A platform identity as written in `bot.toml`: `slack:U0LEAD1`, `discord:2233…`, `api:ci`,
/// `schedule:nightly`. Group identities (`slack-group:…`, `discord-role:…`) are memberships.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(String);

/// The identity kinds a `[roles]` entry may name.
pub const IDENTITY_KINDS: [&str; 6] = [
    "slack",
    "slack-group",
    "discord",
    "discord-role",
    "api",
    "schedule",
];

impl Identity {
    pub fn new(kind: &str, id: &str) -> Self {
        Identity(format!("{kind}:{id}"))
    }

    /// Parses a role member as written in config; `None` when the kind is unknown or the id empty.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, id) = text.split_once(':')?;
        (IDENTITY_KINDS.contains(&kind) && !id.is_empty()).then(|| Identity(text.to_string()))
    }

    /// Parses a stored requester: a role member's kinds, or shipmate itself (`shipmate:bot`,
    /// which requests the rollbacks it starts).
    pub fn parse_requester(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("shipmate", id)) if !id.is_empty() => Some(Identity(text.to_string())),
            _ => Self::parse(text),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The platform part: `slack`, `discord`, `api`, `schedule`.
    pub fn platform(&self) -> &str {
        let kind = self.0.split(':').next().unwrap_or("");
        kind.split('-').next().unwrap_or(kind)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one acting: their identity, group memberships the platform told us about, and roles granted
/// directly (API tokens and schedules carry `roles = [...]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub identity: Identity,
    pub memberships: Vec<Identity>,
    pub granted_roles: Vec<String>,
}

impl Actor {
    pub fn new(identity: Identity) -> Self {
        Actor {
            identity,
            memberships: Vec::new(),
            granted_roles: Vec::new(),
        }
    }

    pub fn with_roles(mut self, roles: impl IntoIterator<Item = String>) -> Self {
        self.granted_roles.extend(roles);
        self
    }

    pub fn with_memberships(mut self, memberships: impl IntoIterator<Item = Identity>) -> Self {
        self.memberships.extend(memberships);
        self
    }
}

/// Role name → members, as configured under `[roles]`. `"*"` means anyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(BTreeMap<String, Vec<String>>);

/// Role that may create, promote, cancel, retry and roll back.
pub const DEPLOYERS: &str = "deployers";
/// Role that may do everything deployers may, plus freezes and `--force`.
pub const ADMINS: &str = "admins";

impl Roles {
    pub fn new(roles: BTreeMap<String, Vec<String>>) -> Self {
        Roles(roles)
    }

    pub fn is_defined(&self, role: &str) -> bool {
        self.0.contains_key(role)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every member entry of every role, as written.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.0.values().flatten().map(String::as_str)
    }

    /// The identities `role` lists (people and groups; `*` is no one in particular), as the
    /// card mentions them.
    pub fn members_of(&self, role: &str) -> Vec<Identity> {
        self.0
            .get(role)
            .into_iter()
            .flatten()
            .filter_map(|member| Identity::parse(member))
            .collect()
    }

    /// Whether `actor` holds `role`, directly or through a listed identity or membership.
    pub fn holds(&self, actor: &Actor, role: &str) -> bool {
        if actor.granted_roles.iter().any(|granted| granted == role) {
            return true;
        }
        let Some(members) = self.0.get(role) else {
            return false;
        };
        members.iter().any(|member| {
            member == "*"
                || member == actor.identity.as_str()
                || actor.memberships.iter().any(|m| m.as_str() == member)
        })
    }

    /// Deployers' rights: admins have them too.
    pub fn may_deploy(&self, actor: &Actor) -> bool {
        self.holds(actor, DEPLOYERS) || self.holds(actor, ADMINS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Roles {
        Roles::new(BTreeMap::from([
            (
                "leads".to_string(),
                vec!["slack:U0LEAD1".into(), "discord-role:998".into()],
            ),
            ("deployers".to_string(), vec!["*".into()]),
            ("admins".to_string(), vec!["api:ops".into()]),
        ]))
    }

    #[test]
    fn membership_table() {
        let lead = Actor::new(Identity::new("slack", "U0LEAD1"));
        let other = Actor::new(Identity::new("slack", "U0OTHER"));
        let discord_member = Actor::new(Identity::new("discord", "1"))
            .with_memberships([Identity::new("discord-role", "998")]);
        let ci = Actor::new(Identity::new("api", "ci")).with_roles(["leads".to_string()]);
        let cases = [
            (&lead, "leads", true),
            (&other, "leads", false),
            (&discord_member, "leads", true),
            (&ci, "leads", true),
            (&other, "deployers", true),
            (&other, "admins", false),
            (&other, "nonexistent", false),
        ];
        for (actor, role, expected) in cases {
            assert_eq!(roles().holds(actor, role), expected, "{actor:?} {role}");
        }
    }

    #[test]
    fn parses_identities() {
        assert!(Identity::parse("slack:U1").is_some());
        assert!(Identity::parse("discord-role:9").is_some());
        assert!(Identity::parse("github:me").is_none());
        assert!(Identity::parse("slack:").is_none());
        assert!(Identity::parse("U1").is_none());
        assert!(Identity::parse("shipmate:bot").is_none(), "no role member");
        assert!(Identity::parse_requester("shipmate:bot").is_some());
        assert!(Identity::parse_requester("slack:U1").is_some());
        assert!(Identity::parse_requester("shipmate:").is_none());
        assert_eq!(Identity::new("slack-group", "S1").platform(), "slack");
    }
}
