import Foundation
import HTTPTypes
import Hummingbird
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSTUN
import TandemTURN
import TandemStore

/// The HTTP API of PROTOCOL.md section 6.
struct AdminAPI {
    let hub: SignalingHub

    struct TokenRequest: Decodable {
        var session: String
        var identity: String
        var name: String?
        var ttlSeconds: Int?
    }

    struct TokenResponse: ResponseEncodable {
        var token: String
    }

    struct ProviderSummary: Codable {
        var name: String
        var epoch: Int
    }

    struct HealthView: Codable {
        var epoch: Int
        var provider: String
        var media: String
        var rttMs: Double?
        var lossPct: Double?
        var jitterMs: Double?
        var bitrateKbps: Double?
        var frameHeight: Int?
        var candidateType: String?
        var quality: String?
        var maxVideoHeight: Int?
    }

    struct ParticipantView: Codable {
        var id: String
        var name: String?
        var state: String
        var lastSeenMs: Int64
        var health: HealthView?
        /// The media relay's figures for the participant's leg (while on provider relay).
        var relay: RelayLegStats?
    }

    struct HistoryView: Codable {
        var epoch: Int
        var provider: String
        var reason: String
        var at: Int64
    }

    struct HomeView: Codable {
        var node: String
        var address: String?
        var generation: Int
    }

    struct NodeView: Codable {
        var name: String
        var address: String?
        var state: String
    }

    struct NodesView: ResponseEncodable {
        var nodes: [NodeView]
    }

    struct SessionView: ResponseEncodable, Decodable {
        var session: String
        var provider: ProviderSummary?
        var participants: [ParticipantView]
        var history: [HistoryView]
        /// The node that serves the session, while one does.
        var home: HomeView?
    }

    struct AlertView: Codable {
        var kind: String
        var participant: String
        var value: Double
        var at: Int64
    }

    struct AlertsView: ResponseEncodable {
        var alerts: [AlertView]
        /// Older alerts remain: pass this as `before` for the next page.
        var next: Int64?
    }

    /// A page of alerts, oldest first: the newest `limit` before `before` (ms), with the whole of any
    /// millisecond the page starts in (so that a `before` cursor never skips an alert).
    static func page(_ alerts: [AlertRecord], limit: Int, before: Int64?) -> (page: [AlertRecord], next: Int64?) {
        let older = before.map { cutoff in alerts.filter { $0.atMs < cutoff } } ?? alerts
        guard older.count > limit else { return (older, nil) }
        var start = older.count - limit
        while start > 0, older[start - 1].atMs == older[start].atMs { start -= 1 }
        return (Array(older[start...]), start > 0 ? older[start].atMs : nil)
    }

    struct SwitchRequest: Decodable {
        var name: String
    }

    struct ProvidersView: ResponseEncodable {
        struct Entry: Codable {
            var name: String
            var score: Int
            var enabled: Bool
        }
        var providers: [Entry]
    }

