//! The `/release` application command: its definition with a subcommand and typed options for
//! every command of SPEC §3, registration, and the way back from options to the one grammar.
//!
//! Discord hands the bot typed options, not text. Rather than a second parser, the options are
//! written back as the text a Slack user would type and go through `domain::command::parse`, so
//! Discord gets the same rules and the same refusals.

use serenity::all::{
    CommandDataOption, CommandDataOptionValue, CommandOptionType, CreateCommand,
    CreateCommandOption, GuildId, Http,
};

/// How an option's value is written into the command text.
#[derive(Clone, Copy)]
enum Kind {
    /// One word (service, version, environment, duration).
    Word,
    /// Free text, quoted so that it stays one piece.
    Text,
    /// A promotion id, written `#42`.
    Id,
    /// A whole number.
    Count,
}

struct OptionSpec {
    name: &'static str,
    description: &'static str,
    kind: Kind,
    required: bool,
    /// The word that introduces the value in the text grammar (`to`, `--force`), if any.
    keyword: Option<&'static str>,
}

const fn arg(name: &'static str, description: &'static str, kind: Kind) -> OptionSpec {
    OptionSpec {
        name,
        description,
        kind,
        required: true,
        keyword: None,
    }
}

const fn opt(
    name: &'static str,
    description: &'static str,
    kind: Kind,
    keyword: Option<&'static str>,
) -> OptionSpec {
    OptionSpec {
        name,
        description,
        kind,
        required: false,
        keyword,
    }
}

struct Subcommand {
    name: &'static str,
    description: &'static str,
    options: &'static [OptionSpec],
}

const SERVICE: OptionSpec = arg("service", "Service name, e.g. api", Kind::Word);
const VERSION: OptionSpec = arg("version", "Version (1.4.2 or v1.4.2)", Kind::Word);
const ID: OptionSpec = arg("id", "Promotion id, e.g. 42", Kind::Id);

const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "promote",
        description: "Promote a version to the next environment",
        options: &[
            SERVICE,
            arg("version", "Version, or latest", Kind::Word),
            opt(
                "to",
                "Target environment (the next one by default)",
                Kind::Word,
                Some("to"),
            ),
            opt(
                "force",
                "Admins: override a window or freeze, with the reason",
                Kind::Text,
                Some("--force"),
            ),
            opt(
                "hotfix",
                "Take the hotfix path (its approvers; outside windows), with the reason",
                Kind::Text,
                Some("--hotfix"),
            ),
        ],
    },
    Subcommand {
        name: "approve",
        description: "Approve a promotion",
        options: &[ID],
    },
    Subcommand {
        name: "reject",
        description: "Reject a promotion",
        options: &[ID, opt("reason", "Why", Kind::Text, None)],
    },
    Subcommand {
        name: "cancel",
        description: "Cancel a promotion that has not started",
        options: &[ID],
    },
    Subcommand {
        name: "retry",
        description: "Retry a failed or interrupted promotion",
        options: &[ID],
    },
    Subcommand {
        name: "rollback",
        description: "Roll an environment back to the previous (or a given) version",
        options: &[
            SERVICE,
            arg("environment", "Environment", Kind::Word),
            opt("to", "Version to roll back to", Kind::Word, Some("to")),
        ],
    },
    Subcommand {
        name: "pause",
        description: "Hold a canary or blue-green rollout before its next step",
        options: &[ID],
    },
    Subcommand {
        name: "resume",
        description: "Let a paused rollout go on",
        options: &[ID],
    },
    Subcommand {
        name: "advance",
        description: "End a rollout's current pause: the next step starts now",
        options: &[ID],
    },
    Subcommand {
        name: "abort",
        description: "Stop a running deploy and roll back",
        options: &[ID, opt("reason", "Why", Kind::Text, None)],
    },
    Subcommand {
        name: "create",
        description: "Record a release without promoting it",
        options: &[
            SERVICE,
            VERSION,
            opt("commit", "Commit SHA", Kind::Word, Some("commit")),
            opt("notes", "Release notes", Kind::Text, Some("notes")),
        ],
    },
    Subcommand {
        name: "status",
        description: "What runs where, and what is in flight",
        options: &[opt("service", "Only this service", Kind::Word, None)],
    },
    Subcommand {
        name: "history",
        description: "Past promotions of a service",
        options: &[
            SERVICE,
            opt("environment", "Only this environment", Kind::Word, None),
            opt("last", "How many (default 10)", Kind::Count, Some("last")),
        ],
    },
    Subcommand {
        name: "windows",
        description: "Release windows: open now, next openings, freezes",
        options: &[opt(
            "environment",
            "Only this environment",
            Kind::Word,
            None,
        )],
    },
    Subcommand {
        name: "freeze",
        description: "Admins: stop promotions from starting for a while",
        options: &[
            arg("target", "Environment, or all", Kind::Word),
            OptionSpec {
                keyword: Some("for"),
                ..arg("for", "How long: 45m, 2h, 1d", Kind::Word)
            },
            opt("reason", "Why", Kind::Text, None),
        ],
    },
    Subcommand {
        name: "unfreeze",
        description: "Admins: lift a freeze",
        options: &[arg("target", "Environment, or all", Kind::Word)],
    },
    Subcommand {
        name: "why",
        description: "What a promotion waits for, or what stopped it",
        options: &[ID],
    },
    Subcommand {
        name: "check",
        description: "Tick an item of a promotion's checklist",
        options: &[ID, arg("item", "Item number, as on the card", Kind::Count)],
    },
    Subcommand {
        name: "dora",
        description: "Delivery metrics: deploys, lead time, change failure rate, time to restore",
        options: &[
            opt("service", "Only this service", Kind::Word, None),
            opt("environment", "Only this environment", Kind::Word, None),
            opt(
                "days",
                "Over how many days (1 to 365, default 30)",
                Kind::Count,
                None,
            ),
        ],
    },
    Subcommand {
        name: "help",
        description: "How to use /release",
        options: &[opt("command", "A command to explain", Kind::Word, None)],
    },
];

