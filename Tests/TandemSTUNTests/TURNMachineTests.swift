import Testing

@testable import TandemSTUN
@testable import TandemTURN

/// A TURN client played by the test: it builds requests the way coturn's client and browsers do and
/// reads the server's answers.
struct Harness {
    static let relayIP = IPAddress("192.0.2.10")!
    static let secret = "s3cret"
    var server: TURNMachine
    var time = TURNInstant(monotonic: 1000, unix: 1_800_000_000)
    let resources: AllocationResources

    init(policy edit: (inout TURNPolicy) -> Void = { _ in }, limits: AllocationResources.Limits = .init(ports: 50000...50009)) {
        var policy = TURNPolicy()
        policy.secrets = [Self.secret]
        policy.relayIPv4 = Self.relayIP
        policy.peerFilter = .loopbackAllowed
        edit(&policy)
        resources = AllocationResources(limits)
        server = TURNMachine(policy: policy, resources: resources, nonceKey: Array("nonce-key".utf8), now: time)
    }

    mutating func advance(_ seconds: Double) -> [TURNMachine.Action] {
        time.monotonic += seconds
        time.unix += Int64(seconds)
        return server.tick(time)
    }
}

struct Client {
    var id: ClientID
    var username: String
    var password: String
    var realm = "tandem"
    var nonce = ""
    var algorithm: PasswordAlgorithm = .md5

    init(_ address: String = "127.0.0.1:40000", identity: String = "alice", expiry: Int64 = 1_800_003_600, secret: String = Harness.secret) {
        id = ClientID(remote: TransportAddress(address)!, endpoint: 1)
        (username, password) = TURNCredentials.mint(secret: secret, identity: identity, expiry: expiry)
    }

    var key: [UInt8] { TURNCredentials.longTermKey(username: username, realm: realm, password: password, algorithm: algorithm) }

    func request(_ method: STUNMethod, _ attributes: [(UInt16, [UInt8])] = [], signed: Bool = true, sha256: Bool = false,
        id transaction: TransactionID = .random()) -> [UInt8]
    {
        var b = STUNMessageBuilder(method: method, class: .request, transactionID: transaction)
        for (type, value) in attributes { b.append(type, value) }
        if signed {
            b.append(STUNAttribute.username, string: username)
            b.append(STUNAttribute.realm, string: realm)
            b.append(STUNAttribute.nonce, string: nonce)
            if sha256 {
                b.append(STUNAttribute.passwordAlgorithms, TURNMachine.passwordAlgorithmsValue)
                b.append(STUNAttribute.passwordAlgorithm, [0, 2, 0, 0])
                b.appendIntegritySHA256(key: key)
            } else {
                b.appendIntegrity(key: key)
            }
        }
        b.appendFingerprint()
        return b.bytes
    }

    static let udp: (UInt16, [UInt8]) = (STUNAttribute.requestedTransport, [17, 0, 0, 0])

    static func peer(_ text: String) -> (UInt16, [UInt8]) {
        var b = STUNMessageBuilder(method: .binding, class: .request, transactionID: TransactionID(high: 0, low: 0))
        b.append(STUNAttribute.xorPeerAddress, xorAddress: TransportAddress(text)!)
        return (STUNAttribute.xorPeerAddress, Array(b.bytes[24...]))
    }

    static func channel(_ number: UInt16) -> (UInt16, [UInt8]) { (STUNAttribute.channelNumber, [UInt8(number >> 8), UInt8(number & 0xFF), 0, 0]) }
    static func lifetime(_ seconds: UInt32) -> (UInt16, [UInt8]) {
        (STUNAttribute.lifetime, [UInt8(seconds >> 24), UInt8((seconds >> 16) & 0xFF), UInt8((seconds >> 8) & 0xFF), UInt8(seconds & 0xFF)])
    }

    /// Sends a request; on a transaction id of the peer's choosing, the peer's peer address differs.
    mutating func send(_ h: inout Harness, _ method: STUNMethod, _ attributes: [(UInt16, [UInt8])] = [], sha256: Bool = false,
        id transaction: TransactionID = .random()) -> [TURNMachine.Action]
    {
        if nonce.isEmpty { learnNonce(&h) }
        return h.server.receive(request(method, attributes, sha256: sha256, id: transaction), from: id)
    }

    mutating func learnNonce(_ h: inout Harness) {
        let actions = h.server.receive(request(.allocate, [Self.udp], signed: false), from: id)
        let m = reply(actions)!
        nonce = m.string(STUNAttribute.nonce)!
        realm = m.string(STUNAttribute.realm)!
    }

