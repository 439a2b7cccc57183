import Testing

@testable import TandemSTUN
@testable import TandemTURN

/// RFC 5769's test vectors, written as the hex the RFC prints.
enum RFC5769 {
    static let password = Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)

    static let request = hex("""
        000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74\
        002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020\
        000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf
        """)

    static let ipv4Response = hex("""
        0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
        002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
        80280004c07d4c96
        """)

    static let ipv6Response = hex("""
        010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
        002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf1\
        1784c97c8292c275bfe3ed4180280004c8fb0b4c
        """)

    static let longTermRequest = hex("""
        000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b90000\
        0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f726700\
        00080014f67024656dd64a3e02b8e0712e85c9a28ca89666
        """)

    static func hex(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8.filter { !$0.isWhitespace && $0 != UInt8(ascii: "\\") })
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
    }
}

extension UInt8 {
    fileprivate var isWhitespace: Bool { self == 0x20 || self == 0x0A || self == 0x0D || self == 0x09 }
}

@Suite("STUN codec: RFC 5769 vectors and framing")
struct STUNCodecTests {
    @Test func sampleRequestParsesWithFingerprintAndShortTermIntegrity() throws {
        let m = try STUNMessage(parsing: RFC5769.request)
        #expect(m.method == .binding && m.messageClass == .request)
        #expect(m.hasFingerprint)
        #expect(m.string(STUNAttribute.software) == "STUN test client")
        #expect(m.string(STUNAttribute.username) == "evtj:h6vY")
        #expect(m.uint32(STUNAttribute.priority) == 0x6E00_01FF)
        #expect(m.verifyIntegrity(key: RFC5769.password))
        #expect(!m.verifyIntegrity(key: Array("wrong".utf8)))
    }

    /// Thousands of distinct unknown comprehension-required attributes: the first 32, each once, in order.
    @Test func unknownAttributesAreListedOnceAndAtMost32() throws {
        var b = STUNMessageBuilder(method: .binding, class: .request, transactionID: .random(), capacity: 20_000)
        for type in UInt16(0x4000)..<0x4000 + 4000 { b.append(type, [UInt8]()) }
        b.append(0x4000, [UInt8]())  // a repeat
        b.append(0x8001, [UInt8]())  // comprehension-optional: never listed
        let unknown = try STUNMessage(parsing: b.bytes).unknownRequiredAttributes(known: [])
        #expect(unknown == Array(UInt16(0x4000)..<0x4000 + 32))
        let few = try STUNMessage(parsing: b.bytes).unknownRequiredAttributes(known: Set(UInt16(0x4000)..<0x4000 + 3998))
        #expect(few == [0x4000 + 3998, 0x4000 + 3999])
    }

    @Test func aChangedByteFailsTheFingerprint() {
        var bytes = RFC5769.request
        bytes[27] = 23
        #expect(throws: STUNParseError(.badFingerprint)) { try STUNMessage(parsing: bytes) }
    }

    @Test func ipv4ResponseDecodesItsXORMappedAddress() throws {
        let m = try STUNMessage(parsing: RFC5769.ipv4Response)
        #expect(m.messageClass == .success)
        #expect(m.xorAddress(STUNAttribute.xorMappedAddress) == TransportAddress("192.0.2.1:32853"))
        #expect(m.verifyIntegrity(key: RFC5769.password))
    }

    @Test func ipv6ResponseDecodesItsXORMappedAddress() throws {
        let m = try STUNMessage(parsing: RFC5769.ipv6Response)
        #expect(m.xorAddress(STUNAttribute.xorMappedAddress) == TransportAddress("[2001:db8:1234:5678:11:2233:4455:6677]:32853"))
        #expect(m.verifyIntegrity(key: RFC5769.password))
    }

    @Test func longTermRequestVerifiesAndIsRebuiltByteForByte() throws {
        let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
        let key = TURNCredentials.longTermKey(username: username, realm: "example.org", password: "TheMatrIX", algorithm: .md5)
        let m = try STUNMessage(parsing: RFC5769.longTermRequest)
        #expect(m.verifyIntegrity(key: key))
        #expect(m.string(STUNAttribute.nonce) == "f//499k954d6OL34oL9FSTvy64sA")

        var b = STUNMessageBuilder(method: .binding, class: .request, transactionID: m.transactionID)
        b.append(STUNAttribute.username, string: username)
        b.append(STUNAttribute.nonce, string: "f//499k954d6OL34oL9FSTvy64sA")
        b.append(STUNAttribute.realm, string: "example.org")
        b.appendIntegrity(key: key)
        #expect(b.bytes == RFC5769.longTermRequest)

        var tampered = RFC5769.longTermRequest
        tampered[32] = 10
        #expect(try !STUNMessage(parsing: tampered).verifyIntegrity(key: key))
    }

