import CDatagramIO
import TandemSTUN
import TandemTURN

/// The memory of one round of datagram I/O: received datagrams are read into slots and forwarded
/// from where they landed, and the sends queued in the round go out together, grouped by socket,
/// in as few `sendmmsg` calls as there are sockets. Nothing is allocated per packet.
struct DatagramBatch: ~Copyable {
    static let slotSize = 4096
    /// Room in front of a datagram from a peer for the header that carries it to the client: 4
    /// bytes of ChannelData, or up to 48 of a Data indication.
    static let headroom = 48
    /// Datagrams read per `recvmmsg`.
    static let readCount = 32

    private let slots: Int
    private let memory: UnsafeMutableRawPointer
    private let received: UnsafeMutablePointer<tandem_datagram>
    private let sends: UnsafeMutablePointer<tandem_datagram>
    private let sendSockets: UnsafeMutablePointer<Int32>
    private var order: [Int] = []
    private let runBuffer: UnsafeMutablePointer<tandem_datagram>
    private var used = 0
    private var queued = 0

    init(slots: Int = 256) {
        self.slots = slots
        memory = .allocate(byteCount: slots * Self.slotSize, alignment: 16)
        received = .allocate(capacity: Self.readCount)
        sends = .allocate(capacity: slots)
        sendSockets = .allocate(capacity: slots)
        runBuffer = .allocate(capacity: slots)
        order.reserveCapacity(slots)
    }

    deinit {
        memory.deallocate()
        received.deallocate()
        sends.deallocate()
        sendSockets.deallocate()
        runBuffer.deallocate()
    }

    /// Whether a read, and the sends and copied replies its datagrams may queue (at most two each), fit
    /// before the next flush.
    var roomForRead: Bool { slots - used >= 3 * Self.readCount && slots - queued >= 3 * Self.readCount }

    /// Reads up to ``readCount`` datagrams from `fd` into fresh slots, `offset` bytes in. Returns how
    /// many were read (0 when none was waiting or the read failed); ``received(_:)`` gives each.
    mutating func read(_ fd: Int32, offset: Int) -> Int {
        let count = Swift.min(Self.readCount, slots - used)
        for i in 0..<count {
            received[i].base = memory + (used + i) * Self.slotSize + offset
            received[i].length = UInt32(Self.slotSize - offset)
        }
        let n = Int(tandem_recv_batch(fd, received, UInt32(count)))
        guard n > 0 else { return 0 }
        used += n
        return n
    }

    /// The `i`th datagram of the last read: where it is, its length, whether it was cut, its sender.
    func received(_ i: Int) -> (base: UnsafeMutableRawPointer, length: Int, truncated: Bool, from: TransportAddress) {
        let d = received[i]
        return (d.base, Int(d.length), d.truncated != 0, TransportAddress(d))
    }

    /// Queues `bytes` (memory of this batch) for `fd` to send to `address`.
    mutating func queue(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, to address: TransportAddress) -> Bool {
        guard queued < slots else { return false }
        // The kernel only reads it; the C type is not const.
        sends[queued] = address.datagram(base: UnsafeMutableRawPointer(mutating: bytes.baseAddress!), length: bytes.count)
        sendSockets[queued] = fd
        queued += 1
        return true
    }

    /// Copies `bytes` into a free slot and queues them; false when they do not fit this round.
    mutating func queueCopy<C: Collection<UInt8>>(_ fd: Int32, _ bytes: C, to address: TransportAddress) -> Bool {
        guard bytes.count <= Self.slotSize, used < slots else { return false }
        let base = memory + used * Self.slotSize
        used += 1
        let buffer = UnsafeMutableRawBufferPointer(start: base, count: bytes.count)
        buffer.copyBytes(from: bytes)
        return queue(fd, UnsafeRawBufferPointer(buffer), to: address)
    }

    var isFull: Bool { used == slots || queued == slots }

    /// Sends everything queued, in order per socket, and frees the slots. Returns how many sends failed.
    mutating func flush() -> Int {
        defer {
            queued = 0
            used = 0
        }
        guard queued > 0 else { return 0 }
        order.removeAll(keepingCapacity: true)
        order.append(contentsOf: 0..<queued)
        let sockets = sendSockets
        // One socket's datagrams go out in one call, in the order they were queued.
        if queued > 1 { order.sort { (sockets[$0], $0) < (sockets[$1], $1) } }
        var failed = 0
        var start = 0
        while start < queued {
            let fd = sockets[order[start]]
            var end = start
            while end < queued, sockets[order[end]] == fd {
                runBuffer[end - start] = sends[order[end]]
                end += 1
            }
            var offset = 0
            while offset < end - start {
                var error: Int32 = 0
                let sent = Int(tandem_send_batch(fd, runBuffer + offset, UInt32(end - start - offset), &error))
                offset += sent
                if error != 0 {
                    // That datagram is lost (a full buffer, an unreachable peer); the rest still go.
                    failed += 1
                    offset += 1
                }
            }
            start = end
        }
        return failed
    }
}

extension TransportAddress {
    init(_ d: tandem_datagram) {
        self.init(ip: d.v6 != 0 ? IPAddress(v6: d.high, d.low) : IPAddress(v4: UInt32(truncatingIfNeeded: d.low)), port: d.port)
    }

    func datagram(base: UnsafeMutableRawPointer, length: Int) -> tandem_datagram {
        tandem_datagram(base: base, length: UInt32(length), truncated: 0, v6: ip.isV6 ? 1 : 0, port: port, high: ip.high, low: ip.low)
    }
}