    func register(on router: Router<BasicRequestContext>) {
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ -> Response in
            hub.isReady ? Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
                : Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "not ready\n")))
        }
        router.get("metrics") { request, _ -> Response in
            if hub.config.metricsNeedKey { try authorize(request) }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: hub.metrics.render() + (hub.relay.map(relayMetrics) ?? "") + heapMetrics())))
        }
        router.get("v1/signal") { request, _ -> Response in
            // The upgrade was not made: say why. (Whether the request came from loopback is not known
            // here; in dev mode a refused origin is not named.)
            if !hub.origins.admits(origins: request.headers[values: .origin], host: request.head.authority, fromLoopback: hub.config.dev) {
                throw HTTPError(.forbidden, message: "this page's origin may not open the signaling socket; see allowed-origins")
            }
            return Response(status: .upgradeRequired, headers: [.upgrade: "websocket"], body: .init(byteBuffer: ByteBuffer(string: "use a WebSocket\n")))
        }
        router.post("v1/tokens") { request, context -> TokenResponse in
            try authorize(request)
            guard let tokens = hub.tokens else { throw HTTPError(.serviceUnavailable, message: "no token secret is configured") }
            let body = try await request.decode(as: TokenRequest.self, context: context)
            guard SessionID.isValid(body.session) else { throw HTTPError(.badRequest, message: "session must be 1 to 128 characters of [A-Za-z0-9_-]") }
            guard !body.identity.isEmpty, body.identity.utf8.count <= 256 else { throw HTTPError(.badRequest, message: "identity must be 1 to 256 bytes") }
            let ttl = body.ttlSeconds ?? 3600
            guard (1...7 * 86400).contains(ttl) else { throw HTTPError(.badRequest, message: "ttlSeconds must be from 1 to 604800") }
            let claims = JoinClaims(identity: body.identity, session: body.session, name: body.name, expiresAt: hub.wallMs() / 1000 + Int64(ttl))
            return TokenResponse(token: tokens.sign(claims))
        }
        router.get("v1/sessions/:id") { request, context -> SessionView in
            try authorize(request)
            let session = try sessionID(context)
            return try await sessionView(session)
        }
        router.get("v1/sessions/:id/alerts") { request, context -> AlertsView in
            try authorize(request)
            let session = try sessionID(context)
            guard try await hub.store.session(session) != nil else { throw HTTPError(.notFound, message: "no session \(session)") }
            let limit = try request.uri.queryParameters.get("limit").map { text in
                guard let n = Int(text), (1...1000).contains(n) else { throw HTTPError(.badRequest, message: "limit must be 1 to 1000") }
                return n
            } ?? 100
            let before = try request.uri.queryParameters.get("before").map { text in
                guard let ms = Int64(text) else { throw HTTPError(.badRequest, message: "before must be a time in milliseconds") }
                return ms
            }
            let (page, next) = Self.page(try await hub.store.alerts(session), limit: limit, before: before)
            return AlertsView(
                alerts: page.map { AlertView(kind: $0.kind.rawValue, participant: $0.participant.rawValue, value: $0.value, at: $0.atMs) },
                next: next)
        }
        router.post("v1/sessions/:id/provider") { request, context -> SessionView in
            try authorize(request)
            let session = try sessionID(context)
            let body = try await request.decode(as: SwitchRequest.self, context: context)
            guard let name = ProviderName(rawValue: body.name) else {
                throw HTTPError(.badRequest, message: "name must be p2p, relay or sfu")
            }
            switch await hub.forceSwitch(session, to: name) {
            case .success: return try await sessionView(session)
            case .failure(let error):
                switch error.code {
                case .notJoined: throw HTTPError(.notFound, message: error.message)
                default: throw HTTPError(.conflict, message: "\(error.code.rawValue): \(error.message)")
                }
            }
        }
        router.get("v1/nodes") { request, _ -> NodesView in
            try authorize(request)
            return NodesView(nodes: try await hub.store.liveNodes().map { NodeView(name: $0.name, address: $0.address, state: $0.state.rawValue) })
        }
        router.get("v1/providers") { request, _ -> ProvidersView in
            try authorize(request)
            let scores = try await hub.store.scores()
            return ProvidersView(
                providers: ProviderName.allCases.map {
                    .init(name: $0.rawValue, score: scores[$0], enabled: hub.config.arbiter.enabled.contains($0))
                })
        }
    }

    private func authorize(_ request: Request) throws {
        guard let key = hub.config.apiKey, let header = request.headers[.authorization], header.hasPrefix("Bearer "),
            constantTimeEqual(Array(header.utf8.dropFirst(7)), Array(key.utf8))
        else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "a valid API key is required")
        }
    }

    private func sessionID(_ context: BasicRequestContext) throws -> SessionID {
        guard let raw = context.parameters.get("id"), let session = SessionID(raw) else {
            throw HTTPError(.badRequest, message: "session id must be 1 to 128 characters of [A-Za-z0-9_-]")
        }
        return session
    }

    /// The session as its home sees it live, asked over the link when another node is home
    /// (`forwarding`), else what the store knows.
    func sessionView(_ session: SessionID, forwarding: Bool = true) async throws -> SessionView {
        guard let record = try await hub.store.session(session) else { throw HTTPError(.notFound, message: "no session \(session)") }
        let history = record.history.map { HistoryView(epoch: $0.epoch, provider: $0.provider.rawValue, reason: $0.reason.rawValue, at: $0.atMs) }
        let stored = try await hub.store.home(session)
        let home = stored.map { HomeView(node: $0.node, address: $0.address, generation: $0.generation) }
        let live = await hub.snapshot(session)
        if live == nil, forwarding, let stored, stored.node != hub.config.node, let address = stored.address, let dialer = hub.dialer,
            let link = await dialer.link(to: stored.node, address: address), let json = await link.sessionView(session),
            let view = try? JSONDecoder().decode(SessionView.self, from: Data(json))
        {
            return view
        }
        if let live {
            return SessionView(
                session: session.rawValue, provider: live.provider.map { ProviderSummary(name: $0.rawValue, epoch: live.epoch) },
                participants: live.participants.map { p in
                    ParticipantView(
                        id: p.id.rawValue, name: p.name, state: p.state.rawValue, lastSeenMs: p.lastSeenMs,
                        health: p.health.map { healthView($0, quality: p.qualityLevel, maxVideoHeight: p.maxVideoHeight) },
                        relay: p.relay)
                }, history: history, home: home)
        }
        // Not live on this node: what the store knows.
        let presence = try await hub.store.presence(session)
        let health = try await hub.store.latestHealth(session)
        return SessionView(
            session: session.rawValue, provider: record.provider.map { ProviderSummary(name: $0.name.rawValue, epoch: $0.epoch) },
            participants: presence.map { p in
                ParticipantView(
                    id: p.participant.rawValue, name: p.name, state: p.state.rawValue, lastSeenMs: p.lastSeenMs,
                    health: health[p.participant].map { healthView($0.report, quality: nil, maxVideoHeight: nil) })
            }, history: history, home: home)
    }

    private func healthView(_ r: HealthReport, quality: QualityLevel?, maxVideoHeight: Int?) -> HealthView {
        HealthView(
            epoch: r.epoch, provider: r.provider.rawValue, media: r.media.rawValue, rttMs: r.rttMs, lossPct: r.lossPct,
            jitterMs: r.jitterMs, bitrateKbps: r.bitrateKbps, frameHeight: r.frameHeight, candidateType: r.candidateType?.rawValue,
            quality: quality?.rawValue, maxVideoHeight: maxVideoHeight)
    }
}

