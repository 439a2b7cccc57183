import Foundation
import Logging
import Prometheus
import NIOConcurrencyHelpers
import ServiceLifecycle
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSFU
import TandemSTUN
import TandemStore

/// The sessions live on this node, and the services every one shares: configuration, store, metrics,
/// clocks and id generation. As a `Service` it drives time (heartbeat timeouts, stale peers) and the
/// store's cleanup, and drains on shutdown.
public final class SignalingHub: Service, Sendable {
    public let config: ServerConfig
    public let store: any SessionStore
    public let metrics: ServerMetrics
    let logger: Logger
    let tokens: JoinTokens?
    let iceServers: ICEServerMint
    /// Which web pages may open the signaling socket.
    let origins: OriginPolicy
    /// The server's media endpoint (provider `relay`), when configured.
    public let relay: MediaRelay?
    /// The SFU service (provider `sfu`), when configured, and the deletes of its rooms.
    public let sfu: (any SFUProvider)?
    let sfuRooms: SFURooms?
    /// The links to other nodes, for joins whose session is served there (with a cluster secret).
    let dialer: ClusterDialer?
    let linkSecret: LinkSecret?
    private let origin = ContinuousClock.now
    private let sessions = NIOLockedValueBox<[SessionID: LiveSession]>([:])
    private let state: NIOLockedValueBox<HubState>
    private let nextConnection = NIOLockedValueBox<UInt64>(0)
    /// Signaling sockets open on this node.
    private let openSockets = NIOLockedValueBox(0)
    /// Sockets that have not joined yet, with the time by which they must.
    private let joinDeadlines = NIOLockedValueBox<[UInt64: (Connection, Instant)]>([:])

    struct HubState {
        var ready = true
        var draining = false
        /// The node cannot be sure of its lease in the store: it takes no joins until it renews it.
        var fenced = false
        var lease: NodeLease
        /// The port the server listens on (the configured one may be 0).
        var port: Int?
    }

    public init(
        config: ServerConfig, store: any SessionStore, metrics: ServerMetrics, logger: Logger, relay: MediaRelay? = nil,
        sfu: (any SFUProvider)? = nil
    ) {
        self.config = config
        self.relay = relay
        self.sfu = sfu
        sfuRooms = sfu.map { SFURooms(sfu: $0, metrics: metrics, logger: logger) }
        self.store = store
        self.metrics = metrics
        self.logger = logger
        tokens = config.secret.map { JoinTokens(secret: $0) }
        iceServers = ICEServerMint(settings: config.turn, staticServers: config.iceServers)
        origins = OriginPolicy(allowed: config.allowedOrigins, dev: config.dev, tls: config.tls != .disabled)
        state = NIOLockedValueBox(HubState(lease: NodeLease(length: config.nodeLease, margin: config.nodeLease / 3)))
        linkSecret = config.clusterSecret.map(LinkSecret.init)
        dialer = linkSecret.map { ClusterDialer(secret: $0, me: config.node, tls: config.tls != .disabled, logger: logger) }
    }

    /// Monotonic time for the arbiter.
    func now() -> Instant { Instant(ContinuousClock.now - origin) }

    /// Wall-clock milliseconds since 1970, for the store and the admin API.
    func wallMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func newParticipantID() -> ParticipantID {
        var rng = SystemRandomNumberGenerator()
        return ParticipantID.random(using: &rng)
    }

    func newResumeKey() -> String {
        var rng = SystemRandomNumberGenerator()
        return RandomText.base32(count: 32, using: &rng)
    }

    func newConnectionID() -> UInt64 {
        nextConnection.withLockedValue { n in
            n += 1
            return n
        }
    }

    /// A new socket must join within the join timeout; the once-a-second tick closes it (4408) otherwise.
    /// One table for every socket rather than a timer task each keeps an idle connection small.
    func awaitJoin(_ connection: Connection) {
        let deadline = now() + config.joinTimeout
        joinDeadlines.withLockedValue { $0[connection.id] = (connection, deadline) }
    }

    /// The socket joined, or is gone.
    func forgetJoin(_ connection: Connection) {
        _ = joinDeadlines.withLockedValue { $0.removeValue(forKey: connection.id) }
    }