    /// Allocates and completes the relay socket opening; returns the allocation id and relayed address.
    mutating func allocate(_ h: inout Harness, _ extra: [(UInt16, [UInt8])] = []) -> (AllocationID, TransportAddress)? {
        let actions = send(&h, .allocate, [Self.udp] + extra)
        guard case .openRelay(let id, let addresses)? = actions.first else { return nil }
        let done = h.server.relayOpened(id)
        guard let m = reply(done), m.messageClass == .success else { return nil }
        return (id, addresses[0])
    }

    func reply(_ actions: [TURNMachine.Action]) -> STUNMessage? {
        for case .reply(let bytes, let to) in actions where to == id { return try? STUNMessage(parsing: bytes) }
        return nil
    }

    func errorCode(_ actions: [TURNMachine.Action]) -> Int? {
        guard let m = reply(actions), m.messageClass == .error, let v = m.value(STUNAttribute.errorCode), v.count >= 4 else { return nil }
        return Int(v[v.startIndex + 2] & 7) * 100 + Int(v[v.startIndex + 3])
    }
}

@Suite("TURN server state machine")
struct TURNServerTests {
    @Test func anUnauthenticatedAllocateIsChallengedBriefly() throws {
        var h = Harness()
        let c = Client()
        let actions = h.server.receive(c.request(.allocate, [Client.udp], signed: false), from: c.id)
        #expect(c.errorCode(actions) == 401)
        let m = try #require(c.reply(actions))
        #expect(m.string(STUNAttribute.realm) == "tandem")
        #expect(m.string(STUNAttribute.nonce)?.hasPrefix("obMatJos2") == true)
        #expect(m.value(STUNAttribute.passwordAlgorithms).map(Array.init) == [0, 2, 0, 0, 0, 1, 0, 0])
        #expect(!m.has(STUNAttribute.software) && !m.hasIntegrity)
        // Header, ERROR-CODE without a phrase, REALM, NONCE, PASSWORD-ALGORITHMS and the FINGERPRINT asked for.
        #expect(m.bytes.count == 20 + 8 + 12 + 44 + 12 + 8)
        #expect(h.server.allocationCount == 0)
    }

    /// Answers without authentication are counted per source IP and second, across every shard that
    /// shares the server's rates: past the limit a request goes unanswered.
    @Test func unauthenticatedAnswersAreLimitedPerSourceAcrossShards() {
        let rates = SourceRates()
        func shard() -> Harness {
            var h = Harness { $0.unauthenticatedAnswersPerSource = 10 }
            h.server = TURNMachine(policy: h.server.policy, resources: h.resources, nonceKey: Array("nonce-key".utf8), now: h.time, rates: rates)
            return h
        }
        var one = shard()
        var two = shard()
        let spoofed = Client("198.51.100.7:5000")
        let other = Client("198.51.100.8:5000")
        let requests: [(STUNMethod, Bool)] = [(.binding, false), (.allocate, false), (.refresh, false), (.createPermission, false), (.channelBind, false)]
        var answered = 0
        for i in 0..<40 {
            let (method, signed) = requests[i % requests.count]
            var h = i % 2 == 0 ? one : two
            answered += spoofed.reply(h.server.receive(spoofed.request(method, [Client.udp], signed: signed), from: spoofed.id)) == nil ? 0 : 1
            if i % 2 == 0 { one = h } else { two = h }
        }
        #expect(answered == 10)
        // Another source is answered; and the next second, this one again.
        #expect(other.reply(one.server.receive(other.request(.binding, signed: false), from: other.id)) != nil)
        _ = one.advance(1)
        #expect(spoofed.reply(one.server.receive(spoofed.request(.binding, signed: false), from: spoofed.id)) != nil)
    }

    @Test func allocateOpensARelayThenAnswersSignedWithTheRelayedAddress() throws {
        var h = Harness()
        var c = Client()
        let actions = c.send(&h, .allocate, [Client.udp, Client.lifetime(1200)])
        guard case .openRelay(let id, let addresses) = try #require(actions.first) else { Issue.record("no openRelay"); return }
        #expect(addresses.count == 1 && addresses[0].ip == Harness.relayIP && (50000...50009).contains(addresses[0].port))
        #expect(c.reply(actions) == nil)
        let m = try #require(c.reply(h.server.relayOpened(id)))
        #expect(m.messageClass == .success && m.verifyIntegrity(key: c.key) && m.hasFingerprint)
        #expect(m.xorAddress(STUNAttribute.xorRelayedAddress) == addresses[0])
        #expect(m.xorAddress(STUNAttribute.xorMappedAddress) == c.id.remote)
        #expect(m.uint32(STUNAttribute.lifetime) == 1200)
        #expect(h.server.counters.allocationsCreated == 1)
    }

