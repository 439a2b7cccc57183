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
    private let origin = ContinuousClock.now
    private let sessions = NIOLockedValueBox<[SessionID: LiveSession]>([:])
    private let state = NIOLockedValueBox(HubState())
    private let nextConnection = NIOLockedValueBox<UInt64>(0)
    /// Sockets that have not joined yet, with the time by which they must.
    private let joinDeadlines = NIOLockedValueBox<[UInt64: (Connection, Instant)]>([:])

    struct HubState {
        var ready = true
        var draining = false
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
    public var isReady: Bool { state.withLockedValue { $0.ready && !$0.draining } }

    // MARK: Rooms

    func join(_ context: JoinContext) async -> JoinOutcome {
        guard isReady else { return .rejected(ProtocolError(.providerUnavailable, "the server is draining; try another node")) }
        while true {
            let session = context.request.session
            let live: LiveSession
            if let existing = sessions.withLockedValue({ $0[session] }) {
                live = existing
            } else {
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

    /// An operator's coordinated switch.
    public func forceSwitch(_ session: SessionID, to name: ProviderName) async -> Result<ProviderState, ProtocolError> {
        guard let live = sessions.withLockedValue({ $0[session] }) else {
            return .failure(ProtocolError(.notJoined, "no live session \(session)"))
        }
        return await withCheckedContinuation { (reply: CheckedContinuation<Result<ProviderState, ProtocolError>, Never>) in
            if !live.post(.forceSwitch(name, reply)) { reply.resume(returning: .failure(ProtocolError(.notJoined, "the session has ended"))) }
        }
    }

    // MARK: Service

    /// Ticks every live session once a second and cleans the store once a minute until shutdown; then drains.
    public func run() async throws {
        do {
            let ended = try await store.endSessionsLeftOpen(atMs: wallMs())
            if ended > 0 { logger.notice("ended \(ended) sessions left open by the last run") }
        } catch {
            logger.error("could not end the sessions left open by the last run", metadata: ["error": "\(error)"])
        }
        await cancelWhenGracefulShutdown {
            var sinceCleanup = 0
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: .seconds(1))
                } catch {
                    break
                }
                self.closeLateJoiners()
                for live in self.allLive() { live.post(.tick) }
                sinceCleanup += 1
                if sinceCleanup >= 60 {
                    sinceCleanup = 0
                    await self.cleanup()
                }
            }
        }
        drain()
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

    /// Stops accepting joins and tells every socket to resume elsewhere (close 4000).
    public func drain() {
        state.withLockedValue { $0.draining = true }
        for live in allLive() { live.post(.drain) }
    }
}
