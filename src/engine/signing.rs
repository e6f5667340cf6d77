//! Signed values the web pages trust without a database row, the same on every replica:
//! a card's link to one promotion's page (`?exp=<unix>&sig=<hmac>`, SPEC §9) and the sign-in
//! cookie of the pages (an API token's name and an expiry, never the token).
//!
//! Both are HMAC-SHA256 under keys expanded (HKDF) from one master key with different labels, so
//! a link signature can never pass as a session or the other way round. The master key is
//! `[web] link_key` when set; otherwise it is derived from the secrets the configuration already
//! holds (chat secrets, API token digests), so replicas agree without more setup; with none at
//! all it is random for this process (links and sign-ins then end with it).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ApiToken, Config};

type HmacSha256 = Hmac<Sha256>;

/// How long a sign-in lasts.
pub const SESSION_LENGTH: chrono::Duration = chrono::Duration::hours(12);

/// Where the master key came from (logged at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    Derived,
    Random,
}

/// Why a signed link does not open its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// The signature does not match the promotion and expiry: altered, or from another key.
    Altered,
    Expired,
}

pub struct Signer {
    link: [u8; 32],
    session: [u8; 32],
    pub source: KeySource,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({:?}, ***)", self.source)
    }
}

impl Signer {
    pub fn from_config(config: &Config) -> Signer {
        let (master, source) = master_key(config);
        let expand = |label: &[u8]| {
            let mut key = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 8160, so this cannot fail.
            if Hkdf::<Sha256>::new(Some(b"shipmate web"), &master)
                .expand(label, &mut key)
                .is_err()
            {
                unreachable!("HKDF-SHA256 expands 32 bytes");
            }
            key
        };
        Signer {
            link: expand(b"promotion link v1"),
            session: expand(b"sign-in session v1"),
            source,
        }
    }

    /// `exp=<unix>&sig=<hmac>` for promotion `id`, valid until `expires`.
    pub fn link_query(&self, id: i64, expires: DateTime<Utc>) -> String {
        let exp = expires.timestamp();
        format!("exp={exp}&sig={}", self.link_signature(id, exp))
    }

    fn link_signature(&self, id: i64, exp: i64) -> String {
        URL_SAFE_NO_PAD.encode(self.link_mac(id, exp).finalize().into_bytes())
    }

    fn link_mac(&self, id: i64, exp: i64) -> HmacSha256 {
        mac(
            &self.link,
            &[
                b"promotion",
                id.to_string().as_bytes(),
                exp.to_string().as_bytes(),
            ],
        )
    }

    /// Whether `sig` signs promotion `id` until `exp`, and `exp` is not past at `now`.
    pub fn check_link(
        &self,
        id: i64,
        exp: i64,
        sig: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LinkRefusal> {
        let presented = URL_SAFE_NO_PAD
            .decode(sig.trim())
            .map_err(|_| LinkRefusal::Altered)?;
        self.link_mac(id, exp)
            .verify_slice(&presented)
            .map_err(|_| LinkRefusal::Altered)?;
        if exp < now.timestamp() {
            return Err(LinkRefusal::Expired);
        }
        Ok(())
    }

    /// The sign-in cookie value of `token`, valid until `expires`: `<exp>.<name>.<hmac>` with
    /// the name in base64url. The token's digest is signed too, so rotating a token ends its
    /// sign-ins.
    pub fn session(&self, token: &ApiToken, expires: DateTime<Utc>) -> String {
        let exp = expires.timestamp();
        let sig = self.session_mac(token, exp).finalize().into_bytes();
        format!(
            "{exp}.{}.{}",
            URL_SAFE_NO_PAD.encode(token.name.as_bytes()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    /// The token a sign-in cookie value stands for, if it is one of ours, its token is still
    /// configured unchanged, and it has not expired at `now`.
    pub fn check_session<'a>(
        &self,
        value: &str,
        tokens: &'a [ApiToken],
        now: DateTime<Utc>,
    ) -> Option<&'a ApiToken> {
        let mut parts = value.splitn(3, '.');
        let exp: i64 = parts.next()?.parse().ok()?;
        let name = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        let token = tokens.iter().find(|t| t.name == name)?;
        self.session_mac(token, exp).verify_slice(&sig).ok()?;
        (exp >= now.timestamp()).then_some(token)
    }

    fn session_mac(&self, token: &ApiToken, exp: i64) -> HmacSha256 {
        mac(
            &self.session,
            &[
                b"session",
                exp.to_string().as_bytes(),
                token.name.as_bytes(),
                &token.sha256,
            ],
        )
    }
}

/// The configured token `presented` is, compared as SHA-256 digests in constant time. Checks
/// every configured token, without stopping early, so timing says nothing about which token or
/// how much of it matched. Used by the API's bearer tokens and the web sign-in alike.
pub fn find_token<'a>(tokens: &'a [ApiToken], presented: &str) -> Option<&'a ApiToken> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for token in tokens {
        if bool::from(token.sha256.ct_eq(&digest)) {
            found = Some(token);
        }
    }
    found
}

