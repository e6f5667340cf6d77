//! The chat command grammar of SPEC §3: one parser shared by Slack, Discord, the HTTP API and the
//! scheduler. Pure: text in, a typed [`Command`] or a [`ParseError`] (message + usage line) out.

use std::time::Duration;

use crate::domain::dora;
use crate::domain::duration::parse_duration;
use crate::domain::manifest::{BadDigest, Manifest};
use crate::domain::version::{Version, VersionSpec};

pub type PromotionId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeTarget {
    All,
    Environment(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help {
        topic: Option<String>,
    },
    Create {
        service: String,
        version: Version,
        commit: Option<String>,
        notes: Option<String>,
        /// Digest, commit time, changes (the chat grammar gives only the digest).
        manifest: Manifest,
    },
    Promote {
        service: String,
        version: VersionSpec,
        to: Option<String>,
        force_reason: Option<String>,
        /// `--hotfix "<reason>"` (SPEC §10).
        hotfix_reason: Option<String>,
    },
    Approve {
        id: PromotionId,
    },
    Reject {
        id: PromotionId,
        reason: Option<String>,
    },
    Cancel {
        id: PromotionId,
    },
    Retry {
        id: PromotionId,
    },
    Rollback {
        service: String,
        environment: String,
        to: Option<Version>,
    },
    Status {
        service: Option<String>,
    },
    History {
        service: String,
        environment: Option<String>,
        last: Option<u32>,
    },
    Windows {
        environment: Option<String>,
    },
    Freeze {
        target: FreezeTarget,
        duration: Duration,
        reason: Option<String>,
    },
    Unfreeze {
        target: FreezeTarget,
    },
    /// Hold a canary or blue-green rollout before its next step (checks keep running).
    Pause {
        id: PromotionId,
    },
    Resume {
        id: PromotionId,
    },
    /// End the current pause now: the next step starts.
    Advance {
        id: PromotionId,
    },
    /// Stop the running deploy (cancel the backend) and roll back.
    Abort {
        id: PromotionId,
        reason: Option<String>,
    },
    /// What a promotion waits for, or what stopped it (SPEC §10).
    Why {
        id: PromotionId,
    },
    /// Tick checklist item `item` (from 1) of a promotion (SPEC §10).
    Check {
        id: PromotionId,
        item: u32,
    },
    /// Delivery metrics (SPEC §9). A lone word may be a service or an environment: the engine
    /// knows which (the parser does not know the configuration).
    Dora {
        service: Option<String>,
        environment: Option<String>,
        days: Option<u32>,
    },
}

impl Command {
    /// The canonical command name (aliases resolve to it): "promote", "approve", ...
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help { .. } => "help",
            Command::Create { .. } => "create",
            Command::Promote { .. } => "promote",
            Command::Approve { .. } => "approve",
            Command::Reject { .. } => "reject",
            Command::Cancel { .. } => "cancel",
            Command::Retry { .. } => "retry",
            Command::Rollback { .. } => "rollback",
            Command::Status { .. } => "status",
            Command::History { .. } => "history",
            Command::Windows { .. } => "windows",
            Command::Freeze { .. } => "freeze",
            Command::Unfreeze { .. } => "unfreeze",
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::Advance { .. } => "advance",
            Command::Abort { .. } => "abort",
            Command::Why { .. } => "why",
            Command::Check { .. } => "check",
            Command::Dora { .. } => "dora",
        }
    }
}

/// What went wrong, and the usage line of the command being parsed, shown together to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}\nUsage: {usage}")]
pub struct ParseError {
    pub message: String,
    pub usage: &'static str,
}

/// Shown when the command itself is unknown: the way out is the command list.
const HELP_USAGE: &str = "/release help";

/// Longest piece of user input echoed back in a message; keeps replies short whatever was pasted.
const MAX_ECHO_CHARS: usize = 40;

/// Everything the parser and the help text know about one command, in one row.
struct CommandInfo {
    name: &'static str,
    aliases: &'static [&'static str],
    usage: &'static str,
    summary: &'static str,
    details: &'static str,
    example: &'static str,
    parse: fn(Args<'_>) -> Result<Command, ParseError>,
}

