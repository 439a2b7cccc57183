import CDatagramIO
import Foundation
import NIOCore
import NIOPosix
import TandemProtocol
import TandemSTUN
import Testing

@testable import TandemServer
@testable import TandemTURN
@testable import TandemTURNService

#if canImport(Glibc)
import Glibc
#endif

@Suite("TURN datagram path: batches and both address families")
struct TURNDatagramTests {
    /// A bound non-blocking UDP socket and the address it got.
    static func socket(_ ip: String) throws -> (fd: Int32, address: TransportAddress) {
        let address = try #require(IPAddress(ip))
        var port: UInt16 = 0
        let fd = tandem_udp_open(address.isV6 ? 1 : 0, address.high, address.low, 0, 0, 0, &port)
        try #require(fd >= 0, "udp open \(ip): errno \(-fd)")
        return (fd, TransportAddress(ip: address, port: port))
    }

    @Test func aBatchSendsPerSocketInOrderAndReadsEachSendersAddress() throws {
        let (a4, at4) = try Self.socket("127.0.0.1")
        let (a6, at6) = try Self.socket("::1")
        let (s4, from4) = try Self.socket("127.0.0.1")
        let (s6, from6) = try Self.socket("::1")
        defer { for fd in [a4, a6, s4, s6] { close(fd) } }

        var batch = DatagramBatch(slots: 8)
        // Interleaved sockets, and one datagram that cannot go (an IPv6 address from an IPv4 socket):
        // it alone is lost, and every socket's datagrams leave in the order they were queued.
        let plan: [(Int32, String, TransportAddress)] = [
            (s4, "a1", at4), (s6, "b1", at6), (s4, "a2", at4), (s4, "lost", at6), (s6, "b2", at6), (s4, "a3", at4),
        ]
        for (fd, text, to) in plan {
            let queued = batch.queueCopy(fd, Array(text.utf8), to: to)
            #expect(queued)
        }
        let failed = batch.flush()
        #expect(failed == 1)

        func drain(_ fd: Int32) -> [(String, TransportAddress)] {
            var out: [(String, TransportAddress)] = []
            let n = batch.read(fd, offset: DatagramBatch.headroom)
            for i in 0..<n {
                let d = batch.received(i)
                #expect(!d.truncated)
                out.append((String(decoding: UnsafeRawBufferPointer(start: d.base, count: d.length), as: UTF8.self), d.from))
            }
            return out
        }
        let got4 = drain(a4)
        #expect(got4.map(\.0) == ["a1", "a2", "a3"])
        #expect(got4.allSatisfy { $0.1 == from4 })
        let got6 = drain(a6)
        #expect(got6.map(\.0) == ["b1", "b2"])
        #expect(got6.allSatisfy { $0.1 == from6 })
        #expect(drain(a4).isEmpty)
        _ = batch.flush()

        // A datagram larger than a slot is marked cut, never read past the slot.
        let big = [UInt8](repeating: 7, count: DatagramBatch.slotSize + 100)
        let queued = batch.queueCopy(s4, big.prefix(DatagramBatch.slotSize), to: at4)
        #expect(queued)
        _ = batch.flush()
        var error: Int32 = 0
        let sent = big.withUnsafeBytes { raw in
            var d = at4.datagram(base: UnsafeMutableRawPointer(mutating: raw.baseAddress!), length: raw.count)
            return tandem_send_batch(s4, &d, 1, &error)
        }
        #expect(sent == 1 && error == 0)
        let count = batch.read(a4, offset: 0)
        #expect(count == 2)
        let (whole, cut) = (batch.received(0), batch.received(1))
        #expect(!whole.truncated && whole.length == DatagramBatch.slotSize)
        #expect(cut.truncated)
    }

    static let dualStack = TestServer.config { c in
        var turn = TURNSettings(secret: "turn-secret", publicHost: "127.0.0.1")
        turn.service.listen = [TransportAddress("127.0.0.1:0")!]
        turn.service.policy.relayIPv4 = IPAddress("127.0.0.1")
        turn.service.policy.relayIPv6 = IPAddress("::1")
        turn.service.policy.peerFilter = .loopbackAllowed
        turn.service.threads = 1
        c.turn = turn
    }

