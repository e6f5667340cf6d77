//! `shipmate slack-manifest`: a ready Slack app manifest for this bot, to paste into
//! "Create New App → From an app manifest".

use crate::config::Config;

/// Bot scopes: the slash command, posting and editing cards (also in channels the bot was not
/// invited to), reading reactions on them, and resolving `slack-group:` roles.
pub const BOT_SCOPES: [&str; 5] = [
    "commands",
    "chat:write",
    "chat:write.public",
    "reactions:read",
    "usergroups:read",
];
pub const BOT_EVENTS: [&str; 2] = ["reaction_added", "reaction_removed"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(String);

/// The manifest as YAML. Over HTTP the URLs come from `server.public_url`; with an `app_token`
/// the app uses Socket Mode and needs no URL.
pub fn manifest(config: &Config) -> Result<String, ManifestError> {
    let slack = config.slack.as_ref().ok_or_else(|| {
        ManifestError("bot.toml has no [slack] table; add one (see the README's Slack setup) and run this again".into())
    })?;
    let socket_mode = slack.app_token.is_some();
    let base = match (&config.server.public_url, socket_mode) {
        (_, true) => None,
        (Some(url), false) => Some(url.as_str()),
        (None, false) => {
            return Err(ManifestError(
                "Slack must reach the bot: set [server].public_url to its https address, or set [slack].app_token to use Socket Mode".into(),
            ))
        }
    };
    let url = |path: &str| {
        base.map(|b| format!("\n      url: {b}{path}"))
            .unwrap_or_default()
    };
    let request_url = |path: &str| {
        base.map(|b| format!("\n    request_url: {b}{path}"))
            .unwrap_or_default()
    };
    let list = |items: &[&str], indent: &str| {
        items
            .iter()
            .map(|i| format!("{indent}- {i}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(format!(
        "display_information:
  name: shipmate
  description: Promote releases, approve them, watch them deploy.
features:
  bot_user:
    display_name: shipmate
    always_online: true
  slash_commands:
    - command: /release{command_url}
      description: Promote, approve, pause, abort, roll back and inspect releases
      usage_hint: promote api 1.4.2 [to production]
      should_escape: false
oauth_config:
  scopes:
    bot:
{scopes}
settings:
  event_subscriptions:{events_url}
    bot_events:
{events}
  interactivity:
    is_enabled: true{interactivity_url}
  org_deploy_enabled: false
  socket_mode_enabled: {socket_mode}
  token_rotation_enabled: false
",
        command_url = url("/slack/commands"),
        scopes = list(&BOT_SCOPES, "      "),
        events_url = request_url("/slack/events"),
        events = list(&BOT_EVENTS, "      "),
        interactivity_url = request_url("/slack/interactions"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_slack: &str, public_url: Option<&str>) -> Config {
        let public_url = public_url
            .map(|u| format!("public_url = \"{u}\""))
            .unwrap_or_default();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:8080"
{public_url}
[database]
url = "sqlite://x.db"
[slack]
bot_token = "xoxb-1"
signing_secret = "s"
{extra_slack}
[roles]
deployers = ["*"]
[[service]]
name = "api"
  [[service.environment]]
  name = "prod"
  backend = {{ kind = "command", run = ["./d.sh"] }}
"#
        );
        crate::config::parse(&text, std::path::Path::new("."), &|_| None).expect("valid")
    }

    #[test]
    fn http_manifest_points_slack_at_the_public_url() {
        let yaml = manifest(&config("", Some("https://bot.example.com"))).unwrap();
        insta::assert_snapshot!(yaml);
    }

    #[test]
    fn socket_mode_manifest_needs_no_url() {
        let yaml = manifest(&config("app_token = \"xapp-1\"", None)).unwrap();
        assert!(yaml.contains("socket_mode_enabled: true"));
        assert!(!yaml.contains("url:"), "{yaml}");
    }

    #[test]
    fn without_a_way_in_it_says_what_to_set() {
        let err = manifest(&config("", None)).unwrap_err();
        assert!(err.to_string().contains("set [server].public_url"), "{err}");
    }
}