const COMMANDS: [CommandInfo; 20] = [
    CommandInfo {
        name: "help",
        aliases: &[],
        usage: "/release help [command]",
        summary: "list the commands, or explain one",
        details: "Without a command, lists every command. With one, shows its usage and an example.",
        example: "/release help promote",
        parse: parse_help,
    },
    CommandInfo {
        name: "create",
        aliases: &["prepare"],
        usage: "/release create <service> <version> [commit <sha>] [digest sha256:<hex>] [notes <text...>]",
        summary: "register a release before promoting it (alias: prepare)",
        details: "Records <service> at <version>, optionally with the commit it was built from and \
                  release notes; everything after `notes` is the notes text. `promote` also creates \
                  the release if it does not exist yet.",
        example: "/release create api 1.4.2 commit 3f9a2c1 notes fixes the login timeout",
        parse: parse_create,
    },
    CommandInfo {
        name: "promote",
        aliases: &[],
        usage: "/release promote <service> <version> [to <env>] [--force \"<reason>\"] [--hotfix \"<reason>\"]",
        summary: "move a release into the next environment of its pipeline",
        details: "Requests a promotion of <service> <version> into the next environment of its \
                  pipeline; `to <env>` names that environment explicitly. <version> may be `latest`. \
                  Admins may override a window or freeze with --force and a reason, which is audited. \
                  Where an environment has a hotfix path, --hotfix and a reason asks its approvers \
                  instead and starts outside release windows (never in a freeze).",
        example: "/release promote api 1.4.2 to production",
        parse: parse_promote,
    },
    CommandInfo {
        name: "approve",
        aliases: &[],
        usage: "/release approve <#id>",
        summary: "approve a promotion that awaits approval",
        details: "Counts your approval; once enough approvers agree, the promotion starts, or queues \
                  until its window opens.",
        example: "/release approve #42",
        parse: parse_approve,
    },
    CommandInfo {
        name: "reject",
        aliases: &[],
        usage: "/release reject <#id> [reason...]",
        summary: "reject a promotion that awaits approval",
        details: "One reject from an eligible approver stops the promotion; everything after the id \
                  is the reason.",
        example: "/release reject #42 needs the database migration first",
        parse: parse_reject,
    },
    CommandInfo {
        name: "cancel",
        aliases: &[],
        usage: "/release cancel <#id>",
        summary: "cancel a promotion that has not started deploying",
        details: "Works while the promotion awaits approval, is approved or is queued for a window.",
        example: "/release cancel #42",
        parse: parse_cancel,
    },
    CommandInfo {
        name: "retry",
        aliases: &[],
        usage: "/release retry <#id>",
        summary: "run an interrupted or failed promotion again",
        details: "Starts the same deployment again, for promotions that failed or were interrupted.",
        example: "/release retry #42",
        parse: parse_retry,
    },
    CommandInfo {
        name: "rollback",
        aliases: &[],
        usage: "/release rollback <service> <env> [to <version>]",
        summary: "deploy the previous version of an environment again",
        details: "Rolls <env> back to the version it ran before, or to the version named with `to`.",
        example: "/release rollback api production to 1.4.1",
        parse: parse_rollback,
    },
    CommandInfo {
        name: "status",
        aliases: &[],
        usage: "/release status [<service>]",
        summary: "show which version runs where and what is in flight",
        details: "Lists each environment's version and active promotions, for one service or all.",
        example: "/release status api",
        parse: parse_status,
    },
    CommandInfo {
        name: "history",
        aliases: &[],
        usage: "/release history <service> [<env>] [last <n>]",
        summary: "list past promotions of a service",
        details: "Newest first, optionally for one environment; `last <n>` limits the list to n \
                  promotions (1 to 100).",
        example: "/release history api production last 10",
        parse: parse_history,
    },
    CommandInfo {
        name: "windows",
        aliases: &[],
        usage: "/release windows [<env>]",
        summary: "show release windows and freezes",
        details: "Shows whether each window is open now, when it opens next, and active freezes.",
        example: "/release windows production",
        parse: parse_windows,
    },
    CommandInfo {
        name: "freeze",
        aliases: &[],
        usage: "/release freeze <env|all> for <duration> [reason...]",
        summary: "stop promotions from starting for a while",
        details: "Blocks promotions into <env>, or into every environment with `all`, for the \
                  duration (45s, 30m, 2h, 1d, 1h30m); everything after the duration is the reason.",
        example: "/release freeze production for 2h incident 512",
        parse: parse_freeze,
    },
    CommandInfo {
        name: "unfreeze",
        aliases: &[],
        usage: "/release unfreeze <env|all>",
        summary: "lift a freeze early",
        details: "Ends the ad-hoc freeze on <env>, or on every environment with `all`.",
        example: "/release unfreeze production",
        parse: parse_unfreeze,
    },
    CommandInfo {
        name: "pause",
        aliases: &[],
        usage: "/release pause <#id>",
        summary: "hold a canary or blue-green rollout before its next step",
        details: "The running step finishes and its checks keep running, but the next step waits \
                  until someone resumes or advances the rollout.",
        example: "/release pause #42",
        parse: parse_pause,
    },
    CommandInfo {
        name: "resume",
        aliases: &[],
        usage: "/release resume <#id>",
        summary: "let a paused rollout go on",
        details: "Lifts a hold set with pause: the rollout goes on and takes its next step when \
                  the wait between steps is over.",
        example: "/release resume #42",
        parse: parse_resume,
    },
    CommandInfo {
        name: "advance",
        aliases: &[],
        usage: "/release advance <#id>",
        summary: "end the current pause of a rollout now",
        details: "Cuts short the wait between two steps of a canary or blue-green rollout: the \
                  next step starts now.",
        example: "/release advance #42",
        parse: parse_advance,
    },
    CommandInfo {
        name: "abort",
        aliases: &[],
        usage: "/release abort <#id> [reason...]",
        summary: "stop a running deploy and roll back",
        details: "Cancels the deploy in the backend and rolls the environment back to what it ran \
                  before; everything after the id is the reason.",
        example: "/release abort #42 error rate doubled on the canary",
        parse: parse_abort,
    },
    CommandInfo {
        name: "why",
        aliases: &[],
        usage: "/release why <#id>",
        summary: "say what a promotion waits for, or what stopped it",
        details: "Lists every reason the promotion waits or was stopped — approvals missing (and \
                  who may give them), open checklist items, a closed window, a freeze, another \
                  promotion in the environment, a digest that was not the one tested, a failed \
                  check — each with what would unblock it.",
        example: "/release why #42",
        parse: parse_why,
    },
    CommandInfo {
        name: "check",
        aliases: &["tick"],
        usage: "/release check <#id> <item number>",
        summary: "tick an item of a promotion's checklist",
        details: "Environments may ask for a checklist before anyone approves; this ticks item \
                  <n> (numbered from 1 as on the card), with your name on it in the audit trail.",
        example: "/release check #42 1",
        parse: parse_check,
    },
    CommandInfo {
        name: "dora",
        aliases: &[],
        usage: "/release dora [<service>] [<env>] [<days>]",
        summary: "show delivery metrics: deploys, lead time, change failure rate, time to restore",
        details: "Shows the four delivery metrics of each environment over the last <days> days \
                  (1 to 365, default 30), for one service or all (`all`); an environment alone, \
                  e.g. `dora production 7`, shows that environment of every service.",
        example: "/release dora api production 30",
        parse: parse_dora,
    },
];

/// Parses one command line as typed in chat (with or without the leading `/release`).
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let body = strip_release_prefix(text);
    let tokens = tokenize(body).map_err(|message| ParseError {
        message,
        usage: body
            .split_whitespace()
            .next()
            .and_then(usage)
            .unwrap_or(HELP_USAGE),
    })?;
    let Some((name, rest)) = tokens.split_first() else {
        return Ok(Command::Help { topic: None });
    };
    let info = find_command(name).ok_or_else(|| unknown_command(name))?;
    (info.parse)(Args::new(rest, info.usage))
}

/// Every command's canonical name, in help order: what each front end must offer.
pub fn names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|info| info.name)
}

/// The usage line of one command name (or alias), e.g. "/release promote <service> <version> [to <env>] [--force \"<reason>\"]".
pub fn usage(name: &str) -> Option<&'static str> {
    find_command(name).map(|info| info.usage)
}

/// Help text: all usage lines with a one-line description each when topic is None; for a known command its usage plus a short explanation with an example; for an unknown topic, a line saying so followed by the full list.
pub fn help_text(topic: Option<&str>) -> String {
    let topic = topic.map(str::trim).filter(|topic| !topic.is_empty());
    let Some(topic) = topic else {
        return command_list();
    };
    match find_command(topic) {
        Some(info) if info.name.eq_ignore_ascii_case(topic) => command_details(info),
        Some(info) => format!(
            "`{}` is another name for `{}`.\n{}",
            topic.to_lowercase(),
            info.name,
            command_details(info)
        ),
        None => format!("There is no command `{}`.\n{}", echo(topic), command_list()),
    }
}

fn command_list() -> String {
    let mut text =
        String::from("Commands (for details on one, type e.g. /release help promote):\n");
    for info in &COMMANDS {
        text.push_str(&format!("{} — {}\n", info.usage, info.summary));
    }
    text.push_str(
        "Ids look like #42, versions like 1.4.2 or v1.4.2, durations like 30m, 2h or 1h30m.",
    );
    text
}

