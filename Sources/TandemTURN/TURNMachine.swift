import TandemSTUN
/// The TURN server (RFC 8656, RFC 6156) as a state machine: messages and ticks in, actions out. It owns
/// the allocations of one I/O loop; what loops share lives in ``AllocationResources``. It opens no sockets
/// and reads no clock: the I/O layer passes the time in and performs the actions.
public struct TURNMachine: Sendable {
    public enum Action: Sendable, Equatable {
        /// A STUN response or indication for the client.
        case reply([UInt8], to: ClientID)
        /// Bind UDP relay sockets on these addresses for the allocation, then call `relayOpened` or `relayFailed`.
        case openRelay(AllocationID, [TransportAddress])
        /// Close the allocation's relay sockets.
        case closeRelay(AllocationID)
        /// Send the data of a Send indication from the allocation's relay socket to the peer.
        case sendToPeer(AllocationID, TransportAddress, [UInt8])
    }

    /// Where a ChannelData message from a client goes.
    public enum ClientRoute: Sendable, Equatable {
        case peer(AllocationID, TransportAddress)
        case drop
    }

    /// How a datagram from a peer reaches the client.
    public enum PeerRoute: Sendable, Equatable {
        case channel(UInt16, ClientID)
        case dataIndication(ClientID)
        case drop
    }

    struct Channel: Sendable {
        var peer: TransportAddress
        var expiry: Double
    }

    struct Allocation: Sendable {
        enum Phase: Sendable { case opening(attempt: Int), active }
        let id: AllocationID
        let client: ClientID
        let username: String
        let identity: String
        let key: [UInt8]
        let sha256Integrity: Bool
        var phase: Phase
        var relayed: [TransportAddress]
        var expiry: Double
        /// When the credential it was made with expired, plus `credentialGrace`: no refresh goes past it.
        let credentialEnd: Double
        var permissions: [IPAddress: Double] = [:]
        var channels: [UInt16: Channel] = [:]
        var channelByPeer: [TransportAddress: UInt16] = [:]
        /// The Allocate that made it, to answer retransmissions.
        let request: STUNMessage
        var response: [UInt8] = []
        var reservationToken: UInt64?
        var wantsFingerprint: Bool
        var budgetToPeers = 0
        var budgetToClient = 0
        /// The address family a dual allocation could not get, for ADDRESS-ERROR-CODE.
        var missingFamily = false
    }

    public let policy: TURNPolicy
    let resources: AllocationResources
    let nonces: NonceMaker
    public private(set) var now: TURNInstant
    var allocations: [AllocationID: Allocation] = [:]
    var byClient: [ClientID: AllocationID] = [:]
    var nextID: AllocationID
    /// Per-source rates, shared with the other shards.
    let rates: SourceRates
    public var counters = TURNCounters()

    /// `idBase` keeps allocation ids of the loops of one server apart; `rates` is shared by them.
    public init(
        policy: TURNPolicy, resources: AllocationResources, nonceKey: [UInt8], now: TURNInstant, idBase: AllocationID = 0,
        rates: SourceRates = SourceRates()
    ) {
        self.policy = policy
        self.resources = resources
        self.rates = rates
        nonces = NonceMaker(key: nonceKey, lifetime: policy.nonceLifetime)
        self.now = now
        nextID = idBase + 1
    }

    public var allocationCount: Int { allocations.count }

    /// Whether `client` (a transport connection or a UDP source) holds an allocation.
    public func hasAllocation(_ client: ClientID) -> Bool { byClient[client] != nil }

    public var permissionCount: Int { allocations.values.reduce(0) { $0 + $1.permissions.count } }
    public var channelCount: Int { allocations.values.reduce(0) { $0 + $1.channels.count } }

    // MARK: Time

    /// Sets the clock without expiring anything, for messages that arrive between ticks.
    public mutating func setTime(_ time: TURNInstant) { now = time }

    /// Advances the clock: ends expired allocations, permissions, channels and reservations, and
    /// refills bandwidth budgets. Call about once a second.
    public mutating func tick(_ time: TURNInstant) -> [Action] {
        now = time
        let t = time.monotonic
        resources.expireReservations(now: t)
        var expired: [AllocationID] = []
        var i = allocations.startIndex
        while i != allocations.endIndex {
            // In place: an allocation is a large value, and most ticks change nothing in it.
            if allocations.values[i].expiry < t {
                expired.append(allocations.values[i].id)
            } else {
                Self.expireEntries(&allocations.values[i], now: t, budget: policy.bandwidthLimit)
            }
            allocations.formIndex(after: &i)
        }
        return expired.flatMap { end($0) }
    }

