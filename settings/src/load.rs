//! Where settings come from, in increasing precedence: built-in defaults, the role's table of
//! a TOML file (`--config`, or `ADVSWEEP_CONFIG`), `ADVSWEEP_<KEY>` environment variables,
//! and command-line flags. All layers go through the `config` crate, so a value's type is
//! checked the same way wherever it came from, and errors name the key and its origin.
//!
//! One file may hold all three roles (`[coordinator]`, `[worker]`, `[client]`); each process
//! reads its own table. Environment variables are flat (`ADVSWEEP_STATE_DIR`,
//! `ADVSWEEP_TLS_CERT`) and mean "this process's" value: a process has one role. Only the
//! role's known keys are read from the environment, so unrelated `ADVSWEEP_*` variables
//! (the CIFAR-10 path, the log format) are left alone; unknown keys in a file are errors,
//! because a misspelt `tls_cert` must not silently serve plaintext.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Value, ValueKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::SettingsError;
use crate::files::{MAX_SETTINGS_FILE_BYTES, read_bounded_text};

/// The environment variable that names the config file.
pub const CONFIG_ENV: &str = "ADVSWEEP_CONFIG";
/// Every settings variable is `ADVSWEEP_` + the key in upper case.
pub const ENV_PREFIX: &str = "ADVSWEEP_";
/// The tables a config file may have.
pub const ROLES: [&str; 3] = ["coordinator", "worker", "client"];

/// The settings of one role: its table name, its keys, and its final checks.
pub trait RoleSettings: DeserializeOwned + Serialize + Default {
    /// The file table (`coordinator`, `worker`, `client`).
    const TABLE: &'static str;
    /// Every key, as written in files; `ADVSWEEP_<KEY>` in the environment.
    fn keys() -> Vec<&'static str>;
    /// Keys holding lists; in the environment they are comma-separated.
    const LIST_KEYS: &'static [&'static str] = &[];
    /// Pairs of keys that say the same thing two ways (`token`, `token_file`): the one set by
    /// the higher layer counts, the other is dropped; both in one layer is an error.
    const EITHER_OR: &'static [(&'static str, &'static str)] = &[];

    /// Cross-field checks and derived values (reading token files), after all layers merged.
    fn finish(&mut self) -> Result<(), SettingsError>;
}

/// Values from command-line flags, the top layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides(Vec<(&'static str, Value)>);

