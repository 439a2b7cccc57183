import TandemArbiter

/// A token bucket: `rate` tokens a second up to `burst`. Time is passed in.
struct TokenBucket: Sendable {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var last: Instant

    init(rate: Double, burst: Double, now: Instant) {
        self.rate = rate
        self.burst = burst
        tokens = burst
        last = now
    }

    /// Takes one token if there is one.
    mutating func take(now: Instant) -> Bool {
        let elapsed = Double((now - last).milliseconds) / 1000
        if elapsed > 0 {
            tokens = min(burst, tokens + elapsed * rate)
            last = now
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
