/// Big-endian access to packet bytes, for RTP and RTCP alike; callers check the bounds.
extension UnsafeRawBufferPointer {
    @inline(__always) package func u16(_ offset: Int) -> UInt16 { UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    @inline(__always) package func u32(_ offset: Int) -> UInt32 { UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always) package func u16(_ offset: Int) -> UInt16 { UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    @inline(__always) package func u32(_ offset: Int) -> UInt32 { UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    @inline(__always) package func put(_ value: UInt16, at offset: Int) { storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self) }
    @inline(__always) package func put(_ value: UInt32, at offset: Int) { storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self) }
}

/// RFC 7983 demultiplexing of what arrives on an ICE component (STUN is libnice's).
package enum PacketClass: Equatable {
    case dtls, rtp, rtcp, other

    @inline(__always) package static func of(_ first: UInt8, _ second: UInt8) -> PacketClass {
        switch first {
        case 20...63: .dtls
        // RFC 5761: payload types 64–95 (with the marker bit: 192–223) are RTCP.
        case 128...191: (192...223).contains(second) ? .rtcp : .rtp
        default: .other
        }
    }
}

/// One stream the relay sends on a leg (one per media kind). Whatever source feeds it, and however that
/// source changes (a reconnect, a new SSRC after renegotiation), the receiver sees one SSRC with
/// continuous sequence numbers and timestamps, in the payload type and header-extension ids negotiated
/// on this leg.
public struct OutgoingRTPStream: Sendable {
    /// The relay's SSRC on this leg, as its SDP declares it.
    public let ssrc: UInt32
    /// The payload type negotiated on this leg.
    public private(set) var payloadType: UInt8
    public let clockRate: UInt32
    /// Incoming one-byte/two-byte extension id → this leg's id. Ids this leg did not negotiate become
    /// an id it did not negotiate, which the receiver ignores.
    private var extensionMap: [UInt8]

    /// The incoming SSRC being forwarded, and the offsets from its numbering to ours.
    public private(set) var source: UInt32?
    public private(set) var seqDelta: UInt16 = 0
    public private(set) var tsDelta: UInt32 = 0
    private var highestSeq: UInt16 = 0
    private var highestTimestamp: UInt32 = 0
    private var highestAtMs: Int64 = 0
    public private(set) var packets: UInt64 = 0

    /// Set when the stream was reconfigured: the next packet starts a new source, continuing the numbering.
    private var restart = false

    /// `extensions` pairs incoming ids with this leg's ids for the same extension.
    public init(ssrc: UInt32, payloadType: UInt8, clockRate: UInt32, extensions: [(incoming: UInt8, outgoing: UInt8)] = []) {
        self.ssrc = ssrc
        self.payloadType = payloadType
        self.clockRate = max(1, clockRate)
        extensionMap = Self.map(extensions)
    }

    /// A new sender or a renegotiation: new payload type and extension ids, the same SSRC, and numbering
    /// that continues (libsrtp refuses an index that falls behind its window, and receivers would see a jump).
    public mutating func reconfigure(payloadType: UInt8, extensions: [(incoming: UInt8, outgoing: UInt8)]) {
        self.payloadType = payloadType
        extensionMap = Self.map(extensions)
        restart = true
    }

    private static func map(_ extensions: [(incoming: UInt8, outgoing: UInt8)]) -> [UInt8] {
        let used = Set(extensions.map(\.outgoing))
        let unused = (1...14).map { UInt8($0) }.first { !used.contains($0) } ?? 14
        var map = [UInt8](repeating: unused, count: 256)
        map[0] = 0
        for pair in extensions { map[Int(pair.incoming)] = pair.outgoing }
        return map
    }

    /// Rewrites the plain RTP packet in `packet[0..<length]` in place for this leg. False when it cannot
    /// be forwarded (too short, not RTP version 2).
    public mutating func rewrite(_ packet: UnsafeMutableRawBufferPointer, length: Int, nowMs: Int64) -> Bool {
        guard length >= 12, length <= packet.count, packet[0] >> 6 == 2 else { return false }
        let inSSRC = packet.u32(8)
        let inSeq = packet.u16(2)
        let inTimestamp = packet.u32(4)
        if inSSRC != source || restart { switchSource(to: inSSRC, seq: inSeq, timestamp: inTimestamp, nowMs: nowMs) }
        let seq = inSeq &+ seqDelta
        let timestamp = inTimestamp &+ tsDelta
        if Int16(bitPattern: seq &- highestSeq) > 0 {
            highestSeq = seq
            highestTimestamp = timestamp
            highestAtMs = nowMs
        }
        packet[1] = (packet[1] & 0x80) | payloadType
        packet.put(seq, at: 2)
        packet.put(timestamp, at: 4)
        packet.put(ssrc, at: 8)
        packets &+= 1
        remapExtensions(packet, length: length)
        return true
    }

    private mutating func switchSource(to newSource: UInt32, seq: UInt16, timestamp: UInt32, nowMs: Int64) {
        if source != nil {
            // Continue right after the last packet sent, advanced by the wall time since then, so the
            // receiver's jitter buffer sees a pause, not a jump.
            let elapsed = UInt32(truncatingIfNeeded: max(1, nowMs - highestAtMs) * Int64(clockRate) / 1000)
            seqDelta = (highestSeq &+ 1) &- seq
            tsDelta = (highestTimestamp &+ max(1, elapsed)) &- timestamp
        }
        source = newSource
        restart = false
        highestSeq = seq &+ seqDelta &- 1
        highestTimestamp = timestamp &+ tsDelta
        highestAtMs = nowMs
    }

    private func remapExtensions(_ packet: UnsafeMutableRawBufferPointer, length: Int) {
        guard packet[0] & 0x10 != 0 else { return }
        let start = 12 + Int(packet[0] & 0x0F) * 4
        guard start + 4 <= length else { return }
        let profile = packet.u16(start)
        let end = start + 4 + Int(packet.u16(start + 2)) * 4
        guard end <= length else { return }
        var i = start + 4
        if profile == 0xBEDE {
            while i < end {
                let id = packet[i] >> 4
                if id == 0 {
                    i += 1
                    continue
                }
                if id == 15 { return }
                let size = Int(packet[i] & 0x0F) + 1
                packet[i] = (extensionMap[Int(id)] << 4) | (packet[i] & 0x0F)
                i += 1 + size
            }
        } else if profile & 0xFFF0 == 0x1000 {
            while i + 1 < end {
                let id = packet[i]
                if id == 0 {
                    i += 1
                    continue
                }
                packet[i] = extensionMap[Int(id)]
                i += 2 + Int(packet[i + 1])
            }
        }
    }
}

/// RTCP the relay writes itself.
package enum RTCPWriter {
    /// A Picture Loss Indication (RFC 4585 6.3.1): asks `mediaSSRC`'s sender for a keyframe. 12 bytes.
    package static func pictureLoss(into packet: UnsafeMutableRawBufferPointer, sender: UInt32, media: UInt32) -> Int {
        packet[0] = 0x81
        packet[1] = 206
        packet.put(UInt16(2), at: 2)
        packet.put(sender, at: 4)
        packet.put(media, at: 8)
        return 12
    }
}
