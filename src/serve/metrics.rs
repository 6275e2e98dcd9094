//! The server's counters in Prometheus' text format (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the request-latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Counters and gauges; cheap enough to update on every request.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub samples: AtomicU64,
    pub bootstraps: AtomicU64,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
}

impl Metrics {
    /// One finished request on `route` (the route's pattern, not the path: ids stay out).
    pub fn request(&self, route: &str, code: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_string(), code)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route.to_string()).or_default();
            for (c, b) in h.counts.iter_mut().zip(BUCKETS) {
                if seconds <= b {
                    *c += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// The text `GET /metrics` answers, with the gauges the caller reads at that moment.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut s = String::new();
        let counter = |s: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let _ = writeln!(
            s,
            "# HELP fhec_requests_total Requests answered, by route and status.\n# TYPE fhec_requests_total counter"
        );
        if let Ok(r) = self.requests.lock() {
            for ((route, code), n) in r.iter() {
                let _ = writeln!(
                    s,
                    "fhec_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP fhec_request_seconds Time to answer a request, by route.\n# TYPE fhec_request_seconds histogram"
        );
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                for (c, b) in h.counts.iter().zip(BUCKETS) {
                    let _ = writeln!(
                        s,
                        "fhec_request_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {c}"
                    );
                }
                let _ = writeln!(
                    s,
                    "fhec_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nfhec_request_seconds_sum{{route=\"{route}\"}} {}\nfhec_request_seconds_count{{route=\"{route}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut s,
            "fhec_received_bytes_total",
            "Request body bytes read.",
            get(&self.bytes_in),
        );
        counter(
            &mut s,
            "fhec_sent_bytes_total",
            "Response body bytes sent.",
            get(&self.bytes_out),
        );
        counter(
            &mut s,
            "fhec_samples_total",
            "Encrypted samples evaluated.",
            get(&self.samples),
        );
        counter(
            &mut s,
            "fhec_bootstraps_total",
            "Programmable bootstraps (table lookups) run.",
            get(&self.bootstraps),
        );
        counter(
            &mut s,
            "fhec_rejected_total",
            "Requests refused because the queue was full (503).",
            get(&self.rejected),
        );
        counter(
            &mut s,
            "fhec_cancelled_total",
            "Evaluations stopped: past --request-timeout or the client went away.",
            get(&self.cancelled),
        );
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        s
    }
}
