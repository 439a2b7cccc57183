import Logging
import NIOCore
import NIOPosix
import TandemSTUN

/// The allocations of one event loop and every socket they use: the loop's UDP listeners, the TCP and
/// TLS connections it accepted, and the relay sockets. Only that loop touches it, so a packet never
/// changes thread and nothing on the packet path takes a lock.
final class TURNShard: @unchecked Sendable {
    enum Endpoint {
        case datagram(any Channel)
        case stream(any Channel)
    }

    let index: Int
    let loop: any EventLoop
    var server: TURNServer
    let clock: @Sendable () -> TURNInstant
    let logger: Logger
    let metrics: TURNMetrics
    var endpoints: [UInt32: Endpoint] = [:]
    var relays: [AllocationID: [any Channel]] = [:]
    var nextStreamEndpoint: UInt32 = 1 << 20
    var dirty: [any Channel] = []
    var tickTask: RepeatedTask?
    var closing = false

    init(index: Int, loop: any EventLoop, server: TURNServer, clock: @escaping @Sendable () -> TURNInstant, metrics: TURNMetrics, logger: Logger) {
        self.index = index
        self.loop = loop
        self.server = server
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
    }

    func start() {
        loop.assertInEventLoop()
        tickTask = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in tick() }
    }

    // MARK: From clients

    /// A datagram or stream frame from a client.
    func clientBytes(_ buffer: inout ByteBuffer, from client: ClientID) {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if TURNFraming.isChannelData(firstByte: first) {
            guard let number = buffer.readInteger(as: UInt16.self), let length = buffer.readInteger(as: UInt16.self),
                Int(length) <= buffer.readableBytes
            else {
                server.counters.dropped += 1
                return
            }
            switch server.routeChannelData(number, length: Int(length), from: client) {
            case .peer(let id, let peer):
                guard let relay = relayChannel(id, for: peer) else { return }
                let payload = buffer.readSlice(length: Int(length))!
                relay.write(AddressedEnvelope(remoteAddress: peer.socketAddress, data: payload), promise: nil)
                markDirty(relay)
            case .drop:
                break
            }
            return
        }
        server.setTime(clock())
        perform(server.receive(Array(buffer.readableBytesView), from: client))
    }

    func registerStream(_ channel: any Channel) -> UInt32 {
        let id = nextStreamEndpoint
        nextStreamEndpoint &+= 1
        endpoints[id] = .stream(channel)
        return id
    }

    func streamClosed(_ client: ClientID) {
        endpoints[client.endpoint] = nil
        perform(server.clientClosed(client))
        flush()
    }

    // MARK: From peers

    func peerDatagram(_ envelope: AddressedEnvelope<ByteBuffer>, allocation id: AllocationID, allocator: ByteBufferAllocator) {
        guard let peer = TransportAddress(envelope.remoteAddress) else { return }
        let length = envelope.data.readableBytes
        switch server.routePeerData(to: id, from: peer, length: length) {
        case .channel(let number, let client):
            guard let endpoint = endpoints[client.endpoint] else { return }
            let isStream: Bool
            if case .stream = endpoint { isStream = true } else { isStream = false }
            let padding = isStream ? (4 - length % 4) % 4 : 0
            var out = allocator.buffer(capacity: 4 + length + padding)
            out.writeInteger(number)
            out.writeInteger(UInt16(length))
            out.writeImmutableBuffer(envelope.data)
            if padding > 0 { out.writeRepeatingByte(0, count: padding) }
            send(out, to: client, via: endpoint)
        case .dataIndication(let client):
            guard let endpoint = endpoints[client.endpoint] else { return }
            let bytes = TURNFraming.dataIndication(peer: peer, data: envelope.data.readableBytesView, transactionID: .random())
            send(allocator.buffer(bytes: bytes), to: client, via: endpoint)
        case .drop:
            break
        }
    }

    // MARK: Actions

    func perform(_ actions: [TURNServer.Action]) {
        for action in actions {
            switch action {
            case .reply(let bytes, let client):
                guard let endpoint = endpoints[client.endpoint] else { continue }
                send(ByteBuffer(bytes: bytes), to: client, via: endpoint)
            case .openRelay(let id, let addresses):
                openRelay(id, addresses)
            case .closeRelay(let id):
                for channel in relays.removeValue(forKey: id) ?? [] { channel.close(promise: nil) }
            case .sendToPeer(let id, let peer, let bytes):
                guard let relay = relayChannel(id, for: peer) else { continue }
                relay.write(AddressedEnvelope(remoteAddress: peer.socketAddress, data: ByteBuffer(bytes: bytes)), promise: nil)
                markDirty(relay)
            }
        }
    }

    private func openRelay(_ id: AllocationID, _ addresses: [TransportAddress]) {
        let binds = addresses.map { address in
            DatagramBootstrap(group: loop)
                .channelOption(.socketOption(.so_reuseaddr), value: 0)
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(RelayHandler(shard: self, allocation: id))
                    }
                }
                .bind(to: address.socketAddress)
        }
        EventLoopFuture.whenAllComplete(binds, on: loop).whenSuccess { [self] results in
            let channels = results.compactMap { try? $0.get() }
            guard channels.count == results.count, !closing else {
                for channel in channels { channel.close(promise: nil) }
                if !closing {
                    if case .failure(let error) = results.first(where: { if case .failure = $0 { true } else { false } }) {
                        logger.debug("relay bind failed", metadata: ["error": "\(error)"])
                    }
                    perform(server.relayFailed(id))
                    flush()
                }
                return
            }
            relays[id] = channels
            server.setTime(clock())
            perform(server.relayOpened(id))
            flush()
        }
    }

    private func relayChannel(_ id: AllocationID, for peer: TransportAddress) -> (any Channel)? {
        guard let channels = relays[id] else { return nil }
        if channels.count == 1 { return channels[0] }
        return channels.first { ($0.localAddress?.protocol == .inet6) == peer.ip.isV6 } ?? channels[0]
    }

    private func send(_ buffer: ByteBuffer, to client: ClientID, via endpoint: Endpoint) {
        switch endpoint {
        case .datagram(let channel):
            channel.write(AddressedEnvelope(remoteAddress: client.remote.socketAddress, data: buffer), promise: nil)
            markDirty(channel)
        case .stream(let channel):
            channel.write(buffer, promise: nil)
            markDirty(channel)
        }
    }

    @inline(__always)
    private func markDirty(_ channel: any Channel) {
        if !dirty.contains(where: { $0 === channel }) { dirty.append(channel) }
    }

    /// Writes are queued while a batch of reads is handled and flushed once after it (by the handlers'
    /// `channelReadComplete`), so that NIO can send them with one `sendmmsg`; work outside a read
    /// (ticks, relay binds, a closed stream) flushes itself.
    func flush() {
        guard !dirty.isEmpty else { return }
        for channel in dirty { channel.flush() }
        dirty.removeAll(keepingCapacity: true)
    }

    // MARK: Time and metrics

    func tick() {
        perform(server.tick(clock()))
        flush()
        publish()
    }

    /// Hands this second's counts to `/metrics` and starts counting afresh.
    func publish() {
        let c = server.counters
        server.counters = TURNCounters()
        metrics.add(c)
        metrics.setGauges(shard: index, allocations: server.allocationCount, permissions: server.permissionCount, channels: server.channelCount)
    }

    func close() -> EventLoopFuture<Void> {
        closing = true
        tickTask?.cancel()
        var futures: [EventLoopFuture<Void>] = []
        for channels in relays.values { for c in channels { futures.append(c.close().recover { _ in }) } }
        for endpoint in endpoints.values {
            switch endpoint {
            case .datagram(let c), .stream(let c): futures.append(c.close().recover { _ in })
            }
        }
        relays = [:]
        endpoints = [:]
        return EventLoopFuture.andAllComplete(futures, on: loop)
    }
}

