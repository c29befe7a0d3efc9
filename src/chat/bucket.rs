//! A token bucket: a rate per second with a burst of twice as many.

use std::time::Instant;

/// Allows `rate` actions per second on average, `2 * rate` in a burst.
#[derive(Debug)]
pub struct Bucket {
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u32) -> Bucket {
        let rate = rate.max(1);
        Bucket {
            rate,
            tokens: f64::from(rate) * 2.0,
            at: Instant::now(),
        }
    }

    /// The rate per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let burst = f64::from(self.rate) * 2.0;
        let refill = now.duration_since(self.at).as_secs_f64() * f64::from(self.rate);
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twice_the_rate_then_refused() {
        let mut b = Bucket::new(5);
        assert!((0..10).all(|_| b.take()));
        assert!(!b.take());
        assert_eq!(b.rate(), 5);
    }
}
