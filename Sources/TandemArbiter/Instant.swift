/// A point on a monotonic clock, as time since an arbitrary origin. The state machines take it as an
/// argument instead of reading a clock, so tests drive time explicitly.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var sinceOrigin: Duration

    public init(_ sinceOrigin: Duration) { self.sinceOrigin = sinceOrigin }

    public static let zero = Instant(.zero)
    public static func seconds(_ s: Double) -> Instant { Instant(.milliseconds(Int64(s * 1000))) }

    public static func < (a: Instant, b: Instant) -> Bool { a.sinceOrigin < b.sinceOrigin }
    public static func + (a: Instant, d: Duration) -> Instant { Instant(a.sinceOrigin + d) }
    public static func - (a: Instant, b: Instant) -> Duration { a.sinceOrigin - b.sinceOrigin }
    public var description: String { "\(sinceOrigin)" }
}

extension Duration {
    /// Whole milliseconds, for the wire.
    public var milliseconds: Int {
        let (s, attos) = components
        return Int(s) * 1000 + Int(attos / 1_000_000_000_000_000)
    }
}
