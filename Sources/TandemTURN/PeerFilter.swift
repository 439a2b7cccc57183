import TandemSTUN
/// Which peer addresses an allocation may talk to. By default the ranges a TURN server must not reach
/// on a client's behalf (loopback, private, link-local, site-local, multicast, unspecified and reserved)
/// are denied, as coturn does, and so is an IPv6 address that carries a denied IPv4 one (IPv4-mapped or
/// -compatible, NAT64, 6to4, Teredo); `allow` punches holes in that, `deny` adds ranges. Deny wins over
/// allow. The server's own addresses are reachable only on relay ports (another allocation).
public struct PeerFilter: Sendable, Equatable {
    public static let defaultDenied: [IPPrefix] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    ].map { IPPrefix($0)! }

    /// Holes in the default ranges (`--turn-allow-peers`).
    public var allow: [IPPrefix]
    /// Always denied, whatever `allow` says (`--turn-deny-peers`).
    public var deny: [IPPrefix]
    /// The server's own addresses (listen, relay and external): a peer there is reached only on a relay
    /// port, never on another of the server's services (its own TURN listener would make a loop).
    public var own: Set<IPAddress>
    public var relayPorts: ClosedRange<UInt16>

    public init(allow: [IPPrefix] = [], deny: [IPPrefix] = [], own: Set<IPAddress> = [], relayPorts: ClosedRange<UInt16> = 49152...65535) {
        self.allow = allow
        self.deny = deny
        self.own = own
        self.relayPorts = relayPorts
    }

    /// Loopback as well, for tests on one machine.
    public static let loopbackAllowed = PeerFilter(allow: [IPPrefix("127.0.0.0/8")!, IPPrefix("::1/128")!])

    /// Whether a permission for `address` may be installed.
    public func permits(_ address: IPAddress) -> Bool {
        // An IPv4-mapped IPv6 peer is judged as the IPv4 address it names.
        let ip = address.unmappedV4 ?? address
        if deny.contains(where: { $0.contains(ip) }) { return false }
        if allow.contains(where: { $0.contains(ip) }) { return true }
        if Self.defaultDenied.contains(where: { $0.contains(ip) }) { return false }
        return ip.embeddedV4.allSatisfy(permits)
    }

    /// Whether data may be sent to `peer`: its address is permitted and its port is reachable.
    public func permits(_ peer: TransportAddress) -> Bool { permits(peer.ip) && permitsPort(of: peer) }

    /// The port half of ``permits(_:)-(TransportAddress)``, for a peer whose address holds a permission
    /// already: on one of the server's own addresses only a relay port (unless `allow` names the address).
    public func permitsPort(of peer: TransportAddress) -> Bool {
        let ip = peer.ip.unmappedV4 ?? peer.ip
        guard own.contains(ip), !relayPorts.contains(peer.port) else { return true }
        return allow.contains { $0.contains(ip) }
    }
}
