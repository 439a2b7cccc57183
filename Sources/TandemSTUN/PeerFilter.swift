/// Which peer addresses an allocation may talk to. By default the ranges a TURN server must not reach
/// on a client's behalf (loopback, private, link-local, multicast, unspecified and reserved) are
/// denied, as coturn does; `allow` punches holes in that, `deny` adds ranges. Deny wins over allow.
public struct PeerFilter: Sendable, Equatable {
    public static let defaultDenied: [IPPrefix] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
    ].map { IPPrefix($0)! }

    /// Holes in the default ranges (`--turn-allow-peers`).
    public var allow: [IPPrefix]
    /// Always denied, whatever `allow` says (`--turn-deny-peers`).
    public var deny: [IPPrefix]

    public init(allow: [IPPrefix] = [], deny: [IPPrefix] = []) {
        self.allow = allow
        self.deny = deny
    }

    /// Loopback as well, for tests on one machine.
    public static let loopbackAllowed = PeerFilter(allow: [IPPrefix("127.0.0.0/8")!, IPPrefix("::1/128")!])

    public func permits(_ address: IPAddress) -> Bool {
        // An IPv4-mapped IPv6 peer is judged as the IPv4 address it names.
        let ip = address.unmappedV4 ?? address
        if deny.contains(where: { $0.contains(ip) }) { return false }
        if allow.contains(where: { $0.contains(ip) }) { return true }
        return !Self.defaultDenied.contains { $0.contains(ip) }
    }
}