/// The `/release` command as Discord registers it.
pub fn release_command() -> CreateCommand {
    SUBCOMMANDS.iter().fold(
        CreateCommand::new("release").description("Promote releases through environments"),
        |command, sub| {
            let option = sub.options.iter().fold(
                CreateCommandOption::new(CommandOptionType::SubCommand, sub.name, sub.description),
                |option, spec| {
                    let kind = match spec.kind {
                        Kind::Word | Kind::Text => CommandOptionType::String,
                        Kind::Id | Kind::Count => CommandOptionType::Integer,
                    };
                    let mut sub_option =
                        CreateCommandOption::new(kind, spec.name, spec.description)
                            .required(spec.required);
                    if matches!(spec.kind, Kind::Id | Kind::Count) {
                        sub_option = sub_option.min_int_value(1);
                    }
                    option.add_sub_option(sub_option)
                },
            );
            command.add_option(option)
        },
    )
}

/// Registers `/release` with a bulk overwrite (PUT), in one guild or globally. Bulk overwrite keeps
/// restarts within Discord's 200 command creates per day.
pub async fn register(http: &Http, guild_id: Option<u64>) -> serenity::Result<()> {
    let commands = vec![release_command()];
    match guild_id {
        Some(guild) => {
            GuildId::new(guild).set_commands(http, commands).await?;
        }
        None => {
            serenity::all::Command::set_global_commands(http, commands).await?;
        }
    }
    Ok(())
}

/// The command text for the options of a `/release` interaction, or a refusal for the person.
pub fn command_text(options: &[CommandDataOption]) -> Result<String, String> {
    let Some(top) = options.first() else {
        return Ok("help".to_string());
    };
    let CommandDataOptionValue::SubCommand(values) = &top.value else {
        return Err(format!(
            "`/release {}` is not a subcommand; try `/release help`",
            top.name
        ));
    };
    let sub = SUBCOMMANDS
        .iter()
        .find(|sub| sub.name == top.name)
        .ok_or_else(|| {
            format!(
                "unknown command `{}`; this bot's commands were registered by a different version — run `shipmate discord register-commands`",
                top.name
            )
        })?;
    let mut words = vec![sub.name.to_string()];
    for spec in sub.options {
        let Some(value) = values.iter().find(|v| v.name == spec.name) else {
            continue;
        };
        let Some(text) = option_text(spec, &value.value)? else {
            continue;
        };
        words.extend(spec.keyword.map(str::to_string));
        words.push(text);
    }
    Ok(words.join(" "))
}

