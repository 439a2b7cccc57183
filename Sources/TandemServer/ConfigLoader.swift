import Foundation
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSTUN
import TandemTURN

/// Merges settings from flags, `TANDEM_*` environment variables and a config file, in that order of
/// precedence, into a ``ServerConfig``. Every setting has one name: `--heartbeat-interval` is
/// `TANDEM_HEARTBEAT_INTERVAL` and `"heartbeat-interval"` in the file.
public struct ConfigLoader {
    /// Every setting the config file may hold.
    public static let keys: [String] = Setting.all.filter(\.inFile).map(\.name)

    var flags: [String: String]
    var environment: [String: String]
    var file: [String: JSON]

    /// `flags` holds the values given on the command line, by setting name.
    public init(flags: [String: String], environment: [String: String], configFile: String?) throws {
        self.flags = flags
        self.environment = environment
        file = [:]
        let path = flags["config"] ?? environment["TANDEM_CONFIG"] ?? configFile
        if let path {
            guard let data = FileManager.default.contents(atPath: path) else { throw SetupError("cannot read the config file \(path)") }
            file = try Self.parseFile(Array(data), path: path)
        }
    }

    /// Parses a JSON config file; whole lines starting with `//` are comments.
    static func parseFile(_ bytes: [UInt8], path: String) throws -> [String: JSON] {
        let text = String(decoding: bytes, as: UTF8.self)
        let stripped = text.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces).hasPrefix("//") ? "" : String($0) }
            .joined(separator: "\n")
        let json: JSON
        do {
            json = try JSONParser.parse(Array(stripped.utf8))
        } catch {
            throw SetupError("the config file \(path) is not valid JSON: \(error)")
        }
        guard case .object(let members) = json else { throw SetupError("the config file \(path) must hold one JSON object") }
        if let unknown = members.keys.sorted().first(where: { !keys.contains($0) }) {
            throw SetupError("the config file \(path) has an unknown setting \"\(unknown)\"")
        }
        return members
    }

    /// The raw text of a setting, by precedence.
    public func setting(_ key: String) -> String? { text(key) }

    func text(_ key: String) -> String? {
        assert(Setting.named(key) != nil, "\(key) is not declared in Setting.all")
        if let v = flags[key] { return v }
        if let v = environment[Setting.environmentName(of: key)] { return v }
        switch file[key] {
        case .string(let s): return s
        case .number(let d): return Int(exactly: d).map(String.init) ?? String(d)
        case .bool(let b): return b ? "true" : "false"
        case .array(let items): return items.compactMap(\.stringValue).joined(separator: ",")
        default: return nil
        }
    }

    func bool(_ key: String) throws -> Bool {
        guard let t = text(key) else { return false }
        switch t.lowercased() {
        case "", "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default: throw SetupError("\(key) must be true or false, not \"\(t)\"")
        }
    }

    /// A number in the range its declaration gives.
    func number(_ key: String) throws -> Double? {
        guard let t = text(key) else { return nil }
        guard case .number(let range, _)? = Setting.named(key)?.check else { preconditionFailure("\(key) is not declared a number") }
        guard let v = Double(t), range.contains(v) else {
            throw SetupError("\(key) must be a number from \(Self.format(range.lowerBound)) to \(Self.format(range.upperBound)), not \"\(t)\"")
        }
        return v
    }

    /// A secret or key setting. An empty or short one would let anybody sign join tokens, mint TURN
    /// credentials or call the admin API, so it is refused at start.
    func secretSetting(_ key: String) throws -> String? {
        guard let value = text(key) else { return nil }
        try Self.checkSecret(value, name: key)
        return value
    }

    /// Secrets and keys are at least this many bytes.
    public static let minimumSecretBytes = 16

    public static func checkSecret(_ value: String, name: String) throws {
        let count = value.utf8.count
        guard count < minimumSecretBytes else { return }
        throw SetupError("\(name) must be at least \(minimumSecretBytes) bytes, not \(count == 0 ? "empty" : "\(count)"): make one with `openssl rand -hex 32`")
    }

    /// A whole number in the range its declaration gives.
    func integer(_ key: String) throws -> Int? {
        guard let t = text(key) else { return nil }
        guard case .integer(let range, _)? = Setting.named(key)?.check else { preconditionFailure("\(key) is not declared a whole number") }
        guard let v = Int(t), range.contains(v) else { throw SetupError("\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \"\(t)\"") }
        return v
    }

    func milliseconds(_ key: String) throws -> Duration? {
        try integer(key).map { .milliseconds($0) }
    }

    func providers(_ key: String) throws -> [ProviderName]? {
        guard let t = text(key) else { return nil }
        var list: [ProviderName] = []
        for part in t.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let p = ProviderName(rawValue: part) else { throw SetupError("\(key) takes p2p, relay and sfu, not \"\(part)\"") }
            if !list.contains(p) { list.append(p) }
        }
        return list
    }

    static func format(_ d: Double) -> String { d.rounded() == d ? String(Int(d)) : String(d) }

    /// Splits `HOST:PORT` (`[v6]:PORT` for IPv6).
    public static func parseListen(_ text: String, key: String = "listen") throws -> (String, Int) {
        guard let (host, port) = splitHostPort(text) else {
            let shape = text.hasPrefix("[") ? "HOST:PORT or [IPv6]:PORT" : "HOST:PORT"
            throw SetupError("\(key) must be \(shape), not \"\(text)\"")
        }
        guard !host.isEmpty, let p = Int(port), (0...65535).contains(p) else {
            throw SetupError("\(key) must be HOST:PORT with a port from 0 to 65535, not \"\(text)\"")
        }
        return (String(host), p)
    }

    /// Builds the configuration. In `--dev` mode the listen address defaults to loopback and missing
    /// certificates and secrets are made for you; outside it they must be given.
    public func load() throws -> (config: ServerConfig, notes: [String]) {
        var c = ServerConfig()
        var notes: [String] = []
        c.dev = try bool("dev")
        c.serveDemo = try !bool("no-demo")
        c.allowedOrigins = try parsedList("allowed-origins", takes: "origins like https://app.example.com, or *") { item in
            item == "*" || OriginPolicy.authority(ofOrigin: item.lowercased()) != nil ? item : nil
        }
        c.metricsNeedKey = try bool("metrics-auth")
        let dataDir = text("data-dir") ?? "./data"
        (c.host, c.port) = try Self.parseListen(text("listen") ?? (c.dev ? "127.0.0.1:8443" : "0.0.0.0:8443"))
        if let store = text("store") {
            c.store = try StoreLocation.parse(store).get()
        } else {
            c.store = .sqlite(path: dataDir + "/tandem.db")
        }
        c.node = text("node") ?? ProcessInfo.processInfo.hostName
        c.clusterSecret = try secretSetting("cluster-secret")
        if case .postgres = c.store, c.clusterSecret == nil {
            throw SetupError("give --cluster-secret (or TANDEM_CLUSTER_SECRET) with a postgres store: the nodes on it authenticate their links with it")
        }
        if let advertise = text("advertise") {
            _ = try Self.parseListen(advertise, key: "advertise")
            c.advertise = advertise
        }

        let noTLS = try bool("no-tls")
        switch (text("tls-cert"), text("tls-key"), noTLS) {
        case (.some, .some, true):
            throw SetupError("give either --tls-cert and --tls-key or --no-tls, not both")
        case (.some(let cert), .some(let key), false):
            c.tls = .files(certificate: cert, key: key)
        case (.some, nil, _), (nil, .some, _):
            throw SetupError("--tls-cert and --tls-key go together")
        case (nil, nil, true):
            c.tls = .disabled
        case (nil, nil, false):
            guard c.dev else {
                throw SetupError("give --tls-cert and --tls-key, or --no-tls when a TLS-terminating proxy is in front")
            }
            let directory = dataDir + "/certs"
            if try DevCertificates.ensure(in: directory) { notes.append("made development certificates in \(directory) (trust ca.pem)") }
            let paths = DevCertificates.Paths(directory: directory)
            c.tls = .files(certificate: paths.certificate, key: paths.key)
        }

        c.secret = try secretSetting("secret")
        if c.secret == nil {
            guard c.dev else { throw SetupError("give --secret (or TANDEM_SECRET): join tokens are signed with it") }
            c.secret = Self.randomSecret()
            notes.append("join tokens are signed with a secret made for this run; give --secret to keep tokens across restarts")
        }
        c.apiKey = try secretSetting("api-key")
        if c.apiKey == nil && c.dev {
            c.apiKey = Self.randomSecret()
            notes.append("admin API key for this run: \(c.apiKey!)")
        }

        if let v = try milliseconds("heartbeat-interval") { c.heartbeatInterval = v }
        if let v = try milliseconds("heartbeat-timeout") { c.heartbeatTimeout = v }
        guard c.heartbeatTimeout > c.heartbeatInterval else { throw SetupError("heartbeat-timeout must be longer than heartbeat-interval") }
        c.arbiter.staleAfter = c.heartbeatTimeout
        if let v = try integer("max-participants") { c.arbiter.maxParticipants = v }
        if let v = try number("rate-limit") { c.rateLimitPerSecond = v }
        if let v = try number("rate-burst") { c.rateLimitBurst = v }
        if let v = try integer("max-candidates") { c.maxCandidatesPerEpoch = v }
        if let v = try milliseconds("join-timeout") { c.joinTimeout = v }
        if let v = try milliseconds("drain-timeout") { c.drainTimeout = v }

        c.relay = try relaySettings(dev: c.dev)
        c.sfu = try sfuSettings(dev: c.dev, notes: &notes)
        try sfuPolicy(&c.arbiter)
        let available = ServerConfig.availableProviders.union(c.relay == nil ? [] : [.relay]).union(c.sfu == nil ? [] : [.sfu])
        c.arbiter.enabled = available
        if let enabled = try providers("providers") {
            if let missing = enabled.first(where: { !available.contains($0) }) {
                throw SetupError("provider \(missing) cannot be enabled: this server has no \(missing) backend configured")
            }
            guard !enabled.isEmpty else { throw SetupError("providers must name at least one provider") }
            c.arbiter.enabled = Set(enabled)
        }
        if let order = try providers("fallback-order") { c.arbiter.fallbackOrder = order }
        if let target = try providers("quality-target") {
            guard target.count == 1 else { throw SetupError("quality-target names one provider") }
            c.arbiter.qualityTarget = target[0]
        }
        if let v = try number("switch-rtt-ms") { c.arbiter.switchThresholds.rttMs = v }
        if let v = try number("switch-loss-pct") { c.arbiter.switchThresholds.lossPct = v }
        if let v = try number("switch-jitter-ms") { c.arbiter.switchThresholds.jitterMs = v }
        if let v = try integer("switch-reports") { c.arbiter.consecutiveBadReports = v }
        if let v = try milliseconds("cool-down") { c.arbiter.coolDown = v }
        if let v = try number("alert-rtt-ms") { c.arbiter.alertThresholds.rttMs = v }
        if let v = try number("alert-loss-pct") { c.arbiter.alertThresholds.lossPct = v }
        if let v = try number("alert-jitter-ms") { c.arbiter.alertThresholds.jitterMs = v }
        if let v = try number("alert-min-bitrate-kbps") { c.arbiter.lowBandwidthKbps = v }
        if let v = try milliseconds("stale-after") { c.arbiter.staleAfter = v }
        c.iceServers = try iceServers()
        c.turn = try turnSettings(dev: c.dev, tls: c.tls, notes: &notes)
        return (c, notes)
    }

    /// `ice-servers`: in the file an array of `{urls, username?, credential?}`; as a flag or variable a
    /// comma-separated list of URLs.
    func iceServers() throws -> [ICEServer] {
        if flags["ice-servers"] == nil, environment["TANDEM_ICE_SERVERS"] == nil, case .array(let items)? = file["ice-servers"] {
            return try items.map { item in
                let urls: [String]
                switch item["urls"] {
                case .string(let s)?: urls = [s]
                case .array(let list)?: urls = list.compactMap(\.stringValue)
                default: throw SetupError("each ice-servers entry needs urls")
                }
                return ICEServer(urls: urls, username: item["username"]?.stringValue, credential: item["credential"]?.stringValue)
            }
        }
        guard let t = text("ice-servers") else { return [] }
        return t.split(separator: ",").map { ICEServer(urls: [$0.trimmingCharacters(in: .whitespaces)]) }
    }

    static func randomSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        return RandomText.base32(count: 32, using: &rng)
    }
}

