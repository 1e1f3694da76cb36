//! Sluice: a streaming SQL engine. Kafka micro-batches are decoded into Apache Arrow,
//! run through an Apache DataFusion plan with state kept across batches, and written
//! to the console, Parquet or Kafka. See ../shared/design.md for the architecture.
//!
//! The binary (`main.rs`) only parses arguments and calls into these modules.

pub mod checkpoint;
pub mod error;
pub mod gen;
pub mod join;
pub mod kafka;

pub use error::{Error, Result};
pub mod decode;
pub mod exec;
pub mod functions;
pub mod metrics;
pub mod operator;
pub mod secrets;
pub mod sink;
pub mod source;
pub mod sql;
pub mod state;
pub mod storage;