    private static func expireEntries(_ a: inout Allocation, now t: Double, budget: Int) {
        if a.permissions.values.contains(where: { $0 < t }) { a.permissions = a.permissions.filter { $0.value >= t } }
        for (number, channel) in a.channels where channel.expiry < t {
            a.channels[number] = nil
            a.channelByPeer[channel.peer] = nil
        }
        a.budgetToPeers = budget
        a.budgetToClient = budget
    }

    // MARK: Packet path

    /// Routes a ChannelData message's payload; `length` counts for the bandwidth cap and counters.
    /// The allocation is read and charged in place through its index: copying it per packet would
    /// retain and release every one of its fields.
    public mutating func routeChannelData(_ number: UInt16, length: Int, from client: ClientID) -> ClientRoute {
        guard let id = byClient[client], let i = allocations.index(forKey: id),
            let peer = allocations.values[i].channels[number]?.peer, permits(peer, at: i),
            spend(length, at: i, toPeer: true)
        else {
            counters.dropped += 1
            return .drop
        }
        return .peer(id, peer)
    }

    /// Routes a datagram that reached an allocation's relay socket from `peer`.
    public mutating func routePeerData(to id: AllocationID, from peer: TransportAddress, length: Int) -> PeerRoute {
        guard let i = allocations.index(forKey: id), permits(peer, at: i), spend(length, at: i, toPeer: false) else {
            counters.dropped += 1
            return .drop
        }
        let client = allocations.values[i].client
        if let number = allocations.values[i].channelByPeer[peer] { return .channel(number, client) }
        return .dataIndication(client)
    }

    @inline(__always)
    private func permits(_ peer: TransportAddress, at i: Dictionary<AllocationID, Allocation>.Index) -> Bool {
        guard let expiry = allocations.values[i].permissions[peer.ip] else { return false }
        return expiry >= now.monotonic
    }

    /// Charges `length` bytes to the allocation's bandwidth budget and counts them; false when the
    /// budget is spent.
    @inline(__always)
    private mutating func spend(_ length: Int, at i: Dictionary<AllocationID, Allocation>.Index, toPeer: Bool) -> Bool {
        if policy.bandwidthLimit > 0 {
            if toPeer {
                guard allocations.values[i].budgetToPeers >= length else { return false }
                allocations.values[i].budgetToPeers -= length
            } else {
                guard allocations.values[i].budgetToClient >= length else { return false }
                allocations.values[i].budgetToClient -= length
            }
        }
        if toPeer {
            counters.packetsToPeers += 1
            counters.bytesToPeers += length
        } else {
            counters.packetsToClients += 1
            counters.bytesToClients += length
        }
        return true
    }

    /// The client's end of the connection went away (TCP, TLS): its allocation ends with it.
    public mutating func clientClosed(_ client: ClientID) -> [Action] {
        guard let id = byClient[client] else { return [] }
        return end(id)
    }

    // MARK: Relay sockets

    /// The relay sockets of a pending allocation are bound: answer the Allocate.
    public mutating func relayOpened(_ id: AllocationID) -> [Action] {
        // Gone while its sockets were being bound (deleted, expired, its connection closed): close them.
        guard var a = allocations[id], case .opening = a.phase else { return [.closeRelay(id)] }
        a.phase = .active
        var b = STUNMessageBuilder(answering: a.request, class: .success)
        for address in a.relayed { b.append(STUNAttribute.xorRelayedAddress, xorAddress: policy.advertised(address)) }
        if a.missingFamily {
            b.append(STUNAttribute.addressErrorCode, [0x02, 0, 4, 40] + Array("Address Family not Supported".utf8))
        }
        b.append(STUNAttribute.lifetime, uint32: UInt32(max(0, (a.expiry - now.monotonic).rounded())))
        if let token = a.reservationToken { b.append(STUNAttribute.reservationToken, token.bigEndianBytes) }
        b.append(STUNAttribute.xorMappedAddress, xorAddress: a.client.remote)
        let bytes = sign(&b, key: a.key, sha256: a.sha256Integrity, fingerprint: a.wantsFingerprint)
        a.response = bytes
        allocations[id] = a
        counters.allocationsCreated += 1
        return [.reply(bytes, to: a.client)]
    }

