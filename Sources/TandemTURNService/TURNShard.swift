import CDatagramIO
import Logging
import NIOCore
import Synchronization
import TandemSTUN
import TandemTURN

#if canImport(Glibc)
import Glibc
#endif

/// The allocations of one thread and every socket they use: that thread's UDP listeners and the
/// relay sockets, read with `recvmmsg` and written with `sendmmsg` through one ``DatagramBatch``
/// per wake-up, and the TCP and TLS connections, whose frames NIO hands over as tasks. Only that
/// thread touches it, so a datagram never changes thread and nothing on its path takes a lock.
final class TURNShard: @unchecked Sendable {
    enum Endpoint {
        case datagram(Int32)
        case stream(any Channel)
    }

    enum Socket {
        case listener(endpoint: UInt32)
        case relay(AllocationID)
    }

    let index: Int
    let io: EpollThread
    var server: TURNMachine
    let clock: @Sendable () -> TURNInstant
    let logger: Logger
    let metrics: TURNMetrics
    var endpoints: [UInt32: Endpoint] = [:]
    var relays: [AllocationID: AllocationSockets] = [:]
    /// What each watched descriptor is, by descriptor number.
    var sockets: [Socket?] = []
    private let nextStreamEndpoint = Atomic<UInt32>(1 << 20)
    var batch = DatagramBatch()
    /// Frames for TCP and TLS clients gathered in this round, handed to each connection's loop once.
    var streamWrites: [UInt32: [ByteBuffer]] = [:]
    /// Each TCP or TLS client, and since when it has held no allocation (now, while it holds one).
    var streamClients: [UInt32: (client: ClientID, idleSince: Double)] = [:]
    let streamIdleSeconds: Double
    /// Frames dropped on NIO's threads for clients that stopped reading, counted at the next publish.
    let streamDrops = Atomic<Int>(0)
    /// Relay sockets closed this round: closed after the round's sends, so that a descriptor
    /// number is not reused while a datagram queued for it waits.
    var closing: [Int32] = []
    let allocator = ByteBufferAllocator()

    init(index: Int, server: TURNMachine, clock: @escaping @Sendable () -> TURNInstant, metrics: TURNMetrics, logger: Logger,
        streamIdleSeconds: Double = 10) throws(TURNSetupError)
    {
        self.index = index
        self.streamIdleSeconds = streamIdleSeconds
        self.io = try EpollThread()
        self.server = server
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
    }

    func start() {
        io.start(name: "tandem-turn-\(index)", .init(
            readable: { [unowned self] token in readable(Int32(truncatingIfNeeded: token)) },
            roundEnd: { [unowned self] in flush() },
            tick: { [unowned self] in tick() },
            stopped: { [unowned self] in closeAll() }))
    }

    /// Takes a bound UDP listening socket; its datagrams are ours from now on.
    func adoptListener(_ fd: Int32, endpoint: UInt32) {
        io.execute { [self] in
            endpoints[endpoint] = .datagram(fd)
            watch(fd, as: .listener(endpoint: endpoint))
        }
    }

    private func watch(_ fd: Int32, as socket: Socket) {
        let i = Int(fd)
        if i >= sockets.count { sockets.append(contentsOf: repeatElement(nil, count: i + 1 - sockets.count)) }
        sockets[i] = socket
        if !io.watch(fd, token: UInt64(fd)) { logger.error("cannot watch a TURN socket", metadata: ["fd": "\(fd)"]) }
    }

    // MARK: Datagrams

    private func readable(_ fd: Int32) {
        guard Int(fd) < sockets.count, let socket = sockets[Int(fd)] else { return }
        switch socket {
        case .listener(let endpoint): readClients(fd, endpoint: endpoint)
        case .relay(let id): readPeers(fd, allocation: id)
        }
    }

