//! Sluice's typed errors. Library code returns [`Error`]; the binary adds context and
//! prints one readable message. Every variant says what went wrong and, where there is
//! one, what the user can do about it.

use std::path::PathBuf;

/// Result with Sluice's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Sluice, phrased for the person running it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kafka broker answered at the configured address.
    #[error(
        "cannot reach a Kafka broker at {brokers} ({detail}); start one with \
         `scripts/kafka-local.sh start` or point the broker option (--broker / --bootstrap-servers / KAFKA_BROKER) at a running one"
    )]
    KafkaUnreachable { brokers: String, detail: String },

    /// A broker answered but refused the connection: authentication or TLS failed.
    #[error(
        "the Kafka broker at {brokers} refused the connection: {reason}; check the table's \
         'kafka.security.protocol', 'kafka.sasl.*' and 'kafka.ssl.*' options"
    )]
    KafkaRefused { brokers: String, reason: String },

    /// The topic does not exist and Sluice was not asked to create it.
    #[error("Kafka topic '{topic}' does not exist on {brokers}; create it (e.g. `sluice gen --partitions 2`) or fix the topic name")]
    TopicMissing { topic: String, brokers: String },

    /// A source's broker answers but has not known its partitions for a while (the
    /// topic was deleted while the query ran).
    #[error("table {table}: its source answers but has not known its partitions for {seconds} s (was the topic deleted?): {reason}")]
    SourceGone {
        table: String,
        seconds: u64,
        reason: String,
    },
    /// The sink's topic vanished while the query ran (deleted).
    #[error("Kafka topic '{topic}' of the sink is gone from {brokers} (deleted while the query ran?): batch {batch_id} was not written and not committed; create the topic again and restart with the same checkpoint to go on after the last committed batch")]
    SinkTopicGone {
        topic: String,
        brokers: String,
        batch_id: u64,
    },
    /// A sink transaction that neither finished nor failed in time: librdkafka can keep
    /// a call waiting past its own timeout when the broker went away mid-request. The
    /// sink gives that producer up and tries again on a new one.
    #[error("Kafka sink topic '{topic}' on {brokers}: batch {batch_id}'s transaction neither finished nor failed within {seconds} s (is the broker up?)")]
    SinkStalled {
        topic: String,
        brokers: String,
        batch_id: u64,
        seconds: u64,
    },
    /// Any other Kafka client failure, with what Sluice was doing.
    #[error("Kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// Records were handed to the Kafka producer but not acknowledged.
    #[error("{failed} record(s) were not delivered to Kafka; first error: {first}")]
    Delivery { failed: u64, first: String },

    /// A file or stream could not be read or written.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The checkpoint or a file sink cannot read or write its store.
    #[error("{what}: {message}")]
    Storage { what: String, message: String },
    /// A user-supplied option has a value Sluice cannot use.
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: String, reason: String },
}

impl Error {
    /// A Kafka error with what Sluice was doing when it happened.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }

    /// An I/O error on `path`.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Whether this is a source's broker being out of reach for now (restarting, a
    /// network drop): worth waiting for, not a reason to stop the stream.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::KafkaUnreachable { .. } => true,
            Error::Kafka { source, .. } => crate::kafka::is_outage(source),
            _ => false,
        }
    }

    /// Whether a failed sink transaction step may succeed on a new producer once the
    /// broker is back ([`crate::kafka::is_transient_txn`]).
    pub fn is_transient_txn(&self) -> bool {
        match self {
            Error::KafkaUnreachable { .. } | Error::SinkStalled { .. } => true,
            Error::Kafka { source, .. } => crate::kafka::is_transient_txn(source),
            _ => false,
        }
    }

    /// Whether another producer with the sink's transactional id fenced this one.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Kafka { source, .. } if crate::kafka::is_fenced(source))
    }

    /// Whether this says the broker does not know the partition or topic (for a moment
    /// after a restart, or for good once the topic is deleted).
    pub fn is_unknown_partition(&self) -> bool {
        matches!(self, Error::Kafka { source, .. } if crate::kafka::is_unknown_partition(source))
    }

    /// A failure of the store of `what` (e.g. `checkpoint DIR`).
    pub fn storage(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Storage {
            what: what.into(),
            message: message.to_string(),
        }
    }

    /// An invalid option value.
    pub fn option(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes:
/// the one message the binary prints. Secrets are redacted (`secrets`); a huge token
/// the message quotes (a megabyte literal the parser stopped at) is cut to its start
/// and its length.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    let out = crate::secrets::redact(&out);
    let out = shorten_long_words(&shorten_long_quotes(&out, 120), 200);
    // Many short words can still add up (a message quoting a long expression): keep the
    // start and the end (where a position is).
    let n = out.chars().count();
    if n <= MAX_REPORT {
        return out;
    }
    let head: String = out.chars().take(MAX_REPORT * 3 / 4).collect();
    let tail: String = out.chars().skip(n - MAX_REPORT / 4).collect();
    format!("{head} … ({} characters left out) … {tail}", n - MAX_REPORT)
}

/// The most characters of a message [`report`] keeps (about).
const MAX_REPORT: usize = 1000;

/// `text` with every `'…'` or `"…"` span of more than `max` characters cut to its
/// first 60 and a note of its length.
fn shorten_long_quotes(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut rest = text;
    while let Some(open) = rest.find(['\'', '"']) {
        let q = rest.as_bytes()[open] as char;
        let Some(len) = rest[open + 1..].find(q) else {
            break;
        };
        let quoted = &rest[open + 1..open + 1 + len];
        out.push_str(&rest[..=open]);
        let n = quoted.chars().count();
        if n > max {
            out.extend(quoted.chars().take(60));
            out.push_str(&format!("…{q} ({n} characters)"));
        } else {
            out.push_str(quoted);
            out.push(q);
        }
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    out
}

/// `text` with every run of more than `max` non-blank characters cut to its first 80
/// and a note of its length.
fn shorten_long_words(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let n = word.chars().count();
        if n > max {
            out.extend(word.chars().take(80));
            out.push_str(&format!("… ({n} characters)"));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_message_keeps_its_start_and_end() {
        let e = anyhow::anyhow!("bad: \"{}\" here at Line: 3", "1 + ".repeat(900));
        let m = super::report(&e);
        assert!(m.contains("(3600 characters)") && m.len() < 150, "{m}");
        let e = anyhow::anyhow!("bad: {} at Line: 3", "a b ".repeat(900));
        let m = super::report(&e);
        assert!(
            m.starts_with("bad: a b") && m.ends_with("a b  at Line: 3"),
            "{m}"
        );
        assert!(m.chars().count() < 1100, "{m}");
    }

    #[test]
    fn a_huge_quoted_token_is_cut_in_the_message() {
        let e = anyhow::anyhow!("found: '{}' at Line: 9", "x".repeat(5000));
        let m = super::report(&e);
        assert!(
            m.starts_with("found: 'xxx") && m.ends_with("…' (5000 characters) at Line: 9"),
            "{m}"
        );
        assert!(m.len() < 150);
        let e = anyhow::anyhow!("delay '{}' is bad: 'ok'", "1 + ".repeat(900));
        let m = super::report(&e);
        assert!(
            m.ends_with("…' (3600 characters) is bad: 'ok'") && m.len() < 150,
            "{m}"
        );
        let e = anyhow::anyhow!("unquoted {} here", "y".repeat(900));
        assert!(super::report(&e).ends_with("… (900 characters) here"));
        assert_eq!(
            super::report(&anyhow::anyhow!("short words stay")),
            "short words stay"
        );
    }
}