    /// Binding a relay socket failed (the port is taken by another process): try other ports a few
    /// times, then answer 508.
    public mutating func relayFailed(_ id: AllocationID) -> [Action] {
        guard var a = allocations[id], case .opening(let attempt) = a.phase else { return [] }
        for address in a.relayed { resources.returnPort(address.port) }
        if let token = a.reservationToken { resources.cancel(token: token) }
        a.reservationToken = nil
        if attempt < 3, a.request.value(STUNAttribute.reservationToken) == nil,
            let ports = takePorts(count: a.relayed.count, for: a.request)
        {
            a.relayed = zip(a.relayed, ports.ports).map { TransportAddress(ip: $0.ip, port: $1) }
            a.reservationToken = ports.token
            a.phase = .opening(attempt: attempt + 1)
            allocations[id] = a
            return [.openRelay(id, a.relayed)]
        }
        a.relayed = []
        allocations[id] = a
        let reply = errorResponse(a.request, .insufficientCapacity, key: a.key, sha256: a.sha256Integrity)
        return end(id) + [.reply(reply, to: a.client)]
    }

    // MARK: Messages

    /// Handles one STUN message from a client. Bytes that are not STUN are dropped without an answer,
    /// so that the server never reflects garbage.
    public mutating func receive(_ bytes: [UInt8], from client: ClientID) -> [Action] {
        guard let message = try? STUNMessage(parsing: bytes) else { return [] }
        switch (message.messageClass, message.method) {
        case (.request, .binding):
            return unauthenticated(bindingResponse(message, client), to: client)
        case (.request, .allocate), (.request, .refresh), (.request, .createPermission), (.request, .channelBind):
            return authenticatedRequest(message, from: client)
        case (.request, _):
            return unauthenticated(errorResponse(message, .badRequest, reason: "Unknown method"), to: client)
        case (.indication, .send):
            return sendIndication(message, from: client)
        default:
            return []  // other indications, and responses: nothing to answer
        }
    }

    private mutating func bindingResponse(_ request: STUNMessage, _ client: ClientID) -> [UInt8] {
        let unknown = request.unknownRequiredAttributes(known: Self.knownAttributes)
        if !unknown.isEmpty { return errorResponse(request, .unknownAttribute, unknown: unknown) }
        var b = STUNMessageBuilder(answering: request, class: .success)
        b.append(STUNAttribute.xorMappedAddress, xorAddress: client.remote)
        if request.hasFingerprint { b.appendFingerprint() }
        return b.bytes
    }

    private mutating func sendIndication(_ message: STUNMessage, from client: ClientID) -> [Action] {
        guard let id = byClient[client], let i = allocations.index(forKey: id), case .active = allocations.values[i].phase,
            let peer = message.xorAddress(STUNAttribute.xorPeerAddress), let data = message.value(STUNAttribute.data),
            permits(peer, at: i), policy.peerFilter.permitsPort(of: peer), spend(data.count, at: i, toPeer: true)
        else {
            counters.dropped += 1
            return []
        }
        return [.sendToPeer(id, peer, Array(data))]
    }

    // MARK: Authentication (RFC 8489 §9.2, long-term credentials with REST usernames)

    struct Credential {
        var username: String
        var identity: String
        /// The REST username's expiry, Unix seconds.
        var expiry: Int64
        var key: [UInt8]
        var sha256: Bool
    }

    private mutating func authenticatedRequest(_ message: STUNMessage, from client: ClientID) -> [Action] {
        if message.method == .allocate, !rates.take(.allocate, from: client.remote.ip, limit: policy.allocateRatePerSource, now: now.monotonic) {
            return unauthenticated(errorResponse(message, .allocationQuotaReached, reason: "Allocate rate limit"), to: client)
        }
        let credential: Credential
        switch authenticate(message, client: client) {
        case .failure(let reply): return unauthenticated(reply, to: client)
        case .success(let c): credential = c
        }
        let unknown = message.unknownRequiredAttributes(known: Self.knownAttributes)
        if !unknown.isEmpty {
            return [.reply(errorResponse(message, .unknownAttribute, key: credential.key, sha256: credential.sha256, unknown: unknown), to: client)]
        }
        if message.method != .allocate, let id = byClient[client], let a = allocations[id], a.username != credential.username {
            return [.reply(errorResponse(message, .wrongCredentials, key: credential.key, sha256: credential.sha256), to: client)]
        }
        switch message.method {
        case .allocate: return allocate(message, client, credential)
        case .refresh: return refresh(message, client, credential)
        case .createPermission: return createPermission(message, client, credential)
        default: return channelBind(message, client, credential)
        }
    }

