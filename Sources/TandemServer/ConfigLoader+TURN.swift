import Foundation
import TandemSTUN
import TandemTURN
import TandemTURNService

extension ConfigLoader {
    static let turnKeys = SettingSection.turn.settings.map(\.name)

    func list(_ key: String) -> [String] {
        (text(key) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func addresses(_ key: String) throws -> [TransportAddress] {
        try list(key).map { item in
            let (host, port) = try Self.parseListen(item, key: key)
            guard let ip = IPAddress(host) else { throw SetupError("\(key) takes IP:PORT ([IPv6]:PORT), not \"\(item)\"") }
            return TransportAddress(ip: ip, port: UInt16(port))
        }
    }

    /// Each item of a comma-separated setting, parsed; the first that does not parse is named in the error.
    func parsedList<T>(_ key: String, takes what: String, _ parse: (String) -> T?) throws -> [T] {
        try list(key).map { item in
            guard let value = parse(item) else { throw SetupError("\(key) takes \(what), not \"\(item)\"") }
            return value
        }
    }

    /// `LOW-HIGH`, both ports, `lowest <= LOW <= HIGH` (`LOW < HIGH` when `distinct`).
    func portRange(_ key: String, lowest: UInt16, distinct: Bool) throws -> ClosedRange<UInt16>? {
        guard let text = text(key) else { return nil }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { UInt16($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let low = parts[0], let high = parts[1], low >= lowest, distinct ? low < high : low <= high else {
            throw SetupError("\(key) must be LOW-HIGH with \(lowest) <= LOW \(distinct ? "<" : "<=") HIGH <= 65535, not \"\(text)\"")
        }
        return low...high
    }

    /// Whether TURN relays to loopback peers: as `turn-allow-loopback-peers` says, and by default only in
    /// `--dev` with every TURN listener on loopback. A client that reaches TURN there is on this machine
    /// already, so loopback peers give it nothing new, and two tabs' relayed candidates are on loopback.
    func loopbackPeersAllowed(dev: Bool, listen: [TransportAddress], notes: inout [String]) throws -> Bool {
        if text("turn-allow-loopback-peers") != nil { return try bool("turn-allow-loopback-peers") }
        guard dev, !listen.isEmpty, listen.allSatisfy(\.ip.isLoopback) else { return false }
        notes.append("TURN relays to loopback peers (--dev, TURN on loopback only), so two tabs on this machine can call through it; --no-turn-allow-loopback-peers denies them")
        return true
    }

    func prefixes(_ key: String) throws -> [IPPrefix] {
        try parsedList(key, takes: "addresses or prefixes like 10.0.0.0/8") { IPPrefix($0) }
    }

    func ips(_ key: String) throws -> [IPAddress] {
        try parsedList(key, takes: "an IP address") { IPAddress($0) }
    }

    /// The TURN settings, or nil when neither our own TURN nor external TURN URLs are configured.
    func turnSettings(dev: Bool, tls: TLSSetting, notes: inout [String]) throws -> TURNSettings? {
        let listen = try addresses("turn-listen")
        let tlsListen = try addresses("turns-listen")
        let external = list("turn-urls")
        for url in external where !(url.hasPrefix("turn:") || url.hasPrefix("turns:") || url.hasPrefix("stun:")) {
            throw SetupError("turn-urls takes turn:, turns: and stun: URLs, not \"\(url)\"")
        }
        let serves = !listen.isEmpty || !tlsListen.isEmpty
        guard serves || !external.isEmpty else {
            if let stray = Self.turnKeys.first(where: { text($0) != nil }) {
                throw SetupError("\(stray) needs --turn-listen, --turns-listen or --turn-urls")
            }
            return nil
        }
        if !tlsListen.isEmpty, tls == .disabled { throw SetupError("turns-listen needs the TLS certificate (--tls-cert and --tls-key)") }

        let secret: String
        if let given = try secretSetting("turn-secret") {
            secret = given
        } else {
            guard dev, external.isEmpty else { throw SetupError("give --turn-secret: TURN credentials are signed with it") }
            secret = Self.randomSecret()
            notes.append("TURN credentials are signed with a secret made for this run; give --turn-secret to share it with other TURN servers")
        }
        // A specific listening address doubles as the public host and the relay address.
        let specific = (listen + tlsListen).first.map(\.ip).flatMap { $0.isUnspecified ? nil : $0 }
        let publicHost = text("turn-public-host") ?? specific?.description
        if serves, publicHost == nil {
            throw SetupError("give --turn-public-host: TURN listens on every address, so clients need to be told which one to use")
        }
        var settings = TURNSettings(secret: secret, publicHost: publicHost ?? "")
        settings.externalURLs = external
        if let ttl = try integer("turn-credential-ttl") { settings.credentialTTL = .seconds(ttl) }

        settings.service.listen = listen
        settings.service.tlsListen = tlsListen
        var policy = settings.service.policy
        if let realm = text("turn-realm") {
            guard !realm.isEmpty, realm.utf8.count <= 127 else { throw SetupError("turn-realm must be 1 to 127 bytes") }
            policy.realm = realm
        }
        let relayIPs = try ips("turn-relay-ip")
        let relays = relayIPs.isEmpty ? specific.map { [$0] } ?? [] : relayIPs
        if serves, relays.isEmpty {
            throw SetupError("give --turn-relay-ip: TURN listens on every address, so relayed addresses need one")
        }
        for ip in relays {
            if ip.isV6 {
                guard policy.relayIPv6 == nil else { throw SetupError("turn-relay-ip takes at most one IPv6 address") }
                policy.relayIPv6 = ip
            } else {
                guard policy.relayIPv4 == nil else { throw SetupError("turn-relay-ip takes at most one IPv4 address") }
                policy.relayIPv4 = ip
            }
        }
        for ip in try ips("turn-external-ip") {
            if ip.isV6 { policy.externalIPv6 = ip } else { policy.externalIPv4 = ip }
        }
        var allow = try prefixes("turn-allow-peers")
        if try loopbackPeersAllowed(dev: dev, listen: listen + tlsListen, notes: &notes) { allow += PeerFilter.loopbackAllowed.allow }
        if let ports = try portRange("turn-relay-ports", lowest: 1024, distinct: true) { settings.service.limits.ports = ports }
        let own = Set((listen + tlsListen).map(\.ip).filter { !$0.isUnspecified } + relays
            + [policy.externalIPv4, policy.externalIPv6].compactMap { $0 })
        policy.peerFilter = PeerFilter(
            allow: allow, deny: try prefixes("turn-deny-peers"), own: own, relayPorts: settings.service.limits.ports)
        if let v = try integer("turn-max-bps") { policy.bandwidthLimit = v }
        if let v = try integer("turn-allocate-rate") { policy.allocateRatePerSource = v }
        if let v = try integer("turn-unauthenticated-rate") { policy.unauthenticatedAnswersPerSource = v }
        settings.service.policy = policy

        if let v = try integer("turn-user-quota") { settings.service.limits.perIdentity = v }
        if let v = try integer("turn-total-quota") { settings.service.limits.total = v }
        if let v = try integer("turn-max-streams") { settings.service.streams.total = v }
        if let v = try integer("turn-max-streams-per-ip") { settings.service.streams.perIP = v }
        if let v = try integer("turn-threads") { settings.service.threads = v }
        return settings
    }
}