extension ServerConfig {
    /// Providers every server can serve; `relay` joins when a relay address is configured, the SFU when
    /// its backend exists.
    public static let availableProviders: Set<ProviderName> = [.p2p]
}

extension ConfigLoader {
    /// `relay-address` (repeatable; `--dev` defaults to 127.0.0.1), `relay-threads`, `relay-ports` and
    /// the optional DTLS certificate.
    static let relayKeys = SettingSection.relay.settings.map(\.name)

    func relaySettings(dev: Bool) throws -> RelaySettings? {
        // A wildcard is not an address a client can reach: the relay's candidates carry these verbatim.
        var addresses = try parsedList("relay-address", takes: "a specific IP address (not 0.0.0.0 or ::)") { text in
            IPAddress(text).flatMap { $0.isUnspecified ? nil : $0.description }
        }
        if addresses.isEmpty {
            guard dev else {
                if let stray = Self.relayKeys.dropFirst().first(where: { text($0) != nil }) { throw SetupError("\(stray) needs --relay-address") }
                return nil
            }
            addresses = ["127.0.0.1"]
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        var settings = RelaySettings(addresses: addresses, threads: try integer("relay-threads") ?? max(1, cores))
        settings.ports = try portRange("relay-ports", lowest: 1, distinct: false)
        let announced = try ips("relay-announced-ip")
        guard announced.filter({ !$0.isV6 }).count <= 1, announced.filter(\.isV6).count <= 1 else {
            throw SetupError("relay-announced-ip takes at most one IPv4 and one IPv6 address")
        }
        settings.announced = announced.map(\.description)
        // libnice takes the server's address, not a name.
        if let stun = try parsedList("relay-stun-server", takes: "IP:PORT", TransportAddress.init).first {
            settings.stunServer = ICEConfiguration.STUNServer(host: stun.ip.description, port: stun.port)
        }
        switch (text("relay-dtls-cert"), text("relay-dtls-key")) {
        case (let cert?, let key?): settings.certificate = PEMFiles(certificate: cert, key: key)
        case (nil, nil): break
        default: throw SetupError("--relay-dtls-cert and --relay-dtls-key go together")
        }
        return settings
    }
}