    /// An answer sent before the client proved who it is: sent while its source is within
    /// `unauthenticatedAnswersPerSource` a second (across shards), dropped past it.
    private mutating func unauthenticated(_ reply: [UInt8], to client: ClientID) -> [Action] {
        guard rates.take(.unauthenticatedAnswer, from: client.remote.ip, limit: policy.unauthenticatedAnswersPerSource, now: now.monotonic) else {
            counters.dropped += 1
            return []
        }
        return [.reply(reply, to: client)]
    }

    enum AuthResult {
        case success(Credential)
        case failure([UInt8])
    }

    private mutating func authenticate(_ m: STUNMessage, client: ClientID) -> AuthResult {
        guard m.hasIntegrity else { return .failure(challenge(m, .unauthorized, client)) }
        guard let username = m.string(STUNAttribute.username), let realm = m.string(STUNAttribute.realm),
            let nonce = m.string(STUNAttribute.nonce)
        else { return .failure(errorResponse(m, .badRequest, reason: "USERNAME, REALM and NONCE are required")) }
        switch nonces.check(nonce, for: client.remote.ip, now: now.monotonic) {
        case .invalid, .stale: return .failure(challenge(m, .staleNonce, client))
        case .valid: break
        }
        guard realm == policy.realm else { return .failure(challenge(m, .unauthorized, client)) }
        // RFC 8489 §9.2.4: the algorithm lists must be both absent or both present and unaltered.
        var algorithm = PasswordAlgorithm.md5
        switch (m.value(STUNAttribute.passwordAlgorithms), m.value(STUNAttribute.passwordAlgorithm)) {
        case (nil, nil): break
        case (let list?, let chosen?):
            guard Array(list) == Self.passwordAlgorithmsValue, chosen.count >= 4,
                let a = PasswordAlgorithm(rawValue: UInt16(bigEndianBytes: chosen.prefix(2)))
            else { return .failure(errorResponse(m, .badRequest, reason: "PASSWORD-ALGORITHM mismatch")) }
            algorithm = a
        default:
            return .failure(errorResponse(m, .badRequest, reason: "PASSWORD-ALGORITHM mismatch"))
        }
        guard let rest = TURNCredentials.parse(username: username) else { return .failure(challenge(m, .unauthorized, client)) }
        if m.method == .allocate, rest.expiry < now.unix { return .failure(challenge(m, .unauthorized, client, reason: "Credential expired")) }
        for secret in policy.secrets {
            let password = TURNCredentials.password(secret: Array(secret.utf8), username: username)
            let key = TURNCredentials.longTermKey(username: username, realm: realm, password: password, algorithm: algorithm)
            if m.verifyIntegrity(key: key) {
                return .success(Credential(
                    username: username, identity: String(rest.identity), expiry: rest.expiry, key: key, sha256: m.integritySHA256Offset != nil))
            }
        }
        return .failure(challenge(m, .unauthorized, client))
    }

    /// A 401 or 438 that carries what the client needs to try again, and nothing more.
    private mutating func challenge(_ request: STUNMessage, _ code: STUNErrorCode, _ client: ClientID, reason: String? = nil) -> [UInt8] {
        counters.errorsByCode[code.rawValue, default: 0] += 1
        var b = STUNMessageBuilder(answering: request, class: .error)
        // No reason phrase unless it says more than the code: an unauthenticated answer stays small.
        b.appendError(code, reason: reason ?? "")
        b.append(STUNAttribute.realm, string: policy.realm)
        b.append(STUNAttribute.nonce, string: nonces.make(for: client.remote.ip, now: now.monotonic))
        b.append(STUNAttribute.passwordAlgorithms, Self.passwordAlgorithmsValue)
        if request.hasFingerprint { b.appendFingerprint() }
        return b.bytes
    }

    static let passwordAlgorithmsValue: [UInt8] = [0, 2, 0, 0, 0, 1, 0, 0]

    // MARK: Allocate (RFC 8656 §7.2)