/// An HMAC over `parts`, each length-prefixed so no two lists of parts sign alike.
fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes a key of any length"),
    };
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

fn master_key(config: &Config) -> (Vec<u8>, KeySource) {
    if let Some(key) = &config.web.link_key {
        return (key.expose().as_bytes().to_vec(), KeySource::Configured);
    }
    let mut material: Vec<&[u8]> = Vec::new();
    if let Some(slack) = &config.slack {
        material.push(slack.signing_secret.expose().as_bytes());
        material.push(slack.bot_token.expose().as_bytes());
    }
    if let Some(discord) = &config.discord {
        material.push(discord.bot_token.expose().as_bytes());
    }
    let mut tokens: Vec<&ApiToken> = config.api_tokens.iter().collect();
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    material.extend(tokens.iter().map(|t| t.sha256.as_slice()));
    if material.iter().all(|part| part.is_empty()) {
        tracing::warn!("no [web] link_key and no secret to derive one from: card links and web sign-ins last until this process stops; set [web] link_key");
        let random = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        return (random, KeySource::Random);
    }
    let derived = mac(b"shipmate derived web key", &material)
        .finalize()
        .into_bytes()
        .to_vec();
    (derived, KeySource::Derived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn signer(key: &str) -> Signer {
        let (link, session) = ([key.as_bytes()[0]; 32], [key.as_bytes()[1]; 32]);
        Signer {
            link,
            session,
            source: KeySource::Configured,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).single().unwrap_or_default()
    }

    fn query_parts(query: &str) -> (i64, String) {
        let (exp, sig) = query.split_once("&sig=").unwrap_or_default();
        (
            exp.trim_start_matches("exp=").parse().unwrap_or_default(),
            sig.to_string(),
        )
    }

    #[test]
    fn finds_only_the_matching_token() {
        let token = |name: &str, secret: &str| ApiToken {
            name: name.into(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
            roles: vec![],
        };
        let tokens = [token("ci", "s3cret"), token("ops", "other")];
        assert_eq!(
            find_token(&tokens, "s3cret").map(|t| t.name.as_str()),
            Some("ci")
        );
        assert_eq!(
            find_token(&tokens, "other").map(|t| t.name.as_str()),
            Some("ops")
        );
        assert!(find_token(&tokens, "s3cre").is_none());
        assert!(find_token(&tokens, "").is_none());
    }

    #[test]
    fn a_link_opens_its_promotion_until_it_expires() {
        let signer = signer("ab");
        let (exp, sig) = query_parts(&signer.link_query(42, at(1_000)));
        assert_eq!(exp, 1_000);
        assert_eq!(signer.check_link(42, exp, &sig, at(999)), Ok(()));
        assert_eq!(signer.check_link(42, exp, &sig, at(1_000)), Ok(()));
        assert_eq!(
            signer.check_link(42, exp, &sig, at(1_001)),
            Err(LinkRefusal::Expired)
        );
        assert_eq!(
            signer.check_link(43, exp, &sig, at(0)),
            Err(LinkRefusal::Altered)
        );
        assert_eq!(
            signer.check_link(42, exp + 1, &sig, at(0)),
            Err(LinkRefusal::Altered)
        );
        assert_eq!(
            signer.check_link(42, exp, "not base64!", at(0)),
            Err(LinkRefusal::Altered)
        );
        assert_eq!(
            Signer::check_link(&self::signer("xy"), 42, exp, &sig, at(0)),
            Err(LinkRefusal::Altered),
            "another key"
        );
    }

    #[test]
    fn a_session_names_its_token_until_it_expires_or_the_token_changes() {
        let signer = signer("ab");
        let token = ApiToken {
            name: "lead.one".into(),
            sha256: [7; 32],
            roles: vec![],
        };
        let value = signer.session(&token, at(5_000));
        let tokens = [token.clone()];
        let name = |value: &str, now| {
            signer
                .check_session(value, &tokens, at(now))
                .map(|t| t.name.clone())
        };
        assert_eq!(name(&value, 4_000).as_deref(), Some("lead.one"));
        assert_eq!(name(&value, 5_001), None, "expired");
        assert_eq!(name(&value.replacen("5000", "9000", 1), 4_000), None);
        assert_eq!(name("garbage", 0), None);
        let rotated = [ApiToken {
            sha256: [8; 32],
            ..token
        }];
        assert!(signer.check_session(&value, &rotated, at(0)).is_none());
        // A link signature is no session, whatever its text.
        assert!(signer
            .check_session(&signer.link_query(1, at(5_000)), &tokens, at(0))
            .is_none());
    }
}
