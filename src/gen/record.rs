//! Makes the seed workload's JSON log records (../shared/workload.md), byte for byte,
//! into a caller's buffer.
//!
//! This is the hot path of `sluice gen` and of the engine's built-in generator source,
//! so it allocates nothing per record and uses no JSON library: every string it can
//! emit is a constant or precomputed once in [`RecordMaker::new`], and the record is
//! assembled with `extend_from_slice`. It must stay an order of magnitude cheaper than
//! sending a record to Kafka.

/// The ~140-word vocabulary `content` is drawn from. No word contains "crash", so the
/// only crash mentions are the ones `ADDITIONAL_TERM=crash` inserts; exactly one word
/// is "vulnerability" (Query 1's term).
pub const VOCABULARY: &[&str] = &[
    "virus",
    "intrusion",
    "socket",
    "phishing",
    "botnet",
    "encryption",
    "login",
    "malware",
    "firewall",
    "packet",
    "router",
    "switch",
    "gateway",
    "proxy",
    "tunnel",
    "certificate",
    "token",
    "session",
    "cookie",
    "header",
    "payload",
    "buffer",
    "overflow",
    "exploit",
    "patch",
    "update",
    "kernel",
    "driver",
    "module",
    "daemon",
    "service",
    "process",
    "thread",
    "memory",
    "disk",
    "cpu",
    "network",
    "bandwidth",
    "latency",
    "throughput",
    "database",
    "query",
    "index",
    "cache",
    "replica",
    "cluster",
    "node",
    "container",
    "pod",
    "image",
    "registry",
    "deploy",
    "rollback",
    "backup",
    "snapshot",
    "restore",
    "cron",
    "scheduler",
    "queue",
    "topic",
    "stream",
    "broker",
    "producer",
    "consumer",
    "ransomware",
    "spyware",
    "adware",
    "trojan",
    "worm",
    "rootkit",
    "keylogger",
    "spam",
    "ddos",
    "scan",
    "probe",
    "brute",
    "password",
    "hash",
    "salt",
    "cipher",
    "key",
    "signature",
    "audit",
    "policy",
    "compliance",
    "access",
    "permission",
    "role",
    "user",
    "admin",
    "account",
    "credential",
    "identity",
    "oauth",
    "saml",
    "ldap",
    "dns",
    "dhcp",
    "http",
    "https",
    "tls",
    "ssl",
    "ssh",
    "vpn",
    "api",
    "endpoint",
    "request",
    "response",
    "timeout",
    "retry",
    "error",
    "warning",
    "alert",
    "incident",
    "breach",
    "leak",
    "vulnerability",
    "cve",
    "zero-day",
    "sandbox",
    "honeypot",
    "siem",
    "ids",
    "ips",
    "antivirus",
    "quarantine",
    "forensics",
    "threat",
    "risk",
    "anomaly",
    "baseline",
    "metric",
    "log",
    "trace",
    "monitor",
    "dashboard",
    "report",
    "core",
    "cloud",
    "storage",
    "bucket",
    "object",
    "blob",
    "file",
];

/// (severity, status) pairs: Low→Info, Medium→Warning, High→Error, Critical→Failure.
pub const SEVERITY_STATUS: [(&str, &str); 4] = [
    ("Low", "Info"),
    ("Medium", "Warning"),
    ("High", "Error"),
    ("Critical", "Failure"),
];

/// `source_ip` is `192.168.1.N` for N in `0..IP_COUNT`.
pub const IP_COUNT: u32 = 100;
/// `user_id` is `user_N` for N in `USER_FIRST..USER_FIRST + USER_COUNT`.
pub const USER_FIRST: u32 = 1000;
/// Number of distinct users.
pub const USER_COUNT: u32 = 1000;
/// `content` has between these many words (inclusive), not counting the extra term.
pub const WORDS_MIN: usize = 15;
/// See [`WORDS_MIN`].
pub const WORDS_MAX: usize = 20;

/// What varies between generators: the seed and the optional extra term.
#[derive(Debug, Clone)]
pub struct RecordSpec {
    /// Seed of the pseudo-random sequence: equal seeds give equal records.
    pub seed: u64,
    /// A word inserted into `content` of about one record in `term_rate`.
    pub term: Option<String>,
    /// One record in this many gets `term` (0 or 1 means every record).
    pub term_rate: u64,
    /// Each record's timestamp is its clock reading minus up to this many ms, so event
    /// time is a little out of order as in the wild.
    pub max_disorder_ms: u64,
}