    private mutating func allocate(_ m: STUNMessage, _ client: ClientID, _ c: Credential) -> [Action] {
        func fail(_ code: STUNErrorCode, _ reason: String? = nil) -> [Action] {
            [.reply(errorResponse(m, code, reason: reason, key: c.key, sha256: c.sha256), to: client)]
        }
        if let id = byClient[client], let a = allocations[id] {
            guard a.request.transactionID == m.transactionID else { return fail(.allocationMismatch) }
            if case .active = a.phase { return [.reply(a.response, to: client)] }
            return []  // still opening: the answer is on its way
        }
        guard let transport = m.value(STUNAttribute.requestedTransport), transport.count == 4 else {
            return fail(.badRequest, "REQUESTED-TRANSPORT is required")
        }
        guard transport.first == 17 else { return fail(.unsupportedTransport) }
        let evenPort = m.value(STUNAttribute.evenPort)
        let token = m.value(STUNAttribute.reservationToken)
        let family = m.value(STUNAttribute.requestedAddressFamily)
        let additional = m.value(STUNAttribute.additionalAddressFamily)
        if token != nil, evenPort != nil || family != nil || additional != nil {
            return fail(.badRequest, "RESERVATION-TOKEN excludes EVEN-PORT and address families")
        }
        if family != nil, additional != nil { return fail(.badRequest, "two address family attributes") }
        if let evenPort, evenPort.isEmpty { return fail(.badRequest, "EVEN-PORT is empty") }
        var wantV6 = false
        var wantBoth = false
        if let family {
            guard family.count == 4, family.first == 0x01 || family.first == 0x02 else { return fail(.addressFamilyNotSupported) }
            wantV6 = family.first == 0x02
        }
        if let additional {
            guard additional.count == 4, additional.first == 0x02 else { return fail(.addressFamilyNotSupported) }
            wantBoth = true
        }
        let primary = wantV6 ? policy.relayIPv6 : policy.relayIPv4
        guard let primary else { return fail(.addressFamilyNotSupported) }
        var ips = [primary]
        var missingFamily = false
        if wantBoth {
            if let v6 = policy.relayIPv6 { ips.append(v6) } else { missingFamily = true }
        }
        if wantBoth, evenPort != nil { return fail(.badRequest, "EVEN-PORT with a dual allocation") }
        guard resources.acquire(identity: c.identity) else { return fail(.allocationQuotaReached) }

        var ports: [UInt16]
        var reservation: UInt64?
        if let token {
            guard token.count == 8, let port = resources.redeem(token: UInt64(bigEndianBytes: token), now: now.monotonic) else {
                resources.release(identity: c.identity)
                return fail(.insufficientCapacity, "Unknown or expired RESERVATION-TOKEN")
            }
            ports = [port]
        } else {
            guard let taken = takePorts(count: ips.count, for: m) else {
                resources.release(identity: c.identity)
                return fail(.insufficientCapacity)
            }
            ports = taken.ports
            reservation = taken.token
        }
        let id = nextID
        nextID += 1
        let requested = m.uint32(STUNAttribute.lifetime).map(Double.init) ?? policy.defaultLifetime
        let credentialEnd = now.monotonic + (Double(c.expiry) - Double(now.unix)) + policy.credentialGrace
        let lifetime = min(max(requested, policy.defaultLifetime), policy.maxLifetime, credentialEnd - now.monotonic)
        var a = Allocation(
            id: id, client: client, username: c.username, identity: c.identity, key: c.key, sha256Integrity: c.sha256,
            phase: .opening(attempt: 0), relayed: zip(ips, ports).map { TransportAddress(ip: $0, port: $1) },
            expiry: now.monotonic + lifetime, credentialEnd: credentialEnd, request: m, wantsFingerprint: m.hasFingerprint)
        a.reservationToken = reservation
        a.budgetToPeers = policy.bandwidthLimit
        a.budgetToClient = policy.bandwidthLimit
        a.missingFamily = missingFamily
        allocations[id] = a
        byClient[client] = id
        return [.openRelay(id, a.relayed)]
    }

    /// Ports for an Allocate: the first even, and its successor reserved, when EVEN-PORT asks (R bit).
    private func takePorts(count: Int, for request: STUNMessage) -> (ports: [UInt16], token: UInt64?)? {
        let evenPort = request.value(STUNAttribute.evenPort)
        let even = evenPort != nil
        let reserve = evenPort.map { ($0.first ?? 0) & 0x80 != 0 } ?? false
        var ports: [UInt16] = []
        var token: UInt64?
        for i in 0..<count {
            guard let taken = resources.takePort(even: even && i == 0, reservePair: reserve && i == 0, now: now.monotonic,
                reservationLifetime: policy.reservationLifetime)
            else {
                for p in ports { resources.returnPort(p) }
                if let token { resources.cancel(token: token) }
                return nil
            }
            ports.append(taken.port)
            if let t = taken.token { token = t }
        }
        return (ports, token)
    }

