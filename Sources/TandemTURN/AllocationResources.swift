import TandemSTUN
import Synchronization

/// What all allocations of one server share, whichever loop they live on: the relay port range,
/// port reservations (EVEN-PORT with R, RESERVATION-TOKEN) and the allocation quotas. Touched only
/// when an allocation starts or ends, never per packet.
public final class AllocationResources: Sendable {
    public struct Limits: Sendable, Equatable {
        public var ports: ClosedRange<UInt16>
        /// Most allocations one identity (the part of the REST username after the colon) may hold; 0 is no limit.
        public var perIdentity: Int
        /// Most allocations in all; 0 is no limit (the port range still is one).
        public var total: Int

        public init(ports: ClosedRange<UInt16> = 49152...65535, perIdentity: Int = 64, total: Int = 0) {
            self.ports = ports
            self.perIdentity = perIdentity
            self.total = total
        }
    }

    struct State {
        var used: [Bool]
        var cursor: Int
        var reservations: [UInt64: (port: UInt16, expiry: Double)] = [:]
        var perIdentity: [String: Int] = [:]
        var total = 0
    }

    public let limits: Limits
    private let state: Mutex<State>

    public init(_ limits: Limits) {
        self.limits = limits
        let count = Int(limits.ports.upperBound) - Int(limits.ports.lowerBound) + 1
        state = Mutex(State(used: Array(repeating: false, count: count), cursor: Int.random(in: 0..<count)))
    }

    /// Counts one allocation against the quotas; false when either is full.
    public func acquire(identity: String) -> Bool {
        state.withLock { s in
            if limits.total > 0, s.total >= limits.total { return false }
            if limits.perIdentity > 0, s.perIdentity[identity, default: 0] >= limits.perIdentity { return false }
            s.total += 1
            s.perIdentity[identity, default: 0] += 1
            return true
        }
    }

    public func release(identity: String) {
        state.withLock { s in
            s.total -= 1
            let left = s.perIdentity[identity, default: 1] - 1
            s.perIdentity[identity] = left > 0 ? left : nil
        }
    }

    public var allocationCount: Int { state.withLock { $0.total } }

    /// A free port, or an even one whose successor is free as well when `reservePair` (the successor
    /// is then held for `reservationLifetime` under the returned token).
    public func takePort(even: Bool, reservePair: Bool, now: Double, reservationLifetime: Double) -> (port: UInt16, token: UInt64?)? {
        state.withLock { s in
            let count = s.used.count
            let low = Int(limits.ports.lowerBound)
            for step in 0..<count {
                let i = (s.cursor + step) % count
                let port = low + i
                if s.used[i] { continue }
                if even || reservePair {
                    guard port % 2 == 0 else { continue }
                }
                if reservePair {
                    guard i + 1 < count, !s.used[i + 1] else { continue }
                    s.used[i] = true
                    s.used[i + 1] = true
                    var token: UInt64 = 0
                    while token == 0 || s.reservations[token] != nil { token = UInt64.random(in: 1...UInt64.max) }
                    s.reservations[token] = (UInt16(port + 1), now + reservationLifetime)
                    s.cursor = (i + 2) % count
                    return (UInt16(port), token)
                }
                s.used[i] = true
                s.cursor = (i + 1) % count
                return (UInt16(port), nil)
            }
            return nil
        }
    }

    /// The port held under `token`, which is then spent; nil when unknown or expired.
    public func redeem(token: UInt64, now: Double) -> UInt16? {
        state.withLock { s in
            guard let r = s.reservations.removeValue(forKey: token) else { return nil }
            guard r.expiry >= now else {
                s.used[Int(r.port - limits.ports.lowerBound)] = false
                return nil
            }
            return r.port
        }
    }

    /// Gives back the port held under `token` without using it.
    public func cancel(token: UInt64) {
        state.withLock { s in
            if let r = s.reservations.removeValue(forKey: token) { s.used[Int(r.port - limits.ports.lowerBound)] = false }
        }
    }

    public func returnPort(_ port: UInt16) {
        guard limits.ports.contains(port) else { return }
        state.withLock { $0.used[Int(port - limits.ports.lowerBound)] = false }
    }

    /// Frees ports whose reservation was never redeemed.
    public func expireReservations(now: Double) {
        state.withLock { s in
            for (token, r) in s.reservations where r.expiry < now {
                s.reservations[token] = nil
                s.used[Int(r.port - limits.ports.lowerBound)] = false
            }
        }
    }
}
