import TandemArbiter

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
