//! `sluice gen --nexmark`: the Nexmark person, auction and bid streams (the `nexmark`
//! crate's generator) into three Kafka topics `PREFIX-person`, `PREFIX-auction`,
//! `PREFIX-bid` (or three directories under `--output`), JSON with the crate's field
//! names, as RisingWave's Nexmark setup writes them. `--max-records` counts events of
//! all three types; `--target-rps` paces them; `--start-time-ms` is the base time (the
//! default is fixed, so two runs make the same events).

use std::io::Write;
use std::time::{Duration, Instant};

use nexmark::config::NexmarkConfig;
use nexmark::event::Event;
use nexmark::EventGenerator;

use super::output::{open_output, GenOutput};
use super::{pace, GenOptions, GenSummary, CHUNK};
use crate::error::Result;
use crate::source::nexmark::{write_json, DEFAULT_BASE_TIME};

/// The three streams' names, in the order outputs are kept.
pub const STREAMS: [&str; 3] = ["person", "auction", "bid"];

/// Runs the Nexmark generator until `--max-records` events are out (or forever), or
/// until `stop` returns true.
pub fn run(
    opts: &GenOptions,
    progress: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<GenSummary> {
    let mut outs: Vec<Box<dyn GenOutput>> = Vec::with_capacity(3);
    for stream in STREAMS {
        let mut o = opts.clone();
        o.topic = format!("{}-{stream}", opts.nexmark_prefix);
        o.output = opts.output.as_ref().map(|d| d.join(stream));
        if let Some(d) = &o.output {
            std::fs::create_dir_all(d).map_err(|e| crate::Error::io("cannot create", d, e))?;
        }
        outs.push(open_output(&o)?);
    }
    let config = NexmarkConfig {
        base_time: opts
            .start_time_ms
            .map_or(DEFAULT_BASE_TIME, |t| t.max(0) as u64),
        ..Default::default()
    };
    let limit = match opts.max_records {
        0 => u64::MAX,
        n => n,
    };
    let every = match opts.target_rps {
        0 => CHUNK,
        rps => (rps / 100).clamp(1, CHUNK),
    };
    let start = Instant::now();
    let mut last_report = (start, 0u64);
    let mut counts = [0u64; 3];
    let mut buf = Vec::with_capacity(512);
    let mut index = 0u64;
    for event in EventGenerator::new(config) {
        if index >= limit {
            break;
        }
        if index.is_multiple_of(every) {
            if stop() {
                break;
            }
            let wall = super::wall_ms();
            for o in &mut outs {
                o.tick(wall);
            }
            pace(opts.target_rps, start, index);
            let now = Instant::now();
            if !opts.quiet && now.duration_since(last_report.0) >= Duration::from_secs(1) {
                let rate = (index - last_report.1) as f64
                    / now.duration_since(last_report.0).as_secs_f64();
                let _ = writeln!(
                    progress,
                    "gen: {index} Nexmark events sent, {rate:.0} events/s"
                );
                last_report = (now, index);
            }
        }
        let k = match event {
            Event::Person(_) => 0,
            Event::Auction(_) => 1,
            Event::Bid(_) => 2,
        };
        buf.clear();
        write_json(&event, &mut buf)?;
        outs[k].send(counts[k], &buf)?;
        counts[k] += 1;
        index += 1;
    }
    for o in &mut outs {
        o.finish()?;
    }
    let destination = outs
        .iter()
        .map(|o| o.describe())
        .collect::<Vec<_>>()
        .join(", ");
    let summary = GenSummary {
        records: index,
        elapsed: start.elapsed(),
        seed: 0,
        destination,
    };
    let _ = writeln!(
        progress,
        "gen: done: {index} Nexmark events ({} person, {} auction, {} bid) to {} in {:.2} s ({:.0} events/s)",
        counts[0],
        counts[1],
        counts[2],
        summary.destination,
        summary.elapsed.as_secs_f64(),
        summary.rate()
    );
    Ok(summary)
}
