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

    /// The topic does not exist and Sluice was not asked to create it.
    #[error("Kafka topic '{topic}' does not exist on {brokers}; create it (e.g. `sluice gen --partitions 2`) or fix the topic name")]
    TopicMissing { topic: String, brokers: String },

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

    /// An invalid option value.
    pub fn option(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