    @Test func builtMessagesCarryValidFingerprintAndSHA256Integrity() throws {
        let key = Array("k".utf8)
        var b = STUNMessageBuilder(method: .allocate, class: .request, transactionID: .random())
        b.append(STUNAttribute.requestedTransport, [17, 0, 0, 0])
        b.append(STUNAttribute.xorPeerAddress, xorAddress: TransportAddress("[::1]:3480")!)
        b.appendIntegritySHA256(key: key)
        b.appendFingerprint()
        let m = try STUNMessage(parsing: b.bytes)
        #expect(m.method == .allocate && m.messageClass == .request && m.hasFingerprint)
        #expect(m.integritySHA256Offset != nil && m.integrityOffset == nil)
        #expect(m.verifyIntegrity(key: key))
        #expect(!m.verifyIntegrity(key: Array("other".utf8)))
        #expect(m.xorAddress(STUNAttribute.xorPeerAddress) == TransportAddress("[::1]:3480"))
    }

    @Test(arguments: [
        ([UInt8](repeating: 0, count: 12), STUNParseError.Code.tooShort),
        (RFC5769.hex("00010000 2112a443 000000000000000000000000"), .notSTUN),
        (RFC5769.hex("c0010000 2112a442 000000000000000000000000"), .notSTUN),
        (RFC5769.hex("00010004 2112a442 000000000000000000000000"), .badLength),
        (RFC5769.hex("00010006 2112a442 000000000000000000000000 00060002 6162"), .badLength),
        (RFC5769.hex("00010004 2112a442 000000000000000000000000 00060008"), .truncatedAttribute),
        (RFC5769.hex("00010008 2112a442 000000000000000000000000 00060008 61626364"), .truncatedAttribute),
    ])
    func malformedBytesAreRefused(bytes: [UInt8], code: STUNParseError.Code) {
        #expect(throws: STUNParseError(code)) { try STUNMessage(parsing: bytes) }
    }

    @Test func anAttributeAfterFingerprintIsRefused() {
        var b = STUNMessageBuilder(method: .binding, class: .request, transactionID: .random())
        b.appendFingerprint()
        b.append(STUNAttribute.software, string: "late")
        #expect(throws: STUNParseError(.badFingerprint)) { try STUNMessage(parsing: b.bytes) }
    }

    @Test func methodsAndClassesRoundTrip() throws {
        for method in [STUNMethod.binding, .allocate, .refresh, .send, .data, .createPermission, .channelBind, STUNMethod(rawValue: 0xABC)] {
            for cls in [STUNClass.request, .indication, .success, .error] {
                let m = try STUNMessage(parsing: STUNMessageBuilder(method: method, class: cls, transactionID: .random()).bytes)
                #expect(m.method == method && m.messageClass == cls)
            }
        }
    }

    @Test func streamFramingFindsSTUNAndPaddedChannelData() {
        #expect(TURNFraming.nextFrame([0x40, 0x00]) == .needMore)
        #expect(TURNFraming.nextFrame([0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5]) == .needMore)
        #expect(TURNFraming.nextFrame([0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 9]) == .complete(12))
        #expect(TURNFraming.nextFrame(RFC5769.request + [1, 2]) == .complete(RFC5769.request.count))
        #expect(TURNFraming.nextFrame(Array(RFC5769.request.prefix(30))) == .needMore)
        #expect(TURNFraming.nextFrame([0x80, 0x01, 0x00, 0x04]) == .invalid)
        #expect(TURNFraming.nextFrame([0x00, 0x01, 0x00, 0x05]) == .invalid)
    }

