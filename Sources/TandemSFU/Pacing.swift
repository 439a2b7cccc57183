/// A token bucket that hands out send times: each request reserves a slot and learns how long to wait
/// for it, so callers queue fairly behind a rate instead of failing. Time is given, never read.
public struct RequestPacer: Sendable, Equatable {
    public let perSecond: Double
    public let burst: Double
    private var tokens: Double
    private var updatedAt: Duration

    public init(perSecond: Double, burst: Double? = nil, now: Duration = .zero) {
        precondition(perSecond > 0)
        self.perSecond = perSecond
        self.burst = max(1, burst ?? perSecond)
        tokens = self.burst
        updatedAt = now
    }

    /// Reserves one request at `now` and returns how long it must wait before it goes; nil (and nothing
    /// reserved) when that would be longer than `maxWait`, so that the queue stays bounded.
    public mutating func reserve(now: Duration, maxWait: Duration? = nil) -> Duration? {
        if now > updatedAt {
            tokens = min(burst, tokens + (now - updatedAt) / .seconds(1) * perSecond)
            updatedAt = now
        }
        // A negative balance is the queue ahead: this request goes when the bucket has refilled it.
        let wait: Duration = tokens >= 1 ? .zero : .seconds((1 - tokens) / perSecond)
        if let maxWait, wait > maxWait { return nil }
        tokens -= 1
        return wait
    }
}

/// When to try a failed request again: rate limits (429) and server errors (5xx, timeouts, failed
/// connections) back off exponentially, each kind to its own bound; other answers are final.
public struct RetryPolicy: Sendable, Equatable {
    /// Tries in all (the first included) when rate-limited, and for server errors.
    public var rateLimitedTries = 5
    public var serverErrorTries = 3
    public var base: Duration = .milliseconds(500)
    public var cap: Duration = .seconds(8)

    public init() {}

    public enum Failure: Sendable, Equatable {
        case rateLimited(retryAfter: Duration?)
        case serverError
        case final
    }

    /// The wait before try `tries + 1`, after `tries` tries failed with `failure`; nil to give up.
    public func delay(after tries: Int, _ failure: Failure) -> Duration? {
        switch failure {
        case .final:
            return nil
        case .serverError:
            guard tries < serverErrorTries else { return nil }
            return backoff(tries)
        case .rateLimited(let retryAfter):
            guard tries < rateLimitedTries else { return nil }
            // The service's own Retry-After wins when longer, within the cap.
            return min(cap, max(backoff(tries), retryAfter ?? .zero))
        }
    }

    private func backoff(_ tries: Int) -> Duration {
        min(cap, base * (1 << min(max(tries - 1, 0), 20)))
    }
}