    @Test func externalAddressIsAdvertisedInsteadOfTheBoundOne() throws {
        var h = Harness { $0.externalIPv4 = IPAddress("203.0.113.7") }
        var c = Client()
        guard case .openRelay(let id, let bound)? = c.send(&h, .allocate, [Client.udp]).first else { Issue.record("no openRelay"); return }
        let m = try #require(c.reply(h.server.relayOpened(id)))
        #expect(m.xorAddress(STUNAttribute.xorRelayedAddress) == TransportAddress(ip: IPAddress("203.0.113.7")!, port: bound[0].port))
    }

    @Test func aRetransmittedAllocateGetsTheSameAnswerAndANewOneIsAMismatch() throws {
        var h = Harness()
        var c = Client()
        let tid = TransactionID.random()
        guard case .openRelay(let id, _)? = c.send(&h, .allocate, [Client.udp], id: tid).first else { Issue.record("no openRelay"); return }
        #expect(c.send(&h, .allocate, [Client.udp], id: tid).isEmpty)  // still opening
        let first = h.server.relayOpened(id)
        let again = c.send(&h, .allocate, [Client.udp], id: tid)
        #expect(first == again)
        #expect(c.errorCode(c.send(&h, .allocate, [Client.udp])) == 437)
    }

    /// An allocation that ends before its sockets are bound: the sockets that come later are closed.
    @Test func socketsBoundForAnEndedAllocationAreClosed() throws {
        var h = Harness()
        var c = Client()
        guard case .openRelay(let id, _)? = c.send(&h, .allocate, [Client.udp]).first else { Issue.record("no openRelay"); return }
        #expect(h.server.clientClosed(c.id) == [.closeRelay(id)])
        #expect(h.server.allocationCount == 0 && h.resources.allocationCount == 0)
        #expect(h.server.relayOpened(id) == [.closeRelay(id)])
    }

    struct AllocateCase: Sendable, CustomTestStringConvertible {
        var attributes: [Attribute]
        var code: Int
        var testDescription: String { "\(code)" }
        struct Attribute: Sendable {
            var type: UInt16
            var value: [UInt8]
        }
        init(_ attributes: [(UInt16, [UInt8])], _ code: Int) {
            self.attributes = attributes.map { Attribute(type: $0.0, value: $0.1) }
            self.code = code
        }
    }

    static let allocateCases: [AllocateCase] = [
        AllocateCase([], 400),
        AllocateCase([(STUNAttribute.requestedTransport, [6, 0, 0, 0])], 442),
        AllocateCase([Client.udp, (STUNAttribute.requestedAddressFamily, [3, 0, 0, 0])], 440),
        AllocateCase([Client.udp, (STUNAttribute.requestedAddressFamily, [2, 0, 0, 0])], 440),
        AllocateCase([Client.udp, (STUNAttribute.evenPort, [0x80]), (STUNAttribute.reservationToken, [1, 2, 3, 4, 5, 6, 7, 8])], 400),
        AllocateCase([Client.udp, (STUNAttribute.reservationToken, [1, 2, 3, 4, 5, 6, 7, 8])], 508),
        AllocateCase([Client.udp, (0x7777, [1, 2, 3, 4])], 420),
    ]

