import TandemSTUN
import Synchronization

/// What each source IP address may ask of every shard together, per second: Allocate requests, and
/// answers sent without authentication (Binding responses, 401 challenges, errors), which would
/// otherwise let anybody reflect traffic at a spoofed address.
public final class SourceRates: Sendable {
    public enum Kind: Sendable { case allocate, unauthenticatedAnswer }

    struct Key: Hashable {
        var ip: IPAddress
        var kind: Kind
    }

    struct Window {
        var second: Int64
        var count = 0
    }

    private let state = Mutex<[Key: Window]>([:])

    public init() {}

    /// Counts one of `kind` from `ip` in the second `now` falls in; false past `limit` (0: no limit).
    public func take(_ kind: Kind, from ip: IPAddress, limit: Int, now: Double) -> Bool {
        guard limit > 0 else { return true }
        let second = Int64(now.rounded(.down))
        let key = Key(ip: ip, kind: kind)
        return state.withLock { windows in
            if windows.count > 100_000 { windows = windows.filter { $0.value.second == second } }
            var w = windows[key].flatMap { $0.second == second ? $0 : nil } ?? Window(second: second)
            w.count += 1
            windows[key] = w
            return w.count <= limit
        }
    }
}
