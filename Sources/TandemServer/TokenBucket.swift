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

/// Rate limiting of one socket: a bucket for messages, and a count of refusals that closes a socket
/// that keeps on sending past its limit. Only the first refusal in each second is answered, so a flood
/// is never answered with a flood.
struct SocketRateLimit: Sendable {
    enum Verdict: Equatable {
        case allow
        /// Refuse; answer with `rate_limited` if `answer`.
        case refuse(answer: Bool)
        /// Close with 4429.
        case close
    }

    private var bucket: TokenBucket
    private var refusedInWindow = 0
    private var windowStart: Instant
    private var lastAnswer: Instant?
    /// Refusals within 10 s that close the socket.
    let closeAfter: Int

    init(rate: Double, burst: Double, now: Instant, closeAfter: Int = 200) {
        bucket = TokenBucket(rate: rate, burst: burst, now: now)
        windowStart = now
        self.closeAfter = closeAfter
    }

    mutating func check(now: Instant) -> Verdict {
        if bucket.take(now: now) { return .allow }
        if now - windowStart >= .seconds(10) {
            windowStart = now
            refusedInWindow = 0
        }
        refusedInWindow += 1
        if refusedInWindow >= closeAfter { return .close }
        if let last = lastAnswer, now - last < .seconds(1) { return .refuse(answer: false) }
        lastAnswer = now
        return .refuse(answer: true)
    }
}
