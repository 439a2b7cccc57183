import CDatagramIO
import Foundation
import NIOCore
import TandemProtocol
import TandemSTUN
import Testing

@testable import TandemServer
@testable import TandemTURN

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

    /// A client asks for a relayed address of each family (RFC 8656 dual allocation) and binds a channel
    /// to a peer of each:
    /// ChannelData leaves from the relayed address of the peer's family, and the answers come back on
    /// the right channels.
    @Test func aDualStackAllocationRelaysChannelDataToPeersOfBothFamilies() async throws {
        let config = TestServer.config { c in
            var turn = TURNSettings(secret: "turn-secret", publicHost: "127.0.0.1")
            turn.service.listen = [TransportAddress("127.0.0.1:0")!]
            turn.service.policy.relayIPv4 = IPAddress("127.0.0.1")
            turn.service.policy.relayIPv6 = IPAddress("::1")
            turn.service.policy.peerFilter = .loopbackAllowed
            turn.service.threads = 1
            c.turn = turn
        }
        try await TestServer.with(config) { server in
            let servers = try await TURNTests.iceServers(server)
            guard case .string(let username)? = servers[1]["username"], case .string(let password)? = servers[1]["credential"],
                case .array(let urls)? = servers[0]["urls"], case .string(let stun)? = urls.first
            else {
                Issue.record("no TURN entry")
                return
            }
            let port = Int(stun.split(separator: ":").last!)!
            let client = try await UDPProbe.open()
            let peer4 = try await UDPProbe.open()
            let peer6 = try await UDPProbe.open(host: "::1")
            defer { Task { await client.close(); await peer4.close(); await peer6.close() } }
            let key = TURNCredentials.longTermKey(username: username, realm: "tandem", password: password, algorithm: .md5)
            func request(_ method: STUNMethod, nonce: String?, _ build: (inout STUNMessageBuilder) -> Void) -> [UInt8] {
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
                try await client.send(bytes, to: port)
                return try STUNMessage(parsing: try await client.receive().1)
            }
            func allocate(_ b: inout STUNMessageBuilder) {
                b.append(STUNAttribute.requestedTransport, [17, 0, 0, 0])
                b.append(STUNAttribute.additionalAddressFamily, [2, 0, 0, 0])
            }
            let nonce = try #require(try await exchange(request(.allocate, nonce: nil, allocate)).string(STUNAttribute.nonce))
            let allocated = try await exchange(request(.allocate, nonce: nonce, allocate))
            #expect(allocated.messageClass == .success)
            let relayed = allocated.all(STUNAttribute.xorRelayedAddress).compactMap { allocated.xorAddress($0) }
            let relayed4 = try #require(relayed.first(where: { !$0.ip.isV6 }))
            let relayed6 = try #require(relayed.first(where: { $0.ip.isV6 }))

            let peers: [(UInt16, UDPProbe, TransportAddress, TransportAddress)] = [
                (0x4000, peer4, TransportAddress("127.0.0.1:\(peer4.port)")!, relayed4),
                (0x4001, peer6, TransportAddress("[::1]:\(peer6.port)")!, relayed6),
            ]
            for (number, _, address, _) in peers {
                let bound = try await exchange(request(.channelBind, nonce: nonce) { b in
                    b.append(STUNAttribute.channelNumber, [UInt8(number >> 8), UInt8(number & 0xFF), 0, 0])
                    b.append(STUNAttribute.xorPeerAddress, xorAddress: address)
                })
                #expect(bound.messageClass == .success, "channel \(number)")
            }
            for (number, probe, _, relayedAddress) in peers {
                let payload = Array("to \(number)".utf8)
                try await client.send([UInt8(number >> 8), UInt8(number & 0xFF), 0, UInt8(payload.count)] + payload, to: port)
                let (from, data) = try await probe.receive()
                #expect(data == payload)
                #expect(from.port == Int(relayedAddress.port))
                #expect((from.protocol == .inet6) == relayedAddress.ip.isV6)

                let answer = Array("from \(number)".utf8)
                try await probe.send(answer, to: Int(relayedAddress.port), host: relayedAddress.ip.isV6 ? "::1" : "127.0.0.1")
                let framed = try await client.receive().1
                #expect(framed == [UInt8(number >> 8), UInt8(number & 0xFF), 0, UInt8(answer.count)] + answer)
            }
        }
    }
}
