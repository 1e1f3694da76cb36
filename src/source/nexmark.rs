//! The Nexmark source: the `person`, `auction` and `bid` streams of the Nexmark
//! benchmark, made in-process by the `nexmark` crate (RisingWave's port of the reference
//! generator) and read as JSON with the crate's field names.
//!
//! ```sql
//! CREATE TABLE bid WITH (connector = 'nexmark', event_type = 'bid', max_events = '1000000',
//!                        event_time = 'date_time', watermark_delay = '4 seconds');
//! ```
//! Events are a pure function of their number and the options (`base_time` is fixed by
//! default, unlike Flink's wall clock), so a replay of an offset range makes the same
//! events, and the three tables of one configuration agree (bids name auctions and
//! people that exist). Partition `p` of `P` holds the type's events `p, p + P, …`.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};
use nexmark::EventGenerator;

use super::{check_options, num_option, PartitionReader, Source};
use crate::error::{Error, Result};
use crate::sql::TableDef;

/// `base_time` unless the table sets it: 2026-01-01 00:00:00 UTC.
pub const DEFAULT_BASE_TIME: u64 = 1_767_225_600_000;

/// The options a Nexmark table understands.
pub const OPTIONS: &[&str] = &[
    "event_type",
    "max_events",
    "rate",
    "partitions",
    "base_time",
    "events_per_second",
    "person_proportion",
    "auction_proportion",
    "bid_proportion",
    "active_people",
    "in_flight_auctions",
];

/// The event type a Nexmark table reads: its `event_type` option, else its name.
pub fn event_type(def: &TableDef) -> Result<EventType> {
    let name = def
        .options
        .get("event_type")
        .cloned()
        .unwrap_or_else(|| def.name.to_lowercase());
    match name.as_str() {
        "person" => Ok(EventType::Person),
        "auction" => Ok(EventType::Auction),
        "bid" => Ok(EventType::Bid),
        other => Err(Error::option(
            format!("event_type of table {}", def.name),
            format!("'{other}' is not a Nexmark stream; use 'person', 'auction' or 'bid'"),
        )),
    }
}

/// The columns of a Nexmark stream (the crate's field names; `date_time` and `expires`
/// are epoch milliseconds, read as TIMESTAMP).
pub fn schema(kind: EventType) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let cols: Vec<(&str, DataType)> = match kind {
        EventType::Person => vec![
            ("id", DataType::Int64),
            ("name", DataType::Utf8),
            ("email_address", DataType::Utf8),
            ("credit_card", DataType::Utf8),
            ("city", DataType::Utf8),
            ("state", DataType::Utf8),
            ("date_time", ts()),
            ("extra", DataType::Utf8),
        ],
        EventType::Auction => vec![
            ("id", DataType::Int64),
            ("item_name", DataType::Utf8),
            ("description", DataType::Utf8),
            ("initial_bid", DataType::Int64),
            ("reserve", DataType::Int64),
            ("date_time", ts()),
            ("expires", ts()),
            ("seller", DataType::Int64),
            ("category", DataType::Int64),
            ("extra", DataType::Utf8),
        ],
        EventType::Bid => vec![
            ("auction", DataType::Int64),
            ("bidder", DataType::Int64),
            ("price", DataType::Int64),
            ("channel", DataType::Utf8),
            ("url", DataType::Utf8),
            ("date_time", ts()),
            ("extra", DataType::Utf8),
        ],
    };
    Arc::new(Schema::new(
        cols.into_iter()
            .map(|(n, t)| Field::new(n, t, true))
            .collect::<Vec<_>>(),
    ))
}

/// The generator configuration `def`'s options describe.
pub fn config(def: &TableDef) -> Result<NexmarkConfig> {
    let mut c = NexmarkConfig {
        base_time: num_option(def, "base_time", DEFAULT_BASE_TIME)?,
        ..Default::default()
    };
    let eps = num_option(def, "events_per_second", c.first_rate as u64)? as usize;
    c.first_rate = eps.max(1);
    c.next_rate = eps.max(1);
    c.person_proportion =
        num_option(def, "person_proportion", c.person_proportion as u64)? as usize;
    c.auction_proportion =
        num_option(def, "auction_proportion", c.auction_proportion as u64)? as usize;
    c.bid_proportion = num_option(def, "bid_proportion", c.bid_proportion as u64)? as usize;
    c.active_people = num_option(def, "active_people", c.active_people as u64)? as usize;
    c.in_flight_auctions =
        num_option(def, "in_flight_auctions", c.in_flight_auctions as u64)? as usize;
    if c.person_proportion == 0 || c.auction_proportion == 0 || c.bid_proportion == 0 {
        return Err(Error::option(
            format!("proportions of table {}", def.name),
            "person, auction and bid proportions must each be at least 1",
        ));
    }
    Ok(c)
}

