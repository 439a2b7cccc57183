import NIOConcurrencyHelpers
import TandemProtocol

/// A node of a cluster as the store knows it.
public struct NodeRecord: Sendable, Equatable {
    public enum State: String, Sendable {
        case serving, draining
    }

    public var name: String
    /// How other nodes reach this one (`HOST:PORT`), if it says.
    public var address: String?
    public var state: State

    public init(name: String, address: String?, state: State) {
        self.name = name
        self.address = address
        self.state = state
    }
}

/// The node that serves a session, and the generation of that tenure: it rises each time the session
/// moves to another node, so that what a former home writes can be told from what the current one does.
public struct SessionHome: Sendable, Equatable {
    public var node: String
    public var address: String?
    public var generation: Int

    public init(node: String, address: String?, generation: Int) {
        self.node = node
        self.address = address
        self.generation = generation
    }
}

/// Which node serves each session. A node holds a lease that its heartbeat renews; a session's home is
/// a node whose lease runs, and only a serving node whose own lease runs can become one. A session
/// whose home's lease ran out, or whose home drains, goes to the next node that asks, at the next
/// generation. Lease times are the store's
/// clock (PostgreSQL's `now()`), so that nodes' clocks need not agree.
public protocol SessionHomes: Sendable {
    /// Registers or renews `node` for `leaseMs` from now.
    func heartbeat(_ node: NodeRecord, leaseMs: Int64) async throws
    /// The nodes whose lease runs.
    func liveNodes() async throws -> [NodeRecord]
    /// The node leaves: its lease ends now, and its sessions go to the next nodes that ask.
    func removeNode(_ name: String) async throws
    /// Makes `node` the session's home unless another node with a running lease is; the home after the
    /// call (the other node, when it holds the session). A node without a running lease gets nothing.
    func acquireHome(_ session: SessionID, node: String) async throws -> SessionHome?
    /// The session no longer lives on `node` (it ended there).
    func releaseHome(_ session: SessionID, node: String) async throws
    /// The session's home, while its node's lease runs.
    func home(_ session: SessionID) async throws -> SessionHome?
}

/// Homes and leases in this process's memory, for the embedded stores: one node, whose clock is the
/// store's.
public final class HomesInMemory: Sendable {
    private struct State {
        var nodes: [String: (record: NodeRecord, leaseUntilMs: Int64)] = [:]
        var homes: [SessionID: (node: String, generation: Int)] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let clock: @Sendable () -> Int64

    /// `clock` gives milliseconds (the wall clock unless a test moves time itself).
    public init(clock: @escaping @Sendable () -> Int64) { self.clock = clock }

    private static func live(_ s: State, _ name: String, at now: Int64) -> NodeRecord? {
        guard let node = s.nodes[name], node.leaseUntilMs > now else { return nil }
        return node.record
    }

    /// A node that may keep or take sessions: its lease runs and it does not drain.
    private static func serving(_ s: State, _ name: String, at now: Int64) -> NodeRecord? {
        live(s, name, at: now).flatMap { $0.state == .serving ? $0 : nil }
    }

    public func heartbeat(_ node: NodeRecord, leaseMs: Int64) {
        let now = clock()
        state.withLockedValue { $0.nodes[node.name] = (node, now + leaseMs) }
    }

    public func liveNodes() -> [NodeRecord] {
        let now = clock()
        return state.withLockedValue { s in s.nodes.values.filter { $0.leaseUntilMs > now }.map(\.record).sorted { $0.name < $1.name } }
    }

    /// The node's sessions stay recorded as its, for the next node to take over at the next generation.
    public func removeNode(_ name: String) {
        _ = state.withLockedValue { $0.nodes.removeValue(forKey: name) }
    }

    public func acquireHome(_ session: SessionID, node: String) -> SessionHome? {
        let now = clock()
        return state.withLockedValue { s in
            if let held = s.homes[session], held.node != node, let holder = Self.serving(s, held.node, at: now) {
                return SessionHome(node: holder.name, address: holder.address, generation: held.generation)
            }
            guard let me = Self.serving(s, node, at: now) else { return nil }
            let generation = s.homes[session].map { $0.node == node ? $0.generation : $0.generation + 1 } ?? 1
            s.homes[session] = (node, generation)
            return SessionHome(node: node, address: me.address, generation: generation)
        }
    }

    public func releaseHome(_ session: SessionID, node: String) {
        state.withLockedValue { s in
            if s.homes[session]?.node == node { s.homes[session] = nil }
        }
    }

    public func home(_ session: SessionID) -> SessionHome? {
        let now = clock()
        return state.withLockedValue { s in
            guard let held = s.homes[session], let node = Self.live(s, held.node, at: now) else { return nil }
            return SessionHome(node: held.node, address: node.address, generation: held.generation)
        }
    }
}

/// A store whose homes are this process's memory: the embedded stores.
public protocol HomesOfOneProcess: SessionHomes {
    var homes: HomesInMemory { get }
}

extension HomesOfOneProcess {
    public func heartbeat(_ node: NodeRecord, leaseMs: Int64) async throws { homes.heartbeat(node, leaseMs: leaseMs) }
    public func liveNodes() async throws -> [NodeRecord] { homes.liveNodes() }
    public func removeNode(_ name: String) async throws { homes.removeNode(name) }
    public func acquireHome(_ session: SessionID, node: String) async throws -> SessionHome? { homes.acquireHome(session, node: node) }
    public func releaseHome(_ session: SessionID, node: String) async throws { homes.releaseHome(session, node: node) }
    public func home(_ session: SessionID) async throws -> SessionHome? { homes.home(session) }
}
