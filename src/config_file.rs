//! TOML config files for a binary's flags: a key per long flag, used where neither the command line nor the environment gave a value.
//!
//! Generic over any `clap::Parser`, so flags added later are configurable at once: argv is parsed
//! once; then, for each key of the file whose flag got its value from neither the command line
//! nor its environment variable, `--key=value` is added to argv, and argv is parsed again. So the
//! precedence is flag > environment > file > default. Values: strings, numbers, `true`/`false`
//! (a switch such as `--check-config` is set by `true`), and arrays for repeatable flags (`ban`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::ArgAction;

/// Longest config file read, in bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Flags that make no sense in a config file.
const NOT_IN_FILE: &[&str] = &["config", "check-config", "help", "version"];

/// Why the arguments could not be parsed.
#[derive(Debug)]
pub enum ArgsError {
    /// A command-line or environment problem, `--help` or `--version`: `exit()` prints it.
    Clap(clap::Error),
    /// A problem in the config file, with its path (and line, where known).
    File(String),
}

/// Parsed arguments and the config file they were merged with, if any.
#[derive(Debug)]
pub struct Parsed<P> {
    pub args: P,
    pub file: Option<PathBuf>,
    /// Keys taken from the file (not overridden by a flag or the environment).
    pub used_keys: Vec<String>,
}

/// Parses `argv` into `P`, merging in the TOML file named by the flag whose id is `config_id`
/// (typically `--config`, env `CHAT_CONFIG`).
pub fn parse<P: clap::Parser>(
    argv: Vec<OsString>,
    config_id: &str,
) -> Result<Parsed<P>, ArgsError> {
    let command = P::command();
    let matches = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(ArgsError::Clap)?;
    let Some(path) = matches.get_one::<PathBuf>(config_id).cloned() else {
        let args = P::from_arg_matches(&matches).map_err(ArgsError::Clap)?;
        return Ok(Parsed {
            args,
            file: None,
            used_keys: Vec::new(),
        });
    };
    let text = read(&path)?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ArgsError::File(syntax_error(&path, &text, &e)))?;
    let mut extra: Vec<OsString> = Vec::new();
    let mut used_keys = Vec::new();
    for (key, value) in &table {
        let here = || location(&path, &text, key);
        if value.is_table() {
            return Err(ArgsError::File(format!(
                "{}: [{key}]: tables are not supported: every key goes at the top level, named \
                 like its flag",
                here()
            )));
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| ArgsError::File(format!("{}: unknown key {key:?}", here())))?;
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        let values = render(value, arg.get_action())
            .map_err(|why| ArgsError::File(format!("{}: key {key:?}: {why}", here())))?;
        if given {
            continue;
        }
        used_keys.push(key.clone());
        match values {
            Rendered::Switch(true) => extra.push(format!("--{key}").into()),
            Rendered::Switch(false) => {}
            Rendered::Values(values) => {
                extra.extend(values.into_iter().map(|v| format!("--{key}={v}").into()))
            }
        }
    }
    // Right after the program name: before any positional or trailing arguments.
    let mut merged = argv;
    let at = merged.len().min(1);
    merged.splice(at..at, extra);
    let args = P::try_parse_from(&merged).map_err(|e| file_value_error(&path, &text, &e))?;
    Ok(Parsed {
        args,
        file: Some(path),
        used_keys,
    })
}

enum Rendered {
    Switch(bool),
    Values(Vec<String>),
}

/// A TOML value as flag values, checked against what the flag takes.
fn render(value: &toml::Value, action: &ArgAction) -> Result<Rendered, String> {
    let switch = matches!(action, ArgAction::SetTrue | ArgAction::SetFalse);
    let scalar = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(_) => Err("a date is not a valid value".into()),
            toml::Value::Array(_) => Err("nested arrays are not valid values".into()),
            toml::Value::Table(_) => Err("tables are not valid values".into()),
        }
    };
    match (value, switch) {
        (toml::Value::Boolean(b), true) => Ok(Rendered::Switch(*b)),
        (_, true) => Err("expected true or false".into()),
        (toml::Value::Array(items), false) => {
            if !matches!(action, ArgAction::Append) {
                return Err("takes one value, not an array".into());
            }
            Ok(Rendered::Values(
                items.iter().map(scalar).collect::<Result<_, _>>()?,
            ))
        }
        (toml::Value::Table(_), false) => Err(
            "tables are not supported: every key goes at the top level, named like its flag".into(),
        ),
        (v, false) => Ok(Rendered::Values(vec![scalar(v)?])),
    }
}

