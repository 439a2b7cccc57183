import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemPostgres
import TandemProtocol
import TandemSFU

/// Where the session store lives.
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    case memory
    case sqlite(path: String)
    /// Shared by many nodes.
    case postgres(PostgresLocation)

    /// Parses `memory`, `sqlite:PATH` or a `postgres://` URL; the error says what is wrong.
    public static func parse(_ text: String) -> Result<StoreLocation, SetupError> {
        if text == "memory" { return .success(.memory) }
        if text.hasPrefix("sqlite:"), text.count > 7 { return .success(.sqlite(path: String(text.dropFirst(7)))) }
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            return PostgresLocation.parse(text).map(StoreLocation.postgres).mapError { SetupError("store: the PostgreSQL URL \($0)") }
        }
        return .failure(SetupError("store must be memory, sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, not \"\(text)\""))
    }

    /// Without a password, for logs.
    public var description: String {
        switch self {
        case .memory: "memory"
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let location): location.description
        }
    }
}

/// How the server speaks TLS.
public enum TLSSetting: Sendable, Equatable {
    /// Plain HTTP and `ws://`, for running behind a TLS-terminating proxy.
    case disabled
    /// PEM certificate chain and private key files.
    case files(certificate: String, key: String)
}

/// Everything `tandem serve` can be told, after flags, environment and config file are merged.
public struct ServerConfig: Sendable {
    public var dev = false
    /// Serve the demo page at `/` (the client library at `/tandem.js` is always served).
    public var serveDemo = true
    /// Web pages of other origins allowed to open the signaling socket (`*` for any); see ``OriginPolicy``.
    public var allowedOrigins: [String] = []
    /// `/metrics` asks for the admin API key too.
    public var metricsNeedKey = false
    public var host = "0.0.0.0"
    public var port = 8443
    public var tls: TLSSetting = .disabled
    /// HS256 secret for join tokens; nil means tokens cannot be verified (only `--dev` on loopback joins).
    public var secret: String?
    /// Bearer key of the admin API; nil disables the admin API (401 for every admin call).
    public var apiKey: String?
    public var store: StoreLocation = .memory
    public var node = "node-1"
    /// How other nodes reach this one (`HOST:PORT`), in the store's node registry.
    public var advertise: String?
    /// Authenticates and encrypts the links between nodes; without it a node bridges nobody.
    public var clusterSecret: String?
    /// How often the node renews its lease in the store, and how long a renewal lasts there. A node
    /// that cannot renew stops serving a third of the lease before it runs out.
    public var nodeHeartbeatInterval: Duration = .seconds(2)
    public var nodeLease: Duration = .seconds(6)
    /// How long a draining node waits for its sockets to close before it stops.
    public var drainTimeout: Duration = .seconds(10)
    public var arbiter = ArbiterConfig()
    /// Messages a connection may send per second, and the burst above that.
    public var rateLimitPerSecond: Double = 50
    public var rateLimitBurst: Double = 100
    /// How long a new socket has to send `join`.
    public var joinTimeout: Duration = .seconds(10)
    /// Most candidates one participant may send in one epoch.
    public var maxCandidatesPerEpoch = 100
    /// Most frames waiting to be written to one slow socket before it is closed (it may resume).
    public var maxQueuedFrames = 1024
    /// ICE servers handed out in every provider object.
    public var iceServers: [ICEServer] = []
    /// Tandem's own TURN service and REST credentials for it and for external TURN servers.
    public var turn: TURNSettings?
    /// The media relay (provider `relay`); nil when no relay address is configured.
    public var relay: RelaySettings?
    /// The SFU service (provider `sfu`); nil when none is configured.
    public var sfu: SFUSettings?
    public var version = TandemVersion.current

    public init() {}

    public var heartbeatInterval: Duration {
        get { arbiter.heartbeatInterval }
        set { arbiter.heartbeatInterval = newValue }
    }

    public var heartbeatTimeout: Duration {
        get { arbiter.heartbeatTimeout }
        set { arbiter.heartbeatTimeout = newValue }
    }
}

/// A PEM certificate file and its private key file.
public struct PEMFiles: Sendable, Equatable {
    public var certificate: String
    public var key: String

    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }
}

/// The server-side media relay: where its ICE agents gather, on how many loop threads, and its DTLS
/// certificate (made at start unless configured).
public struct RelaySettings: Sendable, Equatable {
    /// Host addresses (IPv4 or IPv6) the relay's candidates are gathered on.
    public var addresses: [String]
    public var threads: Int
    public var ports: ClosedRange<UInt16>?
    /// Addresses advertised instead of the host ones behind a 1:1 NAT, one per family.
    public var announced: [String] = []
    /// A STUN server the relay's agents ask for a server-reflexive candidate.
    public var stunServer: ICEConfiguration.STUNServer?
    /// DTLS certificate and key; nil makes a P-256 certificate at start.
    public var certificate: PEMFiles?
    /// A leg not connected this long after its offer has failed.
    public var handshakeTimeoutMs = 20_000

    public init(addresses: [String], threads: Int, ports: ClosedRange<UInt16>? = nil, certificate: PEMFiles? = nil) {
        self.addresses = addresses
        self.threads = threads
        self.ports = ports
        self.certificate = certificate
    }
}

/// A Daily-style SFU service: its REST API, and how long the rooms it opens for sessions live.
public struct SFUSettings: Sendable, Equatable {
    public var api: DailyConfiguration
    /// Rooms and their tokens stop admitting this long after they are made (the service deletes them
    /// in the end even if Tandem's own delete never arrives).
    public var roomTTL: Duration = .seconds(86_400)
    /// Run a local stand-in of the API on this address (development only); `api` points at it.
    public var standIn: StandInAddress?

    public struct StandInAddress: Sendable, Equatable {
        public var host: String
        public var port: Int
    }

    public init(api: DailyConfiguration) {
        self.api = api
    }
}

public enum TandemVersion {
    public static let current = "0.1.0"
}