    private func closeLateJoiners() {
        let now = now()
        let late = joinDeadlines.withLockedValue { table -> [Connection] in
            let expired = table.filter { $0.value.1 <= now }
            for id in expired.keys { table.removeValue(forKey: id) }
            return expired.values.map(\.0)
        }
        for connection in late { connection.close(code: CloseCode.joinTimeout, reason: "no join within the time allowed") }
    }

    /// True while joins are accepted.
    public var isReady: Bool { refusal == nil }

    /// Why joins are refused now, if they are.
    private var refusal: ProtocolError? {
        state.withLockedValue { s in
            if s.draining || !s.ready { return ProtocolError(.providerUnavailable, "the server is draining; try another node") }
            if s.fenced { return ProtocolError(.providerUnavailable, "this node cannot reach the session store; try again or another node") }
            return nil
        }
    }

    // MARK: The node's lease

    /// The server listens: the registry learns the port (the configured one may have been 0).
    func listening(port: Int) async {
        state.withLockedValue { $0.port = port }
        await renewLease()
    }

    /// This node as the store's registry shows it.
    var nodeRecord: NodeRecord {
        let (draining, port) = state.withLockedValue { ($0.draining, $0.port ?? config.port) }
        let shown = config.host.contains(":") ? "[\(config.host)]" : config.host
        let address = config.advertise ?? (IPAddress(config.host).map { $0.isUnspecified ? nil : "\(shown):\(port)" } ?? nil)
        return NodeRecord(name: config.node, address: address, state: draining ? .draining : .serving)
    }

    /// Renews the lease; true when the store took it. After a lapse, every live session whose home
    /// moved to another node meanwhile stops here (its sockets are told to resume, 4000).
    @discardableResult
    func renewLease() async -> Bool {
        let sent = now()
        do {
            try await store.heartbeat(nodeRecord, leaseMs: Int64(config.nodeLease.milliseconds))
        } catch {
            logger.warning("the store did not renew this node's lease", metadata: ["error": "\(error)"])
            return false
        }
        let wasFenced = state.withLockedValue { s in
            s.lease.renewed(sentAt: sent)
            defer { s.fenced = false }
            return s.fenced
        }
        if wasFenced {
            logger.notice("this node holds its lease again and serves")
            await revalidateHomes()
            for live in allLive() { live.post(.lease(held: true)) }
        }
        return true
    }

    /// The sessions live here whose home is another node now stop here.
    private func revalidateHomes() async {
        for (session, live) in sessions.withLockedValue({ $0 }) {
            guard let home = try? await store.acquireHome(session, node: config.node), home.node != config.node else { continue }
            logger.warning("session \(session) moved to node \(home.node) while this node's lease had lapsed: its sockets resume there")
            live.post(.fence)
        }
    }

    /// Once a tick: a node that cannot be sure of its lease any more takes no new session, resume or
    /// join (`/readyz` answers 503), and its sessions decide nothing (no timeouts, no switches), so that
    /// it never acts beside a session's new home. Its established sessions carry on passing signals (a
    /// store restart must not drop calls); when the lease is renewed, any of them that another node
    /// took over meanwhile stops here, and the others decide again.
    func fenceIfLeaseLapsed() {
        let now = now()
        let fence = state.withLockedValue { s -> Bool in
            guard !s.fenced, s.lease.wasEverHeld, !s.lease.holds(at: now) else { return false }
            s.fenced = true
            return true
        }
        guard fence else { return }
        logger.error("this node could not renew its lease in the store: it takes no joins and decides nothing until it can")
        for live in allLive() { live.post(.lease(held: false)) }
    }

    enum Home {
        case here
        case elsewhere(SessionHome)
        case refused(ProtocolError)
    }

