import Foundation
import NIOCore
import NIOPosix
import TandemProtocol
import TandemSTUN
import TandemTURN
import TandemTURNService
import Testing

@testable import TandemServer

/// A UDP socket on loopback that collects what it receives.
final class UDPProbe: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let stream: AsyncStream<(SocketAddress, [UInt8])>
    private let continuation: AsyncStream<(SocketAddress, [UInt8])>.Continuation
    private(set) var channel: (any Channel)!
    private var iterator: AsyncStream<(SocketAddress, [UInt8])>.AsyncIterator

    init() {
        (stream, continuation) = AsyncStream.makeStream()
        iterator = stream.makeAsyncIterator()
    }

    static func open(host: String = "127.0.0.1") async throws -> UDPProbe {
        let probe = UDPProbe()
        probe.channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(probe) }
            .bind(host: host, port: 0).get()
        return probe
    }

    var port: Int { channel.localAddress!.port! }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        continuation.yield((envelope.remoteAddress, Array(envelope.data.readableBytesView)))
    }

    func send(_ bytes: [UInt8], to port: Int, host: String = "127.0.0.1") async throws {
        let address = try SocketAddress(ipAddress: host, port: port)
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: ByteBuffer(bytes: bytes)))
    }

    func receive() async throws -> (SocketAddress, [UInt8]) {
        try await within(5, "a datagram") { [self] in
            var it = iterator
            // nil: the wait was cancelled (timed out) or the socket closed.
            guard let next = await it.next() else { throw TestTimeout(what: "a datagram (none came)") }
            return next
        }
    }

    func close() async { try? await channel.close() }
}

@Suite("TURN service through tandem serve")
struct TURNTests {
    static func turnConfig() -> ServerConfig {
        TestServer.config { c in
            var turn = TURNSettings(secret: "turn-secret", publicHost: "127.0.0.1")
            turn.service.listen = [TransportAddress("127.0.0.1:0")!]
            turn.service.policy.relayIPv4 = IPAddress("127.0.0.1")
            turn.service.policy.peerFilter = .loopbackAllowed
            turn.service.threads = 2
            turn.externalURLs = ["turns:turn.example.com:443?transport=tcp"]
            c.turn = turn
        }
    }