fn read(path: &Path) -> Result<String, ArgsError> {
    let fail = |e: std::io::Error| {
        ArgsError::File(format!("cannot read config file {}: {e}", path.display()))
    };
    let len = std::fs::metadata(path).map_err(fail)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ArgsError::File(format!(
            "config file {} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(fail)
}

/// `path:line` of the line that sets `key` at the top level (or opens the table `[key]`), or just
/// `path`.
fn location(path: &Path, text: &str, key: &str) -> String {
    let quoted = format!("\"{key}\"");
    let line = text.lines().position(|line| {
        let line = line.trim_start();
        [key, quoted.as_str()].iter().any(|k| {
            line.strip_prefix(k)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || line
                    .strip_prefix('[')
                    .and_then(|l| l.trim_start().strip_prefix(k))
                    .is_some_and(|rest| rest.trim_start().starts_with(']'))
        })
    });
    match line {
        Some(n) => format!("{}:{}", path.display(), n + 1),
        None => path.display().to_string(),
    }
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| before.matches('\n').count() + 1);
    let message = e.message().trim();
    match line {
        Some(n) => format!("{}:{n}: invalid TOML: {message}", path.display()),
        None => format!("{}: invalid TOML: {message}", path.display()),
    }
}

/// A parse that failed only once the file's values were added: names the file and the key.
fn file_value_error(path: &Path, text: &str, e: &clap::Error) -> ArgsError {
    if matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    ) {
        return ArgsError::Clap(clap::Error::raw(e.kind(), e.to_string()));
    }
    let missing = e.kind() == clap::error::ErrorKind::MissingRequiredArgument;
    // A missing flag is not a key of the file: no line to name.
    let key = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if !missing => arg
            .strip_prefix("--")
            .map(|a| a.split([' ', '=']).next().unwrap_or(a).to_string()),
        _ => None,
    };
    // The whole message up to the usage line: a list of missing flags continues on later lines.
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_string();
    let first = if first.is_empty() {
        "invalid value".to_string()
    } else {
        first
    };
    let place = match &key {
        Some(key) => format!("{}: key {key:?}", location(path, text, key)),
        None => path.display().to_string(),
    };
    ArgsError::File(format!("{place}: {first}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, clap::Parser)]
    struct Test {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 8000)]
        port: u16,
        #[arg(long, default_value = "info")]
        log_level: String,
        #[arg(long)]
        verbose: bool,
        #[arg(long, value_delimiter = ',')]
        ban: Vec<String>,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn run(argv: &[&str], text: &str) -> (Result<Parsed<Test>, ArgsError>, String) {
        let f = file(text);
        let path = f.path().display().to_string();
        let mut full: Vec<OsString> = vec!["test".into(), "--config".into(), path.clone().into()];
        full.extend(argv.iter().map(OsString::from));
        (parse::<Test>(full, "config"), path)
    }

    fn message(r: Result<Parsed<Test>, ArgsError>) -> String {
        match r {
            Err(ArgsError::File(m)) => m,
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn the_file_fills_in_what_flags_leave_out() {
        let text =
            "port = 9001\nlog-level = \"debug\"\nverbose = true\nban = [\"10.0.0.0/8\", \"-x\"]\n";
        let (parsed, _) = run(&[], text);
        let parsed = parsed.unwrap();
        assert_eq!(parsed.args.port, 9001);
        assert_eq!(parsed.args.log_level, "debug");
        assert!(parsed.args.verbose);
        assert_eq!(parsed.args.ban, vec!["10.0.0.0/8", "-x"]);

        let (parsed, _) = run(&["--port", "7", "--ban", "1.2.3.4"], text);
        let parsed = parsed.unwrap();
        assert_eq!(parsed.args.port, 7);
        assert_eq!(parsed.args.ban, vec!["1.2.3.4"]);
        assert_eq!(parsed.args.log_level, "debug");

        let (parsed, _) = run(&[], "");
        assert_eq!(parsed.unwrap().args.port, 8000);
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_line() {
        let (r, path) = run(&[], "port = 1\n\nmax-lines = 5\n");
        assert_eq!(message(r), format!("{path}:3: unknown key \"max-lines\""));
        let (r, path) = run(&[], "# c\nport = \"eighty\"\n");
        let m = message(r);
        assert!(
            m.starts_with(&format!("{path}:2: key \"port\": invalid value 'eighty'")),
            "{m}"
        );
        let (r, _) = run(&[], "port = 70000\n");
        assert!(message(r).contains("key \"port\""));
        let (r, path) = run(&[], "verbose = \"yes\"\n");
        assert_eq!(
            message(r),
            format!("{path}:1: key \"verbose\": expected true or false")
        );
        let (r, _) = run(&[], "port = [1, 2]\n");
        assert!(message(r).contains("takes one value, not an array"));
        let (r, path) = run(&[], "port = 1\n[server]\nport = 1\n");
        assert_eq!(
            message(r),
            format!(
                "{path}:2: [server]: tables are not supported: every key goes at the top level, \
                 named like its flag"
            )
        );
        let (r, _) = run(&[], "config = \"x\"\n");
        assert!(message(r).contains("unknown key \"config\""));
        let (r, path) = run(&[], "port = \n");
        assert!(message(r).starts_with(&format!("{path}:1: invalid TOML")));
        let (r, path) = run(&[], "port = 1\n= 2\n");
        assert!(message(r).starts_with(&format!("{path}:2: invalid TOML")));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let argv = vec![
            "test".into(),
            "--config".into(),
            "/nonexistent/chat.toml".into(),
        ];
        match parse::<Test>(argv, "config") {
            Err(ArgsError::File(m)) => assert!(m.contains("cannot read config file"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