    /// Reads a listener until it is empty or has had four reads' worth, so that one busy socket
    /// cannot starve the others of this round.
    private func readClients(_ fd: Int32, endpoint: UInt32) {
        for _ in 0..<4 {
            if !batch.roomForRead { sendDatagrams() }
            let count = batch.read(fd, offset: 0)
            for i in 0..<count {
                let d = batch.received(i)
                if d.truncated {
                    server.counters.dropped += 1
                    continue
                }
                let client = ClientID(remote: d.from, endpoint: endpoint)
                clientDatagram(UnsafeRawBufferPointer(start: d.base, count: d.length), from: client)
            }
            // Each relay socket gets its own send call anyway; sending now keeps the bursts that reach
            // one peer down to a read's worth.
            sendDatagrams()
            if count < DatagramBatch.readCount { return }
        }
    }

    /// A ChannelData message goes to its peer from where it landed; anything else is STUN.
    private func clientDatagram(_ bytes: UnsafeRawBufferPointer, from client: ClientID) {
        guard let first = bytes.first else { return }
        if TURNFraming.isChannelData(firstByte: first) {
            guard let (relay, peer, payload) = routeChannelData(bytes, from: client) else { return }
            if !batch.queue(relay, payload, to: peer) { server.counters.dropped += 1 }
            return
        }
        server.setTime(clock())
        perform(server.receive(Array(bytes), from: client))
    }

    /// The relay socket, peer and payload of a ChannelData message; nil when it goes nowhere (a
    /// short or malformed message is counted as dropped, as the state machine counts the rest).
    private func routeChannelData(_ bytes: UnsafeRawBufferPointer, from client: ClientID)
        -> (Int32, TransportAddress, UnsafeRawBufferPointer)?
    {
        guard let (number, payload) = TURNFraming.channelData(bytes) else {
            server.counters.dropped += 1
            return nil
        }
        guard case .peer(let id, let peer) = server.routeChannelData(number, length: payload.count, from: client),
            let relay = relays[id]?.socket(for: peer.ip.isV6)
        else { return nil }
        return (relay, peer, payload)
    }

    private func readPeers(_ fd: Int32, allocation id: AllocationID) {
        for _ in 0..<4 {
            if !batch.roomForRead { sendDatagrams() }
            let count = batch.read(fd, offset: DatagramBatch.headroom)
            for i in 0..<count {
                let d = batch.received(i)
                if d.truncated {
                    server.counters.dropped += 1
                    continue
                }
                peerDatagram(d.base, d.length, from: d.from, allocation: id)
            }
            if count < DatagramBatch.readCount { return }
        }
    }

