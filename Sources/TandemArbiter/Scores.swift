import TandemProtocol

/// The learning score of each provider (0–100): it rises when participants connect on a provider and
/// falls when it fails, and the first joiner of a session gets the best-scoring one.
public struct ProviderScores: Sendable, Equatable {
    public static let defaults: [ProviderName: Int] = [.p2p: 80, .relay: 70, .sfu: 60]
    public static let onConnected = 5
    public static let onFailure = -15

    public private(set) var values: [ProviderName: Int]

    public init(_ values: [ProviderName: Int] = defaults) {
        var merged = Self.defaults
        for (k, v) in values { merged[k] = Self.clamp(v) }
        self.values = merged
    }

    public subscript(name: ProviderName) -> Int { values[name] ?? 0 }

    public mutating func apply(_ delta: Int, to name: ProviderName) {
        values[name] = Self.clamp(self[name] + delta)
    }

    public static func clamp(_ v: Int) -> Int { min(100, max(0, v)) }

    /// The best provider among `candidates`; ties go to the one earlier in `order`.
    public func best(among candidates: Set<ProviderName>, order: [ProviderName]) -> ProviderName? {
        func rank(_ p: ProviderName) -> Int { order.firstIndex(of: p) ?? order.count }
        return candidates.min { a, b in
            self[a] != self[b] ? self[a] > self[b] : (rank(a), a) < (rank(b), b)
        }
    }
}
