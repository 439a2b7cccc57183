import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import TandemSTUN

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where and how the TURN service listens.
public struct TURNServiceConfiguration: Sendable {
    /// UDP and TCP on each of these (port 0 picks one free for both).
    public var listen: [TransportAddress] = []
    /// TLS over TCP (TURNS) on each of these.
    public var tlsListen: [TransportAddress] = []
    public var tls: TLSConfiguration?
    public var policy = TURNPolicy()
    public var limits = RelayResources.Limits()
    /// Event loops, each with its own listeners (SO_REUSEPORT) and allocations.
    public var threads = System.coreCount

    public init() {}
}

/// Why the TURN service could not start.
public struct TURNSetupError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// STUN and TURN over UDP, TCP and TLS, driving one ``TURNServer`` per event loop.
public final class TURNService: Service, Sendable {
    public let configuration: TURNServiceConfiguration
    let logger: Logger
    let metrics: TURNMetrics
    let onListening: @Sendable (_ udpAndTCP: [TransportAddress], _ tls: [TransportAddress]) -> Void

    /// `onListening` gets the addresses actually bound (ports filled in) once the service listens.
    public init(configuration: TURNServiceConfiguration, logger: Logger, metrics: TURNMetrics = TURNMetrics(),
        onListening: @escaping @Sendable (_ udpAndTCP: [TransportAddress], _ tls: [TransportAddress]) -> Void = { _, _ in })
    {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.onListening = onListening
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let resources = RelayResources(configuration.limits)
        var nonceKey = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in nonceKey.indices { nonceKey[i] = rng.next() }
        let clock: @Sendable () -> TURNInstant = {
            TURNInstant(monotonic: Double(NIODeadline.now().uptimeNanoseconds) / 1e9, unix: Int64(time(nil)))
        }
        var shards: [TURNShard] = []
        for (i, loop) in group.makeIterator().enumerated() {
            let server = TURNServer(policy: configuration.policy, resources: resources, nonceKey: nonceKey, now: clock(),
                idBase: AllocationID(i) << 48)
            let shard = TURNShard(index: i, loop: loop, server: server, clock: clock, metrics: metrics, logger: logger)
            shards.append(shard)
            try await loop.submit { shard.start() }.get()
        }
        var servers: [any Channel] = []
        func shutDown() async {
            for channel in servers { try? await channel.close() }
            for shard in shards { try? await shard.loop.flatSubmit { shard.close() }.get() }
            try? await group.shutdownGracefully()
        }
        do {
            var udp: [TransportAddress] = []
            for (i, address) in configuration.listen.enumerated() {
                let (port, tcp) = try await bindUDPAndTCP(address, endpoint: UInt32(i + 1), shards: shards, group: group)
                servers.append(tcp)
                udp.append(TransportAddress(ip: address.ip, port: port))
                logger.notice("turn listening on udp+tcp \(TransportAddress(ip: address.ip, port: port))")
            }
            var tls: [TransportAddress] = []
            if !configuration.tlsListen.isEmpty {
                guard let tlsConfiguration = configuration.tls else { throw TURNSetupError("TURNS needs a TLS certificate") }
                let context = try NIOSSLContext(configuration: tlsConfiguration)
                for address in configuration.tlsListen {
                    let channel = try await bindStream(address, shards: shards, group: group, tls: context)
                    servers.append(channel)
                    let port = channel.localAddress?.port.map(UInt16.init) ?? address.port
                    tls.append(TransportAddress(ip: address.ip, port: port))
                    logger.notice("turn listening on tls \(TransportAddress(ip: address.ip, port: port))")
                }
            }
            onListening(udp, tls)
        } catch {
            await shutDown()
            throw error
        }
        try? await gracefulShutdown()
        await shutDown()
    }

    private func shardMap(_ shards: [TURNShard]) -> [ObjectIdentifier: TURNShard] {
        Dictionary(uniqueKeysWithValues: shards.map { (ObjectIdentifier($0.loop), $0) })
    }

    /// One UDP socket per loop on the same port (SO_REUSEPORT: the kernel keeps each client on one of
    /// them), and a TCP listener on that port. With port 0 the pair is retried until both are free.
    private func bindUDPAndTCP(_ address: TransportAddress, endpoint: UInt32, shards: [TURNShard], group: any EventLoopGroup)
        async throws -> (UInt16, any Channel)
    {
        var lastError: (any Error)?
        for _ in 0..<(address.port == 0 ? 8 : 1) {
            var port = address.port
            var udpChannels: [any Channel] = []
            do {
                for shard in shards {
                    let channel = try await DatagramBootstrap(group: shard.loop)
                        .channelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
                        .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
                        .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
                        .channelOption(.datagramVectorReadMessageCount, value: 32)
                        .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 4096))
                        .channelInitializer { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(DatagramListenerHandler(shard: shard, endpoint: endpoint))
                            }
                        }
                        .bind(to: TransportAddress(ip: address.ip, port: port).socketAddress).get()
                    udpChannels.append(channel)
                    if port == 0 { port = UInt16(channel.localAddress?.port ?? 0) }
                    try await shard.loop.submit { shard.endpoints[endpoint] = .datagram(channel) }.get()
                }
                let tcp = try await bindStream(TransportAddress(ip: address.ip, port: port), shards: shards, group: group, tls: nil)
                return (port, tcp)
            } catch {
                lastError = error
                for channel in udpChannels { try? await channel.close() }
            }
        }
        throw TURNSetupError("cannot listen for TURN on \(address): \(lastError.map { "\($0)" } ?? "unknown error")")
    }

    private func bindStream(_ address: TransportAddress, shards: [TURNShard], group: any EventLoopGroup, tls: NIOSSLContext?)
        async throws -> any Channel
    {
        let byLoop = shardMap(shards)
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let shard = byLoop[ObjectIdentifier(channel.eventLoop)] else { throw TURNSetupError("no shard for a loop") }
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
                    try pipeline.addHandler(ByteToMessageHandler(TURNStreamDecoder()))
                    try pipeline.addHandler(StreamClientHandler(shard: shard))
                }
            }
            .bind(to: address.socketAddress).get()
    }
}
