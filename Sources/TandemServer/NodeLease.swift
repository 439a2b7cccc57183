import TandemArbiter

/// This node's lease in the store, as the node can be sure of it. A renewal sent at `t` that succeeds
/// makes the store's lease run until at least `t + length` by the store's clock (the store reads its
/// clock after the renewal was sent), so the node counts it as held until `t + length - margin` by its
/// own monotonic clock and stops serving before then: the margin covers the tick that notices, and the
/// two clocks' rates differing a little. Another node takes a session over only after the store's lease
/// has run out, so a node that lost the store never serves beside the session's new home.
struct NodeLease: Sendable, Equatable {
    let length: Duration
    let margin: Duration
    private(set) var heldUntil: Instant?

    init(length: Duration, margin: Duration) {
        self.length = length
        self.margin = margin
    }

    /// A renewal sent at `sentAt` succeeded.
    mutating func renewed(sentAt: Instant) {
        let until = sentAt + (length - margin)
        if heldUntil.map({ until > $0 }) ?? true { heldUntil = until }
    }

    /// Whether the node may serve at `now`.
    func holds(at now: Instant) -> Bool { heldUntil.map { now < $0 } ?? false }

    /// Whether the node has ever held it (before the first renewal there is nothing to lose).
    var wasEverHeld: Bool { heldUntil != nil }
}