    /// A UDP TURN client with the credentials a join hands out.
    struct Client {
        let probe: UDPProbe
        let port: Int
        let username: String
        let key: [UInt8]
        var nonce: String?

        static func join(_ server: TestServer) async throws -> Client {
            let servers = try await TURNTests.iceServers(server)
            guard case .string(let username)? = servers[1]["username"], case .string(let password)? = servers[1]["credential"],
                case .array(let urls)? = servers[0]["urls"], case .string(let stun)? = urls.first, let port = Int(stun.split(separator: ":").last!)
            else { throw TestTimeout(what: "a TURN entry in welcome") }
            let key = TURNCredentials.longTermKey(username: username, realm: "tandem", password: password, algorithm: .md5)
            return Client(probe: try await UDPProbe.open(), port: port, username: username, key: key)
        }

        func request(_ method: STUNMethod, _ build: (inout STUNMessageBuilder) -> Void) -> [UInt8] {
            var b = STUNMessageBuilder(method: method, class: .request, transactionID: .random())
            build(&b)
            if let nonce {
                b.append(STUNAttribute.username, string: username)
                b.append(STUNAttribute.realm, string: "tandem")
                b.append(STUNAttribute.nonce, string: nonce)
                b.appendIntegrity(key: key)
            }
            return b.bytes
        }

        func exchange(_ bytes: [UInt8]) async throws -> STUNMessage {
            try await probe.send(bytes, to: port)
            return try STUNMessage(parsing: try await probe.receive().1)
        }

        /// Allocates (after the 401 that brings the nonce); returns the relayed addresses.
        mutating func allocate(_ build: (inout STUNMessageBuilder) -> Void = { _ in }) async throws -> [TransportAddress] {
            func attributes(_ b: inout STUNMessageBuilder) {
                b.append(STUNAttribute.requestedTransport, [17, 0, 0, 0])
                build(&b)
            }
            nonce = nil
            let challenge = try await exchange(request(.allocate, attributes))
            let fresh: String = try #require(challenge.string(STUNAttribute.nonce))
            nonce = fresh
            let allocated = try await exchange(request(.allocate, attributes))
            #expect(allocated.messageClass == .success)
            return allocated.all(STUNAttribute.xorRelayedAddress).compactMap { allocated.xorAddress($0) }
        }

        func bind(_ number: UInt16, to peer: TransportAddress) async throws {
            let bound = try await exchange(request(.channelBind) { b in
                b.append(STUNAttribute.channelNumber, [UInt8(number >> 8), UInt8(number & 0xFF), 0, 0])
                b.append(STUNAttribute.xorPeerAddress, xorAddress: peer)
            })
            #expect(bound.messageClass == .success, "channel \(number)")
        }

        /// ChannelData there and back: the peer sees the payload from `relayed`, and its answer comes back framed.
        func roundTrip(_ number: UInt16, peer: UDPProbe, relayed: TransportAddress) async throws {
            let payload = Array("to \(number)".utf8)
            try await probe.send([UInt8(number >> 8), UInt8(number & 0xFF), 0, UInt8(payload.count)] + payload, to: port)
            let (from, data) = try await peer.receive()
            #expect(data == payload)
            #expect(from.port == Int(relayed.port))
            #expect((from.protocol == .inet6) == relayed.ip.isV6)

            let answer = Array("from \(number)".utf8)
            try await peer.send(answer, to: Int(relayed.port), host: relayed.ip.isV6 ? "::1" : "127.0.0.1")
            let framed = try await probe.receive().1
            #expect(framed == [UInt8(number >> 8), UInt8(number & 0xFF), 0, UInt8(answer.count)] + answer)
        }
    }