    @Test(arguments: allocateCases)
    func allocateErrors(_ test: AllocateCase) {
        let code = test.code
        var h = Harness()
        var c = Client()
        let actions = c.send(&h, .allocate, test.attributes.map { ($0.type, $0.value) })
        #expect(c.errorCode(actions) == code)
        #expect(c.reply(actions)?.verifyIntegrity(key: c.key) == true)
        #expect(h.server.allocationCount == 0 && h.resources.allocationCount == 0)
        if code == 420 { #expect(c.reply(actions)?.value(STUNAttribute.unknownAttributes).map(Array.init) == [0x77, 0x77]) }
    }

    @Test func credentialsAreCheckedStrictly() {
        var h = Harness()
        var wrongSecret = Client(secret: "other")
        #expect(wrongSecret.errorCode(wrongSecret.send(&h, .allocate, [Client.udp])) == 401)
        var expired = Client(expiry: h.time.unix - 1)
        let refused = expired.send(&h, .allocate, [Client.udp])
        #expect(expired.errorCode(refused) == 401)
        #expect(expired.reply(refused)?.string(STUNAttribute.nonce) != nil)
        var wrongRealm = Client()
        wrongRealm.learnNonce(&h)
        wrongRealm.realm = "elsewhere"
        #expect(wrongRealm.errorCode(h.server.receive(wrongRealm.request(.allocate, [Client.udp]), from: wrongRealm.id)) == 401)
        var notREST = Client()
        notREST.learnNonce(&h)
        notREST.username = "alice"
        #expect(notREST.errorCode(h.server.receive(notREST.request(.allocate, [Client.udp]), from: notREST.id)) == 401)
        #expect(h.server.allocationCount == 0)
        #expect(h.server.counters.errorsByCode[401] == 8)  // four refusals and four nonce fetches
    }

    @Test func aRotatedSecretStillVerifies() {
        var h = Harness { $0.secrets = ["new", Harness.secret] }
        var c = Client()
        #expect(c.allocate(&h) != nil)
    }

    @Test func staleAndForeignNoncesGet438WithAFreshNonce() throws {
        var h = Harness()
        var c = Client()
        c.learnNonce(&h)
        var thief = Client("127.0.0.2:40000")
        thief.nonce = c.nonce
        #expect(thief.errorCode(h.server.receive(thief.request(.allocate, [Client.udp]), from: thief.id)) == 438)
        _ = h.advance(601)
        let stale = h.server.receive(c.request(.allocate, [Client.udp]), from: c.id)
        #expect(c.errorCode(stale) == 438)
        let fresh = try #require(c.reply(stale)?.string(STUNAttribute.nonce))
        #expect(fresh != c.nonce)
        c.nonce = fresh
        #expect(c.allocate(&h) != nil)
    }

    @Test func sha256IntegrityIsAnsweredInKind() throws {
        var h = Harness()
        var c = Client()
        c.learnNonce(&h)
        c.algorithm = .sha256
        guard case .openRelay(let id, _)? = h.server.receive(c.request(.allocate, [Client.udp], sha256: true), from: c.id).first else {
            Issue.record("no openRelay")
            return
        }
        let m = try #require(c.reply(h.server.relayOpened(id)))
        #expect(m.integritySHA256Offset != nil && m.verifyIntegrity(key: c.key))
        // Naming an algorithm without the list the server sent is a downgrade attempt.
        var b = STUNMessageBuilder(method: .refresh, class: .request, transactionID: .random())
        b.append(STUNAttribute.passwordAlgorithm, [0, 2, 0, 0])
        b.append(STUNAttribute.username, string: c.username)
        b.append(STUNAttribute.realm, string: c.realm)
        b.append(STUNAttribute.nonce, string: c.nonce)
        b.appendIntegritySHA256(key: c.key)
        #expect(c.errorCode(h.server.receive(b.bytes, from: c.id)) == 400)
    }

    @Test func quotasPerIdentityAndInAll() {
        var h = Harness(limits: .init(ports: 50000...50009, perIdentity: 2, total: 3))
        var a1 = Client("127.0.0.1:1")
        var a2 = Client("127.0.0.1:2")
        var a3 = Client("127.0.0.1:3")
        #expect(a1.allocate(&h) != nil && a2.allocate(&h) != nil)
        #expect(a3.errorCode(a3.send(&h, .allocate, [Client.udp])) == 486)
        var b1 = Client("127.0.0.1:4", identity: "bob")
        var b2 = Client("127.0.0.1:5", identity: "bob")
        #expect(b1.allocate(&h) != nil)
        #expect(b2.errorCode(b2.send(&h, .allocate, [Client.udp])) == 486)
        // Ending one frees its place.
        let ended = a1.send(&h, .refresh, [Client.lifetime(0)])
        #expect(ended.contains { if case .closeRelay = $0 { true } else { false } })
        #expect(a3.allocate(&h) != nil)
    }

    /// Refreshes never take an allocation past its credential's expiry and the grace (600 s).
    @Test func anAllocationEndsAtItsCredentialsExpiryAndTheGrace() {
        var h = Harness()
        var c = Client(expiry: h.time.unix + 100)
        guard let (_, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        func lifetime(_ actions: [TURNMachine.Action]) -> UInt32? { c.reply(actions)?.uint32(STUNAttribute.lifetime) }
        _ = h.advance(300)
        #expect(lifetime(c.send(&h, .refresh, [Client.lifetime(600)])) == 400)
        _ = h.advance(350)
        c.learnNonce(&h)  // nonces last 600 s
        #expect(lifetime(c.send(&h, .refresh, [Client.lifetime(600)])) == 50)
        _ = h.advance(49.5)
        let late = c.send(&h, .refresh, [Client.lifetime(600)])
        #expect(c.errorCode(late) == 401 && late.contains { if case .closeRelay = $0 { true } else { false } })
        #expect(h.server.allocationCount == 0)
        // An allocation left alone ends then too.
        var d = Client("127.0.0.1:40001", expiry: h.time.unix + 10)
        guard d.allocate(&h) != nil else { Issue.record("no second allocation"); return }
        _ = h.advance(611)
        #expect(h.server.allocationCount == 0)
    }

    @Test func allocateRateIsLimitedPerSourceAndResetsEachTick() {
        var h = Harness { $0.allocateRatePerSource = 3 }
        var c = Client()
        c.learnNonce(&h)  // 1
        #expect(c.errorCode(c.send(&h, .allocate, [(STUNAttribute.requestedTransport, [6, 0, 0, 0])])) == 442)  // 2
        #expect(c.errorCode(c.send(&h, .allocate, [(STUNAttribute.requestedTransport, [6, 0, 0, 0])])) == 442)  // 3
        #expect(c.errorCode(c.send(&h, .allocate, [Client.udp])) == 486)
        var other = Client("127.0.0.9:1")
        #expect(other.allocate(&h) != nil)
        _ = h.advance(1)
        #expect(c.allocate(&h) != nil)
    }

    /// The server's own address is a peer only on a relay port (another allocation's), never on its
    /// listener or another service: a channel to it is refused and a Send indication to it dropped.
    @Test func theServersOwnServicesAreNoPeers() {
        var h = Harness { $0.peerFilter = PeerFilter(own: [Harness.relayIP], relayPorts: 50000...50009) }
        var c = Client()
        guard let (id, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        #expect(c.errorCode(c.send(&h, .createPermission, [Client.peer("192.0.2.10:1")])) == nil, "a permission is per address")
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("192.0.2.10:3478")])) == 403)
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("192.0.2.10:50001")])) == nil)
        func send(to peer: String) -> [TURNMachine.Action] {
            let attribute = Client.peer(peer)
            var b = STUNMessageBuilder(method: .send, class: .indication, transactionID: .random())
            b.append(attribute.0, attribute.1)
            b.append(STUNAttribute.data, [7])
            return h.server.receive(b.bytes, from: c.id)
        }
        #expect(send(to: "192.0.2.10:3478").isEmpty)
        #expect(send(to: "192.0.2.10:50002") == [.sendToPeer(id, TransportAddress("192.0.2.10:50002")!, [7])])
    }

    @Test func permissionsGateDataBothWaysAndExpire() {
        var h = Harness()
        var c = Client()
        guard let (id, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        let peer = TransportAddress("127.0.0.1:3480")!
        #expect(h.server.routePeerData(to: id, from: peer, length: 10) == .drop)
        #expect(c.send(&h, .createPermission, [Client.peer("127.0.0.1:9")]).count == 1)
        #expect(h.server.routePeerData(to: id, from: peer, length: 10) == .dataIndication(c.id))
        #expect(h.server.routePeerData(to: id, from: TransportAddress("127.0.0.2:3480")!, length: 10) == .drop)
        let indication = Client.peer("127.0.0.1:3480")
        var b = STUNMessageBuilder(method: .send, class: .indication, transactionID: .random())
        b.append(indication.0, indication.1)
        b.append(STUNAttribute.data, [1, 2, 3])
        #expect(h.server.receive(b.bytes, from: c.id) == [.sendToPeer(id, peer, [1, 2, 3])])
        _ = h.advance(301)
        #expect(h.server.routePeerData(to: id, from: peer, length: 10) == .drop)
        #expect(h.server.receive(b.bytes, from: c.id).isEmpty)
        #expect(h.server.counters.packetsToClients == 1 && h.server.counters.packetsToPeers == 1 && h.server.counters.dropped == 4)
    }

    @Test(arguments: ["10.0.0.1:1", "192.168.1.1:1", "169.254.0.1:1", "224.0.0.1:1", "0.0.0.0:1"])
    func deniedPeersGet403(peer: String) {
        var h = Harness()
        var c = Client()
        guard c.allocate(&h) != nil else { Issue.record("no allocation"); return }
        #expect(c.errorCode(c.send(&h, .createPermission, [Client.peer(peer)])) == 403)
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer(peer)])) == 403)
        #expect(h.server.permissionCount == 0)
    }

    @Test func createPermissionNeedsAPeerOfTheRelayFamilyAndAnAllocation() {
        var h = Harness()
        var c = Client()
        #expect(c.errorCode(c.send(&h, .createPermission, [Client.peer("127.0.0.1:9")])) == 437)
        guard c.allocate(&h) != nil else { Issue.record("no allocation"); return }
        #expect(c.errorCode(c.send(&h, .createPermission, [])) == 400)
        #expect(c.errorCode(c.send(&h, .createPermission, [Client.peer("[::1]:9")])) == 443)
    }

    @Test func permissionsPerAllocationAreCapped() {
        var h = Harness { $0.maxPermissionsPerAllocation = 2 }
        var c = Client()
        guard c.allocate(&h) != nil else { Issue.record("no allocation"); return }
        #expect(c.reply(c.send(&h, .createPermission, [Client.peer("127.0.0.1:1"), Client.peer("127.0.0.2:1")]))?.messageClass == .success)
        #expect(c.reply(c.send(&h, .createPermission, [Client.peer("127.0.0.1:9")]))?.messageClass == .success)  // a refresh
        #expect(c.errorCode(c.send(&h, .createPermission, [Client.peer("127.0.0.3:1")])) == 508)
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("127.0.0.4:1")])) == 508)
        #expect(h.server.permissionCount == 2)
    }

    @Test func channelsBindOnePeerToOneNumberAndCarryData() {
        var h = Harness()
        var c = Client()
        guard let (id, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        let a = TransportAddress("127.0.0.1:5000")!
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x3FFF), Client.peer("127.0.0.1:5000")])) == 400)
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x7FFF), Client.peer("127.0.0.1:5000")])) == 400)
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x4000)])) == 400)
        #expect(c.reply(c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("127.0.0.1:5000")]))?.messageClass == .success)
        #expect(c.reply(c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("127.0.0.1:5000")]))?.messageClass == .success)
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("127.0.0.1:5001")])) == 400)
        #expect(c.errorCode(c.send(&h, .channelBind, [Client.channel(0x4001), Client.peer("127.0.0.1:5000")])) == 400)
        #expect(h.server.routeChannelData(0x4000, length: 100, from: c.id) == .peer(id, a))
        #expect(h.server.routeChannelData(0x4001, length: 100, from: c.id) == .drop)
        #expect(h.server.routePeerData(to: id, from: a, length: 100) == .channel(0x4000, c.id))
        // A permission refreshed by CreatePermission outlives the channel, which then falls back to Data indications.
        _ = h.advance(290)
        #expect(c.reply(c.send(&h, .createPermission, [Client.peer("127.0.0.1:1")]))?.messageClass == .success)
        _ = h.advance(290)
        #expect(c.reply(c.send(&h, .createPermission, [Client.peer("127.0.0.1:1")]))?.messageClass == .success)
        #expect(c.reply(c.send(&h, .refresh, [Client.lifetime(600)]))?.messageClass == .success)
        _ = h.advance(30)
        #expect(h.server.routeChannelData(0x4000, length: 100, from: c.id) == .drop)
        #expect(h.server.routePeerData(to: id, from: a, length: 100) == .dataIndication(c.id))
        #expect(h.server.channelCount == 0)
    }

    @Test func refreshExtendsDeletesAndChecksTheUser() throws {
        var h = Harness()
        var c = Client()
        #expect(c.errorCode(c.send(&h, .refresh, [Client.lifetime(600)])) == 437)
        guard let (id, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        let m = try #require(c.reply(c.send(&h, .refresh, [Client.lifetime(99999)])))
        #expect(m.uint32(STUNAttribute.lifetime) == 3600)
        var bob = Client(identity: "bob")  // same 5-tuple, other user
        #expect(bob.errorCode(bob.send(&h, .refresh, [Client.lifetime(600)])) == 441)
        #expect(h.advance(3599).isEmpty)
        #expect(h.advance(2) == [.closeRelay(id)])
        #expect(h.server.allocationCount == 0 && h.resources.allocationCount == 0)
    }

    @Test func evenPortReservesTheNextPortForAToken() throws {
        var h = Harness()
        var rtp = Client("127.0.0.1:1000")
        let actions = rtp.send(&h, .allocate, [Client.udp, (STUNAttribute.evenPort, [0x80, 0, 0, 0])])
        guard case .openRelay(let id, let addresses)? = actions.first else { Issue.record("no openRelay"); return }
        #expect(addresses[0].port % 2 == 0)
        let m = try #require(rtp.reply(h.server.relayOpened(id)))
        let token = try #require(m.value(STUNAttribute.reservationToken))
        var rtcp = Client("127.0.0.1:1001")
        guard case .openRelay(_, let second)? = rtcp.send(&h, .allocate, [Client.udp, (STUNAttribute.reservationToken, Array(token))]).first else {
            Issue.record("no openRelay for the token")
            return
        }
        #expect(second[0].port == addresses[0].port + 1)
        var late = Client("127.0.0.1:1002")
        #expect(late.errorCode(late.send(&h, .allocate, [Client.udp, (STUNAttribute.reservationToken, Array(token))])) == 508)
    }

    @Test func anUnusedReservationExpires() throws {
        var h = Harness(limits: .init(ports: 50000...50001))
        var rtp = Client("127.0.0.1:1000")
        guard case .openRelay(let id, _)? = rtp.send(&h, .allocate, [Client.udp, (STUNAttribute.evenPort, [0x80, 0, 0, 0])]).first else {
            Issue.record("no openRelay")
            return
        }
        let token = try #require(rtp.reply(h.server.relayOpened(id))?.value(STUNAttribute.reservationToken))
        var other = Client("127.0.0.1:2000")
        #expect(other.errorCode(other.send(&h, .allocate, [Client.udp])) == 508)  // both ports held
        _ = h.advance(31)
        var rtcp = Client("127.0.0.1:1001")
        #expect(rtcp.errorCode(rtcp.send(&h, .allocate, [Client.udp, (STUNAttribute.reservationToken, Array(token))])) == 508)
        #expect(other.allocate(&h) != nil)
    }

    @Test func aPortInUseIsRetriedThenRefusedWith508() {
        var h = Harness()
        var c = Client()
        guard case .openRelay(let id, let first)? = c.send(&h, .allocate, [Client.udp]).first else { Issue.record("no openRelay"); return }
        var tried = [first[0].port]
        for _ in 0..<3 {
            guard case .openRelay(_, let next)? = h.server.relayFailed(id).first else { Issue.record("no retry"); return }
            tried.append(next[0].port)
        }
        #expect(Set(tried).count == 4)
        #expect(c.errorCode(h.server.relayFailed(id)) == 508)
        #expect(h.server.allocationCount == 0 && h.resources.allocationCount == 0)
        var again = Client("127.0.0.1:40001")
        #expect(again.allocate(&h) != nil)
    }

    @Test func aClosedConnectionEndsItsAllocation() {
        var h = Harness()
        var c = Client()
        guard let (id, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        #expect(h.server.clientClosed(c.id) == [.closeRelay(id)])
        #expect(h.resources.allocationCount == 0)
    }

    @Test func bandwidthIsCappedPerSecondAndDirection() {
        var h = Harness { $0.bandwidthLimit = 1000 }
        var c = Client()
        guard let (id, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        _ = c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("127.0.0.1:5000")])
        let peer = TransportAddress("127.0.0.1:5000")!
        #expect(h.server.routeChannelData(0x4000, length: 600, from: c.id) == .peer(id, peer))
        #expect(h.server.routeChannelData(0x4000, length: 600, from: c.id) == .drop)
        #expect(h.server.routePeerData(to: id, from: peer, length: 900) == .channel(0x4000, c.id))
        _ = h.advance(1)
        #expect(h.server.routeChannelData(0x4000, length: 600, from: c.id) == .peer(id, peer))
    }

    @Test func bindingIsAnsweredWithoutCredentialsAndGarbageIsNot() throws {
        var h = Harness()
        let c = Client("[::1]:5555")
        var b = STUNMessageBuilder(method: .binding, class: .request, transactionID: .random())
        b.appendFingerprint()
        let m = try #require(c.reply(h.server.receive(b.bytes, from: c.id)))
        #expect(m.messageClass == .success && m.hasFingerprint)
        #expect(m.xorAddress(STUNAttribute.xorMappedAddress) == c.id.remote)
        #expect(h.server.receive([1, 2, 3], from: c.id).isEmpty)
        #expect(h.server.receive(Array(b.bytes.dropLast(2)), from: c.id).isEmpty)
        var unknown = STUNMessageBuilder(method: STUNMethod(rawValue: 0x0FF), class: .request, transactionID: .random())
        unknown.append(STUNAttribute.software, string: "x")
        #expect(c.errorCode(h.server.receive(unknown.bytes, from: c.id)) == 400)
        var response = STUNMessageBuilder(method: .allocate, class: .success, transactionID: .random())
        response.appendFingerprint()
        #expect(h.server.receive(response.bytes, from: c.id).isEmpty)
    }

    @Test func dualAllocationGetsBothFamiliesOrSaysWhichIsMissing() throws {
        var h = Harness { $0.relayIPv6 = IPAddress("2001:db8::10") }
        var c = Client()
        let additional = (STUNAttribute.additionalAddressFamily, [UInt8]([2, 0, 0, 0]))
        guard case .openRelay(let id, let addresses)? = c.send(&h, .allocate, [Client.udp, additional]).first else {
            Issue.record("no openRelay")
            return
        }
        #expect(addresses.map(\.ip.isV6) == [false, true])
        let m = try #require(c.reply(h.server.relayOpened(id)))
        #expect(m.all(STUNAttribute.xorRelayedAddress).count == 2)
        _ = c.send(&h, .createPermission, [Client.peer("[::1]:9"), Client.peer("127.0.0.1:9")])
        #expect(h.server.permissionCount == 2)

        var v4only = Harness()
        var d = Client()
        guard case .openRelay(let id4, let one)? = d.send(&v4only, .allocate, [Client.udp, additional]).first else {
            Issue.record("no openRelay")
            return
        }
        #expect(one.count == 1)
        let reply = try #require(d.reply(v4only.server.relayOpened(id4)))
        #expect(reply.has(STUNAttribute.addressErrorCode))
    }
}