/// A string padded to `N` bytes, so appending it is one fixed-size copy the compiler
/// inlines (followed by a truncate) instead of a call to `memcpy` for a few bytes.
#[derive(Clone, Copy)]
struct Padded<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Padded<N> {
    fn new(s: &str) -> Self {
        assert!(s.len() <= N, "{s:?} is longer than {N} bytes");
        let mut bytes = [b' '; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Self {
            bytes,
            len: s.len(),
        }
    }

    #[inline(always)]
    fn append(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
        out.truncate(out.len() - N + self.len);
    }
}

/// Makes records. Owns its random state; one per producing thread.
pub struct RecordMaker {
    rng: fastrand::Rng,
    term: Option<Vec<u8>>,
    term_rate: u64,
    max_disorder_ms: u64,
    /// `,"status":"S","severity":"V","source_ip":"192.168.1.` per severity.
    status: Vec<Padded<80>>,
    /// `N","user_id":"user_` per IP.
    ip: Vec<Padded<32>>,
    /// `N","content":"` per user.
    user: Vec<Padded<32>>,
    /// Each vocabulary word with its trailing space.
    words: Vec<Padded<16>>,
    ts_buf: itoa::Buffer,
}

impl RecordMaker {
    /// A maker for `spec`. Precomputes every variable string it will emit.
    pub fn new(spec: &RecordSpec) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(spec.seed),
            term: spec
                .term
                .as_ref()
                .filter(|t| !t.is_empty())
                .map(|t| t.clone().into_bytes()),
            term_rate: spec.term_rate.max(1),
            max_disorder_ms: spec.max_disorder_ms,
            status: SEVERITY_STATUS
                .iter()
                .map(|(sev, st)| {
                    Padded::new(&format!(
                        ",\"status\":\"{st}\",\"severity\":\"{sev}\",\"source_ip\":\"192.168.1."
                    ))
                })
                .collect(),
            ip: (0..IP_COUNT)
                .map(|n| Padded::new(&format!("{n}\",\"user_id\":\"user_")))
                .collect(),
            user: (USER_FIRST..USER_FIRST + USER_COUNT)
                .map(|n| Padded::new(&format!("{n}\",\"content\":\"")))
                .collect(),
            words: VOCABULARY
                .iter()
                .map(|w| Padded::new(&format!("{w} ")))
                .collect(),
            ts_buf: itoa::Buffer::new(),
        }
    }

    /// Appends one record (no trailing newline) to `out`, with event time `clock_ms`
    /// minus the configured disorder.
    pub fn append(&mut self, clock_ms: i64, out: &mut Vec<u8>) {
        let rng = &mut self.rng;
        let disorder = if self.max_disorder_ms == 0 {
            0
        } else {
            rng.u64(0..=self.max_disorder_ms) as i64
        };
        let status = &self.status[rng.usize(0..self.status.len())];
        let ip = &self.ip[rng.usize(0..self.ip.len())];
        let user = &self.user[rng.usize(0..self.user.len())];
        let words = rng.usize(WORDS_MIN..=WORDS_MAX);
        let term_at = match &self.term {
            Some(_) if rng.u64(0..self.term_rate) == 0 => Some(rng.usize(0..=words)),
            _ => None,
        };

        out.extend_from_slice(b"{\"timestamp\":");
        out.extend_from_slice(self.ts_buf.format(clock_ms - disorder).as_bytes());
        status.append(out);
        ip.append(out);
        user.append(out);
        // Every word carries its trailing space; the last space is dropped below.
        for i in 0..words {
            if term_at == Some(i) {
                push_term(self.term.as_deref(), out);
            }
            self.words[rng.usize(0..self.words.len())].append(out);
        }
        if term_at == Some(words) {
            push_term(self.term.as_deref(), out);
        }
        out.pop();
        out.extend_from_slice(b"\"}");
    }
}

/// Appends the extra term and its trailing space.
fn push_term(term: Option<&[u8]>, out: &mut Vec<u8>) {
    if let Some(term) = term {
        out.extend_from_slice(term);
        out.push(b' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(term: Option<&str>, rate: u64) -> RecordSpec {
        RecordSpec {
            seed: 7,
            term: term.map(str::to_string),
            term_rate: rate,
            max_disorder_ms: 0,
        }
    }

    #[test]
    fn vocabulary_has_no_crash_and_one_vulnerability() {
        assert!(VOCABULARY.len() >= 130, "{}", VOCABULARY.len());
        assert!(VOCABULARY.iter().all(|w| !w.contains("crash")));
        assert_eq!(
            VOCABULARY
                .iter()
                .filter(|w| w.contains("vulnerability"))
                .count(),
            1
        );
        assert!(VOCABULARY.iter().all(|w| !w.contains(['"', '\\', ' '])));
    }

    #[test]
    fn term_at_every_position_keeps_single_spaces() {
        let mut maker = RecordMaker::new(&spec(Some("crash"), 1));
        let mut buf = Vec::new();
        for _ in 0..2000 {
            buf.clear();
            maker.append(1_000, &mut buf);
            let s = std::str::from_utf8(&buf).unwrap();
            let content = s
                .split("\"content\":\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"}");
            assert!(
                !content.starts_with(' ') && !content.ends_with(' ') && !content.contains("  ")
            );
            let words: Vec<&str> = content.split(' ').collect();
            assert!(
                (WORDS_MIN + 1..=WORDS_MAX + 1).contains(&words.len()),
                "{content}"
            );
            assert_eq!(
                words.iter().filter(|w| **w == "crash").count(),
                1,
                "{content}"
            );
        }
    }

    #[test]
    fn disorder_stays_within_bound() {
        let mut s = spec(None, 1);
        s.max_disorder_ms = 50;
        let mut maker = RecordMaker::new(&s);
        let mut buf = Vec::new();
        let mut seen_disorder = false;
        for _ in 0..1000 {
            buf.clear();
            maker.append(10_000, &mut buf);
            let s = std::str::from_utf8(&buf).unwrap();
            let ts: i64 = s[13..s.find(',').unwrap()].parse().unwrap();
            assert!((9_950..=10_000).contains(&ts), "{ts}");
            seen_disorder |= ts != 10_000;
        }
        assert!(seen_disorder);
    }
}
