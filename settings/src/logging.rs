//! How the processes' log lines look: one choice for all three binaries (`--log-format`,
//! `ADVSWEEP_LOG_FORMAT`), spelled once, so `advsweep run` can hand its own choice on to the
//! worker processes it starts.

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The flag's spelling (`human`, `json`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}
