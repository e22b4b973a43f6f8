//! When the i-th connection (or churn cycle) starts: a constant `--rate`, a
//! linear `--ramp "0->20000 in 60s"`, or as fast as the concurrency cap
//! allows. Owns the schedule arithmetic and its parsing; never sleeps itself.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum RampError {
    #[error("ramp {0:?}: expected FROM->TO in DURATION, e.g. \"0->20000 in 60s\"")]
    Shape(String),
    #[error("ramp {0:?}: {1}")]
    Value(String, String),
}

/// A linear change of rate (per second) over a duration, then `to` forever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    pub from: f64,
    pub to: f64,
    pub over: Duration,
}

impl FromStr for Ramp {
    type Err = RampError;

    fn from_str(s: &str) -> Result<Ramp, RampError> {
        let (rates, over) = s
            .split_once(" in ")
            .ok_or_else(|| RampError::Shape(s.into()))?;
        let (from, to) = rates
            .split_once("->")
            .ok_or_else(|| RampError::Shape(s.into()))?;
        let num = |t: &str| {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| RampError::Value(s.into(), format!("{t:?} is not a rate >= 0")))
        };
        let over = humantime::parse_duration(over.trim())
            .map_err(|e| RampError::Value(s.into(), e.to_string()))?;
        let (from, to) = (num(from)?, num(to)?);
        if over.is_zero() || (from == 0.0 && to == 0.0) {
            return Err(RampError::Value(
                s.into(),
                "the ramp never starts anything".into(),
            ));
        }
        Ok(Ramp { from, to, over })
    }
}

/// The start-time schedule of a sequence of events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// Start everything at once; the concurrency cap paces it.
    Unpaced,
    Rate(f64),
    Ramp(Ramp),
}

impl Schedule {
    /// Offset from the start at which event `i` (0-based) is due.
    pub fn due(&self, i: u64) -> Duration {
        let n = i as f64;
        match *self {
            Schedule::Unpaced => Duration::ZERO,
            Schedule::Rate(r) if r > 0.0 => Duration::from_secs_f64(n / r),
            Schedule::Rate(_) => Duration::ZERO,
            Schedule::Ramp(Ramp { from, to, over }) => {
                let t_end = over.as_secs_f64();
                let slope = (to - from) / t_end;
                // Events started by time t: from*t + slope*t^2/2.
                let at_end = from * t_end + slope * t_end * t_end / 2.0;
                if n >= at_end {
                    if to <= 0.0 {
                        return Duration::MAX;
                    }
                    return Duration::from_secs_f64(t_end + (n - at_end) / to);
                }
                let t = if slope.abs() < 1e-12 {
                    n / from
                } else {
                    (-from + (from * from + 2.0 * slope * n).max(0.0).sqrt()) / slope
                };
                Duration::from_secs_f64(t.max(0.0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ramps() {
        let r: Ramp = "0->20000 in 60s".parse().unwrap();
        assert_eq!(
            r,
            Ramp {
                from: 0.0,
                to: 20000.0,
                over: Duration::from_secs(60)
            }
        );
        assert!("0->10".parse::<Ramp>().is_err());
        assert!("a->10 in 5s".parse::<Ramp>().is_err());
        assert!("0->0 in 5s".parse::<Ramp>().is_err());
        assert!("1->10 in forever".parse::<Ramp>().is_err());
    }

    #[test]
    fn constant_rate_spaces_events() {
        let s = Schedule::Rate(100.0);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(50), Duration::from_millis(500));
    }

    #[test]
    fn linear_ramp_starts_the_integral_of_its_rate() {
        // 0 -> 100/s over 10 s starts 500 events by t = 10 s, 125 by t = 5 s.
        let s = Schedule::Ramp("0->100 in 10s".parse().unwrap());
        let close = |d: Duration, secs: f64| (d.as_secs_f64() - secs).abs() < 1e-6;
        assert!(close(s.due(125), 5.0), "{:?}", s.due(125));
        assert!(close(s.due(500), 10.0), "{:?}", s.due(500));
        // After the ramp, the final rate holds.
        assert!(close(s.due(600), 11.0), "{:?}", s.due(600));
        // Due times never go backwards.
        let mut last = Duration::ZERO;
        for i in 0..700 {
            assert!(s.due(i) >= last);
            last = s.due(i);
        }
    }
}