fn command_details(info: &CommandInfo) -> String {
    format!(
        "{}\n{}\nExample: {}",
        info.usage, info.details, info.example
    )
}

fn find_command(name: &str) -> Option<&'static CommandInfo> {
    COMMANDS.iter().find(|info| {
        info.name.eq_ignore_ascii_case(name)
            || info
                .aliases
                .iter()
                .any(|alias| alias.eq_ignore_ascii_case(name))
    })
}

fn unknown_command(name: &str) -> ParseError {
    let names: Vec<&str> = names().collect();
    ParseError {
        message: format!(
            "unknown command `{}`: try one of {}",
            echo(name),
            names.join(", ")
        ),
        usage: HELP_USAGE,
    }
}

/// Slack strips its slash command but Discord, the HTTP API and people typing it out may not.
fn strip_release_prefix(text: &str) -> &str {
    let trimmed = text.trim();
    let first_word_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let (first_word, rest) = trimmed.split_at(first_word_end);
    if first_word.eq_ignore_ascii_case("/release") || first_word.eq_ignore_ascii_case("release") {
        rest.trim_start()
    } else {
        trimmed
    }
}

/// Phones and Slack turn `"` into “ ”, so any of the three opens or closes a quoted string.
fn is_quote(ch: char) -> bool {
    matches!(ch, '"' | '“' | '”')
}

/// Splits on whitespace; a quoted string (even an empty one) is part of one token, quotes removed.
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    // `Some` as soon as a token has started, so `""` still yields an (empty) token.
    let mut current: Option<String> = None;
    let mut chars = text.char_indices();
    while let Some((index, ch)) = chars.next() {
        if is_quote(ch) {
            let token = current.get_or_insert_with(String::new);
            let closed = chars.by_ref().any(|(_, inner)| {
                let is_end = is_quote(inner);
                if !is_end {
                    token.push(inner);
                }
                is_end
            });
            if !closed {
                let fragment = text.get(index..).unwrap_or_default();
                return Err(format!(
                    "unclosed quote: `{}` needs a closing quote",
                    echo(fragment.trim_end())
                ));
            }
        } else if ch.is_whitespace() {
            tokens.extend(current.take());
        } else {
            current.get_or_insert_with(String::new).push(ch);
        }
    }
    tokens.extend(current);
    Ok(tokens)
}

/// User input as it appears inside a message: shortened, so a pasted novel stays a short reply.
fn echo(input: &str) -> String {
    if input.chars().count() <= MAX_ECHO_CHARS {
        input.to_string()
    } else {
        let head: String = input.chars().take(MAX_ECHO_CHARS).collect();
        format!("{head}…")
    }
}

fn is_word(token: &str, word: &str) -> bool {
    token.eq_ignore_ascii_case(word)
}

fn never_reserved(_: &str) -> bool {
    false
}

/// The arguments after the command name, consumed left to right.
struct Args<'a> {
    tokens: std::iter::Peekable<std::slice::Iter<'a, String>>,
    usage: &'static str,
}

impl<'a> Args<'a> {
    fn new(tokens: &'a [String], usage: &'static str) -> Self {
        Args {
            tokens: tokens.iter().peekable(),
            usage,
        }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            message: message.into(),
            usage: self.usage,
        }
    }

    fn next(&mut self) -> Option<&'a str> {
        self.tokens.next().map(String::as_str)
    }

    fn peek(&mut self) -> Option<&'a str> {
        self.tokens.peek().map(|token| token.as_str())
    }

    /// Takes a required argument. A keyword of the command in its place means the argument was
    /// left out (`promote api to prod`), which deserves "missing <version>", not "`to` is not a version".
    fn required(
        &mut self,
        is_keyword: fn(&str) -> bool,
        missing: impl FnOnce() -> String,
    ) -> Result<&'a str, ParseError> {
        match self.peek() {
            Some(token) if !is_keyword(token) => {
                self.tokens.next();
                Ok(token)
            }
            _ => Err(self.error(missing())),
        }
    }

    /// All remaining tokens joined by single spaces; `None` when nothing (or only blanks) is left.
    fn rest(&mut self) -> Option<String> {
        let words: Vec<&str> = self.tokens.by_ref().map(String::as_str).collect();
        let joined = words.join(" ");
        let trimmed = joined.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_string())
    }

    fn unexpected(&self, token: &str, expected: &str) -> ParseError {
        self.error(format!("unexpected `{}`: {expected}", echo(token)))
    }

    /// Refuses leftovers rather than silently ignoring what the person typed.
    fn finish(mut self, expected: &str) -> Result<(), ParseError> {
        match self.next() {
            Some(token) => Err(self.unexpected(token, expected)),
            None => Ok(()),
        }
    }

    fn id(&mut self, verb: &str) -> Result<PromotionId, ParseError> {
        let token = self.required(never_reserved, || {
            format!("missing <#id>: which promotion should be {verb}? e.g. #42")
        })?;
        parse_id(token).ok_or_else(|| {
            self.error(format!(
                "`{}` is not a promotion id: write it like #42",
                echo(token)
            ))
        })
    }

    fn version(&self, token: &str) -> Result<Version, ParseError> {
        token
            .parse()
            .map_err(|error| self.error(format!("{error}")))
    }
}

fn parse_id(token: &str) -> Option<PromotionId> {
    let digits = token.strip_prefix('#').unwrap_or(token);
    // i64's FromStr also takes "+42"; ids are written with digits only.
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|id: &PromotionId| *id > 0)
}

fn parse_help(mut args: Args<'_>) -> Result<Command, ParseError> {
    let topic = args.next().map(str::to_lowercase);
    args.finish("help takes at most one command name, e.g. help promote")?;
    Ok(Command::Help { topic })
}

fn is_create_option(token: &str) -> bool {
    is_word(token, "commit") || is_word(token, "digest") || is_word(token, "notes")
}

