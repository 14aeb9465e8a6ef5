//! Order statistics over latency samples (microseconds).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Nearest-rank percentiles, so every figure is a sample that was actually observed.
pub fn summarize(samples: &[f64]) -> Summary {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return Summary {
            n: 0,
            min: f64::NAN,
            median: f64::NAN,
            p90: f64::NAN,
            p99: f64::NAN,
            max: f64::NAN,
            mean: f64::NAN,
        };
    }
    let rank = |p: f64| {
        let idx = ((p / 100.0) * n as f64).ceil() as usize;
        sorted[idx.clamp(1, n) - 1]
    };
    Summary {
        n,
        min: sorted[0],
        median: rank(50.0),
        p90: rank(90.0),
        p99: rank(99.0),
        max: sorted[n - 1],
        mean: sorted.iter().sum::<f64>() / n as f64,
    }
}

/// Microseconds as the report shows them: µs below a millisecond, ms above.
pub fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "–".to_owned()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_observed_samples() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&samples);
        assert_eq!(
            (s.min, s.median, s.p90, s.p99, s.max),
            (1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.mean, 50.5);
    }

    #[test]
    fn a_single_sample_is_every_percentile() {
        let s = summarize(&[7.0]);
        assert_eq!(
            (s.min, s.median, s.p99, s.max, s.n),
            (7.0, 7.0, 7.0, 7.0, 1)
        );
    }

    #[test]
    fn no_samples_give_no_figures() {
        let s = summarize(&[]);
        assert_eq!(s.n, 0);
        assert!(s.median.is_nan());
        assert_eq!(fmt_us(s.median), "–");
    }

    #[test]
    fn durations_print_in_a_readable_unit() {
        assert_eq!(fmt_us(57.4), "57 µs");
        assert_eq!(fmt_us(1234.0), "1.23 ms");
    }
}