/// How many events of `kind` are among the first `total` events of `c`.
pub fn events_of(kind: EventType, total: u64, c: &NexmarkConfig) -> u64 {
    let (pp, ap, bp) = (
        c.person_proportion as u64,
        c.auction_proportion as u64,
        c.bid_proportion as u64,
    );
    let (epochs, rem) = (total / (pp + ap + bp), total % (pp + ap + bp));
    match kind {
        EventType::Person => epochs * pp + rem.min(pp),
        EventType::Auction => epochs * ap + rem.saturating_sub(pp).min(ap),
        EventType::Bid => epochs * bp + rem.saturating_sub(pp + ap),
    }
}

/// Writes event `e` as one JSON object (the inner record, not the enum's tag).
pub fn write_json(e: &Event, out: &mut Vec<u8>) -> Result<()> {
    let r = match e {
        Event::Person(p) => serde_json::to_writer(&mut *out, p),
        Event::Auction(a) => serde_json::to_writer(&mut *out, a),
        Event::Bid(b) => serde_json::to_writer(&mut *out, b),
    };
    r.map_err(|e| Error::option("nexmark", format!("cannot encode an event: {e}")))
}

/// A Nexmark stream as a partitioned source.
pub struct NexmarkSource {
    name: String,
    kind: EventType,
    config: NexmarkConfig,
    partitions: usize,
    /// Events of this type in all (`u64::MAX`: unbounded).
    events: u64,
    /// Events of all types per second of wall time; 0 = as fast as they are taken.
    rate: u64,
    opened: Instant,
}

impl NexmarkSource {
    /// The Nexmark stream `def` declares.
    pub fn open(def: &TableDef) -> Result<Self> {
        check_options(def, OPTIONS)?;
        let kind = event_type(def)?;
        let config = config(def)?;
        let partitions = num_option(def, "partitions", 2)?.max(1) as usize;
        let events = match num_option(def, "max_events", 0)? {
            0 => u64::MAX,
            n => events_of(kind, n, &config),
        };
        Ok(Self {
            name: def.name.clone(),
            kind,
            config,
            partitions,
            events,
            rate: num_option(def, "rate", 0)?,
            opened: Instant::now(),
        })
    }

    fn partition_cap(&self, p: usize) -> i64 {
        if self.events == u64::MAX {
            return i64::MAX;
        }
        super::partition_share(self.events, self.partitions, p)
    }
}

impl Source for NexmarkSource {
    fn describe(&self) -> String {
        let max = match self.events {
            u64::MAX => "unbounded".to_string(),
            n => format!("{n} events"),
        };
        format!(
            "Nexmark {:?} stream of table {} ({} partitions, {max})",
            self.kind, self.name, self.partitions
        )
    }

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn start_offsets(&mut self) -> Result<Vec<i64>> {
        Ok(vec![0; self.partitions])
    }

    fn available_ends(&mut self) -> Result<Vec<i64>> {
        let due = match self.rate {
            0 => i64::MAX,
            r => {
                // Of `r` events per second of all types, this type's share.
                let all = (self.opened.elapsed().as_secs_f64() * r as f64) as u64;
                (events_of(self.kind, all, &self.config) / self.partitions as u64) as i64
            }
        };
        Ok((0..self.partitions)
            .map(|p| due.min(self.partition_cap(p)))
            .collect())
    }

    fn readers(&mut self) -> Result<Vec<Box<dyn PartitionReader>>> {
        Ok((0..self.partitions)
            .map(|p| {
                Box::new(NexmarkReader {
                    kind: self.kind,
                    config: self.config.clone(),
                    partition: p as u64,
                    partitions: self.partitions as u64,
                    buf: Vec::with_capacity(512),
                }) as Box<dyn PartitionReader>
            })
            .collect())
    }
}

struct NexmarkReader {
    kind: EventType,
    config: NexmarkConfig,
    partition: u64,
    partitions: u64,
    buf: Vec<u8>,
}

impl PartitionReader for NexmarkReader {
    fn read(
        &mut self,
        start: i64,
        end: i64,
        max_records: u64,
        f: &mut dyn FnMut(i64, &[u8]),
    ) -> Result<i64> {
        let stop = end.min(start.saturating_add(max_records.min(i64::MAX as u64) as i64));
        if stop <= start {
            return Ok(start);
        }
        let events = EventGenerator::new(self.config.clone())
            .with_type_filter(self.kind)
            .with_offset(start as u64 * self.partitions + self.partition)
            .with_step(self.partitions);
        let mut next = start;
        for e in events.take((stop - start) as usize) {
            self.buf.clear();
            write_json(&e, &mut self.buf)?;
            f(next, &self.buf);
            next += 1;
        }
        Ok(next)
    }
}
