import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import TandemServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the server.",
        discussion: """
            Every option can also be given as a TANDEM_* environment variable (--heartbeat-interval is \
            TANDEM_HEARTBEAT_INTERVAL) or in the JSON file named by --config, under the option's name. \
            Flags win over the environment, which wins over the file.
            """)

    @Flag(help: "Development mode: listen on 127.0.0.1, make certificates and secrets when missing, allow joins without a token from loopback.")
    var dev = false
    @Option(help: "Address to listen on, HOST:PORT (default 0.0.0.0:8443; 127.0.0.1:8443 with --dev).")
    var listen: String?
    @Option(help: "PEM certificate chain for TLS.")
    var tlsCert: String?
    @Option(help: "PEM private key for TLS.")
    var tlsKey: String?
    @Flag(help: "Serve plain HTTP and ws:// (only behind a TLS-terminating proxy).")
    var noTls = false
    @Flag(help: "Do not serve the demo page at / (the client library at /tandem.js is always served).")
    var noDemo = false
    @Option(help: "Web pages of other origins that may open the signaling socket, or * for any (repeatable; default the server's own).")
    var allowedOrigins: [String] = []
    @Flag(help: "Ask for the admin API key on /metrics too.")
    var metricsAuth = false
    @Option(help: "Secret that signs and verifies join tokens (HS256).")
    var secret: String?
    @Option(help: "Bearer key for the admin API.")
    var apiKey: String?
    @Option(help: "Session store: memory or sqlite:PATH (default sqlite:DATA-DIR/tandem.db).")
    var store: String?
    @Option(help: "Directory for the default store and development certificates (default ./data).")
    var dataDir: String?
    @Option(help: "Name of this node, reported in welcome (default the host name).")
    var node: String?
    @Option(help: "Heartbeat interval told to clients, in milliseconds (default 5000).")
    var heartbeatInterval: String?
    @Option(help: "Silence after which a participant is removed, in milliseconds (default 15000).")
    var heartbeatTimeout: String?
    @Option(help: "Most participants in one session (default 16).")
    var maxParticipants: String?
    @Option(help: "Messages one socket may send per second (default 50).")
    var rateLimit: String?
    @Option(help: "Burst above the rate limit (default 100).")
    var rateBurst: String?
    @Option(help: "ICE candidates one participant may send per epoch (default 100).")
    var maxCandidates: String?
    @Option(help: "Time a new socket has to send join, in milliseconds (default 10000).")
    var joinTimeout: String?
    @Option(help: "Providers to enable, comma-separated (default all that this server can serve).")
    var providers: String?
    @Option(help: "Where a failed provider's session goes next, comma-separated (default p2p,relay,sfu).")
    var fallbackOrder: String?
    @Option(help: "Where a session goes when its quality stays bad (default sfu).")
    var qualityTarget: String?
    @Option(help: "Reported RTT above which a report is bad, in ms (default 400).")
    var switchRttMs: String?
    @Option(help: "Reported loss above which a report is bad, in percent (default 8).")
    var switchLossPct: String?
    @Option(help: "Reported jitter above which a report is bad, in ms (default 60).")
    var switchJitterMs: String?
    @Option(help: "Consecutive bad reports from one participant that switch the session (default 3).")
    var switchReports: String?
    @Option(help: "No quality switch this soon after any switch, in milliseconds (default 30000).")
    var coolDown: String?
    @Option(help: "RTT above which a high_latency alert is raised, in ms (default 300).")
    var alertRttMs: String?
    @Option(help: "Loss above which a packet_loss alert is raised, in percent (default 5).")
    var alertLossPct: String?
    @Option(help: "Jitter above which a high_jitter alert is raised, in ms (default 50).")
    var alertJitterMs: String?
    @Option(help: "Bitrate below which a low_bandwidth alert is raised, in kbps (default 150).")
    var alertMinBitrateKbps: String?
    @Option(help: "No health report for this long raises a stale_peer alert, in ms (default the heartbeat timeout).")
    var staleAfter: String?
    @Option(help: "ICE server URLs handed to clients, comma-separated.")
    var iceServers: String?
    @Option(help: "TURN and STUN over UDP and TCP on IP:PORT (repeatable; 3478 is the standard port).")
    var turnListen: [String] = []
    @Option(help: "TURN over TLS (TURNS) on IP:PORT, with the server's certificate (repeatable; 5349 is standard, 443 gets through strict firewalls).")
    var turnsListen: [String] = []
    @Option(help: "Shared secret of the TURN REST credentials (also for external TURN servers in --turn-urls).")
    var turnSecret: String?
    @Option(help: "Host name or address clients reach TURN at (default the --turn-listen address).")
    var turnPublicHost: String?
    @Option(help: "Address relay sockets are bound to, one IPv4 and one IPv6 at most (repeatable; default the --turn-listen address).")
    var turnRelayIp: [String] = []
    @Option(help: "Address advertised for relayed candidates when the server sits behind a 1:1 NAT (repeatable, one per family).")
    var turnExternalIp: [String] = []
    @Option(help: "Relay port range, LOW-HIGH (default 49152-65535).")
    var turnRelayPorts: String?
    @Option(help: "TURN realm (default tandem).")
    var turnRealm: String?
    @Flag(inversion: .prefixedNo, help: "Let TURN relay to loopback peers (default: only in --dev with TURN on loopback only).")
    var turnAllowLoopbackPeers: Bool?
    @Option(help: "Peer addresses or prefixes allowed although in a private or reserved range (repeatable).")
    var turnAllowPeers: [String] = []
    @Option(help: "Peer addresses or prefixes always denied (repeatable).")
    var turnDenyPeers: [String] = []
    @Option(help: "Most TURN allocations per identity, 0 for no limit (default 64).")
    var turnUserQuota: String?
    @Option(help: "Most TURN allocations in all, 0 for no limit (default 0).")
    var turnTotalQuota: String?
    @Option(help: "Most TURN TCP and TLS connections in all (default 4096).")
    var turnMaxStreams: String?
    @Option(help: "Most TURN TCP and TLS connections from one IP address (default 32).")
    var turnMaxStreamsPerIp: String?
    @Option(help: "Bytes per second one allocation may relay each way, 0 for no cap (default 0).")
    var turnMaxBps: String?
    @Option(help: "Allocate requests one source IP may send per second, 0 for no limit (default 200).")
    var turnAllocateRate: String?
    @Option(help: "Answers without authentication (Binding, challenges, errors) per second to one source IP, 0 for no limit (default 100).")
    var turnUnauthenticatedRate: String?
    @Option(help: "Event loops of the TURN service (default the number of cores).")
    var turnThreads: String?
    @Option(help: "Lifetime of minted TURN credentials, in seconds (default 86400).")
    var turnCredentialTtl: String?
    @Option(help: "External turn:, turns: or stun: URLs sharing --turn-secret, handed out with minted credentials (repeatable).")
    var turnUrls: [String] = []
    @Option(help: "Address the media relay gathers ICE candidates on; enables provider relay (repeatable; --dev uses 127.0.0.1).")
    var relayAddress: [String] = []
    @Option(help: "Address advertised in the relay's candidates behind a 1:1 NAT, e.g. a container's public IP (repeatable, one per family).")
    var relayAnnouncedIp: [String] = []
    @Option(help: "STUN server (IP:PORT) the relay asks for a server-reflexive candidate.")
    var relayStunServer: String?
    @Option(help: "GLib loop threads of the media relay (default the number of cores).")
    var relayThreads: String?
    @Option(help: "UDP port range of the media relay, LOW-HIGH (default any).")
    var relayPorts: String?
    @Option(help: "PEM certificate for the relay's DTLS (default a P-256 certificate made at start).")
    var relayDtlsCert: String?
    @Option(help: "PEM private key for --relay-dtls-cert.")
    var relayDtlsKey: String?
    @Option(help: "Base URL of a Daily-style SFU REST API, e.g. https://api.daily.co/v1; enables provider sfu.")
    var sfuUrl: String?
    @Option(help: "API key of the SFU REST API.")
    var sfuApiKey: String?
    @Option(help: "With --dev: run a local stand-in of the Daily REST API on HOST:PORT and use it as the SFU.")
    var sfuStandin: String?
    @Option(help: "When a session's SFU room is made: session-start, quality-trend (the first report past an alert threshold) or on-demand (default quality-trend).")
    var sfuPrepare: String?
    @Option(help: "Lifetime of SFU rooms and their tokens, in seconds (default 86400).")
    var sfuRoomTtl: String?
    @Option(help: "Bound of one SFU API request, in milliseconds (default 5000).")
    var sfuTimeout: String?
    @Option(help: "SFU API requests per second, client-side (default 20, Daily's limit).")
    var sfuRateLimit: String?
    @Option(help: "SFU room deletes per second, client-side (default 2, Daily's limit).")
    var sfuDeleteRateLimit: String?
    @Option(help: "After the SFU service failed, no new attempt for this long, in milliseconds (default 30000).")
    var sfuRetryAfter: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default info).")
    var logLevel: String?
    @Option(help: "JSON config file with any of these settings.")
    var config: String?

    func run() async throws {
        var flags: [String: String] = [:]
        if dev { flags["dev"] = "true" }
        if noTls { flags["no-tls"] = "true" }
        if noDemo { flags["no-demo"] = "true" }
        if metricsAuth { flags["metrics-auth"] = "true" }
        if let allowed = turnAllowLoopbackPeers { flags["turn-allow-loopback-peers"] = String(allowed) }
        let lists: [(String, [String])] = [
            ("turn-listen", turnListen), ("turns-listen", turnsListen), ("turn-relay-ip", turnRelayIp),
            ("turn-external-ip", turnExternalIp), ("turn-allow-peers", turnAllowPeers), ("turn-deny-peers", turnDenyPeers),
            ("turn-urls", turnUrls), ("relay-address", relayAddress),
            ("relay-announced-ip", relayAnnouncedIp), ("allowed-origins", allowedOrigins),
        ]
        for (key, values) in lists where !values.isEmpty { flags[key] = values.joined(separator: ",") }
        let options: [(String, String?)] = [
            ("listen", listen), ("tls-cert", tlsCert), ("tls-key", tlsKey), ("secret", secret), ("api-key", apiKey),
            ("store", store), ("data-dir", dataDir), ("node", node), ("heartbeat-interval", heartbeatInterval),
            ("heartbeat-timeout", heartbeatTimeout), ("max-participants", maxParticipants), ("rate-limit", rateLimit),
            ("rate-burst", rateBurst), ("max-candidates", maxCandidates), ("join-timeout", joinTimeout), ("providers", providers),
            ("fallback-order", fallbackOrder), ("quality-target", qualityTarget), ("switch-rtt-ms", switchRttMs),
            ("switch-loss-pct", switchLossPct), ("switch-jitter-ms", switchJitterMs), ("switch-reports", switchReports),
            ("cool-down", coolDown), ("alert-rtt-ms", alertRttMs), ("alert-loss-pct", alertLossPct),
            ("alert-jitter-ms", alertJitterMs), ("alert-min-bitrate-kbps", alertMinBitrateKbps), ("stale-after", staleAfter),
            ("ice-servers", iceServers), ("log-level", logLevel), ("config", config), ("turn-secret", turnSecret),
            ("turn-public-host", turnPublicHost), ("turn-relay-ports", turnRelayPorts), ("turn-realm", turnRealm),
            ("turn-user-quota", turnUserQuota), ("turn-total-quota", turnTotalQuota),
            ("turn-max-streams", turnMaxStreams), ("turn-max-streams-per-ip", turnMaxStreamsPerIp), ("turn-max-bps", turnMaxBps),
            ("turn-allocate-rate", turnAllocateRate),
            ("turn-unauthenticated-rate", turnUnauthenticatedRate), ("turn-threads", turnThreads), ("turn-credential-ttl", turnCredentialTtl),
            ("relay-threads", relayThreads), ("relay-stun-server", relayStunServer), ("relay-ports", relayPorts), ("relay-dtls-cert", relayDtlsCert), ("relay-dtls-key", relayDtlsKey),
            ("sfu-url", sfuUrl), ("sfu-api-key", sfuApiKey), ("sfu-standin", sfuStandin), ("sfu-prepare", sfuPrepare),
            ("sfu-room-ttl", sfuRoomTtl), ("sfu-timeout", sfuTimeout), ("sfu-rate-limit", sfuRateLimit),
            ("sfu-delete-rate-limit", sfuDeleteRateLimit), ("sfu-retry-after", sfuRetryAfter),
        ]
        for case let (key, value?) in options { flags[key] = value }

        let loader = try ConfigLoader(flags: flags, environment: ProcessInfo.processInfo.environment, configFile: nil)
        let loaded = try loader.load()
        guard let level = Logger.Level(rawValue: loader.setting("log-level") ?? "info") else {
            throw SetupError("log-level must be trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "tandem")
        logger.logLevel = level
        let metrics = ServerMetrics()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        for note in loaded.notes { logger.notice("\(note)") }
        let config = loaded.config
        let server = try buildServer(config, logger: logger, metrics: metrics) { [logger] port in
            let scheme = config.tls == .disabled ? "http" : "https"
            logger.notice("tandem \(config.version) serving \(scheme)://\(config.host):\(port) (signaling at /v1/signal, store \(config.store))")
        }
        // SIGHUP: read the TLS certificate and key again (a renewed certificate without a restart).
        signal(SIGHUP, SIG_IGN)
        let hangUp = DispatchSource.makeSignalSource(signal: SIGHUP)
        hangUp.setEventHandler { [logger, certificates = server.certificates] in
            guard let certificates else { return logger.notice("SIGHUP: no TLS certificate to read again") }
            do {
                try certificates.reload()
                logger.notice("SIGHUP: read the TLS certificate \(certificates.certificatePath) again")
            } catch {
                logger.error("SIGHUP: kept the TLS certificate in use: \(error)")
            }
        }
        hangUp.resume()
        defer { hangUp.cancel() }
        try await server.application.runService()
    }
}