    // MARK: Refresh (RFC 8656 §7.3)

    private mutating func refresh(_ m: STUNMessage, _ client: ClientID, _ c: Credential) -> [Action] {
        guard let id = byClient[client], let a = allocations[id], case .active = a.phase else {
            return [.reply(errorResponse(m, .allocationMismatch, key: c.key, sha256: c.sha256), to: client)]
        }
        if let family = m.value(STUNAttribute.requestedAddressFamily), family.count == 4,
            !a.relayed.contains(where: { $0.ip.isV6 == (family.first == 0x02) })
        {
            return [.reply(errorResponse(m, .peerAddressFamilyMismatch, key: c.key, sha256: c.sha256), to: client)]
        }
        let requested = m.uint32(STUNAttribute.lifetime).map(Double.init) ?? policy.defaultLifetime
        var actions: [Action] = []
        let granted: UInt32
        if requested == 0 {
            granted = 0
            actions = end(id)
        } else {
            // A refresh never takes an allocation past its credential's expiry and the grace: after it the
            // client allocates again with a credential of the day.
            let left = a.credentialEnd - now.monotonic
            guard left >= 1 else {
                return end(id) + [.reply(challenge(m, .unauthorized, client, reason: "Credential expired"), to: client)]
            }
            let lifetime = min(max(requested, policy.defaultLifetime), policy.maxLifetime, left.rounded(.down))
            allocations[id]!.expiry = now.monotonic + lifetime
            granted = UInt32(lifetime)
        }
        var b = STUNMessageBuilder(answering: m, class: .success)
        b.append(STUNAttribute.lifetime, uint32: granted)
        actions.append(.reply(sign(&b, key: c.key, sha256: c.sha256, fingerprint: m.hasFingerprint), to: client))
        return actions
    }

    // MARK: CreatePermission (RFC 8656 §9)

    private mutating func createPermission(_ m: STUNMessage, _ client: ClientID, _ c: Credential) -> [Action] {
        func fail(_ code: STUNErrorCode, _ reason: String? = nil) -> [Action] {
            [.reply(errorResponse(m, code, reason: reason, key: c.key, sha256: c.sha256), to: client)]
        }
        guard let id = byClient[client], let a = allocations[id], case .active = a.phase else { return fail(.allocationMismatch) }
        let values = m.all(STUNAttribute.xorPeerAddress)
        guard !values.isEmpty else { return fail(.badRequest, "XOR-PEER-ADDRESS is required") }
        var peers: [IPAddress] = []
        for value in values {
            guard let peer = m.xorAddress(value) else { return fail(.badRequest, "malformed XOR-PEER-ADDRESS") }
            guard a.relayed.contains(where: { $0.ip.isV6 == peer.ip.isV6 }) else { return fail(.peerAddressFamilyMismatch) }
            guard policy.peerFilter.permits(peer.ip) else { return fail(.forbidden, "Peer address not allowed") }
            peers.append(peer.ip)
        }
        let fresh = Set(peers).subtracting(a.permissions.keys).count
        guard a.permissions.count + fresh <= policy.maxPermissionsPerAllocation else { return fail(.insufficientCapacity, "Too many permissions") }
        for ip in peers { allocations[id]!.permissions[ip] = now.monotonic + policy.permissionLifetime }
        var b = STUNMessageBuilder(answering: m, class: .success)
        return [.reply(sign(&b, key: c.key, sha256: c.sha256, fingerprint: m.hasFingerprint), to: client)]
    }

    // MARK: ChannelBind (RFC 8656 §11)