/// A fixed-seed generator, so that a failure can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("TURN server against hostile input")
struct TURNHostileInputTests {
    @Test func mutatedRequestsAndChannelDataNeverTrapAndAreAnsweredSensibly() {
        var rng = SplitMix64(state: 0x7A2D)
        // Answers are what is looked at here, not their rate.
        var h = Harness { $0.unauthenticatedAnswersPerSource = 0 }
        var c = Client()
        guard let (id, _) = c.allocate(&h) else { Issue.record("no allocation"); return }
        _ = c.send(&h, .channelBind, [Client.channel(0x4000), Client.peer("127.0.0.1:5000")])
        let seeds: [[UInt8]] = [
            c.request(.allocate, [Client.udp, (STUNAttribute.evenPort, [0x80])]),
            c.request(.createPermission, [Client.peer("127.0.0.1:9")]),
            c.request(.channelBind, [Client.channel(0x4001), Client.peer("127.0.0.1:9")]),
            c.request(.refresh, [Client.lifetime(600)]),
            c.request(.allocate, [Client.udp, (STUNAttribute.reservationToken, [1, 2, 3, 4, 5, 6, 7, 8])], sha256: true),
            RFC5769.longTermRequest, RFC5769.request,
        ]
        var answered = 0
        for i in 0..<20_000 {
            var bytes = seeds[i % seeds.count]
            switch rng.next() % 4 {
            case 0:  // flip bytes
                for _ in 0..<(1 + rng.next() % 4) { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            case 1:  // truncate, keeping the header's length
                bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count))))
            case 2:  // random attribute lengths
                if bytes.count > 26 { bytes[22] = UInt8(truncatingIfNeeded: rng.next()); bytes[23] = UInt8(truncatingIfNeeded: rng.next()) }
            default:  // noise
                bytes = (0..<Int(rng.next() % 120)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            let actions = h.server.receive(bytes, from: c.id)
            for case .reply(let reply, _) in actions {
                answered += 1
                // Whatever goes back is itself a well-formed STUN message.
                #expect((try? STUNMessage(parsing: reply)) != nil)
            }
            let number = UInt16(truncatingIfNeeded: rng.next())
            _ = h.server.routeChannelData(number, length: Int(rng.next() % 70_000), from: c.id)
            _ = h.server.routePeerData(to: id &+ rng.next() % 2, from: TransportAddress(ip: IPAddress(v4: UInt32(truncatingIfNeeded: rng.next())), port: 1), length: 10)
        }
        #expect(answered > 300)  // most mutations break the fingerprint and are dropped silently
        #expect(h.server.allocationCount >= 1)
    }
}