impl Overrides {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` when `value` is given (a flag the user passed).
    pub fn set<T: Into<ValueKind>>(mut self, key: &'static str, value: Option<T>) -> Self {
        if let Some(v) = value {
            self.0
                .push((key, Value::new(Some(&"command line".to_owned()), v)));
        }
        self
    }

    /// Sets a path-valued `key`.
    pub fn set_path(self, key: &'static str, value: Option<&Path>) -> Self {
        self.set(key, value.map(|p| p.to_string_lossy().into_owned()))
    }

    /// Sets a boolean `key` only when the flag is on (off is the absence of the flag).
    pub fn set_flag(self, key: &'static str, on: bool) -> Self {
        self.set(key, on.then_some(true))
    }
}

/// Settings and where they came from (for `config print` and start-up logs).
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub settings: T,
    pub file: Option<PathBuf>,
    /// The environment variables that set a value.
    pub env_vars: Vec<String>,
}

/// The config file named by `explicit` (a `--config` flag) or by `ADVSWEEP_CONFIG` in `env`.
pub fn config_path(explicit: Option<&Path>, env: &HashMap<String, String>) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(|| {
        env.get(CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    })
}

/// Loads role `T` from the file, the process environment and `overrides`.
pub fn load<T: RoleSettings>(
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<Loaded<T>, SettingsError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    load_from::<T>(config_path(file, &env).as_deref(), &env, overrides)
}

/// [`load`] with an explicit environment (tests, and `advsweep run` which builds its own).
pub fn load_from<T: RoleSettings>(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    overrides: &Overrides,
) -> Result<Loaded<T>, SettingsError> {
    let mut builder = Config::builder();
    let text = file.map(read_config_file).transpose()?;
    if let Some(text) = &text {
        builder = builder.add_source(File::from_str(text, FileFormat::Toml));
    }
    let file_keys = file_table_keys::<T>(file, text.as_deref())?;
    let layer_of = |key: &str| -> u8 {
        let var = format!("{ENV_PREFIX}{}", key.to_uppercase());
        if overrides.0.iter().any(|(k, _)| *k == key) {
            3
        } else if env.get(&var).is_some_and(|v| !v.is_empty()) {
            2
        } else if file_keys.iter().any(|k| k == key) {
            1
        } else {
            0
        }
    };
    let mut dropped = Vec::new();
    for (a, b) in T::EITHER_OR {
        let (la, lb) = (layer_of(a), layer_of(b));
        if la > 0 && la == lb {
            return Err(SettingsError(format!(
                "[{}] set {a} or {b}, not both (both come from {})",
                T::TABLE,
                ["", "the config file", "the environment", "the command line"][usize::from(la)]
            )));
        }
        if la > 0 && lb > 0 {
            dropped.push(if la > lb { *b } else { *a });
        }
    }
    let mut env_vars = Vec::new();
    for key in T::keys() {
        let var = format!("{ENV_PREFIX}{}", key.to_uppercase());
        let Some(raw) = env.get(&var) else { continue };
        let value: ValueKind = if T::LIST_KEYS.contains(&key) {
            split_list(raw).into()
        } else {
            raw.clone().into()
        };
        builder = builder
            .set_override(format!("{}.{key}", T::TABLE), Value::new(Some(&var), value))
            .map_err(|e| SettingsError(format!("{var}: {e}")))?;
        env_vars.push(var);
    }
    for key in dropped {
        builder = builder
            .set_override(
                format!("{}.{key}", T::TABLE),
                Value::new(None, ValueKind::Nil),
            )
            .map_err(|e| SettingsError(e.to_string()))?;
    }
    for (key, value) in &overrides.0 {
        builder = builder
            .set_override(format!("{}.{key}", T::TABLE), value.clone())
            .map_err(|e| SettingsError(format!("--{}: {e}", key.replace('_', "-"))))?;
    }
    let origin = file.map_or_else(
        || "the environment".to_owned(),
        |p| format!("config file {}", p.display()),
    );
    let merged = builder
        .build()
        .map_err(|e| SettingsError(format!("cannot read {origin}: {e}")))?;
    check_known_keys::<T>(&merged, &origin)?;
    let mut settings: T = match merged.get::<T>(T::TABLE) {
        Ok(s) => s,
        Err(config::ConfigError::NotFound(_)) => T::default(),
        Err(e) => return Err(SettingsError(format!("[{}] settings: {e}", T::TABLE))),
    };
    settings.finish()?;
    Ok(Loaded {
        settings,
        file: file.map(Path::to_path_buf),
        env_vars,
    })
}

/// Checks a config file's tables and keys against every role, without reading the files it
/// names (token files, certificates): what a deployment's files can be checked for anywhere.
pub fn check_file(path: &Path) -> Result<(), SettingsError> {
    use crate::{ClientSettings, CoordinatorSettings, WorkerSettings};
    let text = read_config_file(path)?;
    let parsed = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .map_err(|e| SettingsError(format!("cannot read config file {}: {e}", path.display())))?;
    let origin = format!("config file {}", path.display());
    check_known_keys::<CoordinatorSettings>(&parsed, &origin)?;
    check_known_keys::<WorkerSettings>(&parsed, &origin)?;
    check_known_keys::<ClientSettings>(&parsed, &origin)
}

/// The keys the file's table of role `T` sets (for telling the layers apart).
fn file_table_keys<T: RoleSettings>(
    file: Option<&Path>,
    text: Option<&str>,
) -> Result<Vec<String>, SettingsError> {
    let (Some(path), Some(text)) = (file, text) else {
        return Ok(Vec::new());
    };
    let parsed = Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()
        .map_err(|e| SettingsError(format!("cannot read config file {}: {e}", path.display())))?;
    Ok(parsed
        .get_table(T::TABLE)
        .map(|t| t.into_keys().collect())
        .unwrap_or_default())
}

/// Unknown tables, unknown keys of our table: errors that list what is allowed.
fn check_known_keys<T: RoleSettings>(merged: &Config, origin: &str) -> Result<(), SettingsError> {
    let root: BTreeMap<String, Value> = merged
        .clone()
        .try_deserialize()
        .map_err(|e| SettingsError(format!("{origin}: {e}")))?;
    for (table, value) in &root {
        if !ROLES.contains(&table.as_str()) {
            return Err(SettingsError(format!(
                "{origin}: unknown table or key `{table}`; a config file has the tables {}",
                ROLES.map(|r| format!("[{r}]")).join(", ")
            )));
        }
        if table != T::TABLE {
            continue;
        }
        let ValueKind::Table(entries) = &value.kind else {
            return Err(SettingsError(format!(
                "{origin}: `{table}` must be a table"
            )));
        };
        let known = T::keys();
        if let Some(bad) = entries.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(SettingsError(format!(
                "{origin}: unknown key `{bad}` in [{table}]; known keys: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The text of a config file: a regular file of at most [`MAX_SETTINGS_FILE_BYTES`].
fn read_config_file(path: &Path) -> Result<String, SettingsError> {
    read_bounded_text(path, MAX_SETTINGS_FILE_BYTES)
        .map_err(|e| SettingsError(format!("cannot read config file {}: {e}", path.display())))
}

/// Reads a secrets file (a regular file of at most [`MAX_SETTINGS_FILE_BYTES`]): one entry per
/// line; blank lines and `#` comments skipped.
pub fn read_lines_file(what: &str, path: &Path) -> Result<Vec<String>, SettingsError> {
    let text = read_bounded_text(path, MAX_SETTINGS_FILE_BYTES)
        .map_err(|e| SettingsError(format!("cannot read {what} {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Renders settings as the TOML table a config file would hold (secrets masked).
pub fn render<T: RoleSettings>(loaded: &Loaded<T>) -> Result<String, SettingsError> {
    let mut root = BTreeMap::new();
    root.insert(T::TABLE, &loaded.settings);
    let body = toml::to_string(&root)
        .map_err(|e| SettingsError(format!("cannot render the settings: {e}")))?;
    let file = loaded
        .file
        .as_ref()
        .map_or_else(|| "none".to_owned(), |p| p.display().to_string());
    let env = if loaded.env_vars.is_empty() {
        "none".to_owned()
    } else {
        loaded.env_vars.join(", ")
    };
    Ok(format!(
        "# effective [{}] settings; config file: {file}; environment: {env}\n\
         # secrets are masked; unset optional keys are omitted\n{body}",
        T::TABLE
    ))
}