    /// Where a session not live here must be served: here (this node is now its home), or the node that is.
    func acquireHome(_ session: SessionID) async -> Home {
        if !state.withLockedValue({ $0.lease.wasEverHeld }) { await renewLease() }
        let home: SessionHome?
        do {
            home = try await store.acquireHome(session, node: config.node)
        } catch {
            logger.error("store failed to give the session a home", metadata: ["session": "\(session)", "error": "\(error)"])
            return .refused(ProtocolError(.internal, "the session store is unavailable"))
        }
        guard let home else { return .refused(ProtocolError(.providerUnavailable, "this node is not serving (its lease has lapsed); try another node")) }
        return home.node == config.node ? .here : .elsewhere(home)
    }

    /// A join through this node for a session another node serves: bridged to that node over the
    /// cluster link, or refused, naming the home, when there is no link to make.
    private func bridge(_ context: JoinContext, to home: SessionHome) async -> JoinOutcome {
        let at = home.address.map { " at \($0)" } ?? ""
        guard let dialer, let address = home.address else {
            return .rejected(ProtocolError(.providerUnavailable, "session \(context.request.session) is served by node \(home.node)\(at); join through that node"))
        }
        guard let link = await dialer.link(to: home.node, address: address) else {
            return .rejected(ProtocolError(.providerUnavailable, "the session's home node \(home.node)\(at) is unreachable; try again"))
        }
        return await link.join(context)
    }

    /// The home's end of a link another node dials: the dialer's proof checked (its secret, and a time
    /// within a minute of this node's), or nil.
    func acceptLink(query: [String: String]) -> ClusterAcceptor? {
        guard let linkSecret, let node = query["node"], let nonceText = query["nonce"], let proofText = query["proof"],
            let time = query["time"].flatMap(Int64.init), abs(time - wallMs() / 1000) <= 60,
            let nonce = LinkSecret.unhex(nonceText), nonce.count == 16, let proof = LinkSecret.unhex(proofText),
            LinkSecret.equal(proof, linkSecret.dialProof(node: node, nonce: nonce, unixTime: time))
        else { return nil }
        return ClusterAcceptor(hub: self, secret: linkSecret, peer: node, dialNonce: nonce)
    }

    // MARK: Rooms

    /// Joins a session: here when this node serves it (or becomes its home), else through its home
    /// node (`bridging`; a join that came over a link is never bridged on).
    func join(_ context: JoinContext, bridging: Bool = true) async -> JoinOutcome {
        if let refusal = refusal { return .rejected(refusal) }
        while true {
            let session = context.request.session
            let live: LiveSession
            if let existing = sessions.withLockedValue({ $0[session] }) {
                live = existing
            } else {
                // This node serves the session only as its home: two nodes never serve one session.
                switch await acquireHome(session) {
                case .here: break
                case .refused(let error): return .rejected(error)
                case .elsewhere(let home):
                    guard bridging else {
                        return .rejected(ProtocolError(.providerUnavailable, "session \(session) moved to node \(home.node); try again"))
                    }
                    let outcome = await bridge(context, to: home)
                    if case .retry = outcome {
                        await Task.yield()
                        continue
                    }
                    return outcome
                }
                if let refusal = refusal { return .rejected(refusal) }
                let lastEpoch = (try? await store.lastEpoch(session)) ?? 0
                live = sessions.withLockedValue { sessions in
                    if let raced = sessions[session] { return raced }
                    let created = LiveSession(session: session, hub: self, lastEpoch: lastEpoch)
                    sessions[session] = created
                    metrics.sessions.increment()
                    return created
                }
            }
            let outcome = await withCheckedContinuation { (reply: CheckedContinuation<JoinOutcome, Never>) in
                if !live.post(.join(context, reply)) { reply.resume(returning: .retry) }
            }
            if case .retry = outcome {
                await Task.yield()
                continue
            }
            return outcome
        }
    }

    /// A live's session ended: forget it, so that the next join starts a new one.
    func sessionClosed(_ session: SessionID) {
        let live = sessions.withLockedValue { $0.removeValue(forKey: session) }
        if let live {
            metrics.sessions.decrement()
            live.finishMailbox()
        }
    }

    private func allLive() -> [LiveSession] { sessions.withLockedValue { Array($0.values) } }

