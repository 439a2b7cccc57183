/// Where a relay agent gathers: its host addresses and, optionally, a STUN server for a server-reflexive
/// candidate and a port range.
public struct ICEConfiguration: Sendable, Equatable {
    public struct STUNServer: Sendable, Equatable {
        /// An IP address: libnice takes no names.
        public var host: String
        public var port: UInt16

        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }
    }

    public var addresses: [String]
    public var stunServer: STUNServer?
    public var portRange: ClosedRange<UInt16>?
    /// Addresses advertised instead of the host ones behind a 1:1 NAT (a container's published ports),
    /// at most one per family: an IPv4 one replaces IPv4 host candidates' addresses, an IPv6 one IPv6.
    public var announced: [String]
    /// Accept remote candidates on loopback addresses (a development server and its clients on one host).
    public var allowLoopbackCandidates: Bool

    public init(
        addresses: [String], stunServer: STUNServer? = nil, portRange: ClosedRange<UInt16>? = nil, announced: [String] = [],
        allowLoopbackCandidates: Bool = true
    ) {
        self.addresses = addresses
        self.stunServer = stunServer
        self.portRange = portRange
        self.announced = announced
        self.allowLoopbackCandidates = allowLoopbackCandidates
    }

    /// Whether the relay may send connectivity checks to `address`, in libnice's canonical spelling (as
    /// `nice_address_to_string` writes it, so `127.1` or `::ffff:127.0.0.1` cannot pass for something
    /// else). A participant could otherwise point the server's checks at its own loopback services, or at
    /// unspecified, link-local and multicast addresses, which no participant legitimately has. Private
    /// ranges stay: clients on the server's own network use them.
    public func acceptsRemote(address: String) -> Bool {
        var address = address.lowercased()
        if address.hasPrefix("::ffff:"), address.contains(".") { address.removeFirst(7) }
        if address.hasPrefix("127.") || address == "::1" { return allowLoopbackCandidates }
        let v4 = address.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
        if v4.count == 4 {
            return v4[0] != 0 && !(v4[0] == 169 && v4[1] == 254) && v4[0] < 224
        }
        guard address.contains(":"), address != "::" else { return false }
        return !["fe8", "fe9", "fea", "feb", "ff"].contains { address.hasPrefix($0) }
    }

    /// `candidate` (`candidate:F C TRANSPORT PRIORITY ADDRESS PORT typ host …`) as advertised: a host
    /// candidate's address replaced by the announced address of its family, if any.
    public func advertised(_ candidate: String) -> String {
        guard !announced.isEmpty else { return candidate }
        var fields = candidate.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 8, fields[6] == "typ", fields[7] == "host" else { return candidate }
        let v6 = fields[4].contains(":")
        guard let replacement = announced.first(where: { $0.contains(":") == v6 }) else { return candidate }
        fields[4] = Substring(replacement)
        return fields.joined(separator: " ")
    }
}