    /// A datagram from a peer goes to the client behind a 4-byte ChannelData header written into
    /// the headroom in front of it, or inside a Data indication when no channel is bound.
    private func peerDatagram(_ base: UnsafeMutableRawPointer, _ length: Int, from peer: TransportAddress, allocation id: AllocationID) {
        switch server.routePeerData(to: id, from: peer, length: length) {
        case .channel(let number, let client):
            let framed = base - 4
            framed.storeBytes(of: number.bigEndian, toByteOffset: 0, as: UInt16.self)
            framed.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 2, as: UInt16.self)
            send(UnsafeRawBufferPointer(start: framed, count: length + 4), to: client, padded: true)
        case .dataIndication(let client):
            let data = UnsafeRawBufferPointer(start: base, count: length)
            let bytes = TURNFraming.dataIndication(peer: peer, data: data, transactionID: .random())
            bytes.withUnsafeBytes { send($0, to: client, padded: false, inBatch: false) }
        case .drop:
            break
        }
    }

    /// Sends bytes to a client: queued as they are for a UDP client (copied when they are not in
    /// the batch's memory), added to the connection's writes for TCP and TLS, where a ChannelData
    /// message is padded to four bytes (RFC 8656 §12.5).
    private func send(_ bytes: UnsafeRawBufferPointer, to client: ClientID, padded: Bool, inBatch: Bool = true) {
        switch endpoints[client.endpoint] {
        case .datagram(let fd)?:
            let ok = inBatch ? batch.queue(fd, bytes, to: client.remote) : queueCopy(fd, bytes, to: client.remote)
            if !ok { server.counters.dropped += 1 }
        case .stream?:
            // One buffer per frame: over TLS each write is its own record, and some clients (coturn's
            // uclient) read one message per record.
            var buffer = allocator.buffer(capacity: bytes.count + 3)
            buffer.writeBytes(bytes)
            if padded, bytes.count % 4 != 0 { buffer.writeRepeatingByte(0, count: 4 - bytes.count % 4) }
            streamWrites[client.endpoint, default: []].append(buffer)
        case nil:
            break
        }
    }

    /// Copies bytes that are not in the batch's memory (replies, stream frames) into it, sending the
    /// round early when it is full.
    private func queueCopy(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, to address: TransportAddress) -> Bool {
        if batch.isFull { sendDatagrams() }
        return batch.queueCopy(fd, bytes, to: address)
    }

    // MARK: Streams (on NIO's threads: everything is posted to ours)

    func streamOpened(_ channel: any Channel, from remote: TransportAddress) -> ClientID {
        let id = nextStreamEndpoint.wrappingAdd(1, ordering: .relaxed).oldValue
        let client = ClientID(remote: remote, endpoint: id)
        io.execute { [self] in
            endpoints[id] = .stream(channel)
            streamClients[id] = (client, clock().monotonic)
        }
        return client
    }

    func streamFrames(_ frames: [ByteBuffer], from client: ClientID) {
        io.execute { [self] in
            for frame in frames { streamFrame(frame, from: client) }
        }
    }

    func streamClosed(_ client: ClientID) {
        io.execute { [self] in
            endpoints[client.endpoint] = nil
            streamWrites[client.endpoint] = nil
            streamClients[client.endpoint] = nil
            perform(server.clientClosed(client))
        }
    }

    private func streamFrame(_ frame: ByteBuffer, from client: ClientID) {
        frame.withUnsafeReadableBytes { raw in
            guard let first = raw.first else { return }
            if TURNFraming.isChannelData(firstByte: first) {
                guard let (relay, peer, payload) = routeChannelData(raw, from: client) else { return }
                if !queueCopy(relay, payload, to: peer) { server.counters.dropped += 1 }
                return
            }
            server.setTime(clock())
            perform(server.receive(Array(raw), from: client))
        }
    }

    // MARK: Actions

    func perform(_ actions: [TURNMachine.Action]) {
        for action in actions {
            switch action {
            case .reply(let bytes, let client):
                bytes.withUnsafeBytes { send($0, to: client, padded: false, inBatch: false) }
            case .openRelay(let id, let addresses):
                openRelay(id, addresses)
            case .closeRelay(let id):
                for fd in relays.removeValue(forKey: id)?.all ?? [] {
                    io.unwatch(fd)
                    sockets[Int(fd)] = nil
                    closing.append(fd)
                }
            case .sendToPeer(let id, let peer, let bytes):
                guard let relay = relays[id]?.socket(for: peer.ip.isV6) else { continue }
                let ok = bytes.withUnsafeBytes { queueCopy(relay, $0, to: peer) }
                if !ok { server.counters.dropped += 1 }
            }
        }
    }

    private func openRelay(_ id: AllocationID, _ addresses: [TransportAddress]) {
        var sockets = AllocationSockets()
        for address in addresses {
            var port: UInt16 = 0
            let fd = tandem_udp_open(address.ip.isV6 ? 1 : 0, address.ip.high, address.ip.low, address.port, 0, 0, &port)
            guard fd >= 0 else {
                logger.debug("relay bind failed", metadata: ["address": "\(address)", "errno": "\(-fd)"])
                for fd in sockets.all { close(fd) }
                perform(server.relayFailed(id))
                return
            }
            if address.ip.isV6 { sockets.v6 = fd } else { sockets.v4 = fd }
        }
        for fd in sockets.all { watch(fd, as: .relay(id)) }
        relays[id] = sockets
        server.setTime(clock())
        perform(server.relayOpened(id))
    }

    /// Sends the datagrams queued so far and frees the batch's slots.
    private func sendDatagrams() { server.counters.dropped += batch.flush() }

    /// Ends a round: its datagrams, the relay sockets it closed, its stream writes.
    func flush() {
        sendDatagrams()
        for fd in closing { close(fd) }
        closing.removeAll(keepingCapacity: true)
        guard !streamWrites.isEmpty else { return }
        for (endpoint, buffers) in streamWrites {
            guard case .stream(let channel)? = endpoints[endpoint] else { continue }
            channel.eventLoop.execute { [self] in
                // A client that does not read gets nothing more once its queue is full (NIO's high
                // water mark), and is not read meanwhile (StreamClientHandler).
                guard channel.isWritable else {
                    streamDrops.add(buffers.count, ordering: .relaxed)
                    return
                }
                for buffer in buffers { channel.write(buffer, promise: nil) }
                channel.flush()
            }
        }
        streamWrites.removeAll(keepingCapacity: true)
    }

    // MARK: Time and metrics

    func tick() {
        let now = clock()
        perform(server.tick(now))
        closeIdleStreams(now: now.monotonic)
        publish()
    }

    /// Closes the TCP and TLS connections that have held no allocation for `streamIdleSeconds`.
    private func closeIdleStreams(now: Double) {
        for (endpoint, entry) in streamClients {
            if server.hasAllocation(entry.client) {
                streamClients[endpoint]?.idleSince = now
            } else if now - entry.idleSince >= streamIdleSeconds, case .stream(let channel)? = endpoints[endpoint] {
                channel.close(promise: nil)
            }
        }
    }

    /// Hands this second's counts to `/metrics` and starts counting afresh.
    func publish() {
        var c = server.counters
        c.dropped += streamDrops.exchange(0, ordering: .relaxed)
        server.counters = TURNCounters()
        metrics.add(c)
        metrics.setGauges(shard: index, allocations: server.allocationCount, permissions: server.permissionCount, channels: server.channelCount)
    }

    /// Stops the thread; its sockets close with it.
    func stop() async { await io.stop() }

    private func closeAll() {
        flush()
        for (fd, socket) in sockets.enumerated() where socket != nil { close(Int32(fd)) }
        sockets = []
        relays = [:]
        for case .stream(let channel) in endpoints.values { channel.close(promise: nil) }
        endpoints = [:]
    }
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