    private mutating func channelBind(_ m: STUNMessage, _ client: ClientID, _ c: Credential) -> [Action] {
        func fail(_ code: STUNErrorCode, _ reason: String? = nil) -> [Action] {
            [.reply(errorResponse(m, code, reason: reason, key: c.key, sha256: c.sha256), to: client)]
        }
        guard let id = byClient[client], let a = allocations[id], case .active = a.phase else { return fail(.allocationMismatch) }
        guard let raw = m.value(STUNAttribute.channelNumber), raw.count == 4 else { return fail(.badRequest, "CHANNEL-NUMBER is required") }
        let number = UInt16(bigEndianBytes: raw.prefix(2))
        guard TURNFraming.channelNumbers.contains(number) else { return fail(.badRequest, "channel number out of range") }
        guard let peer = m.xorAddress(STUNAttribute.xorPeerAddress) else { return fail(.badRequest, "XOR-PEER-ADDRESS is required") }
        guard a.relayed.contains(where: { $0.ip.isV6 == peer.ip.isV6 }) else { return fail(.peerAddressFamilyMismatch) }
        guard policy.peerFilter.permits(peer) else { return fail(.forbidden, "Peer address not allowed") }
        if let bound = a.channels[number], bound.peer != peer { return fail(.badRequest, "channel bound to another peer") }
        if let other = a.channelByPeer[peer], other != number { return fail(.badRequest, "peer bound to another channel") }
        if a.channels[number] == nil, a.channels.count >= policy.maxPermissionsPerAllocation { return fail(.insufficientCapacity, "Too many channels") }
        if a.permissions[peer.ip] == nil, a.permissions.count >= policy.maxPermissionsPerAllocation {
            return fail(.insufficientCapacity, "Too many permissions")
        }
        allocations[id]!.channels[number] = Channel(peer: peer, expiry: now.monotonic + policy.channelLifetime)
        allocations[id]!.channelByPeer[peer] = number
        allocations[id]!.permissions[peer.ip] = now.monotonic + policy.permissionLifetime
        var b = STUNMessageBuilder(answering: m, class: .success)
        return [.reply(sign(&b, key: c.key, sha256: c.sha256, fingerprint: m.hasFingerprint), to: client)]
    }

    // MARK: Helpers

    /// Frees what the allocation holds; its sockets close when it has any.
    private mutating func end(_ id: AllocationID) -> [Action] {
        guard let a = allocations.removeValue(forKey: id) else { return [] }
        if byClient[a.client] == id { byClient[a.client] = nil }
        for address in a.relayed { resources.returnPort(address.port) }
        // An unredeemed reservation dies with the allocation that made it.
        if let token = a.reservationToken { resources.cancel(token: token) }
        resources.release(identity: a.identity)
        return a.relayed.isEmpty ? [] : [.closeRelay(id)]
    }

    private func sign(_ b: inout STUNMessageBuilder, key: [UInt8], sha256: Bool, fingerprint: Bool) -> [UInt8] {
        if sha256 { b.appendIntegritySHA256(key: key) } else { b.appendIntegrity(key: key) }
        if fingerprint { b.appendFingerprint() }
        return b.bytes
    }

    /// An error response, counted by code for `/metrics`.
    private mutating func errorResponse(_ request: STUNMessage, _ code: STUNErrorCode, reason: String? = nil, key: [UInt8]? = nil,
        sha256: Bool = false, unknown: [UInt16] = []) -> [UInt8]
    {
        counters.errorsByCode[code.rawValue, default: 0] += 1
        var b = STUNMessageBuilder(answering: request, class: .error)
        b.appendError(code, reason: reason)
        if !unknown.isEmpty { b.appendUnknownAttributes(unknown) }
        if let key { return sign(&b, key: key, sha256: sha256, fingerprint: request.hasFingerprint) }
        if request.hasFingerprint { b.appendFingerprint() }
        return b.bytes
    }

    /// Comprehension-required attributes this server understands (or may safely ignore).
    static let knownAttributes: Set<UInt16> = [
        STUNAttribute.mappedAddress, STUNAttribute.username, STUNAttribute.errorCode, STUNAttribute.unknownAttributes,
        STUNAttribute.channelNumber, STUNAttribute.lifetime, STUNAttribute.bandwidth, STUNAttribute.xorPeerAddress,
        STUNAttribute.data, STUNAttribute.realm, STUNAttribute.nonce, STUNAttribute.xorRelayedAddress,
        STUNAttribute.requestedAddressFamily, STUNAttribute.evenPort, STUNAttribute.requestedTransport,
        STUNAttribute.dontFragment, STUNAttribute.passwordAlgorithm, STUNAttribute.xorMappedAddress,
        STUNAttribute.reservationToken, STUNAttribute.priority, STUNAttribute.useCandidate, STUNAttribute.padding,
    ]
}