    /// The live view of a session on this node, if it has one here.
    public func snapshot(_ session: SessionID) async -> SessionSnapshot? {
        guard let live = sessions.withLockedValue({ $0[session] }) else { return nil }
        return await withCheckedContinuation { (reply: CheckedContinuation<SessionSnapshot?, Never>) in
            if !live.post(.snapshot(reply)) { reply.resume(returning: nil) }
        }
    }

    /// An operator's coordinated switch, made by the session's home: here, or over the link to it
    /// (`forwarding`; a switch that came over a link is not forwarded on).
    public func forceSwitch(_ session: SessionID, to name: ProviderName, forwarding: Bool = true) async -> Result<ProviderState, ProtocolError> {
        guard let live = sessions.withLockedValue({ $0[session] }) else {
            if forwarding, let dialer, let home = try? await store.home(session), home.node != config.node, let address = home.address {
                guard let link = await dialer.link(to: home.node, address: address) else {
                    return .failure(ProtocolError(.providerUnavailable, "the session's home node \(home.node) is unreachable; try again"))
                }
                return await link.forceSwitch(session, to: name)
            }
            return .failure(ProtocolError(.notJoined, "no live session \(session)"))
        }
        return await withCheckedContinuation { (reply: CheckedContinuation<Result<ProviderState, ProtocolError>, Never>) in
            if !live.post(.forceSwitch(name, reply)) { reply.resume(returning: .failure(ProtocolError(.notJoined, "the session has ended"))) }
        }
    }

    // MARK: Service

    /// Ticks every live session once a second, renews the node's lease and cleans the store once a
    /// minute until shutdown; then drains and leaves the store's registry.
    public func run() async throws {
        do {
            let ended = try await store.endSessionsLeftOpen(atMs: wallMs())
            if ended > 0 { logger.notice("ended \(ended) sessions left open by the last run") }
        } catch {
            logger.error("could not end the sessions left open by the last run", metadata: ["error": "\(error)"])
        }
        await renewLease()
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.keepLease() }
                var sinceCleanup = 0
                while !Task.isCancelled {
                    do {
                        try await Task.sleep(for: .seconds(1))
                    } catch {
                        break
                    }
                    self.closeLateJoiners()
                    self.fenceIfLeaseLapsed()
                    for live in self.allLive() { live.post(.tick) }
                    sinceCleanup += 1
                    if sinceCleanup >= 60 {
                        sinceCleanup = 0
                        await self.cleanup()
                    }
                }
                group.cancelAll()
            }
        }
        drain()
        try? await store.removeNode(config.node)
    }

    /// Renews the lease every heartbeat interval until cancelled.
    private func keepLease() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: config.nodeHeartbeatInterval)
            } catch {
                return
            }
            await renewLease()
            fenceIfLeaseLapsed()
        }
    }

    func cleanup() async {
        await sfuRooms?.retryFailed()
        trimHeap()
        do {
            let report = try await store.cleanup(nowMs: wallMs(), policy: RetentionPolicy())
            if report != CleanupReport() {
                logger.info(
                    "store cleanup",
                    metadata: ["presence": "\(report.presence)", "health": "\(report.healthSamples)", "sessions": "\(report.sessions)"])
            }
        } catch {
            logger.error("store cleanup failed", metadata: ["error": "\(error)"])
        }
    }

    /// Stops accepting joins, tells every socket to resume elsewhere (close 4000), and has the sessions
    /// here decide nothing more: the registry says the node drains, so other nodes take its sessions
    /// over as their participants come back through them.
    public func drain() {
        let first = state.withLockedValue { s in
            defer { s.draining = true }
            return !s.draining
        }
        for live in allLive() {
            live.post(.drain)
            live.post(.lease(held: false))
        }
        if first { Task { await self.renewLease() } }
    }

    public var isDraining: Bool { state.withLockedValue { $0.draining } }

    func socketOpened() { openSockets.withLockedValue { $0 += 1 } }
    func socketClosed() { openSockets.withLockedValue { $0 -= 1 } }

    /// Waits until no signaling socket is open here, or `timeout` has passed (after a drain, while the
    /// clients take their close frames).
    public func socketsClosed(within timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while openSockets.withLockedValue({ $0 }) > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}