/// Reads from one allocation's relay socket.
final class RelayHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let shard: TURNShard
    let allocation: AllocationID

    init(shard: TURNShard, allocation: AllocationID) {
        self.shard = shard
        self.allocation = allocation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        shard.peerDatagram(unwrapInboundIn(data), allocation: allocation, allocator: context.channel.allocator)
    }

    func channelReadComplete(context: ChannelHandlerContext) { shard.flush() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors surface here as ECONNREFUSED and the like; the socket stays usable.
    }
}

/// Reads a UDP listening socket.
final class DatagramListenerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let shard: TURNShard
    let endpoint: UInt32

    init(shard: TURNShard, endpoint: UInt32) {
        self.shard = shard
        self.endpoint = endpoint
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var envelope = unwrapInboundIn(data)
        guard let remote = TransportAddress(envelope.remoteAddress) else { return }
        shard.clientBytes(&envelope.data, from: ClientID(remote: remote, endpoint: endpoint))
    }

    func channelReadComplete(context: ChannelHandlerContext) { shard.flush() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

/// Splits a TCP or TLS byte stream into STUN and ChannelData messages (RFC 8656 §12.5).
struct TURNStreamDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        switch TURNFraming.nextFrame(buffer.readableBytesView) {
        case .complete(let length):
            context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: length)!))
            return .continue
        case .needMore:
            return .needMoreData
        case .invalid:
            throw TURNStreamError()
        }
    }
}

struct TURNStreamError: Error {}

/// One TCP or TLS client connection.
final class StreamClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let shard: TURNShard
    var client: ClientID?

    init(shard: TURNShard) { self.shard = shard }

    func channelActive(context: ChannelHandlerContext) {
        if let remote = TransportAddress(context.channel.remoteAddress) {
            client = ClientID(remote: remote, endpoint: shard.registerStream(context.channel))
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let client else { return }
        var frame = unwrapInboundIn(data)
        shard.clientBytes(&frame, from: client)
    }

    func channelReadComplete(context: ChannelHandlerContext) { shard.flush() }

    func channelInactive(context: ChannelHandlerContext) {
        if let client { shard.streamClosed(client) }
        client = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
