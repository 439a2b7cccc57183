import TandemSTUN
/// ChannelData messages (RFC 8656 §12.4) and the framing of TURN over a byte stream (§12.5).
public enum TURNFraming {
    /// Channel numbers a client may bind: RFC 8656 narrowed them to 0x4000–0x4FFF, but clients written
    /// to RFC 5766 (coturn's own among them) still use up to 0x7FFE, so those are accepted too.
    public static let channelNumbers: ClosedRange<UInt16> = 0x4000...0x7FFE

    /// True when a datagram's first byte starts a ChannelData message rather than STUN.
    @inline(__always)
    public static func isChannelData(firstByte: UInt8) -> Bool { firstByte & 0xC0 == 0x40 }

    /// A ChannelData message's channel number and payload (its length field's worth of bytes after the
    /// 4-byte header; padding after it is ignored); nil when the message is shorter than that.
    @inline(__always)
    public static func channelData(_ bytes: UnsafeRawBufferPointer) -> (number: UInt16, payload: UnsafeRawBufferPointer)? {
        guard bytes.count >= 4 else { return nil }
        let length = Int(bytes[2]) << 8 | Int(bytes[3])
        guard length <= bytes.count - 4 else { return nil }
        return (UInt16(bytes[0]) << 8 | UInt16(bytes[1]), UnsafeRawBufferPointer(rebasing: bytes[4..<(4 + length)]))
    }

    public enum Frame: Equatable, Sendable {
        /// A whole STUN message or ChannelData message of this many bytes, padding included.
        case complete(Int)
        case needMore
        /// The stream does not carry TURN; close it.
        case invalid
    }

    /// How long the next message on a stream is. Over TCP and TLS, ChannelData is padded to a multiple
    /// of four bytes; STUN messages always are.
    public static func nextFrame<C: Collection<UInt8>>(_ bytes: C) -> Frame where C.Index == Int {
        guard bytes.count >= 4 else { return .needMore }
        let s = bytes.startIndex
        let length = Int(bytes[s + 2]) << 8 | Int(bytes[s + 3])
        if isChannelData(firstByte: bytes[s]) {
            let total = 4 + (length + 3) & ~3
            return bytes.count >= total ? .complete(total) : .needMore
        }
        guard bytes[s] & 0xC0 == 0, length % 4 == 0 else { return .invalid }
        return bytes.count >= 20 + length ? .complete(20 + length) : .needMore
    }

    /// A Data indication (RFC 8656 §10.3) carrying `data` from `peer`.
    public static func dataIndication<C: Collection<UInt8>>(peer: TransportAddress, data: C, transactionID: TransactionID) -> [UInt8] {
        var b = STUNMessageBuilder(method: .data, class: .indication, transactionID: transactionID, capacity: data.count + 48)
        b.append(STUNAttribute.xorPeerAddress, xorAddress: peer)
        b.append(STUNAttribute.data, data)
        return b.bytes
    }
}
