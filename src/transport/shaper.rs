//! How fast one client may send: a token bucket on the bytes read from its socket. A client
//! past its budget is read more slowly, never closed, so that one sender cannot put more in
//! flight than the others can take (every stanza it sends is queued somewhere until written).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub bytes_per_sec: u32,
    pub burst: u32,
}

#[derive(Debug)]
pub struct Shaper {
    rate: Rate,
    /// Bytes that may be read at once; below zero, the client owes that much.
    tokens: i64,
    refilled: Instant,
}

impl Shaper {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            tokens: i64::from(rate.burst),
            refilled: Instant::now(),
        }
    }

    /// How long to wait before reading again, if the client sent more than it may.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = elapsed.as_micros() * u128::from(self.rate.bytes_per_sec) / 1_000_000;
        if earned > 0 {
            let earned = i64::try_from(earned).unwrap_or(i64::MAX);
            self.tokens = self
                .tokens
                .saturating_add(earned)
                .min(i64::from(self.rate.burst));
            self.refilled = now;
        }
        if self.tokens >= 0 {
            return None;
        }
        let owed = self.tokens.unsigned_abs();
        Some(Duration::from_micros(
            owed * 1_000_000 / u64::from(self.rate.bytes_per_sec) + 1,
        ))
    }

    /// `n` bytes were read.
    pub fn spend(&mut self, n: usize) {
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_passes_then_the_rate_holds() {
        let start = Instant::now();
        let mut shaper = Shaper::new(Rate {
            bytes_per_sec: 1000,
            burst: 5000,
        });
        shaper.refilled = start;
        assert_eq!(shaper.wait(start), None);
        shaper.spend(5000);
        assert_eq!(shaper.wait(start), None);
        shaper.spend(500);
        let wait = shaper.wait(start).expect("owes 500 bytes");
        assert!(wait >= Duration::from_millis(500) && wait < Duration::from_millis(501));
        // Half a second later the debt is paid.
        assert_eq!(shaper.wait(start + Duration::from_millis(500)), None);
        // Ten idle seconds refill no more than the burst.
        assert_eq!(shaper.wait(start + Duration::from_secs(10)), None);
        shaper.spend(5001);
        assert!(shaper.wait(start + Duration::from_secs(10)).is_some());
    }
}