/// One TCP or TLS client connection, on an NIO thread: its frames are handed to the shard once per read.
final class StreamClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let shard: TURNShard
    let admission: StreamAdmission
    var client: ClientID?
    /// The address this connection holds a place for in `admission`.
    var admitted: IPAddress?
    var frames: [ByteBuffer] = []

    init(shard: TURNShard, admission: StreamAdmission) {
        self.shard = shard
        self.admission = admission
    }

    func channelActive(context: ChannelHandlerContext) {
        guard let remote = TransportAddress(context.channel.remoteAddress), admission.admit(remote.ip) else {
            context.close(promise: nil)
            return
        }
        admitted = remote.ip
        client = shard.streamOpened(context.channel, from: remote)
        context.fireChannelActive()
    }

    /// Reads only while the client reads what it is sent: a client that sends requests and never reads
    /// the answers fills its own socket, not the server's memory.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        context.channel.setOption(.autoRead, value: context.channel.isWritable).whenFailure { _ in }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        frames.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { handOver() }

    private func handOver() {
        guard let client, !frames.isEmpty else { return }
        shard.streamFrames(frames, from: client)
        frames.removeAll()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let client {
            handOver()
            shard.streamClosed(client)
        }
        frames.removeAll()
        client = nil
        if let ip = admitted { admission.release(ip) }
        admitted = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// An allocation's relay sockets: one per address family it was given (RFC 6156).
struct AllocationSockets {
    var v4: Int32?
    var v6: Int32?

    var all: [Int32] { [v4, v6].compactMap { $0 } }

    /// The socket of the peer's family, or the only one there is.
    func socket(for v6Peer: Bool) -> Int32? { v6Peer ? (v6 ?? v4) : (v4 ?? v6) }
}