fn parse_create(mut args: Args<'_>) -> Result<Command, ParseError> {
    let service = args.required(is_create_option, || {
        "missing <service>: which service is the release for?".to_string()
    })?;
    let version_token = args.required(is_create_option, || {
        format!("missing <version>: which version of {service} should be created?")
    })?;
    let version = args.version(version_token)?;
    let mut commit = None;
    let mut notes = None;
    let mut manifest = Manifest::default();
    while let Some(token) = args.next() {
        if is_word(token, "digest") {
            if manifest.digest.is_some() {
                return Err(args.error("`digest` given twice: give one"));
            }
            let digest = args.required(is_create_option, || {
                "`digest` needs the artifact's digest, e.g. digest sha256:9f86d08…".to_string()
            })?;
            manifest.digest = Some(
                digest
                    .parse()
                    .map_err(|e: BadDigest| args.error(e.to_string()))?,
            );
        } else if is_word(token, "commit") {
            if commit.is_some() {
                return Err(args.error("`commit` given twice: give one sha"));
            }
            let sha = args.required(is_create_option, || {
                "`commit` needs a sha, e.g. commit 3f9a2c1".to_string()
            })?;
            commit = Some(parse_commit(sha).ok_or_else(|| {
                args.error(format!(
                    "`{}` is not a commit sha: write 7 to 40 hex characters, e.g. 3f9a2c1",
                    echo(sha)
                ))
            })?);
        } else if is_word(token, "notes") {
            // Notes are free text, so they swallow the rest of the line, keywords included.
            let text = args.rest().ok_or_else(|| {
                args.error("`notes` needs text, e.g. notes fixes the login timeout")
            })?;
            notes = Some(text);
        } else {
            return Err(args.unexpected(
                token,
                "after the version, create takes only `commit <sha>`, `digest sha256:<hex>` and `notes <text...>`",
            ));
        }
    }
    Ok(Command::Create {
        service: service.to_string(),
        version,
        commit,
        notes,
        manifest,
    })
}

/// Git shows and accepts shas in lower case; normalising keeps links and lookups consistent.
fn parse_commit(sha: &str) -> Option<String> {
    let is_sha = (7..=40).contains(&sha.len()) && sha.bytes().all(|byte| byte.is_ascii_hexdigit());
    is_sha.then(|| sha.to_ascii_lowercase())
}

/// Recognises `--<name>` and `--<name>=<reason>` (`--force`, `--hotfix`). Phones autocorrect
/// `--` into an em or en dash, so those count too. `None`: not that flag; `Some(None)`: the
/// reason is the next token.
fn reason_flag<'t>(token: &'t str, name: &str) -> Option<Option<&'t str>> {
    let without_dashes = ["--", "—", "–"]
        .iter()
        .find_map(|dashes| token.strip_prefix(dashes))?;
    let word = without_dashes.get(..name.len())?;
    if !word.eq_ignore_ascii_case(name) {
        return None;
    }
    match without_dashes.get(name.len()..)? {
        "" => Some(None),
        after => after.strip_prefix('=').map(Some),
    }
}

/// The flags of `promote` that take a reason.
const PROMOTE_FLAGS: [&str; 2] = ["force", "hotfix"];

fn is_promote_option(token: &str) -> bool {
    is_word(token, "to")
        || PROMOTE_FLAGS
            .iter()
            .any(|flag| reason_flag(token, flag).is_some())
}

fn needs_reason(flag: &str) -> String {
    let example = match flag {
        "hotfix" => "fix for incident 512",
        _ => "hotfix for incident 512",
    };
    format!("`--{flag}` needs a reason, e.g. --{flag} \"{example}\"")
}

/// The reason after `--<flag>`, given inline (`--force=…`) or as the next token.
fn flag_reason(
    args: &mut Args<'_>,
    flag: &str,
    inline: Option<&str>,
    given: &Option<String>,
) -> Result<String, ParseError> {
    if given.is_some() {
        return Err(args.error(format!("`--{flag}` given twice: give one reason")));
    }
    let reason = match inline {
        Some(reason) => reason.to_string(),
        None => args
            .required(is_promote_option, || needs_reason(flag))?
            .to_string(),
    };
    if reason.trim().is_empty() {
        return Err(args.error(needs_reason(flag)));
    }
    Ok(reason.trim().to_string())
}

fn parse_promote(mut args: Args<'_>) -> Result<Command, ParseError> {
    let service = args.required(is_promote_option, || {
        "missing <service>: which service should be promoted?".to_string()
    })?;
    let version_token = args.required(is_promote_option, || {
        format!("missing <version>: which version of {service} should be promoted?")
    })?;
    let version: VersionSpec = version_token
        .parse()
        .map_err(|error| args.error(format!("{error}")))?;
    let mut to = None;
    let mut force_reason = None;
    let mut hotfix_reason = None;
    while let Some(token) = args.next() {
        if is_word(token, "to") {
            if to.is_some() {
                return Err(args.error("`to` given twice: name one environment"));
            }
            let environment = args.required(is_promote_option, || {
                "`to` needs an environment, e.g. to production".to_string()
            })?;
            to = Some(environment.to_string());
        } else if let Some(inline) = reason_flag(token, "force") {
            force_reason = Some(flag_reason(&mut args, "force", inline, &force_reason)?);
        } else if let Some(inline) = reason_flag(token, "hotfix") {
            hotfix_reason = Some(flag_reason(&mut args, "hotfix", inline, &hotfix_reason)?);
        } else {
            return Err(args.unexpected(
                token,
                "after the version, promote takes only `to <env>`, `--force \"<reason>\"` \
                 and `--hotfix \"<reason>\"` (quote a reason of several words)",
            ));
        }
    }
    if force_reason.is_some() && hotfix_reason.is_some() {
        return Err(args.error(
            "`--force` and `--hotfix` don't go together: --force overrides every gate, --hotfix takes the hotfix approvals; choose one",
        ));
    }
    Ok(Command::Promote {
        service: service.to_string(),
        version,
        to,
        force_reason,
        hotfix_reason,
    })
}

fn parse_why(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("explained")?;
    args.finish("why takes only a promotion id, e.g. why #42")?;
    Ok(Command::Why { id })
}

fn parse_check(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("ticked")?;
    let item = args.required(never_reserved, || {
        "missing <item number>: which checklist item? e.g. check #42 1".to_string()
    })?;
    let item = item
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            args.error(format!(
                "`{}` is not an item number: the card numbers them from 1",
                echo(item)
            ))
        })?;
    args.finish("check takes a promotion id and one item number, e.g. check #42 1")?;
    Ok(Command::Check { id, item })
}

fn parse_approve(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("approved")?;
    args.finish("approve takes only a promotion id, e.g. approve #42")?;
    Ok(Command::Approve { id })
}

fn parse_reject(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("rejected")?;
    let reason = args.rest();
    Ok(Command::Reject { id, reason })
}

fn parse_cancel(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("cancelled")?;
    args.finish("cancel takes only a promotion id, e.g. cancel #42")?;
    Ok(Command::Cancel { id })
}

fn parse_retry(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("retried")?;
    args.finish("retry takes only a promotion id, e.g. retry #42")?;
    Ok(Command::Retry { id })
}

fn parse_pause(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("paused")?;
    args.finish("pause takes only a promotion id, e.g. pause #42")?;
    Ok(Command::Pause { id })
}

fn parse_resume(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("resumed")?;
    args.finish("resume takes only a promotion id, e.g. resume #42")?;
    Ok(Command::Resume { id })
}