fn option_text(
    spec: &OptionSpec,
    value: &CommandDataOptionValue,
) -> Result<Option<String>, String> {
    let text = match (spec.kind, value) {
        (Kind::Word, CommandDataOptionValue::String(word)) => {
            let word = word.trim();
            if word.chars().any(char::is_whitespace) {
                return Err(format!(
                    "`{}` must be one word, not `{word}`",
                    spec.name
                ));
            }
            word.to_string()
        }
        (Kind::Text, CommandDataOptionValue::String(text)) => {
            let text = text.trim().replace(['"', '“', '”'], "'");
            format!("\"{text}\"")
        }
        (Kind::Id, CommandDataOptionValue::Integer(id)) => format!("#{id}"),
        (Kind::Count, CommandDataOptionValue::Integer(n)) => n.to_string(),
        _ => {
            return Err(format!(
                "`{}` has the wrong type; run `shipmate discord register-commands` to update the command",
                spec.name
            ))
        }
    };
    Ok((!text.is_empty() && text != "\"\"").then_some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::command;

    use serde_json::{json, Value};

    /// A subcommand's options as Discord sends them (the types are not constructible directly).
    fn sub(name: &str, values: Vec<(&str, Value)>) -> Vec<CommandDataOption> {
        let options: Vec<Value> = values
            .into_iter()
            .map(|(name, value)| {
                let mut option = value;
                option["name"] = json!(name);
                option
            })
            .collect();
        let raw = json!([{"name": name, "type": 1, "options": options}]);
        serde_json::from_value(raw).unwrap_or_else(|e| panic!("bad test options: {e}"))
    }

    fn s(text: &str) -> Value {
        json!({"type": 3, "value": text})
    }

    fn int(n: i64) -> Value {
        json!({"type": 4, "value": n})
    }

    #[test]
    fn options_become_the_text_grammar() {
        let cases = [
            (
                sub(
                    "promote",
                    vec![("service", s("api")), ("version", s("1.4.2"))],
                ),
                "promote api 1.4.2",
            ),
            (
                sub(
                    "promote",
                    vec![
                        ("force", s("hotfix for \"INC-7\"")),
                        ("to", s("production")),
                        ("service", s("api")),
                        ("version", s("latest")),
                    ],
                ),
                "promote api latest to production --force \"hotfix for 'INC-7'\"",
            ),
            (sub("approve", vec![("id", int(42))]), "approve #42"),
            (
                sub("reject", vec![("id", int(7)), ("reason", s("not today"))]),
                "reject #7 \"not today\"",
            ),
            (
                sub("history", vec![("service", s("api")), ("last", int(5))]),
                "history api last 5",
            ),
            (
                sub(
                    "freeze",
                    vec![
                        ("target", s("production")),
                        ("for", s("2h")),
                        ("reason", s("incident")),
                    ],
                ),
                "freeze production for 2h \"incident\"",
            ),
            (sub("status", vec![]), "status"),
            (
                sub(
                    "dora",
                    vec![("days", int(7)), ("environment", s("production"))],
                ),
                "dora production 7",
            ),
            (sub("pause", vec![("id", int(42))]), "pause #42"),
            (sub("resume", vec![("id", int(42))]), "resume #42"),
            (sub("advance", vec![("id", int(42))]), "advance #42"),
            (sub("abort", vec![("id", int(42))]), "abort #42"),
            (
                sub(
                    "abort",
                    vec![("reason", s("p99 \"over\" 2s")), ("id", int(42))],
                ),
                "abort #42 \"p99 'over' 2s\"",
            ),
            (
                sub("abort", vec![("id", int(42)), ("reason", s("   "))]),
                "abort #42",
            ),
        ];
        for (options, expected) in cases {
            assert_eq!(command_text(&options).as_deref(), Ok(expected));
        }
    }

    #[test]
    fn every_subcommand_parses_with_its_required_options() {
        for spec in SUBCOMMANDS {
            let values = spec
                .options
                .iter()
                .filter(|o| o.required)
                .map(|o| {
                    let value = match (o.kind, o.name) {
                        (Kind::Id | Kind::Count, _) => int(3),
                        (_, "version") => s("1.2.3"),
                        (_, "for") => s("2h"),
                        (_, "target") => s("all"),
                        _ => s("api"),
                    };
                    (o.name, value)
                })
                .collect();
            let text = command_text(&sub(spec.name, values)).expect(spec.name);
            let parsed = command::parse(&text);
            assert!(parsed.is_ok(), "{text}: {parsed:?}");
            assert_eq!(parsed.map(|c| c.name()).ok(), Some(spec.name));
        }
    }

    #[test]
    fn a_word_option_with_spaces_is_refused_by_name() {
        let options = sub(
            "promote",
            vec![("service", s("api to production")), ("version", s("1.0.0"))],
        );
        let error = command_text(&options).unwrap_err();
        assert!(error.contains("`service` must be one word"), "{error}");
    }

    #[test]
    fn the_definition_has_every_subcommand_of_the_grammar() {
        let json = serde_json::to_value(release_command()).unwrap_or_default();
        let names: Vec<&str> = json["options"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["name"].as_str()).collect())
            .unwrap_or_default();
        let grammar: Vec<&str> = command::names().collect();
        assert!(grammar.contains(&"abort"), "{grammar:?}");
        for name in &grammar {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        for name in &names {
            assert!(grammar.contains(name), "{name} is not in the grammar");
        }
    }

    #[test]
    fn rollout_controls_take_a_required_id_and_abort_an_optional_reason() {
        let json = serde_json::to_value(release_command()).unwrap_or_default();
        let options = |name: &str| -> Vec<(String, i64, bool)> {
            json["options"]
                .as_array()
                .and_then(|subs| subs.iter().find(|sub| sub["name"] == name))
                .and_then(|sub| sub["options"].as_array())
                .map(|options| {
                    options
                        .iter()
                        .map(|o| {
                            let name = o["name"].as_str().unwrap_or_default().to_string();
                            (name, o["type"].as_i64().unwrap_or(0), o["required"] == true)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let id = ("id".to_string(), 4, true);
        for name in ["pause", "resume", "advance"] {
            assert_eq!(options(name), std::slice::from_ref(&id), "{name}");
        }
        assert_eq!(options("abort"), [id, ("reason".to_string(), 3, false)]);
    }

    /// Adds up what Discord counts against a command's size: every `name`, `description` and
    /// choice `value` in the definition.
    fn counted_chars(value: &Value) -> usize {
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(key, inner)| match (key.as_str(), inner) {
                    ("name" | "description" | "value", Value::String(text)) => text.chars().count(),
                    _ => counted_chars(inner),
                })
                .sum(),
            Value::Array(items) => items.iter().map(counted_chars).sum(),
            _ => 0,
        }
    }

    /// Discord refuses the whole registration (HTTP 400) when one of these is broken
    /// (discord.com/developers/docs/interactions/application-commands): at most 25 options per
    /// level, names of 1–32 lower-case characters, descriptions of 1–100, required options
    /// before optional ones, and 4,000 characters altogether (the older, stricter figure).
    #[test]
    fn the_definition_keeps_discords_limits() {
        let json = serde_json::to_value(release_command()).unwrap_or_default();
        let subs = json["options"].as_array().cloned().unwrap_or_default();
        assert!(
            !subs.is_empty() && subs.len() <= 25,
            "{} subcommands",
            subs.len()
        );
        let mut all = vec![&json];
        all.extend(subs.iter());
        for sub in &subs {
            let options = sub["options"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(options.len() <= 25, "{}", sub["name"]);
            let first_optional = options.iter().position(|o| o["required"] != true);
            let last_required = options.iter().rposition(|o| o["required"] == true);
            if let (Some(optional), Some(required)) = (first_optional, last_required) {
                assert!(
                    required < optional,
                    "{}: required after optional",
                    sub["name"]
                );
            }
            all.extend(options.iter());
        }
        for item in all {
            let name = item["name"].as_str().unwrap_or_default();
            let description = item["description"].as_str().unwrap_or_default();
            assert!((1..=32).contains(&name.chars().count()), "{name}");
            assert_eq!(name, name.to_lowercase(), "{name}");
            assert!(!name.contains(char::is_whitespace), "{name}");
            assert!(
                (1..=100).contains(&description.chars().count()),
                "{name}: {description}"
            );
        }
        let total = counted_chars(&json);
        // About 1,600 today; the floor shows the walk really counted the definition.
        assert!((1_000..=4_000).contains(&total), "{total} characters");
    }
}
