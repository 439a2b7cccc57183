import CDatagramIO
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
import TandemSTUN
import TandemTURN

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
    public var limits = AllocationResources.Limits()
    /// Threads, each with its own UDP listeners (SO_REUSEPORT), allocations and relay sockets.
    public var threads = System.coreCount
    public var streams = StreamLimits()

    public init() {}
}

/// Bounds on TCP and TLS connections, each a file descriptor of the whole process.
public struct StreamLimits: Sendable, Equatable {
    /// Most connections in all, and from one IP address; past them a new connection is closed at once.
    public var total = 4096
    public var perIP = 32
    /// A connection that has held no allocation for this long (its TLS handshake included) is closed.
    public var idleWithoutAllocation: Duration = .seconds(10)
    /// Bytes queued for a client that does not read (and the size of each connection's kernel buffers);
    /// past them its relayed data is dropped and it is not read until they drain, so that it cannot grow
    /// the server's memory.
    public var queuedBytes = 256 * 1024

    public init() {}
}

/// Counts the TCP and TLS connections open, in all and per IP address, across every loop.
final class StreamAdmission: Sendable {
    private let limits: StreamLimits
    private let state = Mutex<(total: Int, perIP: [IPAddress: Int])>((0, [:]))

    init(_ limits: StreamLimits) { self.limits = limits }

    /// Takes a place for a connection from `ip`; false when either limit is reached.
    func admit(_ ip: IPAddress) -> Bool {
        state.withLock { s in
            let mine = s.perIP[ip, default: 0]
            guard s.total < limits.total, mine < limits.perIP else { return false }
            s.total += 1
            s.perIP[ip] = mine + 1
            return true
        }
    }

    func release(_ ip: IPAddress) {
        state.withLock { s in
            s.total -= 1
            let left = s.perIP[ip, default: 1] - 1
            s.perIP[ip] = left > 0 ? left : nil
        }
    }
}

/// Why the TURN service could not start.
public struct TURNSetupError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// STUN and TURN over UDP, TCP and TLS, driving one ``TURNMachine`` per event loop.
public final class TURNService: Service, Sendable {
    public let configuration: TURNServiceConfiguration
    let logger: Logger
    let metrics: TURNMetrics
    let onListening: @Sendable (_ udpAndTCP: [TransportAddress], _ tls: [TransportAddress]) -> Void
    let admission: StreamAdmission

    /// `onListening` gets the addresses actually bound (ports filled in) once the service listens.
    public init(configuration: TURNServiceConfiguration, logger: Logger, metrics: TURNMetrics = TURNMetrics(),
        onListening: @escaping @Sendable (_ udpAndTCP: [TransportAddress], _ tls: [TransportAddress]) -> Void = { _, _ in })
    {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.onListening = onListening
        admission = StreamAdmission(configuration.streams)
    }

    public func run() async throws {
        let threads = max(1, configuration.threads)
        // TCP and TLS connections live on NIO's loops; loop i hands its frames to shard i.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let resources = AllocationResources(configuration.limits)
        let rates = SourceRates()
        var nonceKey = [UInt8](repeating: 0, count: 32)
        var rng = SystemRandomNumberGenerator()
        for i in nonceKey.indices { nonceKey[i] = rng.next() }
        let clock: @Sendable () -> TURNInstant = {
            TURNInstant(monotonic: Double(NIODeadline.now().uptimeNanoseconds) / 1e9, unix: Int64(time(nil)))
        }
        var shards: [TURNShard] = []
        var servers: [any Channel] = []
        func shutDown() async {
            for channel in servers { try? await channel.close() }
            for shard in shards { await shard.stop() }
            try? await group.shutdownGracefully()
        }
        do {
            for i in 0..<threads {
                let server = TURNMachine(policy: configuration.policy, resources: resources, nonceKey: nonceKey, now: clock(),
                    idBase: AllocationID(i) << 48, rates: rates)
                let shard = try TURNShard(
                    index: i, server: server, clock: clock, metrics: metrics, logger: logger,
                    streamIdleSeconds: Double(configuration.streams.idleWithoutAllocation.components.seconds))
                shard.start()
                shards.append(shard)
            }
            var loops: [ObjectIdentifier: TURNShard] = [:]
            for (loop, shard) in zip(group.makeIterator(), shards) { loops[ObjectIdentifier(loop)] = shard }
            var udp: [TransportAddress] = []
            for (i, address) in configuration.listen.enumerated() {
                let (port, tcp) = try await bindUDPAndTCP(address, endpoint: UInt32(i + 1), shards: shards, loops: loops, group: group)
                servers.append(tcp)
                udp.append(TransportAddress(ip: address.ip, port: port))
                logger.notice("turn listening on udp+tcp \(TransportAddress(ip: address.ip, port: port))")
            }
            var tls: [TransportAddress] = []
            if !configuration.tlsListen.isEmpty {
                guard let tlsConfiguration = configuration.tls else { throw TURNSetupError("TURNS needs a TLS certificate") }
                let context = try NIOSSLContext(configuration: tlsConfiguration)
                for address in configuration.tlsListen {
                    let channel = try await bindStream(address, loops: loops, group: group, tls: context)
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

    /// One UDP socket per shard on the same port (SO_REUSEPORT: the kernel keeps each client on one of
    /// them), and a TCP listener on that port. With port 0 the pair is retried until both are free.
    private func bindUDPAndTCP(_ address: TransportAddress, endpoint: UInt32, shards: [TURNShard],
        loops: [ObjectIdentifier: TURNShard], group: any EventLoopGroup) async throws -> (UInt16, any Channel)
    {
        var lastError: (any Error)?
        for _ in 0..<(address.port == 0 ? 8 : 1) {
            var port = address.port
            var sockets: [Int32] = []
            do {
                for _ in shards {
                    var bound: UInt16 = 0
                    let fd = tandem_udp_open(address.ip.isV6 ? 1 : 0, address.ip.high, address.ip.low, port, 1, 4 << 20, &bound)
                    guard fd >= 0 else { throw TURNSetupError("udp: \(String(cString: strerror(-fd)))") }
                    sockets.append(fd)
                    port = bound
                }
                let tcp = try await bindStream(TransportAddress(ip: address.ip, port: port), loops: loops, group: group, tls: nil)
                for (shard, fd) in zip(shards, sockets) { shard.adoptListener(fd, endpoint: endpoint) }
                return (port, tcp)
            } catch {
                lastError = error
                for fd in sockets { close(fd) }
            }
        }
        throw TURNSetupError("cannot listen for TURN on \(address): \(lastError.map { "\($0)" } ?? "unknown error")")
    }

    private func bindStream(_ address: TransportAddress, loops byLoop: [ObjectIdentifier: TURNShard], group: any EventLoopGroup,
        tls: NIOSSLContext?) async throws -> any Channel
    {
        let admission = self.admission
        let queued = configuration.streams.queuedBytes
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: queued / 4, high: queued))
            // The kernel's buffers too: autotuned, a connection that does not read could pin megabytes.
            .childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(queued))
            .childChannelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(queued))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let shard = byLoop[ObjectIdentifier(channel.eventLoop)] else { throw TURNSetupError("no shard for a loop") }
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
                    try pipeline.addHandler(ByteToMessageHandler(TURNStreamDecoder()))
                    try pipeline.addHandler(StreamClientHandler(shard: shard, admission: admission))
                }
            }
            .bind(to: address.socketAddress).get()
    }
}
