import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import TandemDailyStandIn
import TandemMedia
import TandemMediaCore
import TandemPostgres
import TandemSFU
import TandemStore
import TandemTURN
import TandemTURNService

/// Opens the configured store; PostgreSQL's is reached and migrated first.
public func openStore(_ location: StoreLocation, logger: Logger) async throws -> any SessionStore {
    guard case .postgres(let postgres) = location else { return try openEmbeddedStore(location) }
    do {
        return try await PostgresStore.open(postgres, logger: logger)
    } catch {
        throw SetupError("cannot open the store: \(error)")
    }
}

/// Opens an embedded store (memory or SQLite), which needs no wait.
public func openEmbeddedStore(_ location: StoreLocation) throws -> any SessionStore {
    switch location {
    case .postgres:
        throw SetupError("the store \(location) is opened with openStore, which waits for it")
    case .memory:
        return MemoryStore()
    case .sqlite(let path):
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        do {
            return try SQLiteStore(path: path)
        } catch {
            throw SetupError("cannot open the store \(location): \(error)")
        }
    }
}

/// `a=1&b=2` as a dictionary (percent-decoded).
func query(_ text: Substring?) -> [String: String] {
    var items: [String: String] = [:]
    for pair in (text ?? "").split(separator: "&") {
        let kv = pair.split(separator: "=", maxSplits: 1)
        guard kv.count == 2 else { continue }
        items[String(kv[0])] = String(kv[1]).removingPercentEncoding ?? String(kv[1])
    }
    return items
}

/// A built server: the Hummingbird application and the hub behind it.
public struct TandemServer {
    public let application: any ApplicationProtocol
    public let hub: SignalingHub
    /// Reads the TLS certificate and key again (on SIGHUP); nil without TLS.
    public let certificates: CertificateReloader?
}

/// Wires the whole server from its configuration. The executable and the tests both call it.
/// `onServerRunning` receives the bound port (useful with port 0).
public func buildServer(
    _ config: ServerConfig, logger: Logger, metrics: ServerMetrics = ServerMetrics(), store: (any SessionStore)? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> TandemServer {
    let store = try store ?? openEmbeddedStore(config.store)
    let sfu = config.sfu.map { settings in DailyClient(configuration: settings.api, logger: logger) }
    let hub = SignalingHub(
        config: config, store: store, metrics: metrics, logger: logger, relay: try config.relay.map { try makeRelay($0, dev: config.dev) },
        sfu: sfu)
    let router = Router()
    AdminAPI(hub: hub).register(on: router)
    WebRoutes(serveDemo: config.serveDemo).register(on: router)

    let ws = WebSocketServerConfiguration(
        maxFrameSize: ProtocolLimitsServer.maxFrameBytes, autoPing: .enabled(timePeriod: config.heartbeatInterval),
        closeTimeout: .seconds(5), validateUTF8: true)
    let http = HTTPServerBuilder.http1WebSocketUpgrade(configuration: .init(http1: .init(idleTimeout: .seconds(60)), ws: ws)) {
        request, channel, logger in
        let parts = request.path?.split(separator: "?", maxSplits: 1) ?? []
        if parts.first == "/v1/cluster" {
            // Another node's link: it proves the cluster secret in its query, or is not upgraded.
            guard let acceptor = hub.acceptLink(query: query(parts.dropFirst().first)) else { return .dontUpgrade }
            return .upgrade([:]) { inbound, outbound, _ in await acceptor.run(inbound: inbound, outbound: outbound) }
        }
        guard parts.first == "/v1/signal" else { return .dontUpgrade }
        let (address, loopback) = describe(channel.remoteAddress)
        // Refused here, the request goes on to the router, which answers 403.
        guard hub.origins.admits(origins: request.headerFields[values: .origin], host: request.authority, fromLoopback: loopback) else {
            return .dontUpgrade
        }
        let connection = Connection(
            id: hub.newConnectionID(), channel: channel, remoteAddress: address, isLoopback: loopback, maxQueued: config.maxQueuedFrames)
        return .upgrade([:]) { inbound, outbound, _ in
            await SignalingSocket(hub: hub, connection: connection, logger: logger).run(inbound: inbound, outbound: outbound)
        }
    }
    // Read once: HTTPS and TURNS serve the same certificate.
    let tls: TLSConfiguration?
    let certificates: CertificateReloader?
    switch config.tls {
    case .disabled:
        (tls, certificates) = (nil, nil)
    case .files(let certificate, let key):
        let reloader = try CertificateReloader(certificate: certificate, key: key)
        (tls, certificates) = (reloader.serverConfiguration(), reloader)
    }
    let server: HTTPServerBuilder = try tls.map { try .tls(http, tlsConfiguration: $0) } ?? http
    var services: [any Service] = [hub]
    if let settings = config.sfu, let standIn = settings.standIn {
        services.append(DailyStandIn.application(host: standIn.host, port: standIn.port, apiKey: settings.api.apiKey, logger: logger))
    }
    if let turn = config.turn, turn.runsService {
        var service = turn.service
        if !service.tlsListen.isEmpty, service.tls == nil { service.tls = tls }
        services.append(TURNService(configuration: service, logger: logger) { [mint = hub.iceServers] udp, tls in
            mint.listening(udpAndTCP: udp, tls: tls)
        })
    }
    let app = Application(
        router: router, server: server,
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "tandem/\(config.version)"),
        services: services,
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? 0
            await hub.listening(port: port)
            await onServerRunning(port)
        },
        logger: logger)
    return TandemServer(application: app, hub: hub, certificates: certificates)
}

/// The media relay with its DTLS identity, configured or made now.
func makeRelay(_ settings: RelaySettings, dev: Bool) throws -> MediaRelay {
    let identity: DTLSIdentity
    do {
        if let files = settings.certificate {
            func read(_ path: String, _ what: String) throws -> String {
                guard let data = FileManager.default.contents(atPath: path) else { throw SetupError("cannot read the relay's DTLS \(what) \(path)") }
                return String(decoding: data, as: UTF8.self)
            }
            identity = try DTLSIdentity.load(certificatePEM: read(files.certificate, "certificate"), keyPEM: read(files.key, "key"))
        } else {
            identity = try DTLSIdentity.generate()
        }
    } catch let error as MediaError {
        throw SetupError("the relay's DTLS certificate: \(error.message)")
    }
    let ice = ICEConfiguration(
        addresses: settings.addresses, stunServer: settings.stunServer, portRange: settings.ports, announced: settings.announced,
        allowLoopbackCandidates: dev)
    return MediaRelay(
        configuration: RelayConfiguration(ice: ice, loops: settings.threads, handshakeTimeoutMs: settings.handshakeTimeoutMs), identity: identity)
}

enum ProtocolLimitsServer {
    /// Frames over 64 KiB are refused by the frame decoder with close 1009.
    static let maxFrameBytes = 64 * 1024
}