    /// Joins until the welcome lists our TURN server (it binds alongside the HTTP listener).
    static func iceServers(_ server: TestServer) async throws -> [JSON] {
        for _ in 0..<50 {
            let (client, welcome) = try await server.join("turn-\(UUID().uuidString.prefix(8))")
            client.close()
            if case .array(let servers)? = welcome["provider"]?["iceServers"], servers.count == 2 { return servers }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestTimeout(what: "TURN URLs in welcome")
    }

    @Test func welcomeCarriesSTUNAndTURNWithCredentialsThatAllocateAndRelay() async throws {
        try await TestServer.with(Self.turnConfig()) { server in
            let servers = try await Self.iceServers(server)
            guard case .array(let stunURLs)? = servers[0]["urls"], case .string(let stun) = stunURLs.first else {
                Issue.record("no STUN URLs")
                return
            }
            #expect(stun.hasPrefix("stun:127.0.0.1:"))
            #expect(servers[0]["username"] == nil)
            guard case .array(let urls)? = servers[1]["urls"], case .string(let username)? = servers[1]["username"],
                case .string(let password)? = servers[1]["credential"]
            else {
                Issue.record("no TURN entry")
                return
            }
            let texts = urls.compactMap(\.stringValue)
            let port = Int(stun.split(separator: ":").last!)!
            #expect(texts == [
                "turn:127.0.0.1:\(port)?transport=udp", "turn:127.0.0.1:\(port)?transport=tcp", "turns:turn.example.com:443?transport=tcp",
            ])
            let rest = try #require(TURNCredentials.parse(username: username))
            #expect(rest.expiry > Int64(Date().timeIntervalSince1970) + 86_000)
            #expect(password == TURNCredentials.password(secret: Array("turn-secret".utf8), username: username))

            // The minted credential allocates, and data goes both ways through the relay.
            let client = try await UDPProbe.open()
            let peer = try await UDPProbe.open()
            defer { Task { await client.close(); await peer.close() } }
            func request(_ method: STUNMethod, _ attributes: [(UInt16, [UInt8])], nonce: String?) -> [UInt8] {
                var b = STUNMessageBuilder(method: method, class: .request, transactionID: .random())
                for (t, v) in attributes { b.append(t, v) }
                if let nonce {
                    b.append(STUNAttribute.username, string: username)
                    b.append(STUNAttribute.realm, string: "tandem")
                    b.append(STUNAttribute.nonce, string: nonce)
                    b.appendIntegrity(key: TURNCredentials.longTermKey(username: username, realm: "tandem", password: password, algorithm: .md5))
                }
                return b.bytes
            }
            let udp: (UInt16, [UInt8]) = (STUNAttribute.requestedTransport, [17, 0, 0, 0])
            try await client.send(request(.allocate, [udp], nonce: nil), to: port)
            let challenge = try STUNMessage(parsing: try await client.receive().1)
            let nonce = try #require(challenge.string(STUNAttribute.nonce))
            try await client.send(request(.allocate, [udp], nonce: nonce), to: port)
            let allocated = try STUNMessage(parsing: try await client.receive().1)
            #expect(allocated.messageClass == .success)
            let relayed = try #require(allocated.xorAddress(STUNAttribute.xorRelayedAddress))

            var peerAttribute = STUNMessageBuilder(method: .send, class: .indication, transactionID: .random())
            peerAttribute.append(STUNAttribute.xorPeerAddress, xorAddress: TransportAddress("127.0.0.1:\(peer.port)")!)
            let xorPeer = Array(peerAttribute.bytes[24...])
            try await client.send(request(.createPermission, [(STUNAttribute.xorPeerAddress, xorPeer)], nonce: nonce), to: port)
            #expect(try STUNMessage(parsing: try await client.receive().1).messageClass == .success)

            var send = STUNMessageBuilder(method: .send, class: .indication, transactionID: .random())
            send.append(STUNAttribute.xorPeerAddress, xorAddress: TransportAddress("127.0.0.1:\(peer.port)")!)
            send.append(STUNAttribute.data, Array("hello peer".utf8))
            try await client.send(send.bytes, to: port)
            let (from, data) = try await peer.receive()
            #expect(data == Array("hello peer".utf8))
            #expect(from.port == Int(relayed.port))

            try await peer.send(Array("hello client".utf8), to: Int(relayed.port))
            let indication = try STUNMessage(parsing: try await client.receive().1)
            #expect(indication.method == .data && indication.messageClass == .indication)
            #expect(indication.value(STUNAttribute.data).map(Array.init) == Array("hello client".utf8))
        }
    }

    @Test func turnSettingsFromFlags() throws {
        let base = ["no-tls": "true", "secret": "config-test-secret", "store": "memory"]
        func load(_ extra: [String: String]) throws -> ServerConfig {
            try ConfigLoader(flags: base.merging(extra) { $1 }, environment: [:], configFile: nil).load().config
        }
        #expect(try load([:]).turn == nil)
        let c = try load([
            "turn-listen": "127.0.0.1:3478,[::1]:3478", "turn-secret": "turn-test-secret-16", "turn-relay-ports": "50000-50100",
            "turn-allow-loopback-peers": "true", "turn-deny-peers": "127.0.0.2", "turn-user-quota": "3", "turn-max-bps": "125000",
            "turn-relay-ip": "127.0.0.1,::1", "turn-external-ip": "203.0.113.1",
        ])
        let turn = try #require(c.turn)
        #expect(turn.publicHost == "127.0.0.1")
        #expect(turn.service.listen == [TransportAddress("127.0.0.1:3478")!, TransportAddress("[::1]:3478")!])
        #expect(turn.service.limits.ports == 50000...50100 && turn.service.limits.perIdentity == 3)
        #expect(turn.service.policy.relayIPv4 == IPAddress("127.0.0.1") && turn.service.policy.relayIPv6 == IPAddress("::1"))
        #expect(turn.service.policy.externalIPv4 == IPAddress("203.0.113.1"))
        #expect(turn.service.policy.peerFilter.permits(IPAddress("127.0.0.1")!))
        #expect(!turn.service.policy.peerFilter.permits(IPAddress("127.0.0.2")!))
        #expect(turn.service.policy.bandwidthLimit == 125_000)

        // External TURN only: credentials are minted, nothing is served.
        let external = try #require(try load(["turn-urls": "turn:coturn.example.com:3478", "turn-secret": "turn-test-secret-16"]).turn)
        #expect(!external.runsService)
        let minted = ICEServerMint(settings: external, staticServers: []).servers(for: "ann", nowUnix: 1000)
        #expect(minted == [ICEServer(urls: ["turn:coturn.example.com:3478"], username: "87400:ann",
            credential: TURNCredentials.password(secret: Array("turn-test-secret-16".utf8), username: "87400:ann"))])

        let refusals: [([String: String], String)] = [
            (["turn-listen": "0.0.0.0:3478", "turn-secret": "turn-test-secret-16"], "turn-public-host"),
            (["turn-listen": "0.0.0.0:3478", "turn-secret": "turn-test-secret-16", "turn-public-host": "turn.example.com"], "turn-relay-ip"),
            (["turn-listen": "127.0.0.1:3478"], "turn-secret"),
            (["turns-listen": "127.0.0.1:5349", "turn-secret": "turn-test-secret-16"], "turns-listen"),
            (["turn-realm": "r"], "turn-realm"),
            (["turn-listen": "127.0.0.1:3478", "turn-secret": "turn-test-secret-16", "turn-relay-ports": "60000-50000"], "turn-relay-ports"),
            (["turn-listen": "localhost:3478", "turn-secret": "turn-test-secret-16"], "turn-listen"),
            (["turn-urls": "http://x", "turn-secret": "turn-test-secret-16"], "turn-urls"),
        ]
        for (flags, key) in refusals {
            let error = #expect(throws: SetupError.self, "\(flags)") { try load(flags) }
            #expect(error?.message.contains(key) == true, "\(String(describing: error))")
        }
    }

    /// `--dev` with TURN on loopback only relays to loopback peers, so two tabs on one machine can call
    /// through it; anything else keeps loopback denied unless `turn-allow-loopback-peers` says otherwise.
    @Test(arguments: [
        (["dev": "true", "turn-listen": "127.0.0.1:3478"], true),
        (["dev": "true", "turn-listen": "[::1]:3478"], true),
        (["dev": "true", "turn-listen": "127.0.0.1:3478,0.0.0.0:3479", "turn-public-host": "127.0.0.1", "turn-relay-ip": "127.0.0.1"], false),
        (["dev": "true", "turn-listen": "0.0.0.0:3478", "turn-public-host": "127.0.0.1", "turn-relay-ip": "127.0.0.1"], false),
        (["dev": "true", "turn-listen": "127.0.0.1:3478", "turn-allow-loopback-peers": "false"], false),
        (["turn-listen": "127.0.0.1:3478", "turn-secret": "turn-test-secret-16"], false),
        (["turn-listen": "127.0.0.1:3478", "turn-secret": "turn-test-secret-16", "turn-allow-loopback-peers": "true"], true),
    ])
    func loopbackPeersByDefaultOnlyInDevOnLoopback(flags: [String: String], allowed: Bool) throws {
        let base = ["no-tls": "true", "secret": "config-test-secret", "store": "memory", "api-key": "admin-key-0123456789"]
        let (config, notes) = try ConfigLoader(flags: base.merging(flags) { $1 }, environment: [:], configFile: nil).load()
        let filter = try #require(config.turn).service.policy.peerFilter
        for peer in ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"] {
            #expect(filter.permits(IPAddress(peer)!) == allowed, "\(peer)")
        }
        // Private and reserved peers stay denied either way.
        #expect(!filter.permits(IPAddress("10.0.0.1")!) && !filter.permits(IPAddress("169.254.1.1")!))
        // Said at start exactly when it comes from the default.
        let said = notes.contains { $0.contains("TURN relays to loopback peers") }
        #expect(said == (allowed && flags["turn-allow-loopback-peers"] == nil), "\(notes)")
    }
}