    /// A client asks for a relayed address of each family (RFC 8656 dual allocation) and binds a channel
    /// to a peer of each: ChannelData leaves from the relayed address of the peer's family, and the
    /// answers come back on the right channels.
    @Test func aDualStackAllocationRelaysChannelDataToPeersOfBothFamilies() async throws {
        try await TestServer.with(Self.dualStack) { server in
            var client = try await Client.join(server)
            let peer4 = try await UDPProbe.open()
            let peer6 = try await UDPProbe.open(host: "::1")
            defer { Task { [probe = client.probe] in await probe.close(); await peer4.close(); await peer6.close() } }
            let relayed = try await client.allocate { $0.append(STUNAttribute.additionalAddressFamily, [2, 0, 0, 0]) }
            let relayed4 = try #require(relayed.first(where: { !$0.ip.isV6 }))
            let relayed6 = try #require(relayed.first(where: { $0.ip.isV6 }))
            try await client.bind(0x4000, to: TransportAddress("127.0.0.1:\(peer4.port)")!)
            try await client.bind(0x4001, to: TransportAddress("[::1]:\(peer6.port)")!)
            try await client.roundTrip(0x4000, peer: peer4, relayed: relayed4)
            try await client.roundTrip(0x4001, peer: peer6, relayed: relayed6)
        }
    }

    /// Junk at the listener (from the client itself and from elsewhere), at the relayed address and
    /// over TCP is dropped or refused, and the allocation goes on relaying.
    @Test func junkAtEverySocketLeavesTheRelayWorking() async throws {
        try await TestServer.with(Self.dualStack) { server in
            var client = try await Client.join(server)
            let peer = try await UDPProbe.open()
            // Another address: a permission is per IP, and 127.0.0.1 (the peer's) has one.
            let stranger = try await UDPProbe.open(host: "127.0.0.2")
            defer { Task { [probe = client.probe] in await probe.close(); await peer.close(); await stranger.close() } }
            let relayed = try #require(try await client.allocate().first)
            try await client.bind(0x4000, to: TransportAddress("127.0.0.1:\(peer.port)")!)

            // The same junk every run: a fixed-seed linear congruential generator.
            var state: UInt64 = 0x5EED
            func next() -> UInt64 {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return state >> 33
            }
            var junk: [[UInt8]] = [
                [], [0x40], [0x40, 0x00], [0x40, 0x00, 0xFF, 0xFF], [0x40, 0x00, 0x00, 0x08, 1, 2],  // ChannelData cut short
                [0x7F, 0xFF, 0x00, 0x00], [0x41, 0x00, 0x00, 0x01, 9],  // unbound channels
                [UInt8](repeating: 0x40, count: DatagramBatch.slotSize + 500),  // larger than a slot
                [0x00, 0x01, 0x00, 0x00] + [UInt8](repeating: 0, count: 16),  // a Binding with a zero cookie
            ]
            for _ in 0..<200 { junk.append((0..<Int(next() % 300)).map { _ in UInt8(truncatingIfNeeded: next()) }) }
            for bytes in junk {
                try await client.probe.send(bytes, to: client.port)
                try await stranger.send(bytes, to: client.port)
                try await stranger.send(bytes, to: Int(relayed.port))
            }
            let tcp = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: client.port).get()
            // A frame that is neither STUN nor ChannelData closes the TCP connection.
            try await tcp.writeAndFlush(ByteBuffer(bytes: [0xC0] + [UInt8](repeating: 0, count: 40)))
            try await within(5, "the TCP connection closed") { try await tcp.closeFuture.get() }

            // None of it is answered (no junk carries STUN's magic cookie), and the allocation still relays.
            try await client.roundTrip(0x4000, peer: peer, relayed: relayed)
            // A second client is served as before.
            var second = try await Client.join(server)
            defer { Task { [probe = second.probe] in await probe.close() } }
            let relayed2 = try #require(try await second.allocate().first)
            try await second.bind(0x4001, to: TransportAddress("127.0.0.1:\(peer.port)")!)
            try await second.roundTrip(0x4001, peer: peer, relayed: relayed2)
        }
    }
}