    /// A ChannelData message's header says how much of it is payload; shorter messages are refused and
    /// padding is left out.
    @Test(arguments: [
        ([0x40, 0x01, 0x00], nil),
        ([0x40, 0x01, 0x00, 0x03, 7, 8], nil),
        ([0x40, 0x01, 0x00, 0x00], [UInt8]()),
        ([0x7F, 0xFE, 0x00, 0x03, 7, 8, 9, 0], [7, 8, 9]),
    ] as [([UInt8], [UInt8]?)])
    func channelDataHeaderAndPayload(bytes: [UInt8], payload: [UInt8]?) {
        let parsed = bytes.withUnsafeBytes { raw in TURNFraming.channelData(raw).map { ($0.number, Array($0.payload)) } }
        #expect(parsed?.1 == payload)
        if payload != nil { #expect(parsed?.0 == UInt16(bytes[0]) << 8 | UInt16(bytes[1])) }
    }

    @Test func restCredentialsMatchTheSchemeCoturnUses() {
        // The expected password was computed independently with Python's hmac module.
        let (username, password) = TURNCredentials.mint(secret: "north", identity: "alice", expiry: 1_700_000_000)
        #expect(username == "1700000000:alice")
        #expect(password == "Cd/49soE35ICqcJF/bCTn8Z4OyE=")
        #expect(TURNCredentials.parse(username: username)?.identity == "alice")
        #expect(TURNCredentials.parse(username: "alice") == nil)
    }

    @Test func addressesPrefixesAndThePeerFilter() {
        #expect(IPAddress("192.0.2.1")?.description == "192.0.2.1")
        #expect(IPAddress("2001:db8::1")?.description == "2001:db8::1")
        #expect(IPAddress("::ffff:10.1.2.3")?.unmappedV4 == IPAddress("10.1.2.3"))
        #expect(IPAddress("nope") == nil)
        #expect(IPPrefix("10.0.0.0/8")!.contains(IPAddress("10.200.1.1")!))
        #expect(!IPPrefix("10.0.0.0/8")!.contains(IPAddress("11.0.0.1")!))
        #expect(IPPrefix("fe80::/10")!.contains(IPAddress("fe80::1234")!))
        #expect(IPPrefix("2001:db8::/127")!.contains(IPAddress("2001:db8::1")!))
        #expect(!IPPrefix("2001:db8::/127")!.contains(IPAddress("2001:db8::2")!))
        let filter = PeerFilter()
        for denied in ["127.0.0.1", "10.1.1.1", "172.16.5.5", "192.168.1.1", "169.254.1.1", "224.0.0.1", "0.0.0.0", "::1", "::", "fe80::1", "fd00::1", "ff02::1", "::ffff:127.0.0.1"] {
            #expect(!filter.permits(IPAddress(denied)!), "\(denied)")
        }
        for allowed in ["8.8.8.8", "203.0.113.9", "2001:db8::1", "::ffff:8.8.8.8"] {
            #expect(filter.permits(IPAddress(allowed)!), "\(allowed)")
        }
        #expect(PeerFilter.loopbackAllowed.permits(IPAddress("127.0.0.1")!))
        #expect(!PeerFilter.loopbackAllowed.permits(IPAddress("10.0.0.1")!))
        let strict = PeerFilter(allow: [IPPrefix("10.0.0.0/8")!], deny: [IPPrefix("10.9.0.0/16")!, IPPrefix("8.8.8.8")!])
        #expect(strict.permits(IPAddress("10.1.1.1")!))
        #expect(!strict.permits(IPAddress("10.9.1.1")!))
        #expect(!strict.permits(IPAddress("8.8.8.8")!))
    }

    /// IPv6 addresses that carry an IPv4 one are judged by it, and the other unsafe IPv6 ranges are denied.
    @Test(arguments: [
        ("64:ff9b::10.0.0.1", false), ("64:ff9b::127.0.0.1", false), ("64:ff9b::8.8.8.8", true),  // NAT64
        ("64:ff9b:1::8.8.8.8", false),  // local-use NAT64: the network's own
        ("2002:c0a8:0101::1", false), ("2002:7f00:0001::1", false), ("2002:0808:0808::1", true),  // 6to4
        // Teredo: server 65.54.227.120 (public); client 192.168.1.1 stored inverted (3f57:fefe), then a public one.
        ("2001:0:4136:e378:8000:63bf:3f57:fefe", false), ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", true),
        ("2001:0:0a00:0001:8000:63bf:f7f7:f7f7", false),  // a private Teredo server
        ("::10.1.2.3", false), ("::127.0.0.1", false), ("::8.8.8.8", true),  // IPv4-compatible
        ("fec0::1", false), ("feff::1", false),  // site-local
        ("2001:db8::1", true), ("2606:4700::1111", true),
    ])
    func embeddedIPv4AndReservedIPv6(address: String, permitted: Bool) {
        #expect(PeerFilter().permits(IPAddress(address)!) == permitted)
    }

    /// The server's own addresses: another allocation's relay port, yes; its listener or any other port, no.
    @Test func theServersOwnAddressesOnlyOnRelayPorts() {
        let own = IPAddress("203.0.113.7")!
        let filter = PeerFilter(own: [own], relayPorts: 50000...50100)
        #expect(filter.permits(own), "a permission for it may be installed")
        #expect(filter.permits(TransportAddress(ip: own, port: 50050)))
        for port: UInt16 in [3478, 5349, 8443, 49999, 50101] { #expect(!filter.permits(TransportAddress(ip: own, port: port)), "\(port)") }
        #expect(!filter.permits(TransportAddress(ip: IPAddress("::ffff:203.0.113.7")!, port: 3478)), "mapped")
        #expect(filter.permits(TransportAddress(ip: IPAddress("203.0.113.8")!, port: 3478)))
        // An operator's allow names it: every port.
        let allowed = PeerFilter(allow: [IPPrefix("203.0.113.7")!], own: [own], relayPorts: 50000...50100)
        #expect(allowed.permits(TransportAddress(ip: own, port: 3478)))
    }
}
