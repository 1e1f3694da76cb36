//! Secrets in table options (passwords, SASL credentials, keys): kept out of everything
//! Sluice prints.
//!
//! A value is a secret when its option's name says so (`password`, `secret`, `token`,
//! `credential`, `jaas`) or when it came from the environment through `${NAME}` in a
//! `WITH (…)` value (so query files need not hold them). Every secret is registered
//! here when the query file is parsed, and the places where text leaves the process —
//! error messages, progress lines and records, `explain`, the dashboard, logs — pass it
//! through [`redact`], which writes `***` for each. This module owns the registry; it
//! must not decide what is printed.

use std::borrow::Cow;
use std::sync::RwLock;

/// Secrets shorter than this are not redacted (replacing every `a` in a message helps
/// no one); such a value is no secret anyway.
pub const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether an option named `key` (lower-cased, dots as underscores) holds a secret.
pub fn is_secret_option(key: &str) -> bool {
    [
        "password",
        "secret",
        "token",
        "credential",
        "jaas",
        "private_key",
    ]
    .iter()
    .any(|w| key.contains(w))
}

/// Remembers `value` as a secret, so [`redact`] hides it from now on.
pub fn register(value: &str) {
    if value.chars().count() < MIN_LEN {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == value) {
        all.push(value.to_string());
        // Longest first, so a secret containing another is hidden whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in all.iter() {
        out = out.replace(s.as_str(), "***");
    }
    Cow::Owned(out)
}

/// `${NAME}` in an option value replaced by the environment variable NAME (`$${` is a
/// literal `${`). Returns the value and whether anything came from the environment;
/// an unset variable is an error naming it.
pub fn substitute_env(value: &str) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(value.len());
    let mut from_env = false;
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            return Err(format!("'${{' without a closing '}}' in {value:?}"));
        };
        let name = &rest[at + 2..at + end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("${{{name}}} is not an environment variable name"));
        }
        let v = std::env::var(name).map_err(|_| {
            format!(
                "${{{name}}} is not set in the environment; export {name} before starting Sluice"
            )
        })?;
        out.push_str(&v);
        from_env = true;
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok((out, from_env))
}

/// A writer for `tracing_subscriber` that redacts each formatted event before it
/// reaches stderr.
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingStderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_are_substituted_and_unset_ones_named() {
        std::env::set_var("SLUICE_TEST_SUBST", "s3cr3t-value");
        let (v, env) = substitute_env("user:${SLUICE_TEST_SUBST}@h").unwrap();
        assert_eq!((v.as_str(), env), ("user:s3cr3t-value@h", true));
        let (v, env) = substitute_env("cost $${literal} $5").unwrap();
        assert_eq!((v.as_str(), env), ("cost ${literal} $5", false));
        let e = substitute_env("${SLUICE_TEST_UNSET_VARIABLE}").unwrap_err();
        assert!(
            e.contains("SLUICE_TEST_UNSET_VARIABLE") && e.contains("not set"),
            "{e}"
        );
        assert!(substitute_env("${1x}").is_err() && substitute_env("${open").is_err());
    }

    #[test]
    fn registered_secrets_are_redacted_longest_first() {
        register("hunter22");
        register("hunter22-and-more");
        register("ab"); // too short to redact
        assert_eq!(
            redact("pw hunter22-and-more / hunter22 / ab"),
            "pw *** / *** / ab"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        assert!(
            is_secret_option("kafka_sasl_password") && is_secret_option("aws_secret_access_key")
        );
        assert!(!is_secret_option("topic"));
    }
}