fn parse_advance(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("advanced")?;
    args.finish("advance takes only a promotion id, e.g. advance #42")?;
    Ok(Command::Advance { id })
}

fn parse_abort(mut args: Args<'_>) -> Result<Command, ParseError> {
    let id = args.id("aborted")?;
    let reason = args.rest();
    Ok(Command::Abort { id, reason })
}

fn is_to(token: &str) -> bool {
    is_word(token, "to")
}

fn parse_rollback(mut args: Args<'_>) -> Result<Command, ParseError> {
    let service = args.required(is_to, || {
        "missing <service>: which service should be rolled back?".to_string()
    })?;
    let environment = args.required(is_to, || {
        format!("missing <env>: which environment of {service} should be rolled back?")
    })?;
    let to = match args.next() {
        None => None,
        Some(token) if is_to(token) => {
            let version_token = args.required(never_reserved, || {
                "`to` needs a version, e.g. to 1.4.1".to_string()
            })?;
            Some(args.version(version_token)?)
        }
        Some(token) => {
            return Err(args.unexpected(
                token,
                "after the environment, rollback takes only `to <version>`",
            ))
        }
    };
    args.finish("after the environment, rollback takes only `to <version>`")?;
    Ok(Command::Rollback {
        service: service.to_string(),
        environment: environment.to_string(),
        to,
    })
}

fn parse_status(mut args: Args<'_>) -> Result<Command, ParseError> {
    let service = args.next().map(str::to_string);
    args.finish("status takes at most one service, e.g. status api")?;
    Ok(Command::Status { service })
}

fn is_last(token: &str) -> bool {
    is_word(token, "last")
}

/// Largest `last <n>`: a chat reply with more promotions than this is unreadable anyway.
const MAX_HISTORY: u32 = 100;

fn parse_history(mut args: Args<'_>) -> Result<Command, ParseError> {
    let service = args.required(is_last, || {
        "missing <service>: which service's history should be shown?".to_string()
    })?;
    let mut environment = None;
    let mut last = None;
    while let Some(token) = args.next() {
        if is_last(token) {
            if last.is_some() {
                return Err(args.error("`last` given twice: give one number"));
            }
            let count = args.required(never_reserved, || {
                format!("`last` needs a number from 1 to {MAX_HISTORY}, e.g. last 10")
            })?;
            last = Some(parse_count(count).ok_or_else(|| {
                args.error(format!(
                    "`{}` is not a count for `last`: write a number from 1 to {MAX_HISTORY}",
                    echo(count)
                ))
            })?);
        } else if environment.is_none() {
            environment = Some(token.to_string());
        } else {
            return Err(args.unexpected(
                token,
                "history takes one environment and `last <n>`, e.g. history api production last 10",
            ));
        }
    }
    Ok(Command::History {
        service: service.to_string(),
        environment,
        last,
    })
}

fn parse_count(token: &str) -> Option<u32> {
    if !token.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    token
        .parse()
        .ok()
        .filter(|count| (1..=MAX_HISTORY).contains(count))
}

fn parse_windows(mut args: Args<'_>) -> Result<Command, ParseError> {
    let environment = args.next().map(str::to_string);
    args.finish("windows takes at most one environment, e.g. windows production")?;
    Ok(Command::Windows { environment })
}

fn freeze_target(token: &str) -> FreezeTarget {
    if is_word(token, "all") {
        FreezeTarget::All
    } else {
        FreezeTarget::Environment(token.to_string())
    }
}

fn is_for(token: &str) -> bool {
    is_word(token, "for")
}

fn parse_freeze(mut args: Args<'_>) -> Result<Command, ParseError> {
    let target_token = args.required(is_for, || {
        "missing <env|all>: which environment should be frozen? (or all)".to_string()
    })?;
    let target = echo(target_token);
    match args.next() {
        Some(token) if is_for(token) => {}
        Some(token) if parse_duration(token).is_ok() => {
            return Err(args.error(format!(
                "missing `for` before `{}`: write freeze {target} for {}",
                echo(token),
                echo(token)
            )))
        }
        Some(token) => {
            return Err(args.error(format!(
                "expected `for <duration>` after `{target}`, got `{}`: e.g. freeze {target} for 2h",
                echo(token)
            )))
        }
        None => {
            return Err(args.error(format!(
                "missing `for <duration>`: how long should {target} stay frozen? e.g. for 2h"
            )))
        }
    }
    let duration = freeze_duration(&mut args)?;
    let reason = args.rest();
    Ok(Command::Freeze {
        target: freeze_target(target_token),
        duration,
        reason,
    })
}

/// Reads the duration after `for`. People write `1h 30m` with a space too, so following tokens
/// join the duration as long as the whole still reads as one; the rest is the reason.
fn freeze_duration(args: &mut Args<'_>) -> Result<Duration, ParseError> {
    let first = args.required(never_reserved, || {
        "`for` needs a duration, e.g. for 2h".to_string()
    })?;
    let mut duration = parse_duration(first).map_err(|error| args.error(format!("{error}")))?;
    let mut written = first.to_string();
    while let Some(next) = args.peek() {
        let longer = format!("{written} {next}");
        match parse_duration(&longer) {
            Ok(longer_duration) => {
                duration = longer_duration;
                written = longer;
                args.next();
            }
            Err(_) => break,
        }
    }
    Ok(duration)
}

/// `[<service>] [<env>] [<days>]`: up to two words and a number of days, in that order; `all`
/// as the service means every service.
fn parse_dora(mut args: Args<'_>) -> Result<Command, ParseError> {
    let mut words = Vec::new();
    let mut days = None;
    while let Some(token) = args.next() {
        let is_days = token.starts_with(|c: char| c.is_ascii_digit());
        if is_days && days.is_some() {
            return Err(args.error("days given twice: give one number, e.g. dora api 30"));
        } else if days.is_some() {
            return Err(args.unexpected(
                token,
                "the number of days comes last, e.g. dora api production 30",
            ));
        } else if is_days {
            days = Some(dora::parse_days(token).map_err(|e| args.error(e.to_string()))?);
        } else if words.len() < 2 {
            words.push(token);
        } else {
            return Err(args.unexpected(
                token,
                "dora takes a service, an environment and a number of days, e.g. dora api production 30",
            ));
        }
    }
    let mut words = words.into_iter().map(str::to_string);
    let service = words.next().filter(|word| !is_word(word, "all"));
    Ok(Command::Dora {
        service,
        environment: words.next(),
        days,
    })
}

