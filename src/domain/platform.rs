//! The chat platforms shipmate speaks.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatPlatform {
    Slack,
    Discord,
}

impl ChatPlatform {
    pub const ALL: [ChatPlatform; 2] = [ChatPlatform::Slack, ChatPlatform::Discord];

    pub fn as_str(self) -> &'static str {
        match self {
            ChatPlatform::Slack => "slack",
            ChatPlatform::Discord => "discord",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl fmt::Display for ChatPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
