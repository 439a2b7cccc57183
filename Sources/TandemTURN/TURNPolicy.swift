import TandemSTUN
/// How a TURN server behaves: credentials, lifetimes, which relay families it has, and its limits.
public struct TURNPolicy: Sendable {
    public var realm = "tandem"
    /// Shared secrets of the REST scheme. The first mints credentials; any of them verifies, so that a
    /// secret can be rotated without cutting off credentials already handed out.
    public var secrets: [String] = []
    /// Relay addresses the server binds for allocations, at most one per family.
    public var relayIPv4: IPAddress?
    public var relayIPv6: IPAddress?
    /// Addresses advertised in XOR-RELAYED-ADDRESS when the relay sits behind a 1:1 NAT.
    public var externalIPv4: IPAddress?
    public var externalIPv6: IPAddress?
    public var peerFilter = PeerFilter()
    /// Seconds.
    public var defaultLifetime: Double = 600
    public var maxLifetime: Double = 3600
    public var permissionLifetime: Double = 300
    public var channelLifetime: Double = 600
    public var nonceLifetime: Double = 600
    /// How long past its credential's expiry an allocation may be refreshed (a call that started just
    /// before the expiry keeps its relay for this long).
    public var credentialGrace: Double = 600
    public var reservationLifetime: Double = 30
    /// Most permissions (peer IPs) and channels one allocation may hold.
    public var maxPermissionsPerAllocation = 512
    /// Bytes per second one allocation may relay in each direction; 0 is no cap.
    public var bandwidthLimit = 0
    /// Allocate requests one source IP may send per second; 0 is no limit.
    public var allocateRatePerSource = 200
    /// Answers sent without authentication (Binding responses, challenges, errors) to one source IP
    /// per second; 0 is no limit. Past it requests go unanswered, so that a spoofed source cannot turn
    /// the server into a reflector.
    public var unauthenticatedAnswersPerSource = 100

    public init() {}

    func advertised(_ relay: TransportAddress) -> TransportAddress {
        let external = relay.ip.isV6 ? externalIPv6 : externalIPv4
        return TransportAddress(ip: external ?? relay.ip, port: relay.port)
    }
}

/// The time as the TURN state machine sees it: a monotonic clock in seconds for lifetimes and nonces,
/// and the wall clock in Unix seconds for REST credential expiry.
public struct TURNInstant: Sendable, Equatable {
    public var monotonic: Double
    public var unix: Int64

    public init(monotonic: Double, unix: Int64) {
        self.monotonic = monotonic
        self.unix = unix
    }
}

/// A client's end of its 5-tuple: its address, and which of our sockets or connections it talks to.
public struct ClientID: Hashable, Sendable, CustomStringConvertible {
    public var remote: TransportAddress
    /// The listening socket (UDP) or the connection (TCP, TLS) at our end, as the I/O layer numbers them.
    public var endpoint: UInt32

    public init(remote: TransportAddress, endpoint: UInt32) {
        self.remote = remote
        self.endpoint = endpoint
    }

    public var description: String { "\(remote)#\(endpoint)" }
}

public typealias AllocationID = UInt64

/// Counters a TURN server keeps without locks; the I/O layer publishes them.
public struct TURNCounters: Sendable, Equatable {
    public var allocationsCreated = 0
    public var packetsToPeers = 0
    public var bytesToPeers = 0
    public var packetsToClients = 0
    public var bytesToClients = 0
    /// Packets dropped: no permission, no channel, over the bandwidth cap, unknown allocation.
    public var dropped = 0
    public var errorsByCode: [Int: Int] = [:]

    public init() {}
}