fn parse_unfreeze(mut args: Args<'_>) -> Result<Command, ParseError> {
    let target = args.required(never_reserved, || {
        "missing <env|all>: which environment should be unfrozen? (or all)".to_string()
    })?;
    let target = freeze_target(target);
    args.finish("unfreeze takes only one environment or all, e.g. unfreeze production")?;
    Ok(Command::Unfreeze { target })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        match text.parse() {
            Ok(version) => version,
            Err(error) => panic!("test version {text}: {error}"),
        }
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    fn env(name: &str) -> FreezeTarget {
        FreezeTarget::Environment(s(name))
    }

    fn create(service: &str, version: &str, commit: Option<&str>, notes: Option<&str>) -> Command {
        Command::Create {
            service: s(service),
            version: v(version),
            commit: commit.map(s),
            notes: notes.map(s),
            manifest: Manifest::default(),
        }
    }

    fn promote(
        service: &str,
        version: VersionSpec,
        to: Option<&str>,
        force: Option<&str>,
    ) -> Command {
        Command::Promote {
            service: s(service),
            version,
            to: to.map(s),
            force_reason: force.map(s),
            hotfix_reason: None,
        }
    }

    fn exact(text: &str) -> VersionSpec {
        VersionSpec::Exact(v(text))
    }

    fn history(service: &str, environment: Option<&str>, last: Option<u32>) -> Command {
        Command::History {
            service: s(service),
            environment: environment.map(s),
            last,
        }
    }

    fn freeze(target: FreezeTarget, seconds: u64, reason: Option<&str>) -> Command {
        Command::Freeze {
            target,
            duration: Duration::from_secs(seconds),
            reason: reason.map(s),
        }
    }

    #[test]
    fn parses_every_command_alias_and_option_order() {
        let with_digest = format!("create api 1.4.2 digest sha256:{} notes n", "AB".repeat(32));
        let cases: Vec<(&str, Command)> = vec![
            // Prefixes, whitespace and empty input.
            ("", Command::Help { topic: None }),
            ("   \t ", Command::Help { topic: None }),
            ("/release", Command::Help { topic: None }),
            ("release", Command::Help { topic: None }),
            ("  /RELEASE  ", Command::Help { topic: None }),
            ("help", Command::Help { topic: None }),
            (
                "/release help promote",
                Command::Help {
                    topic: Some(s("promote")),
                },
            ),
            (
                "Help PREPARE",
                Command::Help {
                    topic: Some(s("prepare")),
                },
            ),
            (
                "help deploy",
                Command::Help {
                    topic: Some(s("deploy")),
                },
            ),
            // create / prepare
            ("create api 1.4.2", create("api", "1.4.2", None, None)),
            ("prepare api v1.4.2", create("api", "1.4.2", None, None)),
            (
                "release PREPARE api 1.4.2",
                create("api", "1.4.2", None, None),
            ),
            (
                "create api 1.4.2 commit 3F9A2C1",
                create("api", "1.4.2", Some("3f9a2c1"), None),
            ),
            (
                "create api 1.4.2 commit 3f9a2c1 notes fixes   the \"login timeout\"",
                create(
                    "api",
                    "1.4.2",
                    Some("3f9a2c1"),
                    Some("fixes the login timeout"),
                ),
            ),
            (
                "create api 1.4.2 notes speeds up commit deadbeef",
                create("api", "1.4.2", None, Some("speeds up commit deadbeef")),
            ),
            (
                "create api 1.4.2 NOTES “smart quoted notes”",
                create("api", "1.4.2", None, Some("smart quoted notes")),
            ),
            (
                "create api 2.0.0-rc.1 commit 0123456789abcdef0123456789abcdef01234567",
                create(
                    "api",
                    "2.0.0-rc.1",
                    Some("0123456789abcdef0123456789abcdef01234567"),
                    None,
                ),
            ),
            (
                &with_digest,
                Command::Create {
                    service: s("api"),
                    version: v("1.4.2"),
                    commit: None,
                    notes: Some(s("n")),
                    manifest: Manifest {
                        digest: Some(
                            format!("sha256:{}", "ab".repeat(32))
                                .parse()
                                .expect("digest"),
                        ),
                        ..Manifest::default()
                    },
                },
            ),
            // promote
            (
                "promote api 1.4.2",
                promote("api", exact("1.4.2"), None, None),
            ),
            (
                "/release Promote api latest",
                promote("api", VersionSpec::Latest, None, None),
            ),
            (
                "promote api LATEST to staging",
                promote("api", VersionSpec::Latest, Some("staging"), None),
            ),
            (
                "promote api v1.4.2 to production --force \"hotfix for incident 512\"",
                promote(
                    "api",
                    exact("1.4.2"),
                    Some("production"),
                    Some("hotfix for incident 512"),
                ),
            ),
            (
                "promote api 1.4.2 --force “hotfix now” to production",
                promote(
                    "api",
                    exact("1.4.2"),
                    Some("production"),
                    Some("hotfix now"),
                ),
            ),
            (
                "promote api 1.4.2 --force=urgent",
                promote("api", exact("1.4.2"), None, Some("urgent")),
            ),
            (
                "promote api 1.4.2 --force=\"very urgent\" TO production",
                promote(
                    "api",
                    exact("1.4.2"),
                    Some("production"),
                    Some("very urgent"),
                ),
            ),
            (
                "promote api 1.4.2 —force outage",
                promote("api", exact("1.4.2"), None, Some("outage")),
            ),
            (
                "promote api 1.4.2 --FORCE outage",
                promote("api", exact("1.4.2"), None, Some("outage")),
            ),
            // ids
            ("approve #42", Command::Approve { id: 42 }),
            ("approve 42", Command::Approve { id: 42 }),
            (
                "APPROVE #9223372036854775807",
                Command::Approve { id: i64::MAX },
            ),
            (
                "reject #42",
                Command::Reject {
                    id: 42,
                    reason: None,
                },
            ),
            (
                "reject 42 needs   the migration first",
                Command::Reject {
                    id: 42,
                    reason: Some(s("needs the migration first")),
                },
            ),
            (
                "reject #42 \"quoted reason\" and more",
                Command::Reject {
                    id: 42,
                    reason: Some(s("quoted reason and more")),
                },
            ),
            (
                "reject #42 \"\"",
                Command::Reject {
                    id: 42,
                    reason: None,
                },
            ),
            ("cancel #7", Command::Cancel { id: 7 }),
            ("retry 7", Command::Retry { id: 7 }),
            // rollout controls
            ("pause #42", Command::Pause { id: 42 }),
            ("/release PAUSE 42", Command::Pause { id: 42 }),
            ("resume #42", Command::Resume { id: 42 }),
            ("release Resume 7", Command::Resume { id: 7 }),
            ("advance #42", Command::Advance { id: 42 }),
            (
                "advance 9223372036854775807",
                Command::Advance { id: i64::MAX },
            ),
            (
                "abort #42",
                Command::Abort {
                    id: 42,
                    reason: None,
                },
            ),
            (
                "ABORT 42 error rate   doubled\ton the canary",
                Command::Abort {
                    id: 42,
                    reason: Some(s("error rate doubled on the canary")),
                },
            ),
            (
                "abort #42 “p99 over 2s” for --force to production",
                Command::Abort {
                    id: 42,
                    reason: Some(s("p99 over 2s for --force to production")),
                },
            ),
            (
                "abort #42 \"  \"",
                Command::Abort {
                    id: 42,
                    reason: None,
                },
            ),
            // why, check
            ("why #42", Command::Why { id: 42 }),
            ("check #42 2", Command::Check { id: 42, item: 2 }),
            ("tick 42 1", Command::Check { id: 42, item: 1 }),
            (
                "promote api 1.4.2 to production --hotfix \"incident 512\"",
                Command::Promote {
                    service: s("api"),
                    version: exact("1.4.2"),
                    to: Some(s("production")),
                    force_reason: None,
                    hotfix_reason: Some(s("incident 512")),
                },
            ),
            (
                "promote api 1.4.2 —hotfix=outage",
                Command::Promote {
                    service: s("api"),
                    version: exact("1.4.2"),
                    to: None,
                    force_reason: None,
                    hotfix_reason: Some(s("outage")),
                },
            ),
            // rollback
            (
                "rollback api production",
                Command::Rollback {
                    service: s("api"),
                    environment: s("production"),
                    to: None,
                },
            ),
            (
                "rollback api production to v1.4.1",
                Command::Rollback {
                    service: s("api"),
                    environment: s("production"),
                    to: Some(v("1.4.1")),
                },
            ),
            // status, history, windows
            ("status", Command::Status { service: None }),
            (
                "status api",
                Command::Status {
                    service: Some(s("api")),
                },
            ),
            ("history api", history("api", None, None)),
            (
                "history api production",
                history("api", Some("production"), None),
            ),
            ("history api last 10", history("api", None, Some(10))),
            (
                "history api production last 100",
                history("api", Some("production"), Some(100)),
            ),
            (
                "history api LAST 1 staging",
                history("api", Some("staging"), Some(1)),
            ),
            ("windows", Command::Windows { environment: None }),
            (
                "windows production",
                Command::Windows {
                    environment: Some(s("production")),
                },
            ),
            // freeze / unfreeze
            (
                "freeze production for 2h",
                freeze(env("production"), 7_200, None),
            ),
            ("freeze ALL for 1d", freeze(FreezeTarget::All, 86_400, None)),
            (
                "freeze production FOR 1h30m incident 512 \"do not deploy\"",
                freeze(env("production"), 5_400, Some("incident 512 do not deploy")),
            ),
            (
                "freeze staging for 1h 30m load test",
                freeze(env("staging"), 5_400, Some("load test")),
            ),
            (
                "freeze staging for \"1h 30m\"",
                freeze(env("staging"), 5_400, None),
            ),
            (
                "unfreeze production",
                Command::Unfreeze {
                    target: env("production"),
                },
            ),
            (
                "unfreeze all",
                Command::Unfreeze {
                    target: FreezeTarget::All,
                },
            ),
            (
                "Unfreeze All",
                Command::Unfreeze {
                    target: FreezeTarget::All,
                },
            ),
            // Whitespace of all kinds separates tokens.
            (
                "\n promote\tapi\u{a0}1.4.2 \r\n",
                promote("api", exact("1.4.2"), None, None),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Ok(expected), "input: {input:?}");
        }
    }

    #[test]
    fn dora_takes_a_service_an_environment_and_days_each_optional() {
        let dora = |service: Option<&str>, environment: Option<&str>, days| Command::Dora {
            service: service.map(s),
            environment: environment.map(s),
            days,
        };
        let cases = [
            ("dora", dora(None, None, None)),
            ("DORA api", dora(Some("api"), None, None)),
            (
                "dora api production",
                dora(Some("api"), Some("production"), None),
            ),
            (
                "dora api production 7",
                dora(Some("api"), Some("production"), Some(7)),
            ),
            ("dora api 90d", dora(Some("api"), None, Some(90))),
            ("dora 365", dora(None, None, Some(365))),
            (
                "dora all production 7",
                dora(None, Some("production"), Some(7)),
            ),
            ("dora production", dora(Some("production"), None, None)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input), Ok(expected), "input: {input:?}");
        }
        let error = parse("dora api 366").map_err(|e| e.message);
        assert_eq!(
            error,
            Err(
                "`366` is not a number of days: write a whole number from 1 to 365, e.g. 30"
                    .to_string()
            )
        );
    }

    #[test]
    fn bad_inputs_explain_what_was_expected() {
        let inputs = [
            // Grammar-wide
            "deploy api 1.4.2",
            "/release 🚀",
            "promote api 1.4.2 --force \"hotfix",
            "promote api 1.4.2 --force “hotfix",
            "reject #42 \"",
            "foo \"bar",
            "help promote extra",
            // create
            "create",
            "prepare api",
            "create api latest",
            "create api 1.4",
            "create api 1.4.2 commit",
            "create api 1.4.2 commit xyz1234",
            "create api 1.4.2 commit 3f9a2c",
            "create api 1.4.2 commit 3f9a2c1 commit 3f9a2c1",
            "create api 1.4.2 notes",
            "create api 1.4.2 notes \"\"",
            "create api 1.4.2 banana",
            "create api commit 3f9a2c1",
            "create api 1.4.2 digest",
            "create api 1.4.2 digest sha256:abc",
            "create api 1.4.2 digest md5:0123",
            // why, check
            "why",
            "why #42 now",
            "check #42",
            "check #42 0",
            "check #42 one",
            "check #42 1 2",
            "promote api 1.4.2 --hotfix",
            "promote api 1.4.2 --hotfix x --hotfix y",
            "promote api 1.4.2 --hotfix x --force y",
            // promote
            "promote",
            "promote api",
            "promote api to staging",
            "promote api 1.4",
            "promote api 1.4.2 staging",
            "promote api 1.4.2 to",
            "promote api 1.4.2 to staging to production",
            "promote api 1.4.2 --force",
            "promote api 1.4.2 --force \"\"",
            "promote api 1.4.2 --force=",
            "promote api 1.4.2 --force \"   \"",
            "promote api 1.4.2 --force to production",
            "promote api 1.4.2 --force hotfix for incident",
            "promote api 1.4.2 --force a --force b",
            "promote api 1.4.2 --dry-run",
            // ids
            "approve",
            "approve abc",
            "approve #0",
            "approve -1",
            "approve +42",
            "approve # 42",
            "approve 99999999999999999999",
            "approve #42 #43",
            "reject",
            "reject forty-two",
            "cancel",
            "cancel 1.5",
            "retry",
            "retry #42 now",
            // rollout controls
            "pause",
            "pause canary",
            "pause #42 now",
            "pause #0",
            "resume",
            "resume #-3",
            "resume #42 #43",
            "advance",
            "advance 4 2",
            "advance 42.5",
            "abort",
            "abort because the canary is failing",
            "abort # 42 broken",
            "abort #42 \"unclosed reason",
            // rollback
            "rollback",
            "rollback api",
            "rollback api to 1.4.1",
            "rollback api production to",
            "rollback api production to latest",
            "rollback api production 1.4.1",
            "rollback api production to 1.4.1 please",
            // status, history, windows
            "status api web",
            "history",
            "history api last",
            "history api last 0",
            "history api last 101",
            "history api last ten",
            "history api last 10 last 5",
            "history api production staging",
            "windows production staging",
            // freeze / unfreeze
            "freeze",
            "freeze for 2h",
            "freeze production",
            "freeze production 2h",
            "freeze production until friday",
            "freeze production for",
            "freeze production for ever",
            "freeze production for 0s",
            "unfreeze",
            "unfreeze production staging",
            "dora api production 0",
            "dora api 400",
            "dora api 30 production",
            "dora api production staging",
            "dora 30 7",
            // Echoed input is shortened.
            "approve #4242424242424242424242424242424242424242424242424242424242",
        ];
        let rendered: Vec<String> = inputs
            .iter()
            .map(|input| match parse(input) {
                Ok(command) => format!("{input}\n=> UNEXPECTEDLY PARSED: {command:?}"),
                Err(error) => format!("{input}\n=> {}", error.to_string().replace('\n', "\n   ")),
            })
            .collect();
        insta::assert_snapshot!("bad_inputs", rendered.join("\n\n"));
    }

    #[test]
    fn errors_carry_the_usage_of_the_command_being_parsed() {
        for (input, name) in [
            ("promote api", "promote"),
            ("prepare api", "create"),
            ("approve x", "approve"),
            ("freeze production", "freeze"),
            ("history api last 0", "history"),
            ("promote api \"1.4.2", "promote"),
            ("pause #42 now", "pause"),
            ("resume x", "resume"),
            ("advance", "advance"),
            ("abort soon", "abort"),
            ("dora api 0", "dora"),
        ] {
            let error = parse(input).err();
            assert_eq!(
                error.map(|error| error.usage),
                usage(name),
                "input: {input}"
            );
        }
        assert_eq!(
            parse("deploy").err().map(|error| error.usage),
            Some(HELP_USAGE)
        );
    }

    #[test]
    fn usage_knows_every_name_and_alias() {
        let names = [
            "help", "create", "prepare", "promote", "approve", "reject", "cancel", "retry",
            "rollback", "status", "history", "windows", "freeze", "unfreeze", "pause", "resume",
            "advance", "abort", "why", "check", "tick", "dora",
        ];
        for name in names {
            let line = usage(name);
            assert!(
                line.is_some_and(|line| line.starts_with("/release ")),
                "{name}"
            );
            assert_eq!(usage(&name.to_uppercase()), line, "{name}");
        }
        assert_eq!(usage("prepare"), usage("create"));
        assert_eq!(
            usage("promote"),
            Some("/release promote <service> <version> [to <env>] [--force \"<reason>\"] [--hotfix \"<reason>\"]")
        );
        assert_eq!(usage("tick"), usage("check"));
        assert_eq!(usage("deploy"), None);
        assert_eq!(usage(""), None);
    }

    #[test]
    fn command_names_match_the_grammar() {
        for info in &COMMANDS {
            let example = info.example.trim_start_matches("/release ");
            match parse(example) {
                Ok(command) => assert_eq!(command.name(), info.name, "{example}"),
                Err(error) => panic!("example of {} does not parse: {error}", info.name),
            }
        }
    }

    #[test]
    fn help_lists_every_command() {
        let text = help_text(None);
        for info in &COMMANDS {
            assert!(text.contains(info.usage), "{} missing from help", info.name);
        }
        assert!(text.contains("prepare"));
        assert_eq!(help_text(Some("  ")), text);
        insta::assert_snapshot!("help_all", text);
    }

    #[test]
    fn help_explains_one_command_or_says_it_is_unknown() {
        let promote = help_text(Some("PROMOTE"));
        assert!(usage("promote").is_some_and(|line| promote.starts_with(line)));
        assert!(promote.contains("Example: /release promote"));
        let alias = help_text(Some("prepare"));
        assert!(alias.starts_with("`prepare` is another name for `create`."));
        let unknown = help_text(Some("deploy"));
        assert!(unknown.starts_with("There is no command `deploy`.\n"));
        assert!(unknown.ends_with(&help_text(None)));
        insta::assert_snapshot!(
            "help_topics",
            [
                promote,
                alias,
                unknown.lines().take(2).collect::<Vec<_>>().join("\n")
            ]
            .join("\n\n")
        );
    }

    #[test]
    fn garbage_and_unicode_never_panic() {
        let fixed = [
            "\u{0}",
            "🚀🚀🚀",
            "promote 🚀 🚀",
            "promote api 1.4.2 —",
            "promote api 1.4.2 —forc",
            "promote api 1.4.2 –force=é",
            "approve #",
            "approve ##42",
            "approve #٤٢",
            "history api last ١٠",
            "freeze é for 1ḥ",
            "freeze all for 9999999999999999999999d",
            "“",
            "”",
            "\"",
            "\"\"",
            "“”“",
            "release\u{200b}promote api 1.4.2",
            "/releasepromote",
            "ǅ ǆ Ǆ",
            "create api 1.4.2 commit ééééééé",
            "\u{feff}promote api 1.4.2",
        ];
        for input in fixed {
            let _ = parse(input);
            let _ = help_text(Some(input));
            let _ = usage(input);
        }

        // A small deterministic fuzz over the grammar's own pieces and awkward characters.
        let pieces = [
            "promote", "create", "freeze", "history", "reject", "approve", "help", "api", "1.4.2",
            "latest", "to", "--force", "--force=", "—force", "for", "last", "notes", "commit", "#",
            "42", "all", "2h", "\"", "“", "”", " ", "\t", "é", "🚀", "\u{0}", "=", "-", "pause",
            "resume", "advance", "abort",
        ];
        let mut seed: u64 = 0x5eed;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..20_000 {
            let length = next() % 9;
            let input: String = (0..length)
                .map(|_| {
                    pieces
                        .get(next() % pieces.len())
                        .copied()
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(if next() % 2 == 0 { " " } else { "" });
            match parse(&input) {
                Ok(command) => assert!(usage(command.name()).is_some(), "{input:?}"),
                Err(error) => assert!(!error.message.is_empty() && !error.usage.is_empty()),
            }
        }
    }
}
